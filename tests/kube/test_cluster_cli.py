"""`status`, `snapshot` and `proxy-config` with cluster flags: every control-plane replica, found
through the Kubernetes API and reached through a port-forward to its pod.

Two real control planes (one per "pod") serve the same folder, a real Envoy connected to each.
Each pod's debug port is what ``serve`` runs off loopback, as in a cluster: bearer tokens checked
with a TokenReview, then a SubjectAccessReview, against the in-process API server. That server
lists the pods and forwards the port-forward's WebSocket streams to their debug ports (and, like
the real one, drops the caller's Authorization from requests through the pods' proxy
subresource, which therefore cannot carry a token); the command line uses the real
``kubernetes`` client.
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
from tests.kube.apiserver import DEFAULT_TOKEN, FakeApiServer, Grant
from tests.support.backends import free_port
from xds_server.debug.auth import kubernetes_debug_auth
from xds_server.debug.http import start_debug_server
from xds_server.sources.kubernetes import api_client_from_flags

pytestmark = pytest.mark.envoy

NAMESPACE = "splitplane-system"
SELECTOR = {"app.kubernetes.io/name": "splitplane", "app.kubernetes.io/part-of": "splitplane"}
OPERATOR = "operator@example.com"  # whom the kubeconfig's token names
STRANGER_TOKEN = "stranger-token"


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
    apiserver.add_user(DEFAULT_TOKEN, OPERATOR)
    apiserver.add_user(STRANGER_TOKEN, "stranger@example.com")
    apiserver.grant(Grant(OPERATOR, "get", path="/debug/*"))
    reviews = api_client_from_flags(kubeconfig=str(kubeconfig))
    with ExitStack() as stack:
        stack.callback(reviews.close)
        servers = []
        for letter in "ab":
            server = stack.enter_context(ServerThread(mesh))
            stack.enter_context(sidecar(server, f"node-{letter}", free_port(), tmp_path / letter))
            # The pod's debug port, authenticating as serve does off loopback.
            debug = start_debug_server(
                server.plane, "127.0.0.1", 0, auth=kubernetes_debug_auth(reviews)
            )
            stack.callback(debug.stop)
            apiserver.create(pod(f"splitplane-{letter}", debug.port, SELECTOR))
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


def test_the_debug_endpoint_sees_the_callers_token_and_checks_it(
    replicas: tuple[Path, list[ServerThread]], apiserver: FakeApiServer
) -> None:
    kubeconfig, _ = replicas

    result = splitplane("status", "--kubeconfig", str(kubeconfig))

    assert result.returncode == 0, result.stderr
    reviewed = {review["spec"]["token"] for review in apiserver.token_reviews}
    assert reviewed == {DEFAULT_TOKEN}  # the kubeconfig's, carried to each replica
    assert {
        review["spec"]["nonResourceAttributes"]["path"] for review in apiserver.access_reviews
    } >= {"/debug/clients"}


def test_a_token_given_on_the_command_line_is_used_and_refused_where_rbac_says_so(
    replicas: tuple[Path, list[ServerThread]],
) -> None:
    kubeconfig, _ = replicas

    result = splitplane("status", "--kubeconfig", str(kubeconfig), "--token", STRANGER_TOKEN)

    assert result.returncode == 2, result.stdout
    assert "splitplane-a: HTTP 403 stranger@example.com may not get /debug/clients" in (
        result.stderr
    )
