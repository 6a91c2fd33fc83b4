"""`splitplane serve` as a process: every start-up failure is one clear line and a non-zero exit,
before anything says "serving"; the Kubernetes source finds its kubeconfig as kubectl does; a
stop with proxies connected is clean.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import grpc
import pytest
import yaml
from envoy.service.discovery.v3 import ads_pb2_grpc
from envoy.service.discovery.v3.discovery_pb2 import DeltaDiscoveryRequest, DiscoveryRequest

from tests.kube.apiserver import FakeApiServer
from tests.protocol.xds_client import node
from tests.support.backends import free_port
from xds_server.xds.cache import CLUSTER

SPLITPLANE = str(Path(sys.executable).with_name("splitplane"))
EXAMPLE = Path(__file__).parents[2] / "deploy" / "examples" / "local"
# Root reads any folder; without these capabilities it reads as everyone else does.
AS_ANYONE = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", "--"]


def base_env(**extra: str) -> dict[str, str]:
    """The environment of a serve run: no kubeconfig, no cluster, unless given."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("KUBECONFIG", "KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT")
    }
    env.update(extra)
    return env


def serve_command(*args: str, xds_port: int = 0, debug_port: int = 0) -> list[str]:
    return [
        SPLITPLANE,
        "serve",
        *args,
        "--xds-address",
        f"127.0.0.1:{xds_port or free_port()}",
        "--debug-address",
        f"127.0.0.1:{debug_port or free_port()}",
    ]


def failed_start(command: list[str], env: Mapping[str, str] | None = None) -> str:
    """Run ``command``, which must fail to start: exit 1 with one line on stderr, nothing on
    stdout, and no "serving"; returns the line's message."""
    done = subprocess.run(
        command, capture_output=True, timeout=60, env=env or base_env(), check=False
    )
    lines = done.stderr.decode().splitlines()
    assert done.returncode == 1, (done.returncode, lines)
    assert done.stdout == b""
    assert len(lines) == 1, lines
    record = json.loads(lines[0])
    assert record["level"] == "error"
    assert "serving" not in lines[0]
    message: str = record["msg"]
    return message


