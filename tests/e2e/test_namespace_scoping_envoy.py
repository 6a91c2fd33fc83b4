"""Two real Envoy sidecars in different namespaces route the same host differently (``exportTo``).

`splitplane serve` watches a folder: reviews (namespace default) goes to v1 for every namespace;
the shop team's VirtualService, exported to its own namespace only, sends it to v2. The sidecar in
shop routes to v2, the one in web to v1; exporting the shop VirtualService to web instead swaps
them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.test_serve_envoy import FolderMesh, mesh_objects, splitplane_serve, wait_for
from tests.support.backends import count_backends, free_port, http_backend
from xds_server.cli.bootstrap import render_bootstrap
from xds_server.cli.local_envoy import running_envoy

pytestmark = pytest.mark.envoy

REVIEWS = "reviews.default.svc.cluster.local"


def to_subset(name: str, namespace: str, subset: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "hosts": [REVIEWS],
            "http": [{"route": [{"destination": {"host": REVIEWS, "subset": subset}}]}],
            **spec,
        },
    }


def sidecar(namespace: str, xds_port: int, outbound: int) -> dict[str, Any]:
    bootstrap: dict[str, Any] = yaml.safe_load(
        render_bootstrap(
            f"sidecar~127.0.0.1~app.{namespace}~{namespace}.svc.cluster.local",
            "sidecar",
            namespace,
            f"127.0.0.1:{xds_port}",
            0,
            outbound_port=outbound,
        )
    )
    return bootstrap


def all_to(port: int, backend: str) -> Callable[[], bool]:
    return lambda: count_backends(port, 20, host="reviews")[backend] == 20


def test_sidecars_in_two_namespaces_route_as_exported_to_each(tmp_path: Path) -> None:
    mesh = FolderMesh(tmp_path / "mesh")
    mesh.root.mkdir()
    with http_backend("v1") as v1, http_backend("v2") as v2:
        for obj in mesh_objects(v1, v2):
            mesh.put(obj)
        mesh.put(to_subset("reviews", "default", "v1"))
        mesh.put(to_subset("reviews-shop", "shop", "v2", exportTo=["."]))
        with splitplane_serve(mesh, tmp_path) as server:
            shop_port, web_port = free_port(), free_port()
            with (
                running_envoy(sidecar("shop", server.xds_port, shop_port), tmp_path / "shop"),
                running_envoy(sidecar("web", server.xds_port, web_port), tmp_path / "web"),
            ):
                wait_for(all_to(shop_port, "v2"), "the shop sidecar to route to v2")
                wait_for(all_to(web_port, "v1"), "the web sidecar to route to v1")
                assert count_backends(shop_port, 100, host="reviews") == Counter(v2=100)
                assert count_backends(web_port, 100, host="reviews") == Counter(v1=100)

                mesh.put(to_subset("reviews-shop", "shop", "v2", exportTo=["web"]))
                wait_for(all_to(web_port, "v2"), "the web sidecar to route to v2")
                wait_for(all_to(shop_port, "v1"), "the shop sidecar to route to v1")
                clients = server.get("/debug/clients")
    groups = sorted(client["group"] for client in clients["clients"])
    assert groups == sorted([f"sidecar:{shop_port}/shop", f"sidecar:{web_port}/web"])
