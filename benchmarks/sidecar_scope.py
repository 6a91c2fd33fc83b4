"""Envoy's memory for a sidecar scoped by an Istio ``Sidecar``, in a large mesh, end to end.

A folder holds N services in namespace ``bench``, one file each: a Service (port 80), two Pods
(``version: v1`` and ``v2``), a DestinationRule with subsets v1 and v2 and a VirtualService sending
100/0; and, with ``--scope K``, a namespace-wide ``Sidecar`` in ``bench`` whose egress names the
first K services (``bench/svc-0.bench.svc.cluster.local``, …). A real ``splitplane serve
--config-dir`` serves it; one real Envoy sidecar bootstrapped with ``splitplane bootstrap --role
sidecar --namespace bench`` (``--concurrency 1``, ``--disable-hot-restart``) connects. Reported:
serve ready time and RSS, Envoy ready time, the clusters and virtual hosts it holds once warm, and
its RSS then (``VmRSS`` of the process). ``--unscoped`` runs the same mesh without the Sidecar too.

    .venv/bin/python benchmarks/sidecar_scope.py --services 10000 --scope 50
    .venv/bin/python benchmarks/sidecar_scope.py --services 10000 --scope 50 --unscoped --record
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from results import record_section

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.backends import free_port
from xds_server.cli.local_envoy import RunningEnvoy, running_envoy

SECTION = "## sidecar_scope"
NAMESPACE = "bench"
NODE_ID = f"sidecar~127.0.0.1~bench-client.{NAMESPACE}~{NAMESPACE}.svc.cluster.local"
TIMEOUT_S = 600.0
TARGET_MB = 100.0  # a sidecar scoped to 50 services, in a 10k-service mesh
SPLITPLANE = str(Path(sys.executable).with_name("splitplane"))


def service_file(index: int) -> str:
    name = f"svc-{index}"
    pods = "".join(
        f"""---
apiVersion: v1
kind: Pod
metadata:
  name: {name}-{version}
  namespace: {NAMESPACE}
  labels: {{app: {name}, version: {version}}}
status:
  podIP: 10.{index >> 8 & 255}.{index & 255}.{1 if version == "v1" else 2}
  conditions: [{{type: Ready, status: "True"}}]
"""
        for version in ("v1", "v2")
    )
    return f"""apiVersion: v1
kind: Service
metadata:
  name: {name}
  namespace: {NAMESPACE}
spec:
  selector: {{app: {name}}}
  ports: [{{name: http, port: 80, targetPort: 8080}}]
{pods}---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: {name}
  namespace: {NAMESPACE}
