"""Observed traffic: a real Envoy sidecar reports what each subset cluster got (LRS), and
`/debug/traffic` and `splitplane status --traffic` show it beside the configured weights."""

from __future__ import annotations

import subprocess
import sys
import time
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
    within_tolerance,
)
from tests.support.backends import count_backends, free_port, http_backend
from xds_server.cli.local_envoy import running_envoy

pytestmark = pytest.mark.envoy

REQUESTS = 1000
V1 = "outbound|80|v1|reviews.default.svc.cluster.local"
V2 = "outbound|80|v2|reviews.default.svc.cluster.local"


def reviews_route(document: dict[str, Any]) -> dict[str, Any]:
    [route] = [r for r in document["routes"] if r["virtual_service"] == "default/reviews"]
    found: dict[str, Any] = route
    return found


def by_cluster(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {d["cluster"]: d for d in reviews_route(document)["destinations"]}


def test_observed_shares_from_envoy_load_reports_follow_the_weights(tmp_path: Path) -> None:
    mesh = FolderMesh(tmp_path / "mesh")
    mesh.root.mkdir()
    with http_backend("v1") as v1, http_backend("v2") as v2:
        for obj in mesh_objects(v1, v2):
            mesh.put(obj)
        mesh.put(virtual_service(80, 20))
        with splitplane_serve(mesh, tmp_path, "--load-report-interval", "1") as server:
            outbound = free_port()
            with running_envoy(sidecar_bootstrap(server.xds_port, outbound), tmp_path / "envoy"):
                # Envoy counts a cluster's requests from the report after it learned of the
                # cluster: send requests until reports show some, and let the last ones arrive.
                wait_for(
                    lambda: (
                        sum(count_backends(outbound, 5, host="reviews").values()) == 5
                        and reviews_route(server.get("/debug/traffic"))["requests"] > 0
                    ),
                    "reports for the reviews clusters",
                )
                time.sleep(2.5)  # two report intervals
                before = by_cluster(server.get("/debug/traffic"))
                counts = count_backends(outbound, REQUESTS, host="reviews")
                assert counts["v1"] + counts["v2"] == REQUESTS, counts

                # Every request the backends answered shows up in a report within a few seconds.
                wait_for(
                    lambda: (
                        reviews_route(server.get("/debug/traffic"))["requests"]
                        >= before[V1]["requests"] + before[V2]["requests"] + REQUESTS
                    ),
                    "load reports covering the requests",
                )
                document = server.get("/debug/traffic")
                route, after = reviews_route(document), by_cluster(document)
                # What Envoy reported is exactly what the backends saw ...
                for cluster, backend in ((V1, "v1"), (V2, "v2")):
                    assert (
                        after[cluster]["requests"] - before[cluster]["requests"] == counts[backend]
                    ), (before, after, counts)
                # ... and it follows the weights.
                assert [after[V1]["weight"], after[V2]["weight"]] == [80, 20]
                assert after[V2]["configured_share"] == 0.2
                observed_v2, total = after[V2]["requests"], route["requests"]
                assert within_tolerance(observed_v2, total, 0.20), route
                assert after[V2]["observed_share"] == pytest.approx(observed_v2 / total, abs=1e-4)
                assert after[V1]["error_rate"] == 0.0
                assert after[V2]["error_rate"] == 0.0

                table = subprocess.run(
                    [
                        str(Path(sys.executable).with_name("splitplane")),
                        "status",
                        "--traffic",
                        "--debug-address",
                        f"127.0.0.1:{server.debug_port}",
                    ],
                    capture_output=True,
                    text=True,
                    timeout=30,
                    check=True,
                ).stdout
    v2_row = next(line for line in table.splitlines() if V2 in line)
    assert v2_row.split()[:2] == ["default/reviews", "reviews.default.svc.cluster.local:80"]
    assert "20 (20.0%)" in v2_row
    assert f"{observed_v2 / total * 100:.1f}%" in v2_row
