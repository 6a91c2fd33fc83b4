"""xDS over mutual TLS: the client certificate's SPIFFE ID is the proxy's identity.

The server runs with certificates minted per test (a mesh CA, a server certificate, SPIFFE
workload certificates) and real grpcio TLS channels connect to it.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from envoy.service.status.v3 import csds_pb2, csds_pb2_grpc

from tests.protocol.conftest import wait_until
from tests.protocol.test_sotw import GROUP, mesh
from tests.protocol.xds_client import DeltaClient, SotwClient, node
from tests.support.pki import CertificateAuthority, Leaf, spiffe_id
from xds_server.debug.metrics import Metrics
from xds_server.debug.views import clients_json
from xds_server.xds.cache import CLUSTER, SnapshotCache
from xds_server.xds.client_status import ClientRegistry
from xds_server.xds.grpc_server import ServerOptions, start_xds_server
from xds_server.xds.identity import AccessControl, AccessPolicy
from xds_server.xds.tls import TlsFiles, server_credentials

SERVER_NAME = "splitplane.splitplane-system.svc"


@dataclass
class MtlsServer:
    cache: SnapshotCache
    registry: ClientRegistry
    metrics: Metrics
    port: int
    ca: CertificateAuthority
    server_dir: Path
    tmp: Path

    def workload(self, name: str, *uris: str, ca: CertificateAuthority | None = None) -> Leaf:
        """A client certificate with these URI SANs, from the mesh CA unless ``ca`` is given."""
        return (ca or self.ca).issue(self.tmp / name, uris=uris)

    def channel(self, leaf: Leaf | None) -> grpc.aio.Channel:
        """A TLS channel that trusts the mesh CA and presents ``leaf`` (None: no certificate)."""
        credentials = grpc.ssl_channel_credentials(
            self.ca.pem,
            None if leaf is None else leaf.key_pem,
            None if leaf is None else leaf.cert_pem,
        )
        return grpc.aio.secure_channel(
            f"127.0.0.1:{self.port}",
            credentials,
            options=[("grpc.ssl_target_name_override", SERVER_NAME)],
        )

    def refused(self, reason: str) -> float:
        return self.metrics.refused.values.get((reason,), 0.0)


@pytest.fixture
async def mtls(tmp_path: Path) -> AsyncIterator[MtlsServer]:
    ca = CertificateAuthority.new("mesh root")
    server_dir = tmp_path / "server"
    server_leaf = ca.issue(server_dir, dns=[SERVER_NAME])
    files = TlsFiles(server_leaf.cert_file, server_leaf.key_file, server_leaf.ca_file)
    credentials, _ = server_credentials(files)
    metrics = Metrics()
    cache = SnapshotCache()
    registry = ClientRegistry()
    access = AccessControl(AccessPolicy(mtls=True), on_refused=metrics.stream_refused)
    server, port = await start_xds_server(
        cache, registry, "127.0.0.1:0", ServerOptions(), credentials=credentials, access=access
    )
    for namespace in ("default", "team-a"):
        cache.set_snapshot(f"{GROUP}/{namespace}", mesh("a"))
    cache.set_snapshot("gateway:8080/splitplane-system", mesh("edge"))
    try:
        yield MtlsServer(cache, registry, metrics, port, ca, server_dir, tmp_path)
    finally:
        await server.stop(grace=None)


async def first_response_or_error(channel: grpc.aio.Channel, **metadata: str) -> grpc.StatusCode:
    """Open a stream as a node with ``metadata`` and ask for clusters: OK when a response
    came, else the status the stream ended with."""
    client = SotwClient(channel, node("proxy-1", **metadata))
    client.request(CLUSTER)
    try:
        await client.response()
    except grpc.aio.AioRpcError as error:
        return error.code()
    finally:
        await client.close()
    return grpc.StatusCode.OK


async def test_a_workload_certificate_is_the_proxys_verified_identity(mtls: MtlsServer) -> None:
    identity = spiffe_id("default", "reviews")
    async with mtls.channel(mtls.workload("reviews", identity)) as channel:
        client = SotwClient(channel, node("reviews-1", NAMESPACE="default"))
        client.request(CLUSTER)
        response = await client.response()
        assert response.type_url == CLUSTER
        (view,) = mtls.registry.views()
        assert view.identity == identity
        assert clients_json([view])["clients"][0]["identity"] == identity  # /debug/clients
        await client.close()


async def test_a_client_without_a_certificate_cannot_connect(mtls: MtlsServer) -> None:
    async with mtls.channel(None) as channel:
        assert await first_response_or_error(channel) is grpc.StatusCode.UNAVAILABLE
    assert mtls.registry.views() == []


async def test_a_certificate_from_another_ca_cannot_connect(mtls: MtlsServer) -> None:
    stranger = CertificateAuthority.new("another root")
    leaf = mtls.workload("stranger", spiffe_id("default", "reviews"), ca=stranger)
    async with mtls.channel(leaf) as channel:
        assert await first_response_or_error(channel) is grpc.StatusCode.UNAVAILABLE
    assert mtls.registry.views() == []


async def test_a_node_claiming_another_namespace_is_refused_logged_and_counted(
    mtls: MtlsServer, caplog: pytest.LogCaptureFixture
) -> None:
    leaf = mtls.workload("team-a", spiffe_id("team-a", "web"))
    async with mtls.channel(leaf) as channel:
        code = await first_response_or_error(channel, NAMESPACE="team-b")
    assert code is grpc.StatusCode.PERMISSION_DENIED
    assert mtls.registry.views() == []
    assert mtls.refused("namespace") == 1
    assert any("claims namespace 'team-b'" in r.getMessage() for r in caplog.records)
    assert "splitplane_xds_refused_total" in mtls.metrics.render()


async def test_a_delta_stream_is_checked_the_same_way(mtls: MtlsServer) -> None:
    leaf = mtls.workload("team-a", spiffe_id("team-a", "web"))
    async with mtls.channel(leaf) as channel:
        client = DeltaClient(channel, node("web-1", NAMESPACE="team-b"))
        client.request(CLUSTER)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await client.response()
        assert refused.value.code() is grpc.StatusCode.PERMISSION_DENIED
        await client.close()

        client = DeltaClient(channel, node("web-1", NAMESPACE="team-a"))
        client.request(CLUSTER)
        assert (await client.response()).type_url == CLUSTER
        (view,) = mtls.registry.views()
        assert (view.protocol, view.identity) == ("delta", spiffe_id("team-a", "web"))
        await client.close()


async def test_a_node_without_namespace_metadata_gets_its_certificates(
    mtls: MtlsServer,
) -> None:
    leaf = mtls.workload("team-a", spiffe_id("team-a", "web"))
    async with mtls.channel(leaf) as channel:
        client = SotwClient(channel, node("web-1"))
        client.request(CLUSTER)
        await client.response()
        (view,) = mtls.registry.views()
        assert view.group == f"{GROUP}/team-a"
        await client.close()


@pytest.mark.parametrize(
    ("uris", "reason"),
    [
        ((), "no_identity"),
        (("https://example.com/web",), "no_identity"),
        (("spiffe://cluster.local/web",), "no_identity"),
        ((spiffe_id("default", "a"), spiffe_id("default", "b")), "no_identity"),
        ((spiffe_id("default", "web", "other.domain"),), "trust_domain"),
    ],
)
async def test_a_certificate_without_one_spiffe_id_of_the_trust_domain_is_refused(
    mtls: MtlsServer, uris: tuple[str, ...], reason: str
) -> None:
    async with mtls.channel(mtls.workload("odd", *uris)) as channel:
        code = await first_response_or_error(channel, NAMESPACE="default")
    assert code is grpc.StatusCode.PERMISSION_DENIED
    assert mtls.refused(reason) == 1


async def test_only_the_fleets_service_account_may_take_the_gateway_role(
    mtls: MtlsServer,
) -> None:
    app = mtls.workload("app", spiffe_id("splitplane-system", "default"))
    async with mtls.channel(app) as channel:
        code = await first_response_or_error(channel, ROLE="gateway", NAMESPACE="splitplane-system")
    assert code is grpc.StatusCode.PERMISSION_DENIED
    assert mtls.refused("role") == 1

    fleet = mtls.workload("fleet", spiffe_id("splitplane-system", "splitplane-lb"))
    async with mtls.channel(fleet) as channel:
        code = await first_response_or_error(channel, ROLE="gateway", NAMESPACE="splitplane-system")
    assert code is grpc.StatusCode.OK


async def test_csds_answers_only_identities_allowed_to_read_status(mtls: MtlsServer) -> None:
    identity = spiffe_id("default", "reviews")
    async with mtls.channel(mtls.workload("reviews", identity)) as proxy:
        client = SotwClient(proxy, node("reviews-1", NAMESPACE="default"))
        client.request(CLUSTER)
        await client.response()

        own = mtls.workload("plane", spiffe_id("splitplane-system", "splitplane"))
        async with mtls.channel(own) as channel:
            stub = csds_pb2_grpc.ClientStatusDiscoveryServiceStub(channel)
            answer = await stub.FetchClientStatus(csds_pb2.ClientStatusRequest())
            assert [c.node.id for c in answer.config] == ["reviews-1"]

        async with mtls.channel(mtls.workload("nosy", identity)) as channel:
            stub = csds_pb2_grpc.ClientStatusDiscoveryServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.FetchClientStatus(csds_pb2.ClientStatusRequest())
            assert refused.value.code() is grpc.StatusCode.PERMISSION_DENIED
            stream = stub.StreamClientStatus(iter([csds_pb2.ClientStatusRequest()]))
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stream.read()
            assert refused.value.code() is grpc.StatusCode.PERMISSION_DENIED
        assert mtls.refused("status") == 2
        await client.close()


def server_serial(port: int, ca: CertificateAuthority) -> int:
    """The serial number of the certificate a fresh TLS handshake gets from the server."""
    context = ssl.create_default_context(cadata=ca.pem.decode())
    context.check_hostname = False
    context.set_alpn_protocols(["h2"])
    with (
        socket.create_connection(("127.0.0.1", port)) as raw,
        context.wrap_socket(raw, server_hostname=SERVER_NAME) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


async def test_rotating_the_server_certificate_drops_none_of_100_open_streams(
    mtls: MtlsServer,
) -> None:
    leaf = mtls.workload("reviews", spiffe_id("default", "reviews"))
    channels = [mtls.channel(leaf) for _ in range(100)]  # one connection each
    clients = [
        SotwClient(channel, node(f"proxy-{i}", NAMESPACE="default"))
        for i, channel in enumerate(channels)
    ]
    for client in clients:
        client.request(CLUSTER)
    for client in clients:
        client.ack(await client.response())
    await wait_until(lambda: len(mtls.registry.views()) == 100)
    before = await asyncio.to_thread(server_serial, mtls.port, mtls.ca)

    rotated = mtls.ca.issue(mtls.server_dir, dns=[SERVER_NAME])
    assert rotated.serial != before
    # The next handshake gets the new certificate ...
    assert await asyncio.to_thread(server_serial, mtls.port, mtls.ca) == rotated.serial
    # ... and every open stream still receives the next push.
    mtls.cache.set_snapshot(f"{GROUP}/default", mesh("a", "b"))
    for client in clients:
        response = await client.response()
        assert sorted(r.type_url for r in response.resources) == [CLUSTER, CLUSTER]
    assert len(mtls.registry.views()) == 100
    for client in clients:
        await client.close()
    for channel in channels:
        await channel.close(grace=None)
