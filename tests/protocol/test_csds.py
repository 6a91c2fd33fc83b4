"""CSDS answers from the client-status model."""

from __future__ import annotations

from envoy.service.status.v3 import csds_pb2, csds_pb2_grpc
from envoy.type.matcher.v3.node_pb2 import NodeMatcher
from envoy.type.matcher.v3.string_pb2 import StringMatcher

from tests.protocol.conftest import XdsHarness
from tests.protocol.test_sotw import GROUP, barrier, mesh
from tests.protocol.xds_client import node
from xds_server.xds.cache import CLUSTER, ENDPOINT, LISTENER, ROUTE


async def test_csds_reports_synced_stale_nacked_and_not_sent_per_type(xds: XdsHarness) -> None:
    xds.cache.set_snapshot(GROUP, mesh("a"))
    client = xds.sotw(node("proxy-1"))
    client.request(CLUSTER)
    client.ack(await client.response())  # SYNCED
    client.request(LISTENER)
    client.nack(await client.response(), "listener_80: address in use")  # NACKED
    client.request(ENDPOINT, ["missing"])  # NOT_SENT: nothing by that name
    await barrier(client)  # ROUTE sent, not acknowledged: STALE

    stub = csds_pb2_grpc.ClientStatusDiscoveryServiceStub(xds.channel)
    answer = await stub.FetchClientStatus(csds_pb2.ClientStatusRequest())
    (config,) = answer.config
    assert config.node.id == "proxy-1"
    status = {(c.type_url, c.name): c for c in config.generic_xds_configs}
    assert status[(CLUSTER, "a")].config_status == csds_pb2.SYNCED
    listener = status[(LISTENER, "listener_80")]
    assert listener.config_status == csds_pb2.ERROR
    assert listener.error_state.details == "listener_80: address in use"
    assert status[(ENDPOINT, "")].config_status == csds_pb2.NOT_SENT
    assert status[(ROUTE, "80")].config_status == csds_pb2.STALE
    assert status[(CLUSTER, "a")].xds_config.type_url == CLUSTER
    await client.close()


async def test_csds_filters_clients_by_node_id(xds: XdsHarness) -> None:
    xds.cache.set_snapshot(GROUP, mesh("a"))
    clients = [xds.sotw(node(name)) for name in ("web-1", "db-1")]
    for client in clients:
        client.request(CLUSTER)
        await client.response()
    stub = csds_pb2_grpc.ClientStatusDiscoveryServiceStub(xds.channel)
    request = csds_pb2.ClientStatusRequest(
        node_matchers=[NodeMatcher(node_id=StringMatcher(prefix="web-"))],
        exclude_resource_contents=True,
    )
    answer = await stub.FetchClientStatus(request)
    assert [c.node.id for c in answer.config] == ["web-1"]
    assert not answer.config[0].generic_xds_configs[0].HasField("xds_config")
    for client in clients:
        await client.close()
