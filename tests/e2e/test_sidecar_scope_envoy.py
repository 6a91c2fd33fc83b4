"""A real Envoy sidecar scoped by Istio's Sidecar receives, and routes to, only the hosts its
egress names.

`splitplane serve` watches a folder: reviews (namespace default, v1/v2) and ratings (namespace
books). A Sidecar in shop lets its sidecars see only reviews: the shop sidecar routes reviews and
has no route and no cluster for ratings (Envoy answers 404, no route). Editing the Sidecar to
``books/*`` swaps them.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.test_namespace_scoping_envoy import sidecar
from tests.e2e.test_serve_envoy import FolderMesh, mesh_objects, splitplane_serve, wait_for
from tests.support.backends import Backend, count_backends, free_port, http_backend
from xds_server.cli.local_envoy import RunningEnvoy, running_envoy

pytestmark = pytest.mark.envoy

RATINGS = "ratings.books.svc.cluster.local"
REVIEWS = "reviews.default.svc.cluster.local"


def ratings(backend: Backend) -> list[dict[str, Any]]:
    """Service ratings in namespace books, one ready endpoint: ``backend``."""
    return [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "ratings", "namespace": "books"},
            "spec": {
                "selector": {"app": "ratings"},
                "ports": [{"name": "http", "port": 80, "targetPort": "http"}],
            },
        },
        {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": "ratings-1",
                "namespace": "books",
                "labels": {"kubernetes.io/service-name": "ratings"},
            },
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": backend.port, "protocol": "TCP"}],
            "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": True}}],
        },
    ]


def scope(*hosts: str) -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1beta1",
        "kind": "Sidecar",
        "metadata": {"name": "default", "namespace": "shop"},
        "spec": {"egress": [{"hosts": list(hosts)}]},
    }


def clusters(envoy: RunningEnvoy) -> set[str]:
    """The names of the dynamic clusters Envoy holds."""
    dump = envoy.config_dump()
    return {
        entry["cluster"]["name"]
        for config in dump["configs"]
        if config["@type"].endswith("ClustersConfigDump")
        for entry in config.get("dynamic_active_clusters", [])
    }


def test_a_scoped_sidecar_routes_only_to_the_hosts_it_sees(tmp_path: Path) -> None:
    mesh = FolderMesh(tmp_path / "mesh")
    mesh.root.mkdir()
    with (
        http_backend("v1") as v1,
        http_backend("v2") as v2,
        http_backend("ratings") as backend,
    ):
        for obj in [*mesh_objects(v1, v2), *ratings(backend)]:
            mesh.put(obj)
        mesh.put(scope(f"default/{REVIEWS}"))
        with splitplane_serve(mesh, tmp_path) as server:
            shop, web = free_port(), free_port()
            with (
                running_envoy(sidecar("shop", server.xds_port, shop), tmp_path / "shop") as envoy,
                running_envoy(sidecar("web", server.xds_port, web), tmp_path / "web"),
            ):
                wait_for(
                    lambda: (
                        sum(count_backends(shop, 10, host="reviews").values()) == 10
                        and count_backends(shop, 1, host=RATINGS) == Counter({"status 404": 1})
                    ),
                    "the shop sidecar to route reviews only",
                )
                assert set(count_backends(shop, 20, host="reviews")) <= {"v1", "v2"}
                assert count_backends(shop, 5, host=RATINGS) == Counter({"status 404": 5})
                assert not any(RATINGS in name for name in clusters(envoy))
                assert any(REVIEWS in name for name in clusters(envoy))
                # another namespace has no Sidecar: it sees both
                assert count_backends(web, 5, host=RATINGS) == Counter(ratings=5)

                mesh.put(scope("books/*"))
                wait_for(
                    lambda: (
                        count_backends(shop, 1, host=RATINGS) == Counter(ratings=1)
                        and count_backends(shop, 1, host="reviews") == Counter({"status 404": 1})
                    ),
                    "the shop sidecar to route ratings only",
                )
                assert count_backends(shop, 5, host=RATINGS) == Counter(ratings=5)
                wait_for(
                    lambda: not any(REVIEWS in name for name in clusters(envoy)),
                    "the shop sidecar to drop the reviews clusters",
                )
                assert any(RATINGS in name for name in clusters(envoy))
