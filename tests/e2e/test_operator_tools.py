"""What an operator sees: the debug endpoint and `splitplane status`/`snapshot` with real Envoys.

Two sidecars connect to a running server: one takes everything (SYNCED), the other is served a
cluster Envoy itself rejects (injected straight into the cache), so it is NACKED with Envoy's own
error text.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml
from envoy.config.cluster.v3.cluster_pb2 import Cluster

from tests.support.backends import Backend, free_port, http_backend
from translators.build import build_group
from translators.model import NodeGroup, Role
from xds_server.app import ControlPlane, ServeOptions, serve
from xds_server.cli.bootstrap import render_bootstrap
from xds_server.cli.local_envoy import RunningEnvoy, running_envoy
from xds_server.xds.cache import CLUSTER, snapshot_from_messages

pytestmark = pytest.mark.envoy

T = TypeVar("T")

MESH = """\
apiVersion: v1
kind: Service
metadata: {{name: reviews, namespace: default}}
spec:
  ports: [{{name: http, port: 80, targetPort: {port}}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: reviews-1
  namespace: default
  labels: {{kubernetes.io/service-name: reviews}}
addressType: IPv4
ports: [{{name: http, port: {port}}}]
endpoints: [{{addresses: [127.0.0.1], conditions: {{ready: true}}}}]
"""


class ServerThread:
    """A control plane serving a folder, on its own event loop in a background thread."""

    def __init__(self, config_dir: Path) -> None:
        self.plane = ControlPlane()
        self._options = ServeOptions(
            config_dir=config_dir, xds_address="127.0.0.1:0", debug_address="127.0.0.1:0"
        )
        self._started = threading.Event()
        self._thread = threading.Thread(target=asyncio.run, args=(self._main(),), daemon=True)

    async def _main(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.stop = asyncio.Event()
        ready = asyncio.Event()
        serving = asyncio.create_task(serve(self._options, self.plane, self.stop, ready))
        await ready.wait()
        self._started.set()
        await serving

    def __enter__(self) -> ServerThread:
        self._thread.start()
        assert self._started.wait(30), "the control plane did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        self.loop.call_soon_threadsafe(self.stop.set)
        self._thread.join(30)

    def call(self, function: Callable[[], T]) -> T:
        """Run ``function()`` on the server's loop and return its result."""

        async def call() -> T:
            return function()

        return asyncio.run_coroutine_threadsafe(call(), self.loop).result(10)

    def get(self, path: str) -> Any:
        url = f"http://127.0.0.1:{self.plane.debug_port}{path}"
        with urllib.request.urlopen(url, timeout=5) as response:
            return json.load(response)

    @property
    def debug_address(self) -> str:
        return f"127.0.0.1:{self.plane.debug_port}"


def sidecar(
    server: ServerThread, node_id: str, outbound_port: int, workdir: Path
) -> AbstractContextManager[RunningEnvoy]:
    bootstrap = render_bootstrap(
        node_id,
        "sidecar",
        "default",
        f"127.0.0.1:{server.plane.xds_port}",
        0,
        outbound_port=outbound_port,
    )
    return running_envoy(yaml.safe_load(bootstrap), workdir, wait_ready=False)


def splitplane(*args: str) -> subprocess.CompletedProcess[str]:
    command = [str(Path(sys.executable).with_name("splitplane")), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)


def wait_until(condition: Callable[[], bool], what: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def client_states(server: ServerThread, node_id: str) -> dict[str, str]:
    for client in server.get("/debug/clients")["clients"]:
        if client["node_id"] == node_id:
            return {entry["type"]: entry["state"] for entry in client["types"]}
    return {}


@pytest.fixture
def backend() -> Iterator[Backend]:
    with http_backend("reviews") as running:
        yield running


@pytest.fixture
def proxies(
    tmp_path: Path, backend: Backend
) -> Iterator[tuple[ServerThread, RunningEnvoy, RunningEnvoy]]:
    mesh = tmp_path / "mesh"
    mesh.mkdir()
    (mesh / "reviews.yaml").write_text(MESH.format(port=backend.port))
    good_port, bad_port = free_port(), free_port()
    with (
        ServerThread(mesh) as server,
        sidecar(server, "good-sidecar", good_port, tmp_path / "good") as good,
    ):
        wait_until(
            lambda: (
                set(client_states(server, "good-sidecar").values()) == {"SYNCED"}
                and len(client_states(server, "good-sidecar")) == 5
            ),
            "the good sidecar to sync every type",
        )
        # The second sidecar's group gets a cluster Envoy rejects (a negative connect timeout).
        group = f"sidecar:{bad_port}/default"
        model = server.call(server.plane.model)
        assert model is not None
        resources = dict(build_group(model, NodeGroup(Role.SIDECAR, bad_port)))
        broken = Cluster(name="broken", type=Cluster.STATIC)
        broken.connect_timeout.seconds = -1
        resources[CLUSTER] = (*resources[CLUSTER], broken)
        server.call(
            lambda: server.plane.cache.set_snapshot(group, snapshot_from_messages(resources))
        )
        with sidecar(server, "bad-sidecar", bad_port, tmp_path / "bad") as bad:
            wait_until(
                lambda: client_states(server, "bad-sidecar").get("clusters") == "NACKED",
                "the bad sidecar to reject its clusters",
            )
            yield server, good, bad


def test_status_shows_synced_and_nacked_proxies_and_fails(
    proxies: tuple[ServerThread, RunningEnvoy, RunningEnvoy],
) -> None:
    server, _, _ = proxies

    result = splitplane("status", "--debug-address", server.debug_address)

    assert result.returncode == 1, result.stdout + result.stderr
    rows = {line.split()[0]: line for line in result.stdout.splitlines()[1:]}
    assert rows["good-sidecar"].count("SYNCED") == 5
    assert "NACKED" in rows["bad-sidecar"]


def test_status_exits_zero_when_every_proxy_is_synced(tmp_path: Path, backend: Backend) -> None:
    mesh = tmp_path / "mesh"
    mesh.mkdir()
    (mesh / "reviews.yaml").write_text(MESH.format(port=backend.port))
    with ServerThread(mesh) as server, sidecar(server, "only", free_port(), tmp_path / "e"):
        wait_until(lambda: len(client_states(server, "only")) == 5, "five types")
        wait_until(lambda: set(client_states(server, "only").values()) == {"SYNCED"}, "sync")

        result = splitplane("status", "--debug-address", server.debug_address)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "only" in result.stdout


def test_config_dump_carries_envoys_own_error_text(
    proxies: tuple[ServerThread, RunningEnvoy, RunningEnvoy],
) -> None:
    server, _, _ = proxies

    dump = server.get("/debug/config_dump?node=bad-sidecar")

    rejected = dump["rejected"]["clusters"]
    assert "broken" in rejected["details"] or "duration" in rejected["details"].lower()
    clients = {c["node_id"]: c for c in server.get("/debug/clients")["clients"]}
    cds = next(t for t in clients["bad-sidecar"]["types"] if t["type"] == "clusters")
    assert cds["error"] == rejected["details"]


def test_config_dump_matches_what_envoy_itself_holds(
    proxies: tuple[ServerThread, RunningEnvoy, RunningEnvoy],
) -> None:
    server, good, _ = proxies

    ours = server.get("/debug/config_dump?node=good-sidecar")
    envoys = good.config_dump()

    def route_names(dump: dict[str, Any]) -> set[str]:
        routes = next(c for c in dump["configs"] if c["@type"].endswith(".RoutesConfigDump"))
        return {r["route_config"]["name"] for r in routes["dynamic_route_configs"]}

    assert route_names(ours) == route_names(envoys) != set()


def test_snapshot_command_prints_a_nodes_routes(
    proxies: tuple[ServerThread, RunningEnvoy, RunningEnvoy],
) -> None:
    server, _, _ = proxies

    result = splitplane(
        "snapshot", "--debug-address", server.debug_address,
        "--node", "good-sidecar", "--type", "routes", "-o", "json",
    )  # fmt: skip

    assert result.returncode == 0, result.stderr
    [routes] = json.loads(result.stdout)["configs"]
    assert routes["@type"].endswith("RoutesConfigDump")
    assert "reviews" in result.stdout


def test_snapshot_of_an_unknown_node_names_it(
    proxies: tuple[ServerThread, RunningEnvoy, RunningEnvoy],
) -> None:
    server, _, _ = proxies

    result = splitplane("snapshot", "--debug-address", server.debug_address, "--node", "ghost")

    assert result.returncode == 1
    assert "ghost" in result.stderr


def test_metrics_count_pushes_rejects_and_clients(
    proxies: tuple[ServerThread, RunningEnvoy, RunningEnvoy],
) -> None:
    server, _, _ = proxies
    url = f"http://{server.debug_address}/metrics"

    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()

    assert 'splitplane_xds_rejects_total{type="cds"}' in text
    assert 'splitplane_xds_pushes_total{type="rds"}' in text
    assert 'splitplane_xds_clients{protocol="sotw"} 2' in text
    assert "splitplane_proxy_convergence_seconds_bucket" in text


def test_debug_snapshot_model_and_readiness(
    proxies: tuple[ServerThread, RunningEnvoy, RunningEnvoy],
) -> None:
    server, _, _ = proxies

    snapshot = server.get("/debug/snapshot?type=clusters")
    model = server.get("/debug/model")["model"]

    groups = snapshot["groups"]
    assert len(groups) == 2  # the two sidecars' groups, each built when its node connected
    assert all(key.startswith("sidecar:") for key in groups)
    assert all(group["clusters"]["resources"] for group in groups.values())
    assert [s["name"] for s in model["services"]] == ["reviews"]
    assert server.get("/debug/diagnostics") == {"diagnostics": []}
    with urllib.request.urlopen(f"http://{server.debug_address}/readyz", timeout=5) as ready:
        assert ready.status == 200


def test_proxy_config_prints_short_tables_of_what_a_proxy_was_sent(
    proxies: tuple[ServerThread, RunningEnvoy, RunningEnvoy], backend: Backend
) -> None:
    server, _, _ = proxies
    address = ("--debug-address", server.debug_address)

    routes = splitplane("proxy-config", "routes", "good-sidecar", *address)
    clusters = splitplane("proxy-config", "clusters", "good-sidecar", *address)
    endpoints = splitplane("proxy-config", "endpoints", "good-sidecar", *address)
    listeners = splitplane("proxy-config", "listeners", "good-sidecar", *address)

    assert routes.returncode == 0, routes.stderr
    assert routes.stdout.splitlines()[0].split() == [
        "NAME", "VHOST", "NAME", "DOMAINS", "MATCH", "DESTINATION",
    ]  # fmt: skip
    [route] = routes.stdout.splitlines()[1:]
    assert route.split()[1:] == [
        "reviews.default.svc.cluster.local:80", "reviews", "+7", "more", "/*",
        "outbound|80||reviews.default.svc.cluster.local",
    ]  # fmt: skip
    assert clusters.stdout.splitlines()[1].split() == [
        "reviews.default.svc.cluster.local", "80", "-", "outbound", "EDS",
    ]  # fmt: skip
    assert endpoints.stdout.splitlines()[1].split() == [
        f"127.0.0.1:{backend.port}", "HEALTHY", "outbound|80||reviews.default.svc.cluster.local",
    ]  # fmt: skip
    [listener] = listeners.stdout.splitlines()[1:]
    # the sidecar routes by scoped routes named after its port; the route table holds the service
    assert listener.split()[0] == "127.0.0.1" and listener.endswith(
        f"Scoped routes: {listener.split()[1]} (by :authority host)"
    )
    assert route.split()[0] == f"{listener.split()[1]}/reviews.default.svc.cluster.local"
    assert "\x1b[" not in routes.stdout  # piped: no colour


def test_proxy_config_json_is_the_whole_config_dump(
    proxies: tuple[ServerThread, RunningEnvoy, RunningEnvoy],
) -> None:
    server, _, _ = proxies

    result = splitplane(
        "proxy-config", "clusters", "good-sidecar", "--debug-address", server.debug_address,
        "-o", "json",
    )  # fmt: skip

    assert json.loads(result.stdout) == server.get("/debug/config_dump?node=good-sidecar")


def test_proxy_config_of_an_unknown_node_fails_naming_the_reason(
    proxies: tuple[ServerThread, RunningEnvoy, RunningEnvoy],
) -> None:
    server, _, _ = proxies

    result = splitplane("proxy-config", "routes", "ghost", "--debug-address", server.debug_address)

    assert result.returncode == 1
    assert "HTTP 404" in result.stderr


def _resources(dump: dict[str, Any]) -> dict[str, list[Any]]:
    """Each section's resources, without the versions and times only a server has."""
    keys = {
        "ClustersConfigDump": ("dynamic_active_clusters", "cluster"),
        "EndpointsConfigDump": ("dynamic_endpoint_configs", "endpoint_config"),
        "ListenersConfigDump": ("dynamic_listeners", "active_state"),
        "ScopedRoutesConfigDump": ("dynamic_scoped_route_configs", "scoped_route_configs"),
        "RoutesConfigDump": ("dynamic_route_configs", "route_config"),
    }
    out = {}
    for section in dump["configs"]:
        name = section["@type"].rsplit(".", 1)[1]
        entries, field = keys[name]
        found = [entry[field] for entry in section.get(entries, [])]
        if name == "ListenersConfigDump":
            found = [state["listener"] for state in found]
        out[name] = found
    return out


def test_translate_prints_offline_what_the_server_sends_a_proxy(
    tmp_path: Path, backend: Backend
) -> None:
    mesh = tmp_path / "mesh"
    mesh.mkdir()
    (mesh / "reviews.yaml").write_text(MESH.format(port=backend.port))
    port = free_port()
    with ServerThread(mesh) as server, sidecar(server, "one", port, tmp_path / "e"):
        wait_until(lambda: set(client_states(server, "one").values()) == {"SYNCED"}, "sync")
        wait_until(lambda: len(client_states(server, "one")) == 5, "five types")
        sent = server.get("/debug/config_dump?node=one")

    result = splitplane(
        "translate", "-f", str(mesh), "--role", "sidecar", "--port", str(port),
        "--namespace", "default", "-o", "json",
    )  # fmt: skip

    assert result.returncode == 0, result.stderr
    offline = _resources(json.loads(result.stdout))
    assert offline == _resources(sent)
    assert all(offline.values())
