"""ADS state of the world, one test per protocol rule."""

from __future__ import annotations

from types import MappingProxyType

import grpc
import pytest
from envoy.config.cluster.v3.cluster_pb2 import Cluster
from envoy.config.endpoint.v3.endpoint_pb2 import ClusterLoadAssignment
from envoy.service.discovery.v3.discovery_pb2 import DiscoveryResponse

from tests.protocol.conftest import XdsHarness, wait_until
from tests.protocol.xds_client import SotwClient, node
from tests.support.envoy_resources import http_listener, load_assignment, split_mesh
from xds_server.xds.ads import SotwStream
from xds_server.xds.cache import (
    CLUSTER,
    ENDPOINT,
    LISTENER,
    ROUTE,
    Snapshot,
    TypeResources,
    set_version,
    snapshot_from_messages,
)
from xds_server.xds.client_status import SyncState

GROUP = "sidecar:15001"


def mesh(*clusters: str, first_port: int = 9000, route_name: str = "80") -> Snapshot:
    """A snapshot with one EDS cluster per name, one listener and a route over all of them."""
    backends = {name: ("127.0.0.1", first_port + i) for i, name in enumerate(clusters)}
    return snapshot_from_messages(
        split_mesh(
            http_listener("listener_80", 10080, route_name),
            route_name,
            ["*"],
            backends,
            dict.fromkeys(clusters, 1),
        )
    )


def with_endpoint(snapshot: Snapshot, cluster: str, address: tuple[str, int]) -> Snapshot:
    """``snapshot`` with the load assignment of ``cluster`` moved to ``address``; every other
    resource the very same."""
    types = dict(snapshot.types)
    endpoints = dict(types[ENDPOINT].by_name)
    endpoints[cluster] = (
        snapshot_from_messages({ENDPOINT: [load_assignment(cluster, [address])]})
        .types[ENDPOINT]
        .by_name[cluster]
    )
    types[ENDPOINT] = TypeResources(
        ENDPOINT, MappingProxyType(endpoints), set_version(endpoints.values())
    )
    return Snapshot(MappingProxyType(types), snapshot.eds_references, snapshot.rds_references)


def names(response: DiscoveryResponse) -> list[str]:
    """The names of the resources in a response."""
    found = []
    for packed in response.resources:
        if packed.type_url == CLUSTER:
            cluster = Cluster()
            packed.Unpack(cluster)
            found.append(cluster.name)
        elif packed.type_url == ENDPOINT:
            assignment = ClusterLoadAssignment()
            packed.Unpack(assignment)
            found.append(assignment.cluster_name)
        else:
            found.append(packed.type_url)
    return found


async def barrier(client: SotwClient) -> DiscoveryResponse:
    """Subscribe to the route configuration and return the next response, which must be it.

    The server handles a stream's requests in order, so any response an earlier request caused
    would arrive before this one.
    """
    client.request(ROUTE, ["80"])
    response = await client.response()
    assert response.type_url == ROUTE, f"unexpected {response.type_url} before the barrier"
    return response


async def test_pushes_in_order_cds_eds_lds_rds(xds: XdsHarness) -> None:
    client = xds.sotw(node("a"))
    client.request(ROUTE, ["80"])
    client.request(LISTENER)
    client.request(ENDPOINT, ["a"])
    client.request(CLUSTER)
    await wait_until(lambda: any(len(v.types) == 4 for v in xds.registry.views()))
    xds.cache.set_snapshot(GROUP, mesh("a"))
    order = [(await client.response()).type_url for _ in range(4)]
    assert order == [CLUSTER, ENDPOINT, LISTENER, ROUTE]
    await client.close()


async def test_cds_and_lds_always_carry_full_state(xds: XdsHarness) -> None:
    xds.cache.set_snapshot(GROUP, mesh("a", "b"))
    client = xds.sotw(node("a"))
    client.request(CLUSTER)
    first = await client.response()
    assert names(first) == ["a", "b"]
    client.ack(first)
    xds.cache.set_snapshot(GROUP, mesh("a", "b", "c"))
    second = await client.response()
    assert names(second) == ["a", "b", "c"]
    assert second.version_info != first.version_info
    await client.close()


async def test_eds_and_rds_carry_only_requested_names(xds: XdsHarness) -> None:
    xds.cache.set_snapshot(GROUP, mesh("a", "b", "c"))
    client = xds.sotw(node("a"))
    client.request(ENDPOINT, ["c", "a"])
    response = await client.response()
    assert names(response) == ["a", "c"]
    await client.close()


async def test_named_resources_are_answered_while_the_client_is_warming(xds: XdsHarness) -> None:
    xds.cache.set_snapshot(GROUP, mesh("a", "b"))
    client = xds.sotw(node("a"))
    client.request(CLUSTER)
    clusters = await client.response()
    # Warming: CDS is not acknowledged yet and only one of the two clusters asks for endpoints.
    client.request(ENDPOINT, ["a"])
    endpoints = await client.response()
    assert (endpoints.type_url, names(endpoints)) == (ENDPOINT, ["a"])
    client.ack(clusters)
    await client.close()


