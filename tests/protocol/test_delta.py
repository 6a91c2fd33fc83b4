"""Delta ADS, one test per protocol rule."""

from __future__ import annotations

import pytest
from envoy.service.discovery.v3.discovery_pb2 import DeltaDiscoveryResponse

from tests.protocol.conftest import XdsHarness
from tests.protocol.test_sotw import GROUP, mesh, with_endpoint
from tests.protocol.xds_client import DeltaClient, node
from tests.support.envoy_resources import eds_cluster, http_listener, split_mesh
from xds_server.xds.cache import CLUSTER, ENDPOINT, ROUTE, Snapshot, snapshot_from_messages
from xds_server.xds.client_status import SyncState
from xds_server.xds.delta import DeltaStream


def versions(response: DeltaDiscoveryResponse) -> dict[str, str]:
    """Resource name → version in a delta response."""
    return {r.name: r.version for r in response.resources}


async def barrier(client: DeltaClient, type_url: str = ROUTE, name: str = "80") -> None:
    """Subscribe to a resource not held yet; the next response must be it.

    The server handles a stream's requests in order, so any response an earlier request caused
    would arrive before this one.
    """
    client.request(type_url, [name])
    response = await client.response()
    assert (response.type_url, list(versions(response))) == (type_url, [name])


async def test_wildcard_subscription_gets_every_resource_with_its_version(
    xds: XdsHarness,
) -> None:
    snapshot = mesh("a", "b")
    xds.cache.set_snapshot(GROUP, snapshot)
    client = xds.delta(node("d"))
    client.request(CLUSTER)
    response = await client.response()
    expected = {n: r.version for n, r in snapshot.of_type(CLUSTER).by_name.items()}
    assert versions(response) == expected
    assert response.system_version_info == snapshot.of_type(CLUSTER).version
    await client.close()


async def test_subscribe_and_unsubscribe_change_what_is_sent(xds: XdsHarness) -> None:
    xds.cache.set_snapshot(GROUP, mesh("a", "b", "c"))
    client = xds.delta(node("d"))
    client.request(ENDPOINT, ["a"])
    first = await client.response()
    assert list(versions(first)) == ["a"]
    client.ack(first)
    client.request(ENDPOINT, ["b"], unsubscribe=["a"])
    second = await client.response()
    assert list(versions(second)) == ["b"]
    client.ack(second)
    # An endpoint change of the unsubscribed cluster is not sent; of the subscribed one it is.
    xds.cache.set_snapshot(GROUP, mesh("a", "b", "c", first_port=9100))
    third = await client.response()
    assert list(versions(third)) == ["b"]
    await client.close()


async def test_a_reconnecting_client_gets_only_what_changed(xds: XdsHarness) -> None:
    before = mesh("a", "b")
    after = mesh("a", "c")
    xds.cache.set_snapshot(GROUP, after)
    held = {n: r.version for n, r in before.of_type(CLUSTER).by_name.items()}
    client = xds.delta(node("d"))
    client.request(CLUSTER, initial_versions=held)
    response = await client.response()
    assert list(versions(response)) == ["c"]
    assert list(response.removed_resources) == ["b"]
    await client.close()


async def test_pushes_after_the_first_send_only_what_changed(xds: XdsHarness) -> None:
    snapshot = mesh("a", "b", "c")
    xds.cache.set_snapshot(GROUP, snapshot)
    client = xds.delta(node("d"))
    client.request(ENDPOINT, ["a", "b", "c"])
    client.ack(await client.response())
    for n, address in enumerate((("127.0.0.2", 9001), ("127.0.0.3", 9001))):
        xds.cache.set_snapshot(GROUP, with_endpoint(snapshot, "b", address))
        response = await client.response()
        assert (list(versions(response)), list(response.removed_resources)) == (["b"], []), n
        client.ack(response)
    await client.close()


async def test_a_removed_resource_is_named_in_removed_resources(xds: XdsHarness) -> None:
    xds.cache.set_snapshot(GROUP, mesh("a", "b"))
    client = xds.delta(node("d"))
    client.request(CLUSTER)
    client.ack(await client.response())
    xds.cache.set_snapshot(GROUP, mesh("a"))
    response = await client.response()
    assert (list(response.resources), list(response.removed_resources)) == ([], ["b"])
    await client.close()


async def test_a_nack_is_recorded_and_the_rejected_version_is_not_resent(xds: XdsHarness) -> None:
    xds.cache.set_snapshot(GROUP, mesh("a"))
    client = xds.delta(node("d"))
    client.request(CLUSTER)
    rejected = await client.response()
    client.nack(rejected, "no such lb policy")
    await barrier(client)
    status = xds.registry.views()[0].type_status(CLUSTER)
    assert (status.state, status.error) == (SyncState.NACKED, "no such lb policy")
    xds.cache.set_snapshot(GROUP, mesh("a", "b"))
    following = await client.response()
    assert list(versions(following)) == ["b"]
    client.ack(following)
    route_update = await client.response()
    assert route_update.type_url == ROUTE
    await barrier(client, ENDPOINT, "a")
    assert xds.registry.views()[0].type_status(CLUSTER).state is SyncState.SYNCED
    await client.close()


async def test_acks_and_nacks_cost_the_stream_no_push_pass(
    xds: XdsHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    passes: list[Snapshot] = []
    push = DeltaStream.push

    async def counted(stream: DeltaStream, snapshot: Snapshot) -> None:
        passes.append(snapshot)
        await push(stream, snapshot)

    monkeypatch.setattr(DeltaStream, "push", counted)
    xds.cache.set_snapshot(GROUP, mesh("a"))
    client = xds.delta(node("d"))
    client.request(CLUSTER)
    client.ack(await client.response())
    await xds.recorded(CLUSTER, SyncState.SYNCED)
    assert len(passes) == 1

    xds.cache.set_snapshot(GROUP, mesh("a", "b"))
    client.nack(await client.response(), "cluster b: bad lb policy")
    await xds.recorded(CLUSTER, SyncState.NACKED)
    assert len(passes) == 2
    await client.close()


async def test_a_changed_cluster_is_followed_by_its_endpoints_even_when_they_did_not_change(
    xds: XdsHarness,
) -> None:
    # Envoy re-warms a changed cluster and waits for its endpoints (15 s), without asking for
    # them: in delta xDS it holds them already.
    resources = split_mesh(
        http_listener("listener_80", 10080, "80"),
        "80",
        ["*"],
        {"a": ("127.0.0.1", 9000), "b": ("127.0.0.1", 9001)},
        {"a": 1, "b": 1},
    )
    xds.cache.set_snapshot(GROUP, snapshot_from_messages(resources))
    client = xds.delta(node("d"))
    client.request(CLUSTER)
    client.ack(await client.response())
    client.request(ENDPOINT, ["a", "b"])
    endpoints = await client.response()
    client.ack(endpoints)

    resources[CLUSTER] = [eds_cluster("a", connect_timeout_s=5), eds_cluster("b")]
    xds.cache.set_snapshot(GROUP, snapshot_from_messages(resources))
    clusters = await client.response()
    assert (clusters.type_url, list(versions(clusters))) == (CLUSTER, ["a"])
    again = await client.response()
    assert (again.type_url, versions(again)) == (ENDPOINT, {"a": versions(endpoints)["a"]})
    await client.close()
