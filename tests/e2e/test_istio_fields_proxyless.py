"""Istio fields splitplane now applies reach a proxyless gRPC client as something it takes: a
cluster with an HTTP/2 keep-alive and the statuses outlier detection counts, and a rule whose
match list holds a null."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from tests.e2e.test_proxyless_grpc import grpc_backend
from tests.e2e.test_serve_envoy import virtual_service
from tests.e2e.test_serve_proxyless import client_of_serve, grpc_mesh, mesh_folder

pytestmark = pytest.mark.envoy


async def test_grpc_client_takes_keepalive_error_codes_and_a_null_match(tmp_path: Path) -> None:
    mesh = mesh_folder(tmp_path)
    with grpc_backend("v1") as v1, grpc_backend("v2") as v2:
        for obj in grpc_mesh({"v1": v1, "v2": v2}):
            if obj["kind"] == "DestinationRule":
                obj["spec"]["trafficPolicy"] = {
                    "connectionPool": {
                        "http": {"http2KeepAlive": {"interval": "10s", "timeout": "3s"}}
                    },
                    "outlierDetection": {
                        "consecutive5xxErrors": 5,
                        "outlierDetectionHttpErrorCodes": [500, 503],
                    },
                }
            mesh.put(obj)
        routed = virtual_service(0, 100)
        routed["spec"]["http"][0]["match"] = [None]
        mesh.put(routed)
        target = "xds:///reviews.default.svc.cluster.local:80"
        with client_of_serve(mesh, tmp_path, target) as client:
            assert await client.calls(50) == Counter({"v2": 50})
