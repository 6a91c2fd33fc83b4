"""The shapes real clusters have, each through a real Envoy sidecar and a real gRPC client.

``reviews`` has two pods, on 127.0.0.2 and 127.0.0.3 (one port, one backend each), described
the ways Kubernetes clusters describe them: Pods without any EndpointSlice (endpoints from the
selector), EndpointSlices without zones (kind, minikube), with zones, with and without a zone
mixed, a headless Service, and a named target port. Through either client, every call lands on
one of the two pods and both pods get calls.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from envoy.config.core.v3.base_pb2 import Node
from google.protobuf import struct_pb2

from tests.e2e.test_proxyless_grpc import ProxylessClient, grpc_backend
from tests.protocol.conftest import XdsHarness, running_harness
from tests.support.backends import count_backends, free_port, http_backend
from tests.support.xds_bootstrap import grpc_bootstrap
from tests.unit.objects import Obj, endpoint_slice, pod, service, service_port, slice_endpoint
from translators.build import build_group
from translators.model import NodeGroup, Role
from translators.translate import translate
from xds_server.cli.bootstrap import render_bootstrap
from xds_server.cli.local_envoy import running_envoy
from xds_server.xds.cache import snapshot_from_messages
from xds_server.xds.grpc_server import ServerOptions
from xds_server.xds.nodes import group_of

pytestmark = pytest.mark.envoy

PODS = {"reviews-0": "127.0.0.2", "reviews-1": "127.0.0.3"}
SYNC_TIMEOUT_S = 30.0
SIDECAR_ID = "sidecar~127.0.0.1~client.default~default.svc.cluster.local"

# A shape: (port name, target port) → the Service and what Kubernetes made of it.
Shape = Callable[[str, int], list[Obj]]


def _pods(port_name: str = "", port: int = 0) -> list[Obj]:
    ports = {port_name: port} if port_name else None
    return [pod(name, ip, {"app": "reviews"}, container_ports=ports) for name, ip in PODS.items()]


def _slice(port_name: str, port: int, zones: dict[str, str | None]) -> Obj:
    endpoints = [
        slice_endpoint(ip, ready=True, pod=name, zone=zones[name]) for name, ip in PODS.items()
    ]
    return endpoint_slice("reviews-abcde", "reviews", endpoints, ports={port_name: port})


def pods_without_endpoint_slices(port_name: str, port: int) -> list[Obj]:
    return [service("reviews", ports=[service_port(80, port_name, port)]), *_pods()]


def slices_without_zones(port_name: str, port: int) -> list[Obj]:
    return [
        service("reviews", ports=[service_port(80, port_name, port)]),
        *_pods(),
        _slice(port_name, port, dict.fromkeys(PODS)),
    ]


def slices_with_zones(port_name: str, port: int) -> list[Obj]:
    return [
        service("reviews", ports=[service_port(80, port_name, port)]),
        *_pods(),
        _slice(port_name, port, {"reviews-0": "zone-a", "reviews-1": "zone-b"}),
    ]


def slices_with_and_without_zones(port_name: str, port: int) -> list[Obj]:
    return [
        service("reviews", ports=[service_port(80, port_name, port)]),
        *_pods(),
        _slice(port_name, port, {"reviews-0": "zone-a", "reviews-1": None}),
    ]


def headless_service(port_name: str, port: int) -> list[Obj]:
    return [
        service("reviews", ports=[service_port(80, port_name, port)], clusterIP="None"),
        *_pods(),
        _slice(port_name, port, dict.fromkeys(PODS)),
    ]


def named_target_port(port_name: str, port: int) -> list[Obj]:
    # The Service names the container port; each pod says which number it is.
    return [
        service("reviews", ports=[service_port(80, port_name, "app-port")]),
        *_pods("app-port", port),
    ]


SHAPES: dict[str, Shape] = {
    f.__name__.replace("_", "-"): f
    for f in (
        pods_without_endpoint_slices,
        slices_without_zones,
        slices_with_zones,
        slices_with_and_without_zones,
        headless_service,
        named_target_port,
    )
}


def publish(xds: XdsHarness, objects: list[Obj], group: NodeGroup, key: str) -> None:
    translation = translate(objects)
    assert not translation.has_errors, translation.diagnostics
    resources = build_group(translation.model, group)
    assert xds.cache.set_snapshot(key, snapshot_from_messages(resources))


def sidecar_key(port: int) -> str:
    metadata = struct_pb2.Struct()
    metadata.update({"ROLE": "sidecar", "OUTBOUND_PORT": str(port), "NAMESPACE": "default"})
    return group_of(Node(id=SIDECAR_ID, metadata=metadata)).key


@contextmanager
def on_both_pods(backend: Callable[..., Any]) -> Iterator[int]:
    """A backend named after each pod on the pod's address, all on one port; yields it."""
    for _ in range(5):  # the port was free on 127.0.0.1; it may be taken on .2 or .3
        port = free_port()
        with ExitStack() as stack:
            try:
                for name, ip in PODS.items():
                    stack.enter_context(backend(name, ip, port))
            except OSError:
                continue
            yield port
            return
    raise RuntimeError("no port free on every pod address")


@pytest.mark.parametrize("shape", sorted(SHAPES))
async def test_an_envoy_sidecar_reaches_both_pods(shape: str, tmp_path: Path) -> None:
    with on_both_pods(http_backend) as port:
        objects = SHAPES[shape]("http", port)
        outbound = free_port()
        async for xds in running_harness(ServerOptions()):
            publish(xds, objects, NodeGroup(Role.SIDECAR, outbound), sidecar_key(outbound))
            text = render_bootstrap(
                SIDECAR_ID, "sidecar", "default", f"127.0.0.1:{xds.port}", 0, outbound_port=outbound
            )
            bootstrap: dict[str, Any] = yaml.safe_load(text)
            with running_envoy(bootstrap, tmp_path, wait_ready=False) as envoy:
                await asyncio.to_thread(envoy.wait_ready)
                async with asyncio.timeout(SYNC_TIMEOUT_S):
                    while "status" in str(await asyncio.to_thread(landed, outbound, 1)):
                        await asyncio.sleep(0.05)
                split = await asyncio.to_thread(landed, outbound, 60)

    assert sum(split.values()) == 60, split
    assert set(split) == set(PODS), split


def landed(port: int, requests: int) -> Counter[str]:
    return count_backends(port, requests, host="reviews", connections=4)


@pytest.mark.parametrize("shape", sorted(SHAPES))
async def test_a_proxyless_grpc_client_reaches_both_pods(shape: str, tmp_path: Path) -> None:
    with on_both_pods(grpc_backend) as port:
        objects = SHAPES[shape]("grpc", port)
        async for xds in running_harness(ServerOptions()):
            publish(xds, objects, NodeGroup(Role.PROXYLESS), NodeGroup(Role.PROXYLESS).key)
            bootstrap_path = tmp_path / "grpc-bootstrap.json"
            bootstrap_path.write_text(json.dumps(grpc_bootstrap(xds.port, "grpc-client")))
            client = ProxylessClient(bootstrap_path, "xds:///reviews.default.svc.cluster.local:80")
            try:
                split = await client.calls(60)
            finally:
                client.stop()

    assert sum(split.values()) == 60, split
    assert set(split) == set(PODS), split
