"""A client receives only what is exported to its namespace (``exportTo``), over the wire.

The plane serves xDS in-process; sidecars and proxyless clients in different namespaces connect
with a real grpcio stream and read what they are sent, byte for byte.
"""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from envoy.config.cluster.v3.cluster_pb2 import Cluster
from envoy.config.route.v3.route_pb2 import RouteConfiguration
from envoy.service.discovery.v3.discovery_pb2 import DeltaDiscoveryResponse, DiscoveryResponse

from tests.protocol.conftest import wait_until
from tests.protocol.xds_client import DeltaClient, SotwClient, node
from tests.unit.objects import (
    destination,
    http_route,
    service,
    versioned_service,
    virtual_service,
)
from xds_server.app import ControlPlane
from xds_server.xds.cache import CLUSTER, ENDPOINT, LISTENER, ROUTE
from xds_server.xds.grpc_server import ServerOptions, start_xds_server

SOURCE = "test"
REVIEWS = "reviews.default.svc.cluster.local"
ROUTES = f"15001/{REVIEWS}"  # the sidecar's route configuration of the reviews service
SECRET = "team-shop-only-token"


def shop_canary(export_to: list[str]) -> dict[str, Any]:
    """The shop team's VirtualService for reviews: a header match naming a secret value sends
    requests to v2, the rest to v1."""
    return virtual_service(
        "reviews-canary",
        [REVIEWS],
        [
            http_route(
                destination(REVIEWS, "v2"), match=[{"headers": {"x-token": {"exact": SECRET}}}]
            ),
            http_route(destination(REVIEWS, "v1")),
        ],
        namespace="shop",
        exportTo=export_to,
    )


def private_service() -> dict[str, Any]:
    internal = service("ledger", "shop")
    internal["metadata"]["annotations"] = {"networking.istio.io/exportTo": "."}
    return internal


def mesh(export_to: list[str]) -> list[dict[str, Any]]:
    return [*versioned_service("reviews"), shop_canary(export_to), private_service()]


class Plane:
    def __init__(self, plane: ControlPlane, channel: grpc.aio.Channel) -> None:
        self.plane, self.channel = plane, channel

    def apply(self, objects: list[dict[str, Any]]) -> None:
        self.plane.store.replace_all(SOURCE, copy.deepcopy(objects))


@pytest.fixture
async def plane() -> AsyncIterator[Plane]:
    control = ControlPlane(quiet=0.01, max_delay=0.05)
    server, port = await start_xds_server(
        control.cache, control.clients_registry, "127.0.0.1:0", ServerOptions()
    )
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    control.store.replace_all(SOURCE, mesh(["."]))
    control.store.mark_synced(SOURCE)
    await wait_until(control.is_ready)
    try:
        yield Plane(control, channel)
    finally:
        await channel.close(grace=None)
        await server.stop(grace=None)


async def everything_sent(client: SotwClient) -> dict[str, DiscoveryResponse]:
    """Subscribe like a sidecar (to the reviews service's route configuration) and collect the
    first response of each type."""
    got: dict[str, DiscoveryResponse] = {}
    for type_url, names in ((CLUSTER, ()), (ENDPOINT, ()), (LISTENER, ()), (ROUTE, (ROUTES,))):
        client.request(type_url, names)
        response = await client.response()
        assert response.type_url == type_url
        got[type_url] = response
        client.ack(response)
    return got


def table(response: DiscoveryResponse | DeltaDiscoveryResponse) -> RouteConfiguration:
    (packed,) = response.resources
    config = RouteConfiguration()
    resource = packed.resource if isinstance(response, DeltaDiscoveryResponse) else packed
    assert resource.Unpack(config)
    return config


def reviews_clusters(config: RouteConfiguration) -> list[str]:
    """The clusters of each route of the reviews virtual host, in order."""
    (vhost,) = [v for v in config.virtual_hosts if v.name == f"{REVIEWS}:80"]
    return [route.route.cluster for route in vhost.routes]


def sent_bytes(responses: dict[str, DiscoveryResponse]) -> bytes:
    return b"".join(response.SerializeToString() for response in responses.values())


