"""`status`, `snapshot` and `proxy-config` with cluster flags: every control-plane replica, found
through the Kubernetes API and reached through the pods' proxy subresource.

Two real control planes (one per "pod") serve the same folder, a real Envoy connected to each;
the in-process API server lists the pods and forwards the proxy requests to their debug
endpoints on loopback; the command line uses the real ``kubernetes`` client.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.test_operator_tools import (
    MESH,
    ServerThread,
    client_states,
    sidecar,
    splitplane,
    wait_until,
)
from tests.kube.apiserver import FakeApiServer
from tests.support.backends import free_port

pytestmark = pytest.mark.envoy

NAMESPACE = "splitplane-system"
SELECTOR = {"app.kubernetes.io/name": "splitplane", "app.kubernetes.io/part-of": "splitplane"}


def pod(name: str, debug_port: int, labels: dict[str, str], phase: str = "Running") -> Any:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": labels},
        "spec": {
            "containers": [
                {
                    "name": "splitplane",
                    "ports": [
                        {"name": "grpc-xds", "containerPort": 15010},
                        {"name": "http-debug", "containerPort": debug_port},
                    ],
                }
            ]
        },
        "status": {"phase": phase, "podIP": "127.0.0.1"},
    }


def synced(server: ServerThread, node: str) -> bool:
    states = client_states(server, node)
    return len(states) == 5 and set(states.values()) == {"SYNCED"}  # SRDS too


@pytest.fixture
def replicas(
    tmp_path: Path, apiserver: FakeApiServer, kubeconfig: Path
) -> Iterator[tuple[Path, list[ServerThread]]]:
    mesh = tmp_path / "mesh"
    mesh.mkdir()
    (mesh / "reviews.yaml").write_text(MESH.format(port=free_port()))
    with ExitStack() as stack:
        servers = []
        for letter in "ab":
            server = stack.enter_context(ServerThread(mesh))
            stack.enter_context(sidecar(server, f"node-{letter}", free_port(), tmp_path / letter))
            apiserver.create(pod(f"splitplane-{letter}", server.plane.debug_port, SELECTOR))
            servers.append(server)
        # Not replicas: another app's pod, and one not running yet.
        apiserver.create(pod("other-app", servers[0].plane.debug_port, {"app": "other"}))
        apiserver.create(pod("splitplane-c", 1, SELECTOR, phase="Pending"))
        for letter, server in zip("ab", servers, strict=True):
            wait_until(partial(synced, server, f"node-{letter}"), f"node-{letter} to sync")
        yield kubeconfig, servers


def test_status_merges_every_replica_with_a_column_naming_it(
    replicas: tuple[Path, list[ServerThread]],
) -> None:
    kubeconfig, _ = replicas

    result = splitplane("status", "--kubeconfig", str(kubeconfig))

    assert result.returncode == 0, result.stderr
    header, *rows = result.stdout.splitlines()
    assert header.split()[-1] == "REPLICA"
    assert {(row.split()[0], row.split()[-1]) for row in rows} == {
        ("node-a", "splitplane-a"),
        ("node-b", "splitplane-b"),
    }
    assert all(row.count("SYNCED") == 5 for row in rows)  # CDS, EDS, LDS, SRDS, RDS


def test_status_yaml_names_each_clients_replica(
    replicas: tuple[Path, list[ServerThread]],
) -> None:
    kubeconfig, _ = replicas

    result = splitplane("status", "--kubeconfig", str(kubeconfig), "-o", "yaml")

    clients = yaml.safe_load(result.stdout)["clients"]
    assert {(c["node_id"], c["replica"]) for c in clients} == {
        ("node-a", "splitplane-a"),
        ("node-b", "splitplane-b"),
    }


def test_proxy_config_and_snapshot_find_the_replica_a_node_is_connected_to(
    replicas: tuple[Path, list[ServerThread]],
) -> None:
    kubeconfig, _ = replicas

    routes = splitplane("proxy-config", "routes", "node-b", "--kubeconfig", str(kubeconfig))
    snapshot = splitplane("snapshot", "--node", "node-b", "--kubeconfig", str(kubeconfig))

    assert routes.returncode == 0, routes.stderr
    assert "reviews.default.svc.cluster.local:80" in routes.stdout
    assert snapshot.returncode == 0, snapshot.stderr
    assert yaml.safe_load(snapshot.stdout)["replica"] == "splitplane-b"


def test_a_node_no_replica_holds_is_an_error_naming_each_replica(
    replicas: tuple[Path, list[ServerThread]],
) -> None:
    kubeconfig, _ = replicas

    result = splitplane("proxy-config", "routes", "ghost", "--kubeconfig", str(kubeconfig))

    assert result.returncode == 1
    assert "splitplane-a: HTTP 404" in result.stderr
    assert "splitplane-b: HTTP 404" in result.stderr


def test_no_control_plane_pods_is_an_error_saying_where_it_looked(
    apiserver: FakeApiServer, kubeconfig: Path
) -> None:
    result = splitplane("status", "--kubeconfig", str(kubeconfig), "--namespace", "elsewhere")

    assert result.returncode == 2
    assert "no running control-plane pod in namespace elsewhere" in result.stderr
