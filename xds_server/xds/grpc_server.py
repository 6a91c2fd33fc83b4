"""The gRPC server that carries ADS (state of the world and delta), CSDS and load reports (LRS),
in plaintext or over (mutual) TLS."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field

import grpc
from envoy.service.load_stats.v3 import lrs_pb2_grpc
from envoy.service.status.v3 import csds_pb2_grpc

from xds_server.xds.ads import ADS_SERVICE, sotw_method_handler
from xds_server.xds.cache import SnapshotCache
from xds_server.xds.client_status import ClientRegistry
from xds_server.xds.csds import ClientStatusService
from xds_server.xds.delta import delta_method_handler
from xds_server.xds.identity import AccessControl
from xds_server.xds.limits import StreamLimits
from xds_server.xds.load_reports import LoadReportingService

DEFAULT_MAX_RECEIVE_BYTES = 4 * 1024 * 1024  # gRPC's default, and Istio's
DEFAULT_MAX_CONNECTION_AGE_S = 30 * 60.0  # Istio's
DEFAULT_MAX_CONNECTION_AGE_GRACE_S = 10.0


@dataclass(frozen=True)
class ServerOptions:
    """Transport settings of the xDS server."""

    max_concurrent_streams: int | None = 10_000
    keepalive_time_ms: int = 30_000
    keepalive_timeout_ms: int = 10_000
    min_client_ping_interval_ms: int = 10_000
    max_send_bytes: int = 64 * 1024 * 1024  # responses of a large mesh exceed 4 MB
    max_receive_bytes: int = DEFAULT_MAX_RECEIVE_BYTES
    # A connection is asked to go (GOAWAY) after this long, and closed ``grace`` later, so that
    # proxies spread over the replicas after a rollout; 0 keeps connections for ever.
    max_connection_age_s: float = DEFAULT_MAX_CONNECTION_AGE_S
    max_connection_age_grace_s: float = DEFAULT_MAX_CONNECTION_AGE_GRACE_S
    stream_limits: StreamLimits = field(default_factory=StreamLimits)

    def channel_options(self) -> list[tuple[str, int]]:
        """The options as gRPC channel arguments."""
        options = [
            ("grpc.keepalive_time_ms", self.keepalive_time_ms),
            ("grpc.keepalive_timeout_ms", self.keepalive_timeout_ms),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.min_ping_interval_without_data_ms", self.min_client_ping_interval_ms),
            ("grpc.http2.max_pings_without_data", 0),
            ("grpc.max_send_message_length", self.max_send_bytes),
            ("grpc.max_receive_message_length", self.max_receive_bytes),
            # gRPC binds with SO_REUSEPORT by default: a second server on the same port would
            # share it, and proxies would get one config or the other. A busy port is an error.
            ("grpc.so_reuseport", 0),
        ]
        if self.max_connection_age_s > 0:
            options += [
                ("grpc.max_connection_age_ms", round(self.max_connection_age_s * 1000)),
                ("grpc.max_connection_age_grace_ms", round(self.max_connection_age_grace_s * 1000)),
            ]
        return options


def xds_server(
    cache: SnapshotCache,
    registry: ClientRegistry,
    options: ServerOptions = ServerOptions(),
    access: AccessControl | None = None,
    load_reporting: LoadReportingService | None = None,
) -> grpc.aio.Server:
    """A ``grpc.aio.Server`` with ADS, delta ADS and CSDS registered (and LRS, when
    ``load_reporting`` is given), not yet bound or started.

    ``max_concurrent_streams`` caps concurrent RPCs; the server refuses more with
    RESOURCE_EXHAUSTED. ``access`` decides who may open a stream and read client status.
    """
    access = access or AccessControl()
    server = grpc.aio.server(
        options=options.channel_options(),
        maximum_concurrent_rpcs=options.max_concurrent_streams,
    )
    ads = grpc.method_handlers_generic_handler(
        ADS_SERVICE,
        {
            "StreamAggregatedResources": sotw_method_handler(
                cache, registry, access, options.stream_limits
            ),
            "DeltaAggregatedResources": delta_method_handler(
                cache, registry, access, options.stream_limits
            ),
        },
    )
    server.add_generic_rpc_handlers((ads,))
    csds_pb2_grpc.add_ClientStatusDiscoveryServiceServicer_to_server(
        ClientStatusService(registry, access), server
    )
    if load_reporting is not None:
        lrs_pb2_grpc.add_LoadReportingServiceServicer_to_server(load_reporting, server)
    return server


def ensure_bindable(address: str) -> None:
    """Raise ``OSError`` (with the system's reason) if ``address`` cannot be listened on.

    gRPC would only log its reason and return port 0; binding a plain socket first lets the
    caller say why in one line.
    """
    host, _, port_text = address.rpartition(":")
    host = host.strip("[]") or "0.0.0.0"
    try:
        port = int(port_text)
    except ValueError:
        raise OSError(f"cannot listen for xDS on {address}: not HOST:PORT") from None
    if port == 0:
        return
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as err:
        raise OSError(f"cannot listen for xDS on {address}: {err.strerror}") from None
    for family, kind, proto, _, sockaddr in infos:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(sockaddr)
            except OSError as err:
                raise OSError(
                    err.errno, f"cannot listen for xDS on {address}: {err.strerror}"
                ) from None


async def start_xds_server(
    cache: SnapshotCache,
    registry: ClientRegistry,
    address: str = "127.0.0.1:0",
    options: ServerOptions = ServerOptions(),
    *,
    credentials: grpc.ServerCredentials | None = None,
    access: AccessControl | None = None,
    load_reporting: LoadReportingService | None = None,
) -> tuple[grpc.aio.Server, int]:
    """Build, bind and start the xDS server; returns it and the bound port.

    With ``credentials`` the port serves TLS (see ``xds.tls.server_credentials``), without them
    plaintext. Raises ``OSError`` when the address cannot be bound (in use, or not local).
    """
    ensure_bindable(address)
    server = xds_server(cache, registry, options, access, load_reporting)
    try:
        if credentials is None:
            port = server.add_insecure_port(address)
        else:
            port = server.add_secure_port(address, credentials)
    except RuntimeError:  # grpcio raises this for a port it cannot bind
        port = 0
    if port == 0:
        raise OSError(f"cannot listen for xDS on {address}: the address is in use or not local")
    await server.start()
    return server, port