spec:
  host: {name}
  subsets:
  - {{name: v1, labels: {{version: v1}}}}
  - {{name: v2, labels: {{version: v2}}}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: {name}
  namespace: {NAMESPACE}
spec:
  hosts: [{name}]
  http:
  - route:
    - {{destination: {{host: {name}, subset: v1}}, weight: 100}}
    - {{destination: {{host: {name}, subset: v2}}, weight: 0}}
"""


def sidecar_file(scope: int) -> str:
    return yaml.safe_dump(
        {
            "apiVersion": "networking.istio.io/v1",
            "kind": "Sidecar",
            "metadata": {"name": "default", "namespace": NAMESPACE},
            "spec": {
                "egress": [
                    {
                        "hosts": [
                            f"{NAMESPACE}/svc-{i}.{NAMESPACE}.svc.cluster.local"
                            for i in range(scope)
                        ]
                    }
                ]
            },
        }
    )


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def wait(condition: Callable[[], bool], what: str) -> float:
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > TIMEOUT_S:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.1)
    return time.monotonic() - started


def ready(debug_port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{debug_port}/readyz", timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def bootstrap(xds_port: int) -> dict[str, Any]:
    text = subprocess.run(
        [
            SPLITPLANE,
            "bootstrap",
            "--node-id",
            NODE_ID,
            "--role",
            "sidecar",
            "--namespace",
            NAMESPACE,
            "--xds-address",
            f"127.0.0.1:{xds_port}",
            "--admin-port",
            "0",
            "--outbound-port",
            str(free_port()),
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    loaded: dict[str, Any] = yaml.safe_load(text)
    return loaded


def warm(envoy: RunningEnvoy, clusters: int) -> bool:
    """Every cluster the server sends is active and none is warming."""
    try:
        return (
            envoy.stat("cluster_manager.warming_clusters") == 0
            and envoy.stat("cluster_manager.active_clusters") >= clusters
        )
    except (urllib.error.URLError, OSError, ValueError):
        return False


@dataclass(frozen=True)
class Run:
    services: int
    scope: int | None
    serve_ready_s: float
    serve_rss_mb: float
    envoy_ready_s: float
    clusters: int
    virtual_hosts: int
    envoy_rss_mb: float


def run(services: int, scope: int | None, workdir: Path) -> Run:
    folder = workdir / "mesh"
    folder.mkdir()
    for index in range(services):
        (folder / f"svc-{index}.yaml").write_text(service_file(index))
    if scope is not None:
        (folder / "sidecar.yaml").write_text(sidecar_file(scope))
    expected = 3 * (scope if scope is not None else services)
    xds_port, debug_port = free_port(), free_port()
    started = time.monotonic()
    with (workdir / "splitplane.log").open("wb") as log:
        serve = subprocess.Popen(
            [
                SPLITPLANE,
                "serve",
                "--config-dir",
                str(folder),
                "--xds-address",
                f"127.0.0.1:{xds_port}",
                "--debug-address",
                f"127.0.0.1:{debug_port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait(lambda: ready(debug_port), "splitplane serve to be ready")
        serve_ready = time.monotonic() - started
        serve_rss = rss_mb(serve.pid)
        started = time.monotonic()
        with running_envoy(bootstrap(xds_port), workdir / "envoy", wait_ready=False) as envoy:
            envoy.wait_ready(TIMEOUT_S)
            envoy_ready = time.monotonic() - started
            wait(lambda: warm(envoy, expected), f"Envoy to warm {expected} clusters")
            time.sleep(2.0)  # let the allocator settle after the last update
            dump = json.loads(envoy.admin_get("/config_dump", timeout_s=TIMEOUT_S))
            clusters = sum(
                len(config.get("dynamic_active_clusters", []))
                for config in dump["configs"]
                if config["@type"].endswith("ClustersConfigDump")
            )
            vhosts = sum(
                len(route["route_config"].get("virtual_hosts", []))
                for config in dump["configs"]
                if config["@type"].endswith("RoutesConfigDump")
                for route in config.get("dynamic_route_configs", [])
            )
            envoy_rss = rss_mb(envoy.process.pid)
    finally:
        serve.terminate()
        try:
            serve.wait(20)
        except subprocess.TimeoutExpired:
            serve.kill()
            serve.wait()
    return Run(services, scope, serve_ready, serve_rss, envoy_ready, clusters, vhosts, envoy_rss)


def table(runs: list[Run]) -> str:
    lines = [
        "| services | Sidecar scope | serve ready | serve RSS | Envoy ready | clusters"
        " | virtual hosts | Envoy RSS (warm) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in runs:
        lines.append(
            f"| {r.services:,} | {r.scope if r.scope is not None else 'none'}"
            f" | {r.serve_ready_s:.1f} s | {r.serve_rss_mb:.0f} MB | {r.envoy_ready_s:.1f} s"
            f" | {r.clusters:,} | {r.virtual_hosts:,} | {r.envoy_rss_mb:.0f} MB |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--services", type=int, default=10_000)
    parser.add_argument("--scope", type=int, default=50, help="services the Sidecar names")
    parser.add_argument("--unscoped", action="store_true", help="also run without the Sidecar")
    parser.add_argument("--record", action="store_true", help="write the table to RESULTS.md")
    args = parser.parse_args(argv)
    runs = []
    for scope in [args.scope, *([None] if args.unscoped else [])]:
        with tempfile.TemporaryDirectory(prefix="sidecar-scope-") as tmp:
            runs.append(run(args.services, scope, Path(tmp)))
            print(table(runs[-1:]), flush=True)
    text = table(runs)
    print(text)
    scoped = runs[0]
    verdict = "met" if scoped.envoy_rss_mb <= TARGET_MB else "not met"
    command = "python benchmarks/sidecar_scope.py " + " ".join(
        sys.argv[1:] if argv is None else argv
    )
    if args.record:
        record_section(
            SECTION,
            f"{SECTION}\n\nEnvoy's memory for one sidecar whose namespace has an Istio Sidecar"
            f" naming {args.scope} of {args.services:,} services, beside the same mesh without"
            " one: a real `splitplane serve --config-dir` and a real Envoy bootstrapped with"
            " `splitplane bootstrap` (`--concurrency 1`), RSS once every cluster it was sent is"
            f" warm. `{command}`\n\n{text}\n\nTarget ≤ {TARGET_MB:.0f} MB for the scoped"
            f" sidecar: {verdict}.\n",
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
