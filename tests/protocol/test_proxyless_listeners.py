"""Proxyless gRPC clients get api listeners for the targets they subscribe to, built on demand.

A gRPC client asks for the listener of each target it dials (``xds:///name``) by exact name; the
plane builds listeners for those names only, and other streams of the group see no change.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

import grpc
import pytest
from envoy.config.listener.v3.listener_pb2 import Listener
from envoy.service.discovery.v3.discovery_pb2 import DeltaDiscoveryResponse, DiscoveryResponse

from tests.protocol.conftest import wait_until
from tests.protocol.xds_client import DeltaClient, SotwClient, node
from tests.unit.objects import destination, http_route, versioned_service, virtual_service
from xds_server.app import ControlPlane
from xds_server.xds.cache import CLUSTER, ENDPOINT, LISTENER, ROUTE
from xds_server.xds.grpc_server import ServerOptions, start_xds_server

SOURCE = "test"
GROUP = "proxyless"
REVIEWS = "reviews.default.svc.cluster.local:80"
RATINGS = "ratings.default.svc.cluster.local:80"


def mesh() -> list[dict[str, object]]:
    route = http_route(
        destination("reviews", "v1", weight=90), destination("reviews", "v2", weight=10)
    )
    return [
        *versioned_service("reviews"),
        *versioned_service("ratings", base_ip="10.0.1"),
        virtual_service("reviews", ["reviews"], [route]),
    ]


class Plane:
    """A control plane serving xDS in-process, synced with a two-service mesh."""

    def __init__(self, plane: ControlPlane, channel: grpc.aio.Channel) -> None:
        self.plane = plane
        self.channel = channel

    def sotw(self, node_id: str) -> SotwClient:
        return SotwClient(self.channel, node(node_id, ROLE="proxyless"))

    def delta(self, node_id: str) -> DeltaClient:
        return DeltaClient(self.channel, node(node_id, ROLE="proxyless"))

    def listeners_held(self) -> set[str]:
        """The api listeners the proxyless snapshot holds."""
        snapshot = self.plane.cache.snapshot(GROUP)
        return set(snapshot.of_type(LISTENER).by_name) if snapshot is not None else set()


async def running(offload_objects: int, synced: bool = True) -> AsyncIterator[Plane]:
    plane = ControlPlane(quiet=0.01, max_delay=0.05, offload_objects=offload_objects)
    server, port = await start_xds_server(
        plane.cache, plane.clients_registry, "127.0.0.1:0", ServerOptions()
    )
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    plane.store.replace_all(SOURCE, mesh())
    if synced:
        plane.store.mark_synced(SOURCE)
    try:
        yield Plane(plane, channel)
    finally:
        await channel.close(grace=None)
        await server.stop(grace=None)


@pytest.fixture(params=["on the loop", "in the worker"])
async def mesh_plane(request: pytest.FixtureRequest) -> AsyncIterator[Plane]:
    """A small mesh built on the loop, or as a large one is, in the worker thread."""
    async for plane in running(offload_objects=1 if request.param == "in the worker" else 5_000):
        await wait_until(plane.plane.is_ready)
        yield plane


def listener_names(response: DiscoveryResponse | DeltaDiscoveryResponse) -> list[str]:
    found = []
    for packed in response.resources:
        resource = packed.resource if isinstance(response, DeltaDiscoveryResponse) else packed
        listener = Listener()
        assert resource.Unpack(listener)
        found.append(listener.name)
    return found


async def listeners_sent(client: SotwClient, names: Sequence[str]) -> DiscoveryResponse:
    """Subscribe ``client`` to clusters and to the listeners ``names``; the LDS response."""
    client.request(CLUSTER)
    client.ack(await client.response())
    client.request(LISTENER, names)
    response = await client.response()
    assert response.type_url == LISTENER
    return response


async def test_a_proxyless_stream_gets_exactly_the_listener_it_asks_for(mesh_plane: Plane) -> None:
    client = mesh_plane.sotw("app-1")

    response = await listeners_sent(client, [REVIEWS])

    assert listener_names(response) == [REVIEWS]
    assert mesh_plane.listeners_held() == {REVIEWS}
    await client.close()


async def test_a_second_stream_gets_its_listener_and_the_first_is_sent_nothing(
    mesh_plane: Plane,
) -> None:
    first = mesh_plane.sotw("app-1")
    first.ack(await listeners_sent(first, [REVIEWS]))
    first.request(ROUTE, [REVIEWS])  # its listener's route configuration
    first.ack(await first.response())

    second = mesh_plane.sotw("app-2")
    response = await listeners_sent(second, [RATINGS])

    assert listener_names(response) == [RATINGS]
    assert mesh_plane.listeners_held() == {REVIEWS, RATINGS}
    # the first stream's next response is the one its next request asks for: nothing came before
    first.request(ENDPOINT, ["outbound|80||reviews.default.svc.cluster.local"])
    assert (await first.response()).type_url == ENDPOINT
    await first.close()
    await second.close()


async def test_a_name_that_is_no_target_gets_no_listener(mesh_plane: Plane) -> None:
    client = mesh_plane.sotw("app-1")

    response = await listeners_sent(client, [REVIEWS, "nothing.default.svc.cluster.local:80"])

    assert listener_names(response) == [REVIEWS]
    assert mesh_plane.listeners_held() == {REVIEWS}
    await client.close()


async def test_a_change_of_the_mesh_rebuilds_the_listeners_asked_for_and_no_others(
    mesh_plane: Plane,
) -> None:
    client = mesh_plane.sotw("app-1")
    response = await listeners_sent(client, [REVIEWS, "ratings:80", "stars.example:80"])
    assert listener_names(response) == ["ratings:80", REVIEWS]
    client.ack(response)

    # ratings gets hosts of its own: one the client asked for, one nobody did
    route = http_route(destination("ratings", "v1"))
    mesh_plane.plane.store.upsert(
        SOURCE, virtual_service("ratings", ["ratings", "stars.example", "moon.example"], [route])
    )
    response = await client.response()

    assert listener_names(response) == ["ratings:80", REVIEWS, "stars.example:80"]
    assert mesh_plane.listeners_held() == {REVIEWS, "ratings:80", "stars.example:80"}
    await client.close()


async def test_a_delta_stream_gets_the_listeners_it_subscribes_to(mesh_plane: Plane) -> None:
    client = mesh_plane.delta("app-1")
    client.request(LISTENER, [REVIEWS])
    response = await client.response()
    assert listener_names(response) == [REVIEWS]
    client.ack(response)

    client.request(LISTENER, [RATINGS])
    response = await client.response()

    assert listener_names(response) == [RATINGS]
    assert list(response.removed_resources) == []
    assert mesh_plane.listeners_held() == {REVIEWS, RATINGS}
    await client.close()


async def test_names_a_stream_lets_go_of_are_released_and_kept_only_within_the_limit(
    mesh_plane: Plane,
) -> None:
    cache = mesh_plane.plane.cache
    cache.RELEASED_NAMES_KEPT = 0  # keep no released name, to see each release
    sotw, delta = mesh_plane.sotw("app-1"), mesh_plane.delta("app-2")
    sotw.ack(await listeners_sent(sotw, [REVIEWS]))
    delta.request(LISTENER, [RATINGS])
    delta.ack(await delta.response())
    assert cache.listener_names(GROUP) == {REVIEWS, RATINGS}

    delta.request(LISTENER, unsubscribe=[RATINGS])
    await wait_until(lambda: cache.listener_names(GROUP) == {REVIEWS})
    await sotw.close()  # a stream that ends lets go of every name it held
    await wait_until(lambda: cache.listener_names(GROUP) == set())
    await delta.close()


@pytest.fixture
async def unsynced_plane() -> AsyncIterator[Plane]:
    """A plane whose source has not synced yet: it has translated nothing."""
    async for plane in running(offload_objects=5_000, synced=False):
        yield plane


async def test_listeners_asked_for_before_the_first_translation_are_in_it(
    unsynced_plane: Plane,
) -> None:
    plane = unsynced_plane.plane
    client = unsynced_plane.sotw("app-1")
    client.request(LISTENER, [REVIEWS])
    await wait_until(lambda: REVIEWS in plane.cache.listener_names(GROUP))
    assert not plane.is_ready()

    plane.store.mark_synced(SOURCE)
    response = await client.response()

    assert listener_names(response) == [REVIEWS]
    await client.close()