async def test_a_name_missing_from_the_snapshot_is_sent_once_it_exists(xds: XdsHarness) -> None:
    xds.cache.set_snapshot(GROUP, mesh("a"))
    client = xds.sotw(node("a"))
    client.request(ENDPOINT, ["a", "later"])
    first = await client.response()
    assert names(first) == ["a"]
    client.ack(first)
    xds.cache.set_snapshot(GROUP, mesh("a", "later"))
    second = await client.response()
    assert names(second) == ["later"]  # "a" has not changed since the client took it
    await client.close()


async def test_a_client_may_change_its_name_set_between_acks(xds: XdsHarness) -> None:
    xds.cache.set_snapshot(GROUP, mesh("a", "b", "c"))
    client = xds.sotw(node("a"))
    client.request(ENDPOINT, ["a"])
    first = await client.response()
    client.ack(first, ["a", "b"])
    grown = await client.response()
    assert names(grown) == ["b"]  # what it did not hold yet
    client.ack(grown, ["c"])
    changed = await client.response()
    assert names(changed) == ["c"]
    await client.close()


async def test_eds_and_rds_responses_carry_only_what_changed_since_the_client_took_them(
    xds: XdsHarness,
) -> None:
    # For EDS and RDS a client takes a resource left out of a response as unchanged (unlike
    # CDS and LDS): one endpoint change re-sends one load assignment, not every cluster's.
    xds.cache.set_snapshot(GROUP, mesh("a", "b", "c"))
    client = xds.sotw(node("a"))
    client.request(ENDPOINT, ["a", "b", "c"])
    first = await client.response()
    assert names(first) == ["a", "b", "c"]
    client.ack(first)
    moved = mesh("a", "b", "c")
    xds.cache.set_snapshot(GROUP, with_endpoint(moved, "b", ("127.0.0.2", 9001)))
    second = await client.response()
    assert names(second) == ["b"]
    assert second.version_info != first.version_info
    status = xds.registry.views()[0].type_status(ENDPOINT)
    assert sorted(r.name for r in status.sent_resources) == ["a", "b", "c"]  # all it holds
    # A rejected response leaves what the client holds unknown: the next one carries it all.
    client.nack(second, "b: bad address")
    await barrier(client)
    xds.cache.set_snapshot(GROUP, with_endpoint(moved, "b", ("127.0.0.3", 9001)))
    assert names(await client.response()) == ["a", "b", "c"]
    await client.close()


async def test_a_request_with_a_stale_nonce_is_ignored(xds: XdsHarness) -> None:
    xds.cache.set_snapshot(GROUP, mesh("a", "b"))
    client = xds.sotw(node("a"))
    client.request(ENDPOINT, ["a"])
    old = await client.response()
    xds.cache.set_snapshot(GROUP, mesh("a", "b", first_port=9100))
    latest = await client.response()
    assert latest.nonce != old.nonce
    # A request answering the older response must change nothing, not even the name set.
    client.request(ENDPOINT, ["a", "b"], nonce=old.nonce)
    await barrier(client)
    client.ack(latest, ["a", "b"])
    assert names(await client.response()) == ["b"]
    await client.close()


async def test_a_request_repeating_an_answered_nonce_is_answered_again(xds: XdsHarness) -> None:
    # Envoy re-warming a changed cluster asks for its endpoints again: the same names, version
    # and nonce as its last ACK. It waits for them (15 s) even though nothing changed.
    xds.cache.set_snapshot(GROUP, mesh("a", "b"))
    client = xds.sotw(node("a"))
    client.request(ENDPOINT, ["a", "b"])
    first = await client.response()
    client.ack(first)
    client.ack(first)
    again = await client.response()
    assert (again.type_url, names(again)) == (ENDPOINT, ["a", "b"])
    assert again.version_info == first.version_info
    assert again.nonce != first.nonce
    # The answer to that is an ordinary ACK: nothing more is sent.
    client.ack(again)
    await barrier(client)
    await client.close()


async def test_an_ack_records_version_nonce_and_time(xds: XdsHarness) -> None:
    xds.cache.set_snapshot(GROUP, mesh("a"))
    client = xds.sotw(node("proxy-1"))
    client.request(CLUSTER)
    response = await client.response()
    record = xds.registry.views()[0]
    assert record.type_status(CLUSTER).state is SyncState.STALE
    client.ack(response)
    await barrier(client)
    status = xds.registry.views()[0].type_status(CLUSTER)
    assert (status.state, status.acked_version, status.acked_nonce) == (
        SyncState.SYNCED,
        response.version_info,
        response.nonce,
    )
    assert status.acked_at is not None
    await client.close()