@contextmanager
def listening() -> Iterator[int]:
    """A port something else listens on."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        yield taken.getsockname()[1]


@contextmanager
def serving(
    command: list[str], env: Mapping[str, str] | None = None, timeout_s: float = 60
) -> Iterator[subprocess.Popen[bytes]]:
    """``command`` running until its log says "serving"; stopped with SIGTERM afterwards."""
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env or base_env()
    )
    assert process.stderr is not None
    lines: list[str] = []
    ready = threading.Event()

    def read() -> None:
        assert process.stderr is not None
        for raw in process.stderr:
            lines.append(raw.decode())
            if '"serving"' in lines[-1]:
                ready.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert ready.wait(timeout_s) or process.poll() is not None, "".join(lines)
        assert process.poll() is None, "".join(lines)
        yield process
    finally:
        if process.poll() is None:
            process.terminate()
            process.wait(30)
        reader.join(10)
        process.output = "".join(lines)  # type: ignore[attr-defined]


# -- ports ------------------------------------------------------------------------------------


def test_a_busy_xds_port_is_one_line_and_exit_1() -> None:
    with listening() as port:
        message = failed_start(serve_command("--config-dir", str(EXAMPLE), xds_port=port))
    assert f"cannot listen for xDS on 127.0.0.1:{port}: Address already in use" in message


def test_a_second_server_on_the_same_xds_port_does_not_start() -> None:
    xds_port = free_port()
    with serving(serve_command("--config-dir", str(EXAMPLE), xds_port=xds_port)):
        message = failed_start(serve_command("--config-dir", str(EXAMPLE), xds_port=xds_port))
    assert "Address already in use" in message


def test_a_busy_debug_port_is_one_line_and_exit_1() -> None:
    with listening() as port:
        message = failed_start(serve_command("--config-dir", str(EXAMPLE), debug_port=port))
    assert f"cannot listen for the debug endpoint on 127.0.0.1:{port}" in message
    assert "in use" in message


# -- sources ----------------------------------------------------------------------------------


def test_without_a_source_flag_or_a_kubeconfig_it_says_where_it_looked(tmp_path: Path) -> None:
    message = failed_start(serve_command(), env=base_env(HOME=str(tmp_path)))
    assert "no kubeconfig: ~/.kube/config does not exist" in message
    assert "--config-dir" in message


def test_a_missing_kubeconfig_file_is_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    message = failed_start(serve_command("--kubeconfig", str(missing)))
    assert f"--kubeconfig {missing}: no such file" in message

    message = failed_start(serve_command(), env=base_env(KUBECONFIG=str(missing)))
    assert f"no kubeconfig: $KUBECONFIG ({missing}) does not exist" in message


def test_in_cluster_outside_a_cluster_is_one_line() -> None:
    message = failed_start(serve_command("--in-cluster"))
    assert message.startswith("cannot start: --in-cluster: not running in a Kubernetes cluster")


def test_an_unknown_kubeconfig_context_is_one_line(tmp_path: Path) -> None:
    with FakeApiServer() as server:
        kubeconfig = server.write_kubeconfig(tmp_path / "kubeconfig")
        message = failed_start(serve_command("--kubeconfig", str(kubeconfig), "--context", "nope"))
    assert f"kubeconfig {kubeconfig}" in message
    assert "nope" in message


def test_an_unreadable_config_dir_is_one_line(tmp_path: Path) -> None:
    folder = tmp_path / "mesh"
    folder.mkdir()
    (folder / "canary.yaml").write_text((EXAMPLE / "canary.yaml").read_text())
    folder.chmod(0)
    try:
        as_anyone = AS_ANYONE if os.geteuid() == 0 else []
        message = failed_start([*as_anyone, *serve_command("--config-dir", str(folder))])
    finally:
        folder.chmod(0o755)
    assert f"--config-dir {folder}: Permission denied" in message


def two_context_kubeconfig(server: FakeApiServer, path: Path) -> Path:
    """A kubeconfig whose current context points nowhere, and a context ``fake`` that works."""
    config = yaml.safe_load(server.write_kubeconfig(path).read_text())
    config["clusters"].append({"name": "gone", "cluster": {"server": "https://127.0.0.1:1"}})
    config["contexts"].append({"name": "gone", "context": {"cluster": "gone", "user": "tester"}})
    config["current-context"] = "gone"
    path.write_text(yaml.safe_dump(config))
    return path


def wait_for_clusters(xds_port: int, timeout_s: float = 30) -> int:
    """How many clusters a sidecar gets from the server on ``xds_port``."""
    with grpc.insecure_channel(f"127.0.0.1:{xds_port}") as channel:
        stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)
        deadline = time.monotonic() + timeout_s
        while True:
            answered = threading.Event()

            def requests(answered: threading.Event = answered) -> Iterator[DiscoveryRequest]:
                yield DiscoveryRequest(node=node("probe"), type_url=CLUSTER)
                answered.wait(10)

            responses = stub.StreamAggregatedResources(requests(), timeout=5)
            try:
                found = len(next(responses).resources)
            except grpc.RpcError:
                found = 0
            finally:
                answered.set()
                responses.cancel()
            if found or time.monotonic() > deadline:
                return found
            time.sleep(0.2)


def test_the_kubernetes_source_uses_kubeconfig_and_context_as_kubectl_does(
    tmp_path: Path,
) -> None:
    with FakeApiServer() as server:
        for obj in yaml.safe_load_all((EXAMPLE / "canary.yaml").read_text()):
            server.apply(obj)
        config = two_context_kubeconfig(server, tmp_path / "two-contexts")
        home = tmp_path / "home"
        (home / ".kube").mkdir(parents=True)
        (home / ".kube" / "config").write_text(config.read_text())

        runs = {
            "$KUBECONFIG": base_env(KUBECONFIG=str(config), HOME=str(tmp_path)),
            "~/.kube/config": base_env(HOME=str(home)),
        }
        for where, env in runs.items():
            xds_port = free_port()
            with serving(serve_command("--context", "fake", xds_port=xds_port), env=env):
                assert wait_for_clusters(xds_port) > 0, where


# -- stopping ---------------------------------------------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "Ctrl-C"])
def test_a_stop_with_proxies_connected_logs_no_traceback(signum: signal.Signals) -> None:
    xds_port = free_port()
    with serving(serve_command("--config-dir", str(EXAMPLE), xds_port=xds_port)) as process:
        channel = grpc.insecure_channel(f"127.0.0.1:{xds_port}")
        stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)
        hold = threading.Event()

        def sotw() -> Iterator[DiscoveryRequest]:
            yield DiscoveryRequest(node=node("sotw"), type_url=CLUSTER)
            hold.wait(60)

        def delta() -> Iterator[DeltaDiscoveryRequest]:
            yield DeltaDiscoveryRequest(node=node("delta"), type_url=CLUSTER)
            hold.wait(60)

        streams = [stub.StreamAggregatedResources(sotw()) for _ in range(3)]
        streams += [stub.DeltaAggregatedResources(delta()) for _ in range(3)]
        for stream in streams:
            next(stream)  # each got its clusters

        process.send_signal(signum)
        code = process.wait(30)
        hold.set()
        channel.close()
    output: str = process.output  # type: ignore[attr-defined]
    assert code == 0, output
    assert "Traceback" not in output
    assert '"level": "error"' not in output
    assert '"stopped"' in output
