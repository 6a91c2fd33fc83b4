"""Clients cannot grow the server: what a client controls is bounded, what none holds is released.

- A node group (role and port, from node metadata) that no stream holds is dropped after a grace
  period, with what was built for it and its metric series; at most ``max_groups`` are in use,
  and a stream that would make one more is refused with a status naming the limit.
- Node ids and metadata have a size cap; logs show only the start of a node id.
- Requests over 4 MB are refused; so are streams past the per-stream caps on types and names.
- Unknown types are answered once each, without looking at every other type again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from functools import partial

import grpc
import pytest
from envoy.config.core.v3.base_pb2 import Node
from google.protobuf.struct_pb2 import Struct

from tests.protocol.conftest import XdsHarness, wait_until
from tests.protocol.test_sotw import GROUP, mesh
from tests.protocol.xds_client import DeltaClient, SotwClient, node
from tests.unit.objects import versioned_service
from xds_server.app import ControlPlane
from xds_server.xds.cache import CLUSTER, ENDPOINT, Snapshot, SnapshotCache
from xds_server.xds.client_status import ClientRegistry
from xds_server.xds.grpc_server import ServerOptions, start_xds_server
from xds_server.xds.limits import LOGGED_CHARS, StreamLimits, check_node

SOURCE = "test"


async def refusal(call: grpc.aio.StreamStreamCall[object, object]) -> grpc.aio.AioRpcError:
    """The status a stream ended with (fails if it sends a response instead)."""
    with pytest.raises(grpc.aio.AioRpcError) as ended:
        message = await asyncio.wait_for(call.read(), 10)
        raise AssertionError(f"expected the stream to be refused, got {message!r}")
    return ended.value


# -- node groups ------------------------------------------------------------------------------


class Plane:
    """A control plane with a small mesh, serving xDS in-process."""

    def __init__(self, plane: ControlPlane, channel: grpc.aio.Channel) -> None:
        self.plane = plane
        self.channel = channel

    def sidecar(self, node_id: str, outbound_port: int, namespace: str = "") -> SotwClient:
        metadata = {"OUTBOUND_PORT": str(outbound_port)}
        if namespace:
            metadata["NAMESPACE"] = namespace
        return SotwClient(self.channel, node(node_id, **metadata))

    def group_series(self) -> set[str]:
        """The groups ``splitplane_snapshots_published_total`` has a series for."""
        return {labels[0] for labels in self.plane.metrics.snapshots.values}

    def built_for(self, group: str) -> set[str]:
        """The parts the resource builder keeps for ``group`` alone."""
        return {part for part in self.plane.builder.builds if part.startswith(group + "/")}


async def running_plane(max_groups: int, group_grace: float) -> AsyncIterator[Plane]:
    plane = ControlPlane(quiet=0.01, max_delay=0.05, max_groups=max_groups, group_grace=group_grace)
    server, port = await start_xds_server(
        plane.cache, plane.clients_registry, "127.0.0.1:0", ServerOptions()
    )
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    plane.store.replace_all(SOURCE, versioned_service("reviews"))
    plane.store.mark_synced(SOURCE)
    try:
        await wait_until(plane.is_ready)
        yield Plane(plane, channel)
    finally:
        await channel.close(grace=None)
        await server.stop(grace=None)


def nothing_built_for(mesh_plane: Plane, group: str) -> bool:
    return mesh_plane.built_for(group) == set()


def only_group_left(cache: SnapshotCache, group: str) -> bool:
    return cache.groups() == [group]


async def clusters_received(client: SotwClient) -> None:
    client.request(CLUSTER)
    response = await client.response()
    assert response.type_url == CLUSTER and response.resources


async def test_groups_no_stream_holds_are_dropped_after_the_grace_period() -> None:
    async for mesh_plane in running_plane(max_groups=100, group_grace=0.2):
        cache = mesh_plane.plane.cache
        steady = mesh_plane.sidecar("steady", 15001)
        await clusters_received(steady)
        # Short-lived streams, each naming a port of its own in its metadata.
        for port in range(20001, 20021):
            client = mesh_plane.sidecar(f"short-{port}", port)
            await clusters_received(client)
            await client.close()
        assert "sidecar:20001" in cache.groups()

        await wait_until(partial(only_group_left, cache, "sidecar:15001"))

        assert cache.groups_in_use() == 1
        assert mesh_plane.group_series() == {"sidecar:15001"}
        await wait_until(partial(nothing_built_for, mesh_plane, "sidecar:20001"))
        assert mesh_plane.built_for("sidecar:15001") != set()
        # The group held all along still serves.
        mesh_plane.plane.store.replace_all(SOURCE, versioned_service("ratings"))
        response = await steady.response()
        assert response.type_url == CLUSTER
        await steady.close()


async def test_what_was_built_for_a_dropped_port_goes_with_its_groups_in_every_namespace() -> None:
    async for mesh_plane in running_plane(max_groups=100, group_grace=0.2):
        cache = mesh_plane.plane.cache
        steady = mesh_plane.sidecar("steady", 15001, namespace="shop")
        await clusters_received(steady)
        # Proxies in namespaces, as the bootstrap's NAMESPACE metadata names them: one on a port
        # of its own, one on the steady proxy's port in another namespace.
        for node_id, port, namespace in (("short", 20001, "shop"), ("other", 15001, "bank")):
            client = mesh_plane.sidecar(node_id, port, namespace)
            await clusters_received(client)
            await client.close()
        assert {"sidecar:20001/shop", "sidecar:15001/bank"} <= set(cache.groups())
        assert mesh_plane.built_for("sidecar:20001") != set()

        await wait_until(partial(only_group_left, cache, "sidecar:15001/shop"))

        # Parts are kept per role and port, whatever the namespace: those of port 20001 are
        # forgotten, those port 15001's remaining group uses stay.
        await wait_until(partial(nothing_built_for, mesh_plane, "sidecar:20001"))
        assert mesh_plane.built_for("sidecar:15001") != set()
        mesh_plane.plane.store.replace_all(SOURCE, versioned_service("ratings"))
        response = await steady.response()
        assert response.type_url == CLUSTER
        await steady.close()


async def test_a_proxy_back_within_the_grace_period_finds_its_group() -> None:
    async for mesh_plane in running_plane(max_groups=100, group_grace=60):
        first = mesh_plane.sidecar("proxy", 20001)
        await clusters_received(first)
        await first.close()
        await asyncio.sleep(0.1)
        built = dict(mesh_plane.plane.builder.builds)

        again = mesh_plane.sidecar("proxy", 20001)
        await clusters_received(again)

        assert mesh_plane.plane.cache.groups() == ["sidecar:20001"]
        assert mesh_plane.plane.builder.builds == built  # nothing built again
        await again.close()


async def test_a_stream_that_would_make_a_group_past_the_cap_is_refused_naming_the_limit() -> None:
    async for mesh_plane in running_plane(max_groups=2, group_grace=60):
        held = [mesh_plane.sidecar("a", 20001), mesh_plane.sidecar("b", 20002)]
        for client in held:
            await clusters_received(client)

        extra = mesh_plane.sidecar("c", 20003)
        extra.request(CLUSTER)
        refused = await refusal(extra.call)

        assert refused.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "node group limit" in (refused.details() or "")
        assert "2" in (refused.details() or "")
        assert mesh_plane.plane.cache.groups() == ["sidecar:20001", "sidecar:20002"]
        # A stream of a group in use is still welcome.
        same = mesh_plane.sidecar("d", 20001)
        await clusters_received(same)
        for client in [*held, same]:
            await client.close()


# -- limits on one stream ---------------------------------------------------------------------


async def harness(limits: StreamLimits | None = None) -> AsyncIterator[XdsHarness]:
    cache = SnapshotCache()
    registry = ClientRegistry()
    server, port = await start_xds_server(
        cache, registry, "127.0.0.1:0", ServerOptions(stream_limits=limits or StreamLimits())
    )
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    cache.set_snapshot(GROUP, mesh("a", "b"))
    try:
        yield XdsHarness(cache, registry, port, channel)
    finally:
        await channel.close(grace=None)
        await server.stop(grace=None)


@pytest.fixture
async def xds() -> AsyncIterator[XdsHarness]:
    async for running in harness():
        yield running


async def test_a_node_id_over_the_cap_is_refused(xds: XdsHarness) -> None:
    client = xds.sotw(node("x" * 1_000_000))
    client.request(CLUSTER)

    refused = await refusal(client.call)

    assert refused.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "node id of 1000000 bytes exceeds the limit of 1024 bytes" in (refused.details() or "")
    assert xds.registry.views() == []


async def test_node_metadata_over_the_cap_is_refused(xds: XdsHarness) -> None:
    client = xds.sotw(node("big", NOTE="y" * 100_000))
    client.request(CLUSTER)

    refused = await refusal(client.call)

    assert refused.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "node metadata of" in (refused.details() or "")
    assert "limit of 65536 bytes" in (refused.details() or "")


async def test_a_long_node_id_is_cut_short_in_the_logs(
    xds: XdsHarness, caplog: pytest.LogCaptureFixture
) -> None:
    long_id = "sidecar~" + "z" * 1000
    client = xds.sotw(node(long_id))
    with caplog.at_level(logging.INFO):
        client.request(CLUSTER)
        response = await client.response()
        client.nack(response, "rejected: " + "e" * 10_000)
        await wait_until(lambda: any("rejected" in r.getMessage() for r in caplog.records))

    assert [r for r in caplog.records if "stream from" in r.getMessage()]
    for record in caplog.records:
        assert long_id not in record.getMessage()
        assert len(record.getMessage()) < LOGGED_CHARS + 2_300
    await client.close()


async def test_a_request_over_4_mb_is_refused(xds: XdsHarness) -> None:
    client = xds.sotw(node("huge"))
    client.request(CLUSTER)
    await client.response()
    client.request(ENDPOINT, [f"cluster-{i:010d}-" + "n" * 80 for i in range(50_000)])

    refused = await refusal(client.call)

    assert refused.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "larger than max" in (refused.details() or "")


async def test_a_stream_past_the_cap_on_names_is_refused() -> None:
    async for running in harness(StreamLimits(max_names=10)):
        sotw = running.sotw(node("sotw"))
        sotw.request(ENDPOINT, [f"c{i}" for i in range(11)])
        refused = await refusal(sotw.call)
        assert refused.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "more than 10 resource names" in (refused.details() or "")

        # Delta subscriptions add up over requests.
        delta: DeltaClient = running.delta(node("delta"))
        delta.request(ENDPOINT, [f"c{i}" for i in range(6)])
        delta.request(ENDPOINT, [f"d{i}" for i in range(6)])
        refused = await refusal(delta.call)
        assert refused.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "more than 10 resource names" in (refused.details() or "")


async def test_a_stream_past_the_cap_on_types_is_refused() -> None:
    async for running in harness(StreamLimits(max_types=3)):
        client = running.sotw(node("many-types"))
        for i in range(4):
            client.request(f"type.googleapis.com/example.Unknown{i}")

        for _ in range(3):  # the first three are answered
            await client.response()
        refused = await refusal(client.call)

        assert refused.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "more than 3 resource types" in (refused.details() or "")


@pytest.mark.parametrize("protocol", ["sotw", "delta"])
async def test_unknown_types_are_answered_without_looking_at_every_other_type_again(
    protocol: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    looked_at = 0
    of_type = Snapshot.of_type

    def counting(snapshot: Snapshot, type_url: str) -> object:
        nonlocal looked_at
        looked_at += 1
        return of_type(snapshot, type_url)

    monkeypatch.setattr(Snapshot, "of_type", counting)
    unknown = 1_000
    async for running in harness(StreamLimits(max_types=unknown + 10)):
        client: SotwClient | DeltaClient = (
            running.sotw(node("curious")) if protocol == "sotw" else running.delta(node("curious"))
        )
        for i in range(unknown):
            client.request(f"type.googleapis.com/example.Unknown{i}")

        answered = {(await client.response()).type_url for _ in range(unknown)}

        assert len(answered) == unknown
        # One look per request (a pass over every type per request would be 500,000).
        assert looked_at <= 2 * unknown
        await client.close()


def test_a_node_within_the_caps_is_accepted() -> None:
    metadata = Struct()
    metadata.update({"ROLE": "sidecar", "LABELS": "l" * 60_000})

    check_node(Node(id="i" * 1024, metadata=metadata), StreamLimits())  # raises nothing