async def test_acks_and_nacks_that_change_no_names_cost_the_stream_no_push_pass(
    xds: XdsHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    passes: list[Snapshot] = []
    push = SotwStream.push

    async def counted(stream: SotwStream, snapshot: Snapshot) -> None:
        passes.append(snapshot)
        await push(stream, snapshot)

    monkeypatch.setattr(SotwStream, "push", counted)
    xds.cache.set_snapshot(GROUP, mesh("a"))
    client = xds.sotw(node("proxy-1"))
    client.request(CLUSTER)
    client.ack(await client.response())
    await xds.recorded(CLUSTER, SyncState.SYNCED)
    assert len(passes) == 1

    xds.cache.set_snapshot(GROUP, mesh("a", "b"))
    client.nack(await client.response(), "cluster b: bad lb policy")
    await xds.recorded(CLUSTER, SyncState.NACKED)
    assert len(passes) == 2
    await client.close()


async def test_a_nack_is_recorded_and_the_rejected_version_is_not_resent(xds: XdsHarness) -> None:
    xds.cache.set_snapshot(GROUP, mesh("a"))
    client = xds.sotw(node("proxy-1"))
    client.request(CLUSTER)
    rejected = await client.response()
    client.nack(rejected, "cluster a: bad lb policy")
    # The next response is the barrier, not a resend of the rejected clusters.
    await barrier(client)
    status = xds.registry.views()[0].type_status(CLUSTER)
    assert (status.state, status.nacked_version, status.error) == (
        SyncState.NACKED,
        rejected.version_info,
        "cluster a: bad lb policy",
    )
    xds.cache.set_snapshot(GROUP, mesh("a", "b"))
    next_version = await client.response()
    assert next_version.type_url == CLUSTER
    assert names(next_version) == ["a", "b"]
    assert xds.registry.views()[0].type_status(CLUSTER).responses_sent == 2
    await client.close()


async def test_a_removed_cluster_disappears_from_cds(xds: XdsHarness) -> None:
    xds.cache.set_snapshot(GROUP, mesh("a", "b"))
    client = xds.sotw(node("a"))
    client.request(CLUSTER)
    client.ack(await client.response())
    xds.cache.set_snapshot(GROUP, mesh("a"))
    assert names(await client.response()) == ["a"]
    await client.close()


async def test_explicit_wildcard_and_named_cds_subscriptions(xds: XdsHarness) -> None:
    xds.cache.set_snapshot(GROUP, mesh("a", "b"))
    star = xds.sotw(node("star"))
    star.request(CLUSTER, ["*"])
    named = xds.sotw(node("named"))
    named.request(CLUSTER, ["b"])
    assert names(await star.response()) == ["a", "b"]
    assert names(await named.response()) == ["b"]
    await star.close()
    await named.close()


async def test_a_group_without_a_snapshot_is_reported_and_served_once_built(
    xds: XdsHarness,
) -> None:
    client = xds.sotw(node("gw", ROLE="gateway"))
    client.request(CLUSTER)
    await wait_until(lambda: "gateway:8080" in xds.requested)
    assert xds.cache.groups_requested() == {"gateway:8080"}
    xds.cache.set_snapshot("gateway:8080", mesh("g"))
    assert names(await client.response()) == ["g"]
    await client.close()


async def test_each_group_gets_its_own_snapshot(xds: XdsHarness) -> None:
    xds.cache.set_snapshot(GROUP, mesh("sidecar-cluster"))
    xds.cache.set_snapshot("sidecar:15002", mesh("other-port"))
    default = xds.sotw(node("a"))
    other = xds.sotw(node("b", OUTBOUND_PORT="15002"))
    default.request(CLUSTER)
    other.request(CLUSTER)
    assert names(await default.response()) == ["sidecar-cluster"]
    assert names(await other.response()) == ["other-port"]
    await default.close()
    await other.close()


def bulky(generation: int, clusters: int = 3000) -> Snapshot:
    """A snapshot of static clusters large enough (about 1 MB) to fill a stalled stream."""
    padding = "x" * 300
    return snapshot_from_messages(
        {
            CLUSTER: [
                Cluster(name=f"c{i}-{padding}", type=Cluster.STATIC, alt_stat_name=str(generation))
                for i in range(clusters)
            ]
        }
    )


async def test_a_client_that_never_reads_delays_no_one_and_gets_only_the_latest(
    xds: XdsHarness,
) -> None:
    # No BDP probing: the stalled client's receive window stays small and fills quickly.
    stalled_channel = grpc.aio.insecure_channel(
        f"127.0.0.1:{xds.port}", options=[("grpc.http2.bdp_probe", 0)]
    )
    stalled = SotwClient(stalled_channel, node("stalled"))
    stalled.request(CLUSTER)
    healthy = xds.sotw(node("healthy"))
    healthy.request(CLUSTER)
    snapshots = [bulky(generation) for generation in range(8)]
    for snapshot in snapshots:
        xds.cache.set_snapshot(GROUP, snapshot)
        latest = snapshot.of_type(CLUSTER).version
        while (await healthy.response()).version_info != latest:
            pass
    final = snapshots[-1].of_type(CLUSTER).version
    stalled_status = next(v for v in xds.registry.views() if v.node_id == "stalled")
    # One response is stuck in the stalled stream's write; nothing queued up behind it.
    assert stalled_status.type_status(CLUSTER).responses_sent <= 2
    received = [await stalled.response()]
    while received[-1].version_info != final:
        received.append(await stalled.response())
    assert len(received) <= 3
    await stalled.close()
    await healthy.close()
    await stalled_channel.close(grace=None)
