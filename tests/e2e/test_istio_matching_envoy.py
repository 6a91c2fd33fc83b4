"""A real Envoy routes Istio semantics as Istio's proxies do: headers that are missing, direct
responses, CORS preflights."""

from __future__ import annotations

import asyncio
import http.client
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack, asynccontextmanager
from pathlib import Path

import pytest

from tests.e2e.test_gateway_envoy import bootstrap, canary_objects, publish
from tests.protocol.conftest import running_harness
from tests.support.backends import Backend, count_backends, free_port, http_backend
from tests.unit.objects import Obj, destination, http_route, virtual_service
from xds_server.cli.local_envoy import running_envoy
from xds_server.xds.grpc_server import ServerOptions

pytestmark = pytest.mark.envoy

HOST = "reviews.example.com"
SYNC_TIMEOUT_S = 30.0


@pytest.fixture
def versions() -> Iterator[dict[str, Backend]]:
    with ExitStack() as stack:
        yield {n: stack.enter_context(http_backend(n)) for n in ("v1", "v2")}


def edge_routes(*rules: Obj) -> Obj:
    """A VirtualService for ``HOST`` on the load-balancer fleet, with ``rules``."""
    return virtual_service(
        "reviews-edge", [HOST], list(rules), gateways=["splitplane-system/splitplane"]
    )


async def landed(port: int, headers: dict[str, str], path: str = "/") -> Counter[str]:
    return await asyncio.to_thread(count_backends, port, 1, host=HOST, path=path, headers=headers)


@asynccontextmanager
async def edge_serving(
    versions: dict[str, Backend], tmp_path: Path, *rules: Obj
) -> AsyncIterator[int]:
    """A real Envoy of the load-balancer fleet routing ``HOST`` by ``rules``, once requests
    without headers reach v1 through it; yields its HTTP port."""
    http_port = free_port()
    objects = [*canary_objects(versions["v1"], versions["v2"]), edge_routes(*rules)]
    async for xds in running_harness(ServerOptions()):
        publish(xds, objects, http_port)
        with running_envoy(bootstrap(xds.port, http_port), tmp_path, wait_ready=False) as envoy:
            await asyncio.to_thread(envoy.wait_ready)
            async with asyncio.timeout(SYNC_TIMEOUT_S):
                while await landed(http_port, {}) != Counter({"v1": 1}):
                    await asyncio.sleep(0.05)
            yield http_port


def request(
    port: int, method: str, path: str, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """One request to ``HOST`` through the Envoy on ``port``: status, headers, body."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request(method, path, headers={"Host": HOST, **(headers or {})})
        response = connection.getresponse()
        body = response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, body
    finally:
        connection.close()


async def test_without_headers_and_present_regex_route_as_in_istio(
    versions: dict[str, Backend], tmp_path: Path
) -> None:
    rules = (
        http_route(
            destination("reviews", "v1"),
            match=[{"withoutHeaders": {"x-canary": {"exact": "true"}}}],
        ),
        http_route(destination("reviews", "v1"), match=[{"headers": {"x-debug": {"regex": "*"}}}]),
        http_route(destination("reviews", "v2")),
    )
    async with edge_serving(versions, tmp_path, *rules) as http_port:
        for headers, expected in [
            ({}, "v1"),  # no x-canary header at all: not "x-canary: true"
            ({"x-canary": "false"}, "v1"),
            ({"x-canary": "true"}, "v2"),
            ({"x-canary": "true", "x-debug": ""}, "v1"),  # regex "*": present
        ]:
            assert await landed(http_port, headers) == Counter({expected: 1}), headers


async def test_a_direct_response_is_answered_by_envoy_itself(
    versions: dict[str, Backend], tmp_path: Path
) -> None:
    maintenance = {
        "match": [{"uri": {"prefix": "/checkout"}}],
        "directResponse": {"status": 503, "body": {"string": "down for maintenance"}},
    }
    rules = (maintenance, http_route(destination("reviews", "v1")))
    async with edge_serving(versions, tmp_path, *rules) as http_port:
        status, _, body = await asyncio.to_thread(request, http_port, "GET", "/checkout/cart")

        assert (status, body) == (503, b"down for maintenance")
        assert await landed(http_port, {}, path="/cart") == Counter({"v1": 1})


async def test_a_cors_preflight_is_answered_for_allowed_origins_only(
    versions: dict[str, Backend], tmp_path: Path
) -> None:
    cors = {
        "allowOrigins": [{"exact": "https://shop.example"}],
        "allowMethods": ["GET", "POST"],
        "maxAge": "10m",
        "unmatchedPreflights": "IGNORE",
    }
    rules = (http_route(destination("reviews", "v1"), corsPolicy=cors),)
    async with edge_serving(versions, tmp_path, *rules) as http_port:
        allowed = await asyncio.to_thread(preflight, http_port, "https://shop.example")
        other = await asyncio.to_thread(preflight, http_port, "https://evil.example")

        assert allowed["access-control-allow-origin"] == "https://shop.example"
        assert allowed["access-control-allow-methods"] == "GET,POST"
        assert allowed["access-control-max-age"] == "600"
        assert "access-control-allow-origin" not in other


def preflight(port: int, origin: str) -> dict[str, str]:
    """The response headers of a browser's CORS preflight for a POST from ``origin``."""
    headers = {"Origin": origin, "Access-Control-Request-Method": "POST"}
    return request(port, "OPTIONS", "/", headers)[1]
