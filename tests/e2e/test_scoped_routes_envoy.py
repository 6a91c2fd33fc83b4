"""A sidecar routes by scoped routes: a weight change re-sends and re-applies only the changed
service's route configuration (a real Envoy, `splitplane serve` on a folder)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.e2e.test_serve_envoy import (
    FolderMesh,
    mesh_objects,
    sidecar_bootstrap,
    splitplane_serve,
    virtual_service,
    wait_for,
)
from tests.support.backends import count_backends, free_port, http_backend
from xds_server.cli.local_envoy import RunningEnvoy, running_envoy

pytestmark = pytest.mark.envoy

REVIEWS = "reviews.default.svc.cluster.local"
RATINGS = "ratings.default.svc.cluster.local"


def ratings() -> list[dict[str, Any]]:
    """A second service, with a VirtualService of its own."""
    meta = {"name": "ratings", "namespace": "default"}
    return [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": meta,
            "spec": {"selector": {"app": "ratings"}, "ports": [{"name": "http", "port": 80}]},
        },
        {
            "apiVersion": "networking.istio.io/v1",
            "kind": "VirtualService",
            "metadata": meta,
            "spec": {
                "hosts": ["ratings"],
                "http": [{"route": [{"destination": {"host": "ratings"}}]}],
            },
        },
    ]


def reloads(envoy: RunningEnvoy, outbound: int) -> dict[str, int]:
    """How often Envoy took an update of each of the sidecar's route configurations, and of its
    scopes."""
    prefix = f"http.outbound_{outbound}"
    return {
        name: envoy.stat(f"{prefix}.rds.{outbound}/{name}.update_success")
        for name in (REVIEWS, RATINGS)
    } | {"scopes": envoy.stat(f"{prefix}.scoped_rds.{outbound}.update_success")}


@pytest.mark.parametrize("delta", [False, True], ids=["sotw", "delta"])
def test_a_weight_flip_moves_traffic_and_reapplies_only_that_services_routes(
    tmp_path: Path, delta: bool
) -> None:
    mesh = FolderMesh(tmp_path / "mesh")
    mesh.root.mkdir()
    with http_backend("v1") as v1, http_backend("v2") as v2:
        for obj in [*mesh_objects(v1, v2), *ratings()]:
            mesh.put(obj)
        mesh.put(virtual_service(100, 0))
        with splitplane_serve(mesh, tmp_path) as server:
            outbound = free_port()
            bootstrap = sidecar_bootstrap(server.xds_port, outbound, delta=delta)
            with running_envoy(bootstrap, tmp_path / "envoy") as envoy:
                # every name a client may use, with and without the port, is one scope's key
                for host in ("reviews", "reviews:80", "reviews.default", f"{REVIEWS}:80"):
                    wait_for(
                        lambda h=host: count_backends(outbound, 1, host=h) == {"v1": 1},  # type: ignore[misc]
                        f"{host} routed to v1",
                    )
                # a host no scope has gets no route
                assert count_backends(outbound, 1, host="unknown") == {"status 404": 1}
                before = reloads(envoy, outbound)
                assert min(before.values()) >= 1, before

                mesh.put(virtual_service(0, 100))
                wait_for(
                    lambda: count_backends(outbound, 1, host="reviews") == {"v2": 1},
                    "reviews moved to v2",
                )
                assert count_backends(outbound, 20, host="reviews:80") == {"v2": 20}
                wait_for(lambda: reloads(envoy, outbound)[REVIEWS] == before[REVIEWS] + 1, "ack")
                after = reloads(envoy, outbound)
                # the server shows the scopes it sent beside the route configurations
                (client,) = server.get("/debug/clients")["clients"]
                assert {"scopes", "routes"} <= {t["type"] for t in client["types"]}

            # only the reviews route configuration was sent and applied again
            assert after == {**before, REVIEWS: before[REVIEWS] + 1}