def cluster_names(response: DiscoveryResponse) -> set[str]:
    found = set()
    for packed in response.resources:
        cluster = Cluster()
        assert packed.Unpack(cluster)
        found.add(cluster.name)
    return found


async def test_a_sidecar_in_another_namespace_does_not_receive_a_private_virtual_service(
    plane: Plane,
) -> None:
    web = SotwClient(plane.channel, node("web-1", NAMESPACE="web"))
    got = await everything_sent(web)
    assert reviews_clusters(table(got[ROUTE])) == [f"outbound|80||{REVIEWS}"]  # default route
    assert SECRET.encode() not in sent_bytes(got)
    assert not any("ledger" in name for name in cluster_names(got[CLUSTER]))
    await web.close()


async def test_a_sidecar_in_the_namespace_it_is_exported_to_receives_it(plane: Plane) -> None:
    shop = SotwClient(plane.channel, node("shop-1", NAMESPACE="shop"))
    got = await everything_sent(shop)
    assert reviews_clusters(table(got[ROUTE])) == [
        f"outbound|80|v2|{REVIEWS}",
        f"outbound|80|v1|{REVIEWS}",
    ]
    assert SECRET.encode() in got[ROUTE].SerializeToString()
    assert "outbound|80||ledger.shop.svc.cluster.local" in cluster_names(got[CLUSTER])
    await shop.close()


async def test_a_node_claiming_no_namespace_gets_only_what_is_exported_everywhere(
    plane: Plane,
) -> None:
    anonymous = SotwClient(plane.channel, node("who-1"))
    got = await everything_sent(anonymous)
    assert SECRET.encode() not in sent_bytes(got)
    await anonymous.close()


async def test_exporting_to_another_namespace_moves_the_routes_there_at_once(
    plane: Plane,
) -> None:
    web = SotwClient(plane.channel, node("web-1", NAMESPACE="web"))
    shop = SotwClient(plane.channel, node("shop-1", NAMESPACE="shop"))
    await everything_sent(web)
    await everything_sent(shop)

    plane.apply(mesh(["web"]))

    web_routes, shop_routes = await web.response(), await shop.response()
    assert (web_routes.type_url, shop_routes.type_url) == (ROUTE, ROUTE)
    assert reviews_clusters(table(web_routes))[0] == f"outbound|80|v2|{REVIEWS}"
    assert reviews_clusters(table(shop_routes)) == [f"outbound|80||{REVIEWS}"]
    await web.close()
    await shop.close()


async def test_sidecars_of_namespaces_that_see_the_same_share_one_snapshot(plane: Plane) -> None:
    clients = [
        SotwClient(plane.channel, node(f"{ns}-1", NAMESPACE=ns)) for ns in ("web", "books", "shop")
    ]
    for client in clients:
        await everything_sent(client)
    cache = plane.plane.cache
    web, books, shop = (cache.snapshot(f"sidecar:15001/{ns}") for ns in ("web", "books", "shop"))
    assert web is not None and books is not None and shop is not None
    assert all(web.types[url] is books.types[url] for url in web.types)
    assert web.types[ROUTE] is not shop.types[ROUTE]
    for client in clients:
        await client.close()


async def test_a_delta_stream_is_scoped_the_same(plane: Plane) -> None:
    web = DeltaClient(plane.channel, node("web-1", NAMESPACE="web"))
    web.request(ROUTE, [ROUTES])
    response = await web.response()
    assert reviews_clusters(table(response)) == [f"outbound|80||{REVIEWS}"]
    assert SECRET.encode() not in response.SerializeToString()
    await web.close()


@pytest.mark.parametrize(("namespace", "secret_sent"), [("shop", True), ("web", False)])
async def test_a_proxyless_client_is_scoped_by_its_namespace(
    plane: Plane, namespace: str, secret_sent: bool
) -> None:
    client = SotwClient(plane.channel, node("app-1", ROLE="proxyless", NAMESPACE=namespace))
    client.request(LISTENER, [f"{REVIEWS}:80"])
    client.ack(await client.response())
    client.request(ROUTE, [f"{REVIEWS}:80"])  # the listener's route configuration
    response = await client.response()
    assert response.type_url == ROUTE
    assert (SECRET.encode() in response.SerializeToString()) is secret_sent
    await client.close()
