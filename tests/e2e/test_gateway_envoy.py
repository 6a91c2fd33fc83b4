"""A real Envoy in the gateway role: Ingress host/path routing, an edge canary, a TCP listener."""

from __future__ import annotations

import asyncio
import socket
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
import yaml
from envoy.config.core.v3.base_pb2 import Node
from google.protobuf import struct_pb2

from tests.protocol.conftest import XdsHarness, running_harness, wait_until
from tests.support.backends import (
    Backend,
    count_backends,
    free_port,
    http_backend,
    tcp_echo_backend,
)
from tests.unit.objects import (
    Obj,
    destination,
    destination_rule,
    endpoint_slice,
    http_route,
    pod,
    service,
    service_port,
    slice_endpoint,
    virtual_service,
)
from translators.build import build_group
from translators.model import NodeGroup, Role
from translators.translate import translate
from xds_server.cli.bootstrap import render_bootstrap
from xds_server.cli.local_envoy import running_envoy
from xds_server.xds.cache import snapshot_from_messages
from xds_server.xds.grpc_server import ServerOptions
from xds_server.xds.nodes import group_of

pytestmark = pytest.mark.envoy

NODE_ID = "gateway-under-test"
SYNC_TIMEOUT_S = 30.0


def backed_service(
    name: str, backend: Backend, port: int = 80, port_name: str = "http", **spec: Any
) -> list[Obj]:
    """A Service whose one endpoint is ``backend`` (pod ``<name>-0``, labelled ``app: name``)."""
    return [
        service(name, ports=[service_port(port, port_name, backend.port)], **spec),
        pod(f"{name}-0", "127.0.0.1", {"app": name}),
        endpoint_slice(
            name,
            name,
            [slice_endpoint("127.0.0.1", ready=True, pod=f"{name}-0")],
            ports={port_name: backend.port},
        ),
    ]


def canary_objects(v1: Backend, v2: Backend) -> list[Obj]:
    """``reviews`` with a v1 and a v2 pod, and a mesh VirtualService sending 20 % to v2."""
    objects: list[Obj] = [service("reviews", ports=[service_port(80, "http", "http")])]
    for version, backend in (("v1", v1), ("v2", v2)):
        objects += [
            pod(f"reviews-{version}", "127.0.0.1", {"app": "reviews", "version": version}),
            endpoint_slice(
                f"reviews-{version}",
                "reviews",
                [slice_endpoint("127.0.0.1", ready=True, pod=f"reviews-{version}")],
                ports={"http": backend.port},
            ),
        ]
    objects.append(
        destination_rule("reviews", "reviews", {"v1": {"version": "v1"}, "v2": {"version": "v2"}})
    )
    objects.append(
        virtual_service(
            "reviews",
            ["reviews"],
            [
                http_route(
                    destination("reviews", "v1", weight=80), destination("reviews", "v2", weight=20)
                )
            ],
        )
    )
    return objects


def ingress(*rules: Obj) -> Obj:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {"name": "edge", "namespace": "default"},
        "spec": {"ingressClassName": "splitplane", "rules": list(rules)},
    }


def ingress_rule(host: str, *paths: tuple[str, str]) -> Obj:
    return {
        "host": host,
        "http": {
            "paths": [
                {
                    "path": path,
                    "pathType": "Prefix",
                    "backend": {"service": {"name": to, "port": {"number": 80}}},
                }
                for path, to in paths
            ]
        },
    }


def gateway_node(http_port: int) -> Node:
    metadata = struct_pb2.Struct()
    metadata.update({"ROLE": "gateway", "HTTP_PORT": str(http_port), "NAMESPACE": "default"})
    return Node(id=NODE_ID, metadata=metadata)


def publish(xds: XdsHarness, objects: list[Obj], http_port: int) -> None:
    """Translate ``objects`` and publish the gateway group the test's Envoy belongs to."""
    translation = translate(objects)
    assert not translation.has_errors, translation.diagnostics
    resources = build_group(translation.model, NodeGroup(Role.GATEWAY, http_port))
    key = group_of(gateway_node(http_port)).key
    assert xds.cache.set_snapshot(key, snapshot_from_messages(resources))


def bootstrap(xds_port: int, http_port: int) -> dict[str, Any]:
    text = render_bootstrap(
        NODE_ID, "gateway", "default", f"127.0.0.1:{xds_port}", 0, http_port=http_port
    )
    loaded: dict[str, Any] = yaml.safe_load(text)
    return loaded


def echo_through(port: int, payload: bytes) -> bytes:
    """Send ``payload`` over a fresh TCP connection to ``port`` and read it back."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(payload)
        received = b""
        while len(received) < len(payload):
            chunk = connection.recv(65536)
            if not chunk:
                break
            received += chunk
        return received


@pytest.fixture
def backends() -> Iterator[dict[str, Backend]]:
    with ExitStack() as stack:
        found = {n: stack.enter_context(http_backend(n)) for n in ("web", "api", "v1", "v2")}
        found["echo"] = stack.enter_context(tcp_echo_backend("echo"))
        yield found


async def routed(port: int, host: str, path: str, requests: int = 1) -> Counter[str]:
    return await asyncio.to_thread(count_backends, port, requests, host=host, path=path)


async def test_ingress_rules_a_canary_at_the_edge_and_a_load_balancer_port_through_envoy(
    backends: dict[str, Backend], tmp_path: Path
) -> None:
    http_port, tcp_port = free_port(), free_port()
    objects = [
        *backed_service("web", backends["web"]),
        *backed_service("api", backends["api"]),
        *canary_objects(backends["v1"], backends["v2"]),
        # The LoadBalancer Service listens on its own port: a free one.
        *backed_service("echo", backends["echo"], tcp_port, "tcp-echo", type="LoadBalancer"),
        ingress(
            ingress_rule("shop.example.com", ("/", "web"), ("/api", "api")),
            ingress_rule("reviews.example.com", ("/", "reviews")),
        ),
    ]

    async for xds in running_harness(ServerOptions()):
        publish(xds, objects, http_port)
        with running_envoy(bootstrap(xds.port, http_port), tmp_path, wait_ready=False) as envoy:
            await asyncio.to_thread(envoy.wait_ready)
            async with asyncio.timeout(SYNC_TIMEOUT_S):
                while await routed(http_port, "shop.example.com", "/") != Counter({"web": 1}):
                    await asyncio.sleep(0.05)

            # Host and path pick the backend; Prefix matches whole path elements.
            for host, path, expected in [
                ("shop.example.com", "/", "web"),
                ("shop.example.com", "/api", "api"),
                ("shop.example.com", "/api/orders", "api"),
                ("shop.example.com", "/apiary", "web"),
                (f"shop.example.com:{http_port}", "/api", "api"),
                ("unknown.example.com", "/", "status 404"),
            ]:
                assert await routed(http_port, host, path) == Counter({expected: 1}), (host, path)

            # The mesh VirtualService's 80/20 canary applies to edge traffic too.
            split = await routed(http_port, "reviews.example.com", "/", requests=1000)
            assert split["v1"] + split["v2"] == 1000, split
            # 20 % of 1000: the standard deviation is 12.6 requests; allow about 5 of them.
            assert 137 <= split["v2"] <= 263, split

            # Raw TCP through the LoadBalancer listener reaches the echo backend.
            await wait_until(lambda: _accepts(tcp_port), SYNC_TIMEOUT_S)
            payload = b"splitplane over tcp\n" * 100
            assert await asyncio.to_thread(echo_through, tcp_port, payload) == payload


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False
