"""`splitplane serve` end to end: a real Envoy sidecar, real traffic, a canary walked by edits.

The same four steps run twice: once with the folder source (each step is a file write) and once
with the Kubernetes source against the in-process API server (each step is an API write).

1. VirtualService 90/10 → traffic splits 90/10 within statistical tolerance.
2. 0/100 → every request goes to v2 once the change lands.
3. An invalid version (all weights 0) → a diagnostic, and Envoy keeps the last good routes with
   no failed request while it happens.
4. VirtualService deleted → requests spread over every endpoint of the service.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import pytest
import yaml

from tests.kube.apiserver import FakeApiServer
from tests.support.backends import Backend, count_backends, free_port, http_backend
from xds_server.cli.bootstrap import render_bootstrap
from xds_server.cli.local_envoy import running_envoy

pytestmark = pytest.mark.envoy

TIMEOUT_S = 30.0


def mesh_objects(v1: Backend, v2: Backend) -> list[dict[str, Any]]:
    """Service `reviews` with two pods (one per backend), their EndpointSlices, and subsets."""
    objects: list[dict[str, Any]] = [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "reviews", "namespace": "default"},
            "spec": {
                "selector": {"app": "reviews"},
                "ports": [{"name": "http", "port": 80, "targetPort": "http"}],
            },
        },
        {
            "apiVersion": "networking.istio.io/v1beta1",
            "kind": "DestinationRule",
            "metadata": {"name": "reviews", "namespace": "default"},
            "spec": {
                "host": "reviews",
                "subsets": [
                    {"name": "v1", "labels": {"version": "v1"}},
                    {"name": "v2", "labels": {"version": "v2"}},
                ],
            },
        },
    ]
    for version, backend in (("v1", v1), ("v2", v2)):
        pod = f"reviews-{version}"
        objects += [
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": pod,
                    "namespace": "default",
                    "labels": {"app": "reviews", "version": version},
                },
                "status": {
                    "phase": "Running",
                    "podIP": "127.0.0.1",
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
                "ports": [{"name": "http", "port": backend.port, "protocol": "TCP"}],
                "endpoints": [
                    {
                        "addresses": ["127.0.0.1"],
                        "conditions": {"ready": True},
                        "targetRef": {"kind": "Pod", "namespace": "default", "name": pod},
                    }
                ],
            },
        ]
    return objects


def virtual_service(v1: int, v2: int) -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "reviews", "namespace": "default"},
        "spec": {
            "hosts": ["reviews"],
            "http": [
                {
                    "route": [
                        {"destination": {"host": "reviews", "subset": "v1"}, "weight": v1},
                        {"destination": {"host": "reviews", "subset": "v2"}, "weight": v2},
                    ]
                }
            ],
        },
    }


class Mesh(Protocol):
    """Where the test writes objects: a folder or an API server."""

    def serve_args(self) -> list[str]: ...

    def put(self, obj: Mapping[str, Any]) -> None: ...

    def remove_virtual_service(self) -> None: ...


@dataclass
class FolderMesh:
    root: Path

    def serve_args(self) -> list[str]:
        return ["--config-dir", str(self.root)]

    def put(self, obj: Mapping[str, Any]) -> None:
        meta = obj["metadata"]
        path = self.root / f"{obj['kind'].lower()}-{meta['name']}.yaml"
        staged = path.with_suffix(".tmp")  # not *.yaml: the source ignores it
        staged.write_text(yaml.safe_dump(dict(obj)))
        staged.replace(path)  # an editor's atomic save

    def remove_virtual_service(self) -> None:
        (self.root / "virtualservice-reviews.yaml").unlink()


@dataclass
class KubeMesh:
    server: FakeApiServer
    kubeconfig: Path

    def serve_args(self) -> list[str]:
        return ["--kubeconfig", str(self.kubeconfig)]

    def put(self, obj: Mapping[str, Any]) -> None:
        self.server.apply(obj)

    def remove_virtual_service(self) -> None:
        self.server.delete("VirtualService", "default", "reviews")


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    xds_port: int
    debug_port: int
    log: Path

    def get(self, path: str) -> Any:
        url = f"http://127.0.0.1:{self.debug_port}{path}"
        with urllib.request.urlopen(url, timeout=5) as response:
            return json.load(response)

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.debug_port}/readyz", timeout=1
            ) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False


@contextmanager
def splitplane_serve(mesh: Mesh, workdir: Path, *extra_args: str) -> Iterator[Server]:
    xds_port, debug_port = free_port(), free_port()
    log = workdir / "splitplane.log"
    command = [
        str(Path(sys.executable).with_name("splitplane")),
        "serve",
        *mesh.serve_args(),
        "--xds-address",
        f"127.0.0.1:{xds_port}",
        "--debug-address",
        f"127.0.0.1:{debug_port}",
        *extra_args,
    ]
    with log.open("wb") as log_file:
        process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT)
    server = Server(process, xds_port, debug_port, log)
    try:
        wait_for(lambda: server.ready() or process.poll() is not None, "splitplane ready")
        assert process.poll() is None, log.read_text()
        yield server
    finally:
        process.terminate()
        try:
            code = process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
        assert code == 0, f"serve exited {code} on SIGTERM:\n{log.read_text()[-3000:]}"


def wait_for(condition: Callable[[], bool], what: str, timeout_s: float = TIMEOUT_S) -> float:
    """Poll ``condition``; returns the seconds it took."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout_s:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)
    return time.monotonic() - started


