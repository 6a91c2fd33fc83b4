"""The gRPC server that carries ADS (state of the world and delta) and CSDS, in plaintext or
over (mutual) TLS."""

from __future__ import annotations

from dataclasses import dataclass

import grpc
from envoy.service.status.v3 import csds_pb2_grpc

from xds_server.xds.ads import ADS_SERVICE, sotw_method_handler
from xds_server.xds.cache import SnapshotCache
from xds_server.xds.client_status import ClientRegistry
from xds_server.xds.csds import ClientStatusService
from xds_server.xds.delta import delta_method_handler
from xds_server.xds.identity import AccessControl


@dataclass(frozen=True)
class ServerOptions:
    """Transport settings of the xDS server."""

    max_concurrent_streams: int | None = 10_000
    keepalive_time_ms: int = 30_000
    keepalive_timeout_ms: int = 10_000
    min_client_ping_interval_ms: int = 10_000
    max_message_bytes: int = 64 * 1024 * 1024

    def channel_options(self) -> list[tuple[str, int]]:
        """The options as gRPC channel arguments."""
        return [
            ("grpc.keepalive_time_ms", self.keepalive_time_ms),
            ("grpc.keepalive_timeout_ms", self.keepalive_timeout_ms),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.min_ping_interval_without_data_ms", self.min_client_ping_interval_ms),
            ("grpc.http2.max_pings_without_data", 0),
            ("grpc.max_send_message_length", self.max_message_bytes),
            ("grpc.max_receive_message_length", self.max_message_bytes),
        ]


def xds_server(
    cache: SnapshotCache,
    registry: ClientRegistry,
    options: ServerOptions = ServerOptions(),
    access: AccessControl | None = None,
) -> grpc.aio.Server:
    """A ``grpc.aio.Server`` with ADS, delta ADS and CSDS registered, not yet bound or started.

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
            "StreamAggregatedResources": sotw_method_handler(cache, registry, access),
            "DeltaAggregatedResources": delta_method_handler(cache, registry, access),
        },
    )
    server.add_generic_rpc_handlers((ads,))
    csds_pb2_grpc.add_ClientStatusDiscoveryServiceServicer_to_server(
        ClientStatusService(registry, access), server
    )
    return server


async def start_xds_server(
    cache: SnapshotCache,
    registry: ClientRegistry,
    address: str = "127.0.0.1:0",
    options: ServerOptions = ServerOptions(),
    *,
    credentials: grpc.ServerCredentials | None = None,
    access: AccessControl | None = None,
) -> tuple[grpc.aio.Server, int]:
    """Build, bind and start the xDS server; returns it and the bound port.

    With ``credentials`` the port serves TLS (see ``xds.tls.server_credentials``), without them
    plaintext.
    """
    server = xds_server(cache, registry, options, access)
    if credentials is None:
        port = server.add_insecure_port(address)
    else:
        port = server.add_secure_port(address, credentials)
    if port == 0:
        raise OSError(f"cannot bind the xDS server to {address}")
    await server.start()
    return server, port
