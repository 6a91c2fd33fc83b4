"""Proxyless gRPC clients on `splitplane serve`: the translators' own api listeners, routes and
endpoints, as a strict real client (grpcio's xDS resolver) reads them.

gRPC subscribes to exactly the listener named by its target and drops localities without a
weight, so this checks what Envoy alone would not: the api listener names and the locality
weights the builders write.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.test_proxyless_grpc import ProxylessClient, grpc_backend
from tests.e2e.test_serve_envoy import FolderMesh, splitplane_serve, virtual_service
from xds_server.cli.bootstrap import render_grpc_bootstrap

pytestmark = pytest.mark.envoy

TIMEOUT_S = 30.0


def grpc_mesh(backends: dict[str, tuple[str, int]]) -> list[dict[str, Any]]:
    """Service `reviews` (one gRPC port) with a pod and an EndpointSlice per version."""
    objects: list[dict[str, Any]] = [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "reviews", "namespace": "default"},
            "spec": {"ports": [{"name": "grpc", "port": 80, "targetPort": "grpc"}]},
        },
        {
            "apiVersion": "networking.istio.io/v1",
            "kind": "DestinationRule",
            "metadata": {"name": "reviews", "namespace": "default"},
            "spec": {
                "host": "reviews",
                "subsets": [{"name": v, "labels": {"version": v}} for v in sorted(backends)],
            },
        },
    ]
    for version, (address, port) in sorted(backends.items()):
        objects += [
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": f"reviews-{version}",
                    "namespace": "default",
                    "labels": {"app": "reviews", "version": version},
                },
                "status": {
                    "phase": "Running",
                    "podIP": address,
                    "conditions": [{"type": "Ready", "status": "True"}],
                },
            },
            {
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSlice",
                "metadata": {
                    "name": f"reviews-{version}",
                    "namespace": "default",
                    "labels": {"kubernetes.io/service-name": "reviews"},
                },
                "addressType": "IPv4",
                "ports": [{"name": "grpc", "port": port}],
                "endpoints": [
                    {
                        "addresses": [address],
                        "zone": f"zone-{version}",
                        "targetRef": {"kind": "Pod", "name": f"reviews-{version}"},
                    }
                ],
            },
        ]
    return objects


def mesh_folder(tmp_path: Path) -> FolderMesh:
    mesh_dir = tmp_path / "mesh"
    mesh_dir.mkdir()
    return FolderMesh(mesh_dir)


@contextlib.contextmanager
def client_of_serve(mesh: FolderMesh, tmp_path: Path, target: str) -> Iterator[ProxylessClient]:
    """`splitplane serve` on ``mesh`` and a gRPC client dialing ``target`` through it."""
    with splitplane_serve(mesh, tmp_path) as server:
        bootstrap = tmp_path / "grpc-bootstrap.json"
        bootstrap.write_text(
            render_grpc_bootstrap("grpc-client", "default", f"127.0.0.1:{server.xds_port}")
        )
        client = ProxylessClient(bootstrap, target)
        try:
            yield client
        finally:
            client.stop()


@pytest.mark.parametrize(
    "target",
    ["xds:///reviews.default.svc.cluster.local:80", "xds:///reviews:80"],
    ids=["fqdn", "short-name"],
)
async def test_grpc_client_splits_80_20_and_follows_a_change(tmp_path: Path, target: str) -> None:
    mesh = mesh_folder(tmp_path)
    with grpc_backend("v1") as v1, grpc_backend("v2") as v2:
        for obj in grpc_mesh({"v1": v1, "v2": v2}):
            mesh.put(obj)
        mesh.put(virtual_service(80, 20))
        with client_of_serve(mesh, tmp_path, target) as client:
            split = await client.calls(1000)
            assert split["v1"] + split["v2"] == 1000, split
            # 20 % of 1000: the standard deviation is 12.6 calls; allow about 5 of them.
            assert 140 <= split["v2"] <= 260, split

            mesh.put(virtual_service(0, 100))
            async with asyncio.timeout(TIMEOUT_S):
                while await client.calls(50) != Counter({"v2": 50}):
                    pass
            assert await client.calls(200) == Counter({"v2": 200})


async def test_grpc_client_routes_by_a_table_whose_route_has_a_cors_policy(tmp_path: Path) -> None:
    """The CORS policy is an optional filter config: gRPC, which has no CORS filter, ignores it
    instead of rejecting the route table."""
    mesh = mesh_folder(tmp_path)
    with grpc_backend("v1") as v1, grpc_backend("v2") as v2:
        for obj in grpc_mesh({"v1": v1, "v2": v2}):
            mesh.put(obj)
        routed = virtual_service(0, 100)
        routed["spec"]["http"][0]["corsPolicy"] = {"allowOrigins": [{"exact": "https://a.example"}]}
        mesh.put(routed)
        target = "xds:///reviews.default.svc.cluster.local:80"
        with client_of_serve(mesh, tmp_path, target) as client:
            assert await client.calls(50) == Counter({"v2": 50})


async def test_grpc_client_reaches_an_external_name_service_over_logical_dns(
    tmp_path: Path,
) -> None:
    """gRPC resolves the ExternalName Service's `localhost` itself (a LOGICAL_DNS cluster)."""
    mesh = mesh_folder(tmp_path)
    with grpc_backend("external") as (_, port):
        mesh.put(
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": "ledger", "namespace": "default"},
                "spec": {
                    "type": "ExternalName",
                    "externalName": "localhost",
                    "ports": [{"name": "grpc", "port": port}],
                },
            }
        )
        target = f"xds:///ledger.default.svc.cluster.local:{port}"
        with client_of_serve(mesh, tmp_path, target) as client:
            assert await client.calls(20) == Counter({"external": 20})
