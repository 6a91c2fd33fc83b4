"""A real Envoy never receives what it would reject, and one bad object holds nobody back.

Before the preflight check, one VirtualService with a rule Envoy rejects made it NACK the whole
route table of its port: no route change for any other service reached it. And when Envoy does
reject something, its text is cut at 4 KB before the reason; ``/debug/clients`` shows the
reason in full.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2

from tests.e2e.test_gateway_envoy import NODE_ID, bootstrap, canary_objects, gateway_node
from tests.protocol.conftest import XdsHarness, running_harness, wait_until
from tests.support.backends import Backend, count_backends, free_port, http_backend
from tests.unit.objects import destination, http_route, virtual_service
from translators.build import build_group
from translators.model import NodeGroup, Role
from translators.translate import Translation, translate
from xds_server.cli.local_envoy import running_envoy
from xds_server.debug.views import clients_json
from xds_server.xds.cache import ROUTE, snapshot_from_messages
from xds_server.xds.client_status import SyncState
from xds_server.xds.grpc_server import ServerOptions
from xds_server.xds.nodes import group_of

pytestmark = pytest.mark.envoy

HOST = "reviews.example.com"
BAD_HOST = "bad.example.com"
SYNC_TIMEOUT_S = 30.0


@pytest.fixture
def versions() -> Iterator[dict[str, Backend]]:
    with ExitStack() as stack:
        yield {n: stack.enter_context(http_backend(n)) for n in ("v1", "v2")}


def edge(name: str, host: str, subset: str, **rule: Any) -> dict[str, Any]:
    return virtual_service(
        name,
        [host],
        [http_route(destination("reviews", subset), **rule)],
        gateways=["splitplane-system/splitplane"],
    )


def publish(
    xds: XdsHarness, objects: list[dict[str, Any]], http_port: int, previous: Translation | None
) -> Translation:
    """Translate as serve does (with the previous translation) and publish the gateway group,
    whatever the diagnostics."""
    translation = translate(objects, previous=previous)
    resources = build_group(translation.model, NodeGroup(Role.GATEWAY, http_port))
    xds.cache.set_snapshot(group_of(gateway_node(http_port)).key, snapshot_from_messages(resources))
    return translation


def route_state(xds: XdsHarness) -> SyncState | None:
    for view in xds.registry.views():
        if view.node_id == NODE_ID:
            return view.type_status(ROUTE).state
    return None


def nacked(xds: XdsHarness) -> bool:
    return route_state(xds) is SyncState.NACKED


async def landed(port: int, host: str) -> Counter[str]:
    return await asyncio.to_thread(count_backends, port, 1, host=host)


async def test_a_virtual_service_envoy_would_reject_holds_back_no_other_route(
    versions: dict[str, Backend], tmp_path: Path
) -> None:
    http_port = free_port()
    base = canary_objects(versions["v1"], versions["v2"])
    # An unescaped % in a header value: Envoy's header formatter rejects it, and with it the
    # route table it is in.
    bad = edge("bad", BAD_HOST, "v2", headers={"request": {"set": {"x-share": "50%"}}})
    async for xds in running_harness(ServerOptions()):
        first = publish(xds, [*base, edge("reviews-edge", HOST, "v1"), bad], http_port, None)
        assert [(d.name, d.is_error) for d in first.diagnostics if d.is_error] == [("bad", True)]
        with running_envoy(bootstrap(xds.port, http_port), tmp_path, wait_ready=False) as envoy:
            await asyncio.to_thread(envoy.wait_ready)
            async with asyncio.timeout(SYNC_TIMEOUT_S):
                while await landed(http_port, HOST) != Counter({"v1": 1}):
                    await asyncio.sleep(0.05)
            # The flip of the good VirtualService reaches Envoy.
            publish(xds, [*base, edge("reviews-edge", HOST, "v2"), bad], http_port, first)
            async with asyncio.timeout(SYNC_TIMEOUT_S):
                while await landed(http_port, HOST) != Counter({"v2": 1}):
                    await asyncio.sleep(0.05)
            assert route_state(xds) is SyncState.SYNCED


async def test_a_rejection_envoy_cut_short_is_explained_in_full(tmp_path: Path) -> None:
    """A route table injected straight into the cache (as a bug could): Envoy's text is a cut
    dump of the table; the debug endpoint names the rule it broke."""
    http_port = free_port()
    async for xds in running_harness(ServerOptions()):
        key = group_of(gateway_node(http_port)).key
        resources = build_group(translate([]).model, NodeGroup(Role.GATEWAY, http_port))
        xds.cache.set_snapshot(key, snapshot_from_messages(resources))
        with running_envoy(bootstrap(xds.port, http_port), tmp_path, wait_ready=False) as envoy:
            await asyncio.to_thread(envoy.wait_ready)
            table = route_pb2.RouteConfiguration(name=str(http_port))
            for index in range(300):
                vhost = table.virtual_hosts.add(name=f"h{index}", domains=[f"h{index}.example"])
                vhost.routes.add(match=rc.RouteMatch(prefix="/"), route=rc.RouteAction(cluster="c"))
            table.virtual_hosts[299].routes[0].match.headers.add(name="", present_match=True)
            broken = {**resources, ROUTE: (table,)}
            xds.cache.set_snapshot(key, snapshot_from_messages(broken))
            await wait_until(partial(nacked, xds), SYNC_TIMEOUT_S)
            [client] = [c for c in clients_json(xds.registry.views())["clients"]]
            [routes] = [t for t in client["types"] if t["type"] == "routes"]
            assert routes["error_truncated_by_envoy"] is True, routes["error"][-200:]
            assert routes["error_reasons"] == [
                f"{http_port}: virtual_hosts[299].routes[0].match.headers[0].name:"
                " must be at least 1 characters"
            ]
