"""An ExternalName Service end to end: `splitplane serve` over a folder, a real Envoy sidecar.

The Service's ``externalName`` is ``localhost`` and a loopback backend listens on the Service's
port, so Envoy's DNS cluster resolves the name and reaches it. A VirtualService then splits an
in-cluster service's traffic 50/50 between its own pod and the ExternalName Service.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.test_serve_envoy import (
    FolderMesh,
    sidecar_bootstrap,
    splitplane_serve,
    wait_for,
    within_tolerance,
)
from tests.support.backends import count_backends, free_port, http_backend
from tests.unit.objects import destination, http_route, virtual_service
from xds_server.cli.local_envoy import running_envoy

pytestmark = pytest.mark.envoy


def external_service(port: int) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "reviews-external", "namespace": "default"},
        "spec": {
            "type": "ExternalName",
            "externalName": "localhost",
            "ports": [{"name": "http", "port": port}],
        },
    }


def in_cluster_service(port: int) -> list[dict[str, Any]]:
    """Service `reviews` on port 80 with one ready endpoint: the loopback backend on ``port``."""
    return [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "reviews", "namespace": "default"},
            "spec": {
                "selector": {"app": "reviews"},
                "ports": [{"name": "http", "port": 80, "targetPort": port}],
            },
        },
        {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": "reviews-abc",
                "namespace": "default",
                "labels": {"kubernetes.io/service-name": "reviews"},
            },
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
            "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": True}}],
        },
    ]


def split(in_cluster: int, external: int) -> dict[str, Any]:
    route = http_route(
        destination("reviews", weight=in_cluster),
        destination("reviews-external", weight=external),
    )
    return virtual_service("reviews", ["reviews"], [route])


def answered_by(port: int, host: str, backend: str) -> Callable[[], bool]:
    return lambda: count_backends(port, 5, host=host)[backend] == 5


def test_an_external_name_service_is_reached_through_the_sidecar(tmp_path: Path) -> None:
    mesh_dir = tmp_path / "mesh"
    mesh_dir.mkdir()
    mesh = FolderMesh(mesh_dir)
    with http_backend("external") as external, http_backend("in-cluster") as pod:
        mesh.put(external_service(external.port))
        for obj in in_cluster_service(pod.port):
            mesh.put(obj)
        with splitplane_serve(mesh, tmp_path) as server:
            outbound = free_port()
            with running_envoy(sidecar_bootstrap(server.xds_port, outbound), tmp_path / "envoy"):
                # the Service's own name (and its aliases) reach the backend behind `localhost`
                for host in ("reviews-external", "reviews-external.default.svc.cluster.local"):
                    wait_for(answered_by(outbound, host, "external"), f"{host} routed")
                    assert count_backends(outbound, 50, host=host) == Counter(external=50)

                # migrating out of the cluster: half of `reviews` goes to the external name
                mesh.put(split(50, 50))
                wait_for(
                    lambda: count_backends(outbound, 40, host="reviews")["external"] > 0,
                    "the 50/50 split to land",
                )
                counts = count_backends(outbound, 400, host="reviews")
                assert counts["in-cluster"] + counts["external"] == 400, counts
                assert within_tolerance(counts["external"], 400, 0.5), counts