def within_tolerance(count: int, total: int, expected: float) -> bool:
    """Five standard deviations of a binomial: a correct split fails once in millions of runs."""
    sigma: float = (expected * (1 - expected) / total) ** 0.5
    return abs(count / total - expected) <= 5 * sigma


def answered(port: int, requests: int) -> int:
    """How many of ``requests`` a backend answered."""
    counts = count_backends(port, requests, host="reviews")
    return counts["v1"] + counts["v2"]


class Traffic:
    """Requests sent without pause on a background thread, counted by where they landed."""

    def __init__(self, port: int) -> None:
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._port = port
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            batch = count_backends(self._port, 20, host="reviews")
            with self._lock:
                self.counts.update(batch)

    def total(self) -> int:
        with self._lock:
            return sum(self.counts.values())

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)


def sidecar_bootstrap(xds_port: int, outbound: int, *, delta: bool = False) -> dict[str, Any]:
    """A sidecar's bootstrap pointing at `splitplane serve` on ``xds_port``, listening for the
    app's outbound requests on ``outbound``."""
    bootstrap: dict[str, Any] = yaml.safe_load(
        render_bootstrap(
            "sidecar~127.0.0.1~test.default~default.svc.cluster.local",
            "sidecar",
            "default",
            f"127.0.0.1:{xds_port}",
            0,
            outbound_port=outbound,
            delta=delta,
        )
    )
    return bootstrap


def walk_canary(
    mesh: Mesh, workdir: Path, v1: Backend, v2: Backend, *, delta: bool = False
) -> None:
    for obj in mesh_objects(v1, v2):
        mesh.put(obj)
    mesh.put(virtual_service(90, 10))
    with splitplane_serve(mesh, workdir) as server:
        outbound = free_port()
        with running_envoy(
            sidecar_bootstrap(server.xds_port, outbound, delta=delta), workdir / "envoy"
        ):

            def only(backend: str) -> Callable[[], bool]:
                return lambda: count_backends(outbound, 20, host="reviews")[backend] == 20

            # 1. 90/10
            wait_for(lambda: answered(outbound, 5) == 5, "routes to reviews")
            counts = count_backends(outbound, 1000, host="reviews")
            assert counts["v1"] + counts["v2"] == 1000, counts
            assert within_tolerance(counts["v2"], 1000, 0.10), counts

            # 2. 0/100: every request goes to v2 once the change lands
            mesh.put(virtual_service(0, 100))
            took = wait_for(only("v2"), "0/100 to land")
            print(f"0/100 landed after {took * 1000:.0f} ms")
            assert count_backends(outbound, 200, host="reviews") == Counter(v2=200)

            # 3. all weights 0: a diagnostic; Envoy keeps the last good routes; nothing fails
            with Traffic(outbound) as traffic:
                mesh.put(virtual_service(0, 0))
                wait_for(
                    lambda: any(
                        d["kind"] == "VirtualService" and d["name"] == "reviews"
                        and d["severity"] == "error" and "weight" in d["message"]
                        for d in server.get("/debug/diagnostics")["diagnostics"]
                    ),
                    "a diagnostic for the invalid VirtualService",
                )  # fmt: skip
                seen = traffic.total()
                wait_for(lambda: traffic.total() >= seen + 100, "traffic after the rejection")
            assert set(traffic.counts) == {"v2"}, traffic.counts
            assert traffic.counts["v2"] > 0

            # 4. VirtualService deleted: requests spread over every endpoint
            mesh.remove_virtual_service()
            wait_for(
                lambda: count_backends(outbound, 40, host="reviews")["v1"] > 0,
                "the default route over all endpoints",
            )
            counts = count_backends(outbound, 400, host="reviews")
            assert counts["v1"] + counts["v2"] == 400, counts
            assert within_tolerance(counts["v1"], 400, 0.5), counts


@pytest.mark.parametrize("delta", [False, True], ids=["sotw", "delta"])
def test_folder_source_canary_end_to_end(tmp_path: Path, delta: bool) -> None:
    mesh_dir = tmp_path / "mesh"
    mesh_dir.mkdir()
    with http_backend("v1") as v1, http_backend("v2") as v2:
        walk_canary(FolderMesh(mesh_dir), tmp_path, v1, v2, delta=delta)


def test_kubernetes_source_canary_end_to_end(tmp_path: Path) -> None:
    with FakeApiServer() as server, http_backend("v1") as v1, http_backend("v2") as v2:
        kubeconfig = server.write_kubeconfig(tmp_path / "kubeconfig")
        walk_canary(KubeMesh(server, kubeconfig), tmp_path, v1, v2)
