"""Every bootstrap splitplane generates is one a real Envoy (or grpcio) accepts and acts on.

`envoy --mode validate` checks each rendering offline; then a real Envoy started from a rendered
bootstrap must open an ADS stream to a recording server and introduce itself with the node id and
metadata the server groups by, and a proxyless grpcio client must do the same from the JSON one.
"""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import textwrap
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from envoy.config.core.v3.base_pb2 import Node
from envoy.service.discovery.v3.discovery_pb2 import (
    DeltaDiscoveryRequest,
    DeltaDiscoveryResponse,
    DiscoveryRequest,
    DiscoveryResponse,
)

from tests.support.backends import free_port
from tests.support.pki import CertificateAuthority, spiffe_id
from xds_server.cli.bootstrap import (
    BootstrapTls,
    render_bootstrap,
    render_grpc_bootstrap,
    render_sds_files,
)
from xds_server.xds.nodes import group_of

pytestmark = pytest.mark.envoy

ENVOY = Path(sys.executable).parent / "envoy"
REPO = Path(__file__).resolve().parents[2]
ADS_SERVICE = "envoy.service.discovery.v3.AggregatedDiscoveryService"
WAIT_SECONDS = 30.0


def envoy_validate(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(ENVOY), "--mode", "validate", "-c", str(path), "--disable-hot-restart"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


# ---------------------------------------------------------------------------------------------
# Offline validation


@pytest.mark.parametrize("delta", [False, True], ids=["sotw", "delta"])
@pytest.mark.parametrize(
    ("role", "extra"),
    [
        ("sidecar", {}),
        ("sidecar", {"outbound_port": 16001}),
        ("gateway", {}),
        ("gateway", {"http_port": 80, "health_port": 15021}),
    ],
    ids=["sidecar", "sidecar-custom-port", "gateway", "gateway-with-health-port"],
)
@pytest.mark.parametrize(
    "xds_address",
    ["127.0.0.1:15010", "[::1]:15010", "splitplane.splitplane-system.svc.cluster.local:15010"],
    ids=["ipv4", "ipv6", "dns-name"],
)
def test_generated_bootstrap_passes_envoy_validate(
    tmp_path: Path, role: str, extra: dict[str, Any], delta: bool, xds_address: str
) -> None:
    path = tmp_path / "bootstrap.yaml"
    path.write_text(
        render_bootstrap(
            'sidecar~10.0.0.1~reviews-v1.default~default "quoted": id',
            role,
            "default",
            xds_address,
            15000,
            delta=delta,
            **extra,
        )
    )

    result = envoy_validate(path)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK" in result.stdout + result.stderr


@pytest.mark.parametrize("delta", [False, True], ids=["sotw", "delta"])
@pytest.mark.parametrize("role", ["sidecar", "gateway"])
@pytest.mark.parametrize("mutual", [True, False], ids=["mutual-tls", "server-tls"])
def test_tls_bootstrap_and_its_sds_files_pass_envoy_validate(
    tmp_path: Path, role: str, mutual: bool, delta: bool
) -> None:
    leaf = CertificateAuthority.new().issue(tmp_path / "certs", uris=[spiffe_id("default", "a")])
    tls = BootstrapTls(
        ca_file=str(leaf.ca_file),
        cert_file=str(leaf.cert_file) if mutual else "",
        key_file=str(leaf.key_file) if mutual else "",
        sds_dir=str(tmp_path / "sds"),
    )
    for sds_path, text in render_sds_files(tls).items():
        Path(sds_path).parent.mkdir(parents=True, exist_ok=True)
        Path(sds_path).write_text(text)
    path = tmp_path / "bootstrap.yaml"
    path.write_text(
        render_bootstrap(
            "node-1",
            role,
            "default",
            "splitplane.splitplane-system.svc:15012",
            15000,
            delta=delta,
            tls=tls,
        )
    )

    result = envoy_validate(path)

    assert result.returncode == 0, result.stdout + result.stderr


# Where the deploy/ manifests mount each bootstrap's ConfigMap (its SDS files sit next to it).
CONFIG_MAP_MOUNT = "/etc/envoy/"


def embedded_bootstraps() -> list[tuple[str, str, dict[str, str]]]:
    """(where, bootstrap text, the whole ConfigMap's data) for every Envoy bootstrap kept in a
    ConfigMap under deploy/."""
    found = []
    for path in sorted((REPO / "deploy").rglob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            if isinstance(document, dict) and document.get("kind") == "ConfigMap":
                data = document.get("data") or {}
                for key, text in data.items():
                    if key.endswith((".yaml", ".yml")) and "dynamic_resources" in text:
                        where = f"{path.relative_to(REPO)}:{document['metadata']['name']}/{key}"
                        found.append((where, text, data))
    return found


def test_deploy_has_bootstraps_in_config_maps() -> None:
    wheres = [where for where, _, _ in embedded_bootstraps()]

    assert any("loadbalancer-fleet.yaml" in where for where in wheres), wheres
    assert any("sidecar-app.yaml" in where for where in wheres), wheres


@pytest.mark.parametrize(
    ("where", "text", "data"), embedded_bootstraps(), ids=lambda v: str(v)[:60]
)
def test_bootstrap_in_a_deploy_config_map_passes_envoy_validate(
    tmp_path: Path, where: str, text: str, data: dict[str, str]
) -> None:
    # The ConfigMap as its pod sees it: every key a file in one folder (here, not /etc/envoy).
    for key, content in data.items():
        (tmp_path / key).write_text(content)
    path = tmp_path / "bootstrap.yaml"
    path.write_text(text.replace(CONFIG_MAP_MOUNT, f"{tmp_path}/"))

    result = envoy_validate(path)

    assert result.returncode == 0, f"{where}\n{result.stdout}{result.stderr}"


# ---------------------------------------------------------------------------------------------
# A real client connects


@dataclass(frozen=True)
class Hello:
    """The first request a client sent on a new ADS stream."""

    protocol: str  # "sotw" or "delta"
    node: Node
    type_url: str


class RecordingAds:
    """An ADS server that records each stream's first request and answers every initial
    request with an empty resource set, so an Envoy finishes initializing."""

    def __init__(self) -> None:
        self.hellos: queue.Queue[Hello] = queue.Queue()
        self._lock = threading.Lock()
        self._nonce = 0

    def _next_nonce(self) -> str:
        with self._lock:
            self._nonce += 1
            return str(self._nonce)

    def sotw(
        self, requests: Iterator[DiscoveryRequest], context: grpc.ServicerContext
    ) -> Iterator[DiscoveryResponse]:
        first = True
        for request in requests:
            if first:
                self.hellos.put(Hello("sotw", request.node, request.type_url))
                first = False
            if not request.response_nonce:
                yield DiscoveryResponse(
                    type_url=request.type_url, version_info="1", nonce=self._next_nonce()
                )

    def delta(
        self, requests: Iterator[DeltaDiscoveryRequest], context: grpc.ServicerContext
    ) -> Iterator[DeltaDiscoveryResponse]:
        first = True
        for request in requests:
            if first:
                self.hellos.put(Hello("delta", request.node, request.type_url))
                first = False
            if not request.response_nonce:
                yield DeltaDiscoveryResponse(
                    type_url=request.type_url, system_version_info="1", nonce=self._next_nonce()
                )

    def first_hello(self) -> Hello:
        return self.hellos.get(timeout=WAIT_SECONDS)


@pytest.fixture
def ads() -> Iterator[tuple[RecordingAds, int]]:
    recorder = RecordingAds()
    handler = grpc.method_handlers_generic_handler(
        ADS_SERVICE,
        {
            "StreamAggregatedResources": grpc.stream_stream_rpc_method_handler(
                recorder.sotw,
                request_deserializer=DiscoveryRequest.FromString,
                response_serializer=DiscoveryResponse.SerializeToString,
            ),
            "DeltaAggregatedResources": grpc.stream_stream_rpc_method_handler(
                recorder.delta,
                request_deserializer=DeltaDiscoveryRequest.FromString,
                response_serializer=DeltaDiscoveryResponse.SerializeToString,
            ),
        },
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield recorder, port
    finally:
        server.stop(grace=None)


@pytest.fixture
def start_envoy(tmp_path: Path) -> Iterator[Any]:
    processes: list[subprocess.Popen[bytes]] = []

    def start(bootstrap: str) -> subprocess.Popen[bytes]:
        config = tmp_path / f"envoy-{len(processes)}.yaml"
        config.write_text(bootstrap)
        log = (tmp_path / f"envoy-{len(processes)}.log").open("wb")
        process = subprocess.Popen(
            [str(ENVOY), "-c", str(config), "--disable-hot-restart", "--log-level", "warn"],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        processes.append(process)
        return process

    try:
        yield start
    finally:
        for process in processes:
            process.kill()
            process.wait(timeout=WAIT_SECONDS)


def http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            status: int = response.status
            return status
    except urllib.error.HTTPError as err:
        return err.code
    except OSError:
        return 0


def wait_for_status(url: str, expected: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    status = 0
    while time.monotonic() < deadline:
        status = http_status(url)
        if status == expected:
            return
        if process.poll() is not None:
            pytest.fail(f"Envoy exited with {process.returncode}")
        time.sleep(0.05)
    pytest.fail(f"{url} answered {status}, not {expected}, within {WAIT_SECONDS} s")


@pytest.mark.parametrize("protocol", ["sotw", "delta"])
@pytest.mark.parametrize(
    ("role", "expected_group"),
    [("sidecar", "sidecar:15001/shop"), ("gateway", "gateway:8080/shop")],
)
def test_envoy_opens_an_ads_stream_and_introduces_itself(
    ads: tuple[RecordingAds, int],
    start_envoy: Any,
    role: str,
    expected_group: str,
    protocol: str,
) -> None:
    recorder, port = ads
    node_id = f"{role}~127.0.0.1~client-{protocol}.shop~shop.svc.cluster.local"
    address = f"127.0.0.1:{port}"
    start_envoy(render_bootstrap(node_id, role, "shop", address, 0, delta=protocol == "delta"))

    hello = recorder.first_hello()

    assert hello.protocol == protocol
    assert hello.node.id == node_id
    assert hello.node.metadata.fields["ROLE"].string_value == role
    assert hello.node.metadata.fields["NAMESPACE"].string_value == "shop"
    assert group_of(hello.node).key == expected_group
    assert hello.type_url.endswith("envoy.config.cluster.v3.Cluster")


def test_gateway_health_listener_answers_once_envoy_has_its_configuration(
    ads: tuple[RecordingAds, int], start_envoy: Any
) -> None:
    recorder, port = ads
    health_port = free_port()
    envoy = start_envoy(
        render_bootstrap(
            "lb-0", "gateway", "splitplane-system", f"127.0.0.1:{port}", 0, health_port=health_port
        )
    )

    assert recorder.first_hello().node.id == "lb-0"
    wait_for_status(f"http://127.0.0.1:{health_port}/healthz/ready", 200, envoy)


def test_proxyless_grpc_client_reads_the_json_bootstrap(ads: tuple[RecordingAds, int]) -> None:
    recorder, port = ads
    bootstrap = render_grpc_bootstrap("proxyless~client-1", "shop", f"127.0.0.1:{port}")
    client = textwrap.dedent(
        """
        import grpc
        channel = grpc.insecure_channel("xds:///reviews.shop.svc.cluster.local:80")
        try:
            grpc.channel_ready_future(channel).result(timeout=60)
        except grpc.FutureTimeoutError:
            pass
        """
    )
    env = {**os.environ, "GRPC_XDS_BOOTSTRAP_CONFIG": bootstrap}
    process = subprocess.Popen([sys.executable, "-c", client], env=env)
    try:
        hello = recorder.first_hello()
    finally:
        process.kill()
        process.wait(timeout=WAIT_SECONDS)

    assert hello.node.id == "proxyless~client-1"
    assert hello.node.metadata.fields["ROLE"].string_value == "proxyless"
    assert group_of(hello.node).key == "proxyless/shop"
