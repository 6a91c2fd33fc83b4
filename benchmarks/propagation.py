"""Propagation benchmark: how long a weight flip takes to reach a real Envoy, against the floor.

One Envoy sidecar (``--concurrency 1``) routes host ``reviews`` to two loopback backends, v1 and
v2. A VirtualService is flipped between 100/0 and 0/100 (so where traffic goes is unambiguous)
``--flips`` times, each flip more than the store's debounce quiet period after the last one
landed, so every flip is "the first change after quiet". Five ways of delivering a flip run one
after the other, each with its own Envoy:

- ``floor``: Envoy's own filesystem xDS. The listener and clusters are the very resources
  splitplane builds for this mesh, given statically; RDS comes from ``path_config_source`` with
  ``watched_directory``, and each flip renames a new RouteConfiguration file into place.
- ``folder``: a ``splitplane serve --config-dir`` subprocess; each flip writes the VirtualService
  to a temporary name and renames it over the watched file (an editor's atomic save).
- ``kubernetes``: a ``splitplane serve --kubeconfig`` subprocess watching the in-process fake API
  server (``tests/kube/apiserver.py``); each flip is an API write.
- ``push``: splitplane's xDS server alone (``start_xds_server`` and a ``SnapshotCache``) in a
  subprocess holding both snapshots prebuilt; each flip is one byte on its stdin, and it sets the
  other snapshot. No source, no translation: what the gRPC push itself costs.
- ``watch``: the same server following a watched folder with splitplane's inotify watcher; each
  flip renames the VirtualService over the watched file, as for ``folder``, and the server reads
  the file's bytes and sets the other snapshot. No YAML parsing, no translation, no build: the
  least a control plane in Python pays to notice a file change and push it.

Each flip is timed from the rename (folder, floor, watch), the API write returning (kubernetes)
or the byte written (push). Each delivery makes two passes of ``--flips`` flips, so that neither
measurement loads the machine while the other is taken:

1. until Envoy has applied the new route table: a thread polls Envoy's admin
   ``/stats?filter=rds.<name>.(update_success|version_text)`` over one keep-alive connection
   (Envoy counts the success just before it sends the ACK); the time is when the first poll
   showing the new version came back, so it includes up to one poll interval and an admin round
   trip;
2. until traffic has moved: a thread sends requests through the sidecar one after another, and the
   time is when the first answer from the new backend came back.

``--profile`` then runs every delivery but the floor once more with timing probes wrapped around
the pipeline's steps inside the server process (inotify wakeup and YAML parse, watch event, store,
translate, build, serialize, cache, gRPC push up to the response handed to gRPC, the change's
report, logging, garbage collection) and prints, per step, when it started and ended after the
write (medians over the flips).

    .venv/bin/python benchmarks/propagation.py                # 50 flips, prints the table
    .venv/bin/python benchmarks/propagation.py --flips 20 --only floor folder
    .venv/bin/python benchmarks/propagation.py --profile --record   # also writes RESULTS.md
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import functools
import gc
import http.client
import importlib
import inspect
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import yaml
from envoy.config.cluster.v3.cluster_pb2 import Cluster
from envoy.config.core.v3.config_source_pb2 import ApiVersion, ConfigSource, PathConfigSource
from envoy.config.endpoint.v3.endpoint_pb2 import ClusterLoadAssignment
from envoy.config.listener.v3.listener_pb2 import Listener
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.service.discovery.v3.discovery_pb2 import DiscoveryResponse
from google.protobuf import json_format
from google.protobuf.message import Message
from results import record_section

from translators import resources
from translators.build import build_group
from translators.model import NodeGroup, Role
from translators.translate import translate
from xds_server import collector
from xds_server.cli.bootstrap import render_bootstrap
from xds_server.cli.local_envoy import RunningEnvoy, running_envoy
from xds_server.sources.inotify import FOLDER_EVENTS, IN_MOVED_TO, Inotify
from xds_server.xds.cache import SnapshotCache, snapshot_from_messages
from xds_server.xds.client_status import ClientRegistry
from xds_server.xds.grpc_server import start_xds_server

SECTION = "## propagation"
SCENARIOS = ("floor", "folder", "kubernetes", "push", "watch")
NODE_ID = "sidecar~127.0.0.1~bench.default~default.svc.cluster.local"
HOST = "reviews"
BACKEND_HEADER = "x-backend"
TIMEOUT_S = 30.0
TARGET_P50 = 1.5
TARGET_P99 = 3.0

Obj = dict[str, Any]
Stamp = tuple[str, float, float]  # label, start, end (perf_counter: CLOCK_MONOTONIC on Linux)


# -- the mesh ---------------------------------------------------------------------------------


def mesh_objects(ports: Mapping[str, int]) -> list[Obj]:
    """Service ``reviews``; per version a ready pod, its EndpointSlice and a subset."""
    objects: list[Obj] = [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": HOST, "namespace": "default"},
            "spec": {
                "selector": {"app": HOST},
                "ports": [{"name": "http", "port": 80, "targetPort": "http"}],
            },
        },
        {
            "apiVersion": "networking.istio.io/v1",
            "kind": "DestinationRule",
            "metadata": {"name": HOST, "namespace": "default"},
            "spec": {
                "host": HOST,
                "subsets": [{"name": version, "labels": {"version": version}} for version in ports],
            },
        },
    ]
    for version, port in ports.items():
        pod = f"{HOST}-{version}"
        objects += [
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": pod,
                    "namespace": "default",
                    "labels": {"app": HOST, "version": version},
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
                    "name": pod,
                    "namespace": "default",
                    "labels": {"kubernetes.io/service-name": HOST},
                },
                "addressType": "IPv4",
                "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
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


def virtual_service(target: str) -> Obj:
    """The VirtualService sending every request to subset ``target`` (the other one at weight 0)."""
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": HOST, "namespace": "default"},
        "spec": {
            "hosts": [HOST],
            "http": [
                {
                    "route": [
                        {
                            "destination": {"host": HOST, "subset": version},
                            "weight": 100 if version == target else 0,
                        }
                        for version in ("v1", "v2")
                    ]
                }
            ],
        },
    }


def other(version: str) -> str:
    return "v2" if version == "v1" else "v1"


# -- loopback backends ------------------------------------------------------------------------


def _answer(connection: socket.socket, response: bytes) -> None:
    """Answer every request on a keep-alive connection (GETs only), headers and body in one send."""
    buffer = b""
    with connection:
        while True:
            while b"\r\n\r\n" not in buffer:
                chunk = connection.recv(65536)
                if not chunk:
                    return
                buffer += chunk
            _, buffer = buffer.split(b"\r\n\r\n", 1)
            connection.sendall(response)


@contextlib.contextmanager
def http_backend(name: str) -> Iterator[int]:
    """An HTTP/1.1 backend on a free loopback port answering with its name; yields the port."""
    body = name.encode()
    response = (
        f"HTTP/1.1 200 OK\r\ncontent-length: {len(body)}\r\n{BACKEND_HEADER}: {name}\r\n\r\n"
    ).encode() + body
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)

    def accept() -> None:
        while True:
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=_answer, args=(connection, response), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield int(listener.getsockname()[1])
    finally:
        with contextlib.suppress(OSError):
            listener.shutdown(socket.SHUT_RDWR)
        listener.close()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for(condition: Callable[[], bool], what: str, timeout_s: float = TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.01)


# -- what is observed -------------------------------------------------------------------------


class RouteUpdates:
    """Polls Envoy's admin for one route table's RDS ``update_success`` and ``version_text``.

    Keeps, for each new version seen, when the poll that first showed it came back.
    """

    def __init__(self, admin_port: int, route_table: str, interval_s: float) -> None:
        self._admin_port = admin_port
        self._path = f"/stats?filter=%5C.rds%5C.{route_table}%5C.(update_success|version_text)%24"
        self._interval_s = interval_s
        self._changed = threading.Condition()
        self.successes = 0
        self.version = ""
        self.seen_at = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _poll(self, connection: http.client.HTTPConnection) -> tuple[int, str]:
        connection.request("GET", self._path)
        body = connection.getresponse().read().decode()
        successes, version = 0, ""
        for line in body.splitlines():
            name, _, value = line.partition(": ")
            if name.endswith(".update_success"):
                successes = int(value)
            elif name.endswith(".version_text"):
                version = value.strip('"')
        return successes, version

    def _run(self) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", self._admin_port, timeout=10)
        while not self._stop.is_set():
            try:
                successes, version = self._poll(connection)
            except (OSError, http.client.HTTPException):
                connection.close()  # reopened by the next request
                time.sleep(0.01)
                continue
            now = time.perf_counter()
            if successes != self.successes or version != self.version:
                with self._changed:
                    self.successes, self.version, self.seen_at = successes, version, now
                    self._changed.notify_all()
            time.sleep(self._interval_s)
        connection.close()

    def current(self) -> tuple[int, str]:
        """The successes and version the last poll showed."""
        with self._changed:
            return self.successes, self.version

    def wait_beyond(self, successes: int, version: str) -> float:
        """When a poll first showed more successes than ``successes`` and a new version."""
        with self._changed:
            if not self._changed.wait_for(
                lambda: self.successes > successes and self.version != version, TIMEOUT_S
            ):
                raise TimeoutError("Envoy never applied the new route table")
            return self.seen_at

    def __enter__(self) -> RouteUpdates:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)


class Traffic:
    """Requests sent through the sidecar one after another on one keep-alive connection, with
    ``pause_s`` between an answer and the next request.

    Remembers, for each change of the answering backend, when the first answer from the new one
    came back.
    """

    def __init__(self, port: int, pause_s: float) -> None:
        self._port = port
        self._pause_s = pause_s
        self._changed = threading.Condition()
        self.answering = ""
        self.since = 0.0
        self.failures = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", self._port, timeout=10)
        while not self._stop.is_set():
            try:
                connection.request("GET", "/", headers={"Host": HOST})
                reply = connection.getresponse()
                reply.read()
                backend = reply.getheader(BACKEND_HEADER) or ""
            except (OSError, http.client.HTTPException):
                connection.close()
                backend = ""
            now = time.perf_counter()
            if not backend:
                self.failures += 1
                time.sleep(0.001)  # a sidecar that is not routing yet: do not spin
                continue
            if backend != self.answering:
                with self._changed:
                    self.answering, self.since = backend, now
                    self._changed.notify_all()
            if self._pause_s:
                time.sleep(self._pause_s)
        connection.close()

    def wait_answering(self, backend: str) -> float:
        """When the first answer from ``backend`` came back, once it answers."""
        with self._changed:
            if not self._changed.wait_for(lambda: self.answering == backend, TIMEOUT_S):
                raise TimeoutError(f"traffic never moved to {backend}")
            return self.since

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)


# -- flips ------------------------------------------------------------------------------------


class Flipper(Protocol):
    """Makes one flip happen; returns the ``perf_counter`` time it is measured from."""

    def flip(self, target: str) -> float: ...


def atomic_write(path: Path, text: str) -> float:
    """Write ``text`` to a temporary name beside ``path`` and rename it into place.

    Returns the time just before the rename.
    """
    staged = path.with_name(path.name + ".tmp")
    staged.write_text(text)
    started = time.perf_counter()
    os.replace(staged, path)
    return started


@dataclass
class FolderFlipper:
    """Renames the VirtualService for each target over ``path``; the YAML is written out
    beforehand, as the floor's route tables are, so that no flip makes the benchmark process
    busy (and its measuring threads late) just before it is timed."""

    path: Path
    texts: Mapping[str, str] = dataclasses.field(
        default_factory=lambda: {t: yaml.safe_dump(virtual_service(t)) for t in ("v1", "v2")}
    )

    def flip(self, target: str) -> float:
        return atomic_write(self.path, self.texts[target])


@dataclass
class FileRdsFlipper:
    path: Path
    tables: Mapping[str, str]  # target → DiscoveryResponse JSON

    def flip(self, target: str) -> float:
        return atomic_write(self.path, self.tables[target])


class ApiServer(Protocol):
    def apply(self, obj: Mapping[str, Any]) -> Obj: ...


@dataclass
class KubernetesFlipper:
    server: ApiServer

    def flip(self, target: str) -> float:
        self.server.apply(virtual_service(target))
        return time.perf_counter()


@dataclass(frozen=True)
class Settings:
    flips: int
    spacing_s: float
    poll_interval_s: float
    traffic_pause_s: float
    profile: bool = False


@dataclass(frozen=True)
class Flip:
    """One flip: when it was made (``perf_counter``) and how many seconds it took to land."""

    started: float
    seconds: float


@dataclass(frozen=True)
class Measured:
    """The flips of one delivery: timed until Envoy applied the routes (first pass) and until
    traffic moved (second pass), and the requests that failed during the second pass."""

    applied: tuple[Flip, ...]
    moved: tuple[Flip, ...]
    failed_requests: int


def run_flips(
    flipper: Flipper, envoy: RunningEnvoy, outbound_port: int, settings: Settings
) -> Measured:
    """Two passes of ``settings.flips`` flips, starting from v1.

    The first pass only polls Envoy's admin, the second only sends traffic, so that neither
    measurement loads the machine for the other.
    """
    applied: list[Flip] = []
    target = "v1"
    with RouteUpdates(envoy.admin_port, str(outbound_port), settings.poll_interval_s) as updates:
        wait_for(lambda: updates.current()[0] > 0, "the first route table")
        for _ in range(settings.flips):
            time.sleep(settings.spacing_s)
            target = other(target)
            successes, version = updates.current()
            started = flipper.flip(target)
            applied.append(Flip(started, updates.wait_beyond(successes, version) - started))
    moved: list[Flip] = []
    with Traffic(outbound_port, settings.traffic_pause_s) as traffic:
        traffic.wait_answering(target)
        failed_before = traffic.failures
        for _ in range(settings.flips):
            time.sleep(settings.spacing_s)
            target = other(target)
            started = flipper.flip(target)
            moved.append(Flip(started, traffic.wait_answering(target) - started))
        failed = traffic.failures - failed_before
    return Measured(tuple(applied), tuple(moved), failed)


# -- the deliveries ---------------------------------------------------------------------------


def sidecar_resources(
    ports: Mapping[str, int], outbound_port: int, target: str
) -> Mapping[str, Sequence[Message]]:
    """What splitplane builds for a sidecar on ``outbound_port`` when ``target`` gets it all."""
    translation = translate([*mesh_objects(ports), virtual_service(target)])
    if translation.has_errors:
        raise RuntimeError(f"the benchmark mesh does not translate: {translation.diagnostics}")
    return build_group(translation.model, NodeGroup(Role.SIDECAR, outbound_port))


def as_dict(message: Message) -> Obj:
    """``message`` as Envoy's JSON config takes it."""
    out: Obj = json_format.MessageToDict(message, preserving_proto_field_name=True)
    return out


def file_rds_response(route_table: Message, version: str) -> str:
    """A ``DiscoveryResponse`` holding ``route_table``, as the JSON a path config source reads."""
    response = DiscoveryResponse(version_info=version, type_url=resources.ROUTE)
    response.resources.add().Pack(route_table)
    text: str = json_format.MessageToJson(response)
    return text


def floor_bootstrap(ports: Mapping[str, int], outbound_port: int, rds_path: Path) -> Obj:
    """splitplane's listener and clusters, static; RDS from a watched file."""
    built = sidecar_resources(ports, outbound_port, "v1")
    assignments = {
        assignment.cluster_name: assignment
        for assignment in built[resources.ENDPOINT]
        if isinstance(assignment, ClusterLoadAssignment)
    }
    clusters = []
    for cluster in built[resources.CLUSTER]:
        assert isinstance(cluster, Cluster)
        static = Cluster()
        static.CopyFrom(cluster)
        static.ClearField("eds_cluster_config")
        static.type = Cluster.STATIC
        static.load_assignment.CopyFrom(assignments[cluster.eds_cluster_config.service_name])
        clusters.append(as_dict(static))
    listeners = []
    for listener in built[resources.LISTENER]:
        assert isinstance(listener, Listener)
        static_listener = Listener()
        static_listener.CopyFrom(listener)
        for chain in static_listener.filter_chains:
            for network_filter in chain.filters:
                hcm = hcm_pb2.HttpConnectionManager()
                if not network_filter.typed_config.Unpack(hcm):
                    continue
                hcm.rds.config_source.CopyFrom(
                    ConfigSource(
                        path_config_source=PathConfigSource(
                            path=str(rds_path),
                            watched_directory={"path": str(rds_path.parent)},
                        ),
                        resource_api_version=ApiVersion.V3,
                    )
                )
                network_filter.typed_config.Pack(hcm)
        listeners.append(as_dict(static_listener))
    return {
        "node": {"id": NODE_ID, "cluster": "sidecar"},
        "admin": {"access_log": [_null_access_log()]},
        "static_resources": {"listeners": listeners, "clusters": clusters},
    }


def _null_access_log() -> Obj:
    return {
        "name": "envoy.access_loggers.file",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
            "path": "/dev/null",
        },
    }


@dataclass(frozen=True)
class Outcome:
    scenario: str
    measured: Measured
    stamps: tuple[Stamp, ...] = ()  # from a profiled server


def run_floor(ports: Mapping[str, int], workdir: Path, settings: Settings) -> Outcome:
    outbound = free_port()
    rds_dir = workdir / "rds"
    rds_dir.mkdir(parents=True)
    rds_path = rds_dir / "routes.json"
    tables = {}
    for target in ("v1", "v2"):
        (route_table,) = sidecar_resources(ports, outbound, target)[resources.ROUTE]
        tables[target] = file_rds_response(route_table, target)
    rds_path.write_text(tables["v1"])
    with running_envoy(floor_bootstrap(ports, outbound, rds_path), workdir / "envoy") as envoy:
        measured = run_flips(FileRdsFlipper(rds_path, tables), envoy, outbound, settings)
    return Outcome("floor", measured)


@dataclass
class Serve:
    process: subprocess.Popen[bytes]
    xds_port: int
    debug_port: int
    log_path: Path

    def ready(self) -> bool:
        if self.process.poll() is not None:
            log = self.log_path.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"splitplane serve exited {self.process.returncode}:\n{log}")
        try:
            url = f"http://127.0.0.1:{self.debug_port}/readyz"
            with urllib.request.urlopen(url, timeout=1) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False


@contextlib.contextmanager
def splitplane_serve(
    source_args: Sequence[str], workdir: Path, stamps: Path | None = None
) -> Iterator[Serve]:
    """A ``splitplane serve`` subprocess on free loopback ports, ready; SIGTERM after.

    With ``stamps`` it is the profiled serve, which writes its stamps there when it exits.
    """
    xds_port, debug_port = free_port(), free_port()
    env = dict(os.environ)
    if stamps is None:
        program = [str(Path(sys.executable).with_name("splitplane")), "serve"]
    else:
        program = [sys.executable, str(Path(__file__).resolve()), "--profiled-serve"]
        env[STAMPS_ENV] = str(stamps)
    command = [
        *program,
        *source_args,
        "--xds-address",
        f"127.0.0.1:{xds_port}",
        "--debug-address",
        f"127.0.0.1:{debug_port}",
    ]
    log_path = workdir / "splitplane.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    serve = Serve(process, xds_port, debug_port, log_path)
    try:
        wait_for(serve.ready, "splitplane serve ready")
        yield serve
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def sidecar_bootstrap(xds_port: int, outbound_port: int) -> Obj:
    text = render_bootstrap(
        NODE_ID, "sidecar", "default", f"127.0.0.1:{xds_port}", 0, outbound_port=outbound_port
    )
    bootstrap: Obj = yaml.safe_load(text)
    return bootstrap


def run_through_serve(
    scenario: str,
    source_args: Sequence[str],
    flipper: Flipper,
    workdir: Path,
    settings: Settings,
) -> Outcome:
    outbound = free_port()
    stamps_path = workdir / "stamps.json" if settings.profile else None
    with splitplane_serve(source_args, workdir, stamps_path) as serve:
        bootstrap = sidecar_bootstrap(serve.xds_port, outbound)
        with running_envoy(bootstrap, workdir / "envoy") as envoy:
            measured = run_flips(flipper, envoy, outbound, settings)
    return Outcome(scenario, measured, read_stamps(stamps_path))


def run_folder(ports: Mapping[str, int], workdir: Path, settings: Settings) -> Outcome:
    mesh = workdir / "mesh"
    mesh.mkdir(parents=True)
    (mesh / "mesh.yaml").write_text(yaml.safe_dump_all(mesh_objects(ports)))
    vs_path = mesh / "virtualservice.yaml"
    vs_path.write_text(yaml.safe_dump(virtual_service("v1")))
    return run_through_serve(
        "folder", ["--config-dir", str(mesh)], FolderFlipper(vs_path), workdir, settings
    )


def run_kubernetes(ports: Mapping[str, int], workdir: Path, settings: Settings) -> Outcome:
    from tests.kube.apiserver import FakeApiServer

    workdir.mkdir(parents=True)
    with FakeApiServer() as server:
        for obj in [*mesh_objects(ports), virtual_service("v1")]:
            server.apply(obj)
        kubeconfig = server.write_kubeconfig(workdir / "kubeconfig")
        return run_through_serve(
            "kubernetes",
            ["--kubeconfig", str(kubeconfig)],
            KubernetesFlipper(server),
            workdir,
            settings,
        )


def read_stamps(path: Path | None) -> tuple[Stamp, ...]:
    """The stamps a profiled process wrote to ``path`` (none if it wrote none)."""
    if path is None or not path.exists():
        return ()
    return tuple((str(n), float(s), float(e)) for n, s, e in json.loads(path.read_text()))


# -- a bare push: the xDS server alone --------------------------------------------------------


async def push_server(
    ports: Mapping[str, int], outbound_port: int, watched: str | None = None
) -> None:
    """The xDS server with two prebuilt snapshots, switched by bytes on stdin.

    Prints the bound port. Each ``1`` or ``2`` read sets the v1 or v2 snapshot; end of input stops.
    With ``watched`` (a file), each time a file is renamed over it the server reads its bytes
    and sets the other snapshot instead.
    With $STAMPS_ENV set, the probes are installed and their stamps written there at the end.
    The collector runs with the thresholds ``splitplane serve`` sets.
    """
    collector.tune()
    stamps: list[Stamp] = []
    if STAMPS_ENV in os.environ:
        install_probes(stamps)
    cache = SnapshotCache()
    group = NodeGroup(Role.SIDECAR, outbound_port).key
    snapshots = {
        target: snapshot_from_messages(sidecar_resources(ports, outbound_port, target))
        for target in ("v1", "v2")
    }
    cache.set_snapshot(group, snapshots["v1"])
    server, port = await start_xds_server(cache, ClientRegistry())
    print(port, flush=True)
    loop = asyncio.get_running_loop()
    finished = asyncio.Event()

    def on_input() -> None:
        data = os.read(sys.stdin.fileno(), 64)
        if not data:
            loop.remove_reader(sys.stdin.fileno())
            finished.set()
        for byte in data.decode():
            cache.set_snapshot(group, snapshots[f"v{byte}"])

    loop.add_reader(sys.stdin.fileno(), on_input)
    if watched is None:
        await finished.wait()
    else:
        with follow_renames(watched) as renamed:
            current = "v1"

            def on_rename() -> None:
                nonlocal current
                if renamed():
                    current = other(current)
                    cache.set_snapshot(group, snapshots[current])

            loop.add_reader(renamed.fd, on_rename)
            await finished.wait()
            loop.remove_reader(renamed.fd)
    await server.stop(0)
    if STAMPS_ENV in os.environ:
        Path(os.environ[STAMPS_ENV]).write_text(json.dumps(stamps))


class RenameWatch:
    """Follows renames over one file with splitplane's inotify watcher; reads the file each time."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._name = os.path.basename(path)
        self._inotify = Inotify()
        self._inotify.add_watch(os.path.dirname(path), FOLDER_EVENTS)
        self.fd = self._inotify.fd

    def __call__(self) -> bytes:
        """The file's bytes if a file was renamed over it since the last call, else empty."""
        events = self._inotify.read_events()
        if not any(e.mask & IN_MOVED_TO and e.name == self._name for e in events):
            return b""
        with open(self._path, "rb") as file:
            return file.read()

    def close(self) -> None:
        self._inotify.close()


@contextlib.contextmanager
def follow_renames(path: str) -> Iterator[RenameWatch]:
    watch = RenameWatch(path)
    try:
        yield watch
    finally:
        watch.close()


@dataclass
class PushFlipper:
    process: subprocess.Popen[bytes]

    def flip(self, target: str) -> float:
        assert self.process.stdin is not None
        started = time.perf_counter()
        os.write(self.process.stdin.fileno(), target[-1].encode())
        return started


def run_push(ports: Mapping[str, int], workdir: Path, settings: Settings) -> Outcome:
    return _run_prebuilt("push", ports, workdir, settings)


def run_watch(ports: Mapping[str, int], workdir: Path, settings: Settings) -> Outcome:
    return _run_prebuilt("watch", ports, workdir, settings)


def _run_prebuilt(
    scenario: str, ports: Mapping[str, int], workdir: Path, settings: Settings
) -> Outcome:
    """The push server with prebuilt snapshots, switched through stdin (``push``) or by renames
    over a watched VirtualService file (``watch``)."""
    workdir.mkdir(parents=True)
    outbound = free_port()
    given: Obj = {"ports": dict(ports), "outbound": outbound}
    flipper: Flipper | None = None
    if scenario == "watch":
        (workdir / "mesh").mkdir()
        vs_path = workdir / "mesh" / "virtualservice.yaml"
        vs_path.write_text(yaml.safe_dump(virtual_service("v1")))
        given["watched"] = str(vs_path)
        flipper = FolderFlipper(vs_path)
    command = [sys.executable, str(Path(__file__).resolve()), "--push-server", json.dumps(given)]
    env = dict(os.environ)
    stamps_path = workdir / "stamps.json"
    if settings.profile:
        env[STAMPS_ENV] = str(stamps_path)
    process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
    try:
        assert process.stdout is not None
        xds_port = int(process.stdout.readline())
        with running_envoy(sidecar_bootstrap(xds_port, outbound), workdir / "envoy") as envoy:
            measured = run_flips(flipper or PushFlipper(process), envoy, outbound, settings)
    finally:
        if process.stdin is not None:
            process.stdin.close()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return Outcome(scenario, measured, read_stamps(stamps_path))


RUNNERS: dict[str, Callable[[Mapping[str, int], Path, Settings], Outcome]] = {
    "floor": run_floor,
    "folder": run_folder,
    "kubernetes": run_kubernetes,
    "push": run_push,
    "watch": run_watch,
}


# -- where the time goes (--profile) ---------------------------------------------------------

# Calls timed inside a profiled `splitplane serve`: (label, module, attribute path).
PROBES: tuple[tuple[str, str, str], ...] = (
    (
        "watch event line read (informer thread)",
        "xds_server.sources.kubernetes",
        "_Informer._on_line",
    ),
    (
        "folder event handled (read, parse, store)",
        "xds_server.sources.directory",
        "DirectorySource._on_events",
    ),
    ("  file read + YAML parse", "xds_server.sources.directory", "parse_file"),
    ("store upsert", "xds_server.store", "ObjectStore.upsert"),
    ("pipeline run (ControlPlane._on_change)", "xds_server.app", "ControlPlane._on_change"),
    ("  the changed objects read (ObjectStore.get)", "xds_server.store", "ObjectStore.get"),
    (
        "  translate (the change on its own, else in full)",
        "translators.incremental",
        "Translator.apply",
    ),
    ("  model compared with the last one", "translators.model", "MeshModel.__eq__"),
    ("  _build (the groups' snapshots)", "xds_server.app", "ControlPlane._build"),
    ("    build_group", "translators.build", "ResourceBuilder.build_group"),
    ("    snapshot_from_messages", "xds_server.app", "snapshot_from_messages"),
    ("  _hand_over (snapshots to the cache)", "xds_server.app", "ControlPlane._hand_over"),
    ("    SnapshotCache.set_snapshot", "xds_server.xds.cache", "SnapshotCache.set_snapshot"),
    ("ADS push (responses built and written)", "xds_server.xds.ads", "SotwStream.push"),
    ("  client status: response recorded", "xds_server.xds.client_status", "ClientRecord.sent"),
    ("  response assembled (gRPC writes it next)", "xds_server.xds.ads", "sotw_response"),
    ("change reported (diagnostics, logs)", "xds_server.app", "ControlPlane._report"),
    ("log records written (anywhere)", "logging", "StreamHandler.emit"),
)
GC_LABEL = "garbage collection (anywhere)"
STAMPS_ENV = "SPLITPLANE_BENCH_STAMPS"


def timed(label: str, function: Any, stamps: list[Stamp]) -> Any:
    """``function`` (plain or async) wrapped to append a stamp per call."""
    if inspect.iscoroutinefunction(function):

        @functools.wraps(function)
        async def timed_coroutine(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return await function(*args, **kwargs)
            finally:
                stamps.append((label, start, time.perf_counter()))

        return timed_coroutine

    @functools.wraps(function)
    def timed_call(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            stamps.append((label, start, time.perf_counter()))

    return timed_call


def install_probes(stamps: list[Stamp]) -> None:
    """Wrap every probe (and watch the collector) to append its calls to ``stamps``."""
    collecting = time.perf_counter()

    def on_gc(phase: str, info: Mapping[str, int]) -> None:
        nonlocal collecting
        if phase == "start":
            collecting = time.perf_counter()
        else:
            stamps.append((GC_LABEL, collecting, time.perf_counter()))

    gc.callbacks.append(on_gc)
    for label, module_name, path in PROBES:
        owner: Any = importlib.import_module(module_name)
        *parents, attribute = path.split(".")
        try:
            for parent in parents:
                owner = getattr(owner, parent)
            target = getattr(owner, attribute)
        except AttributeError as missing:  # the code moved on: update PROBES
            raise RuntimeError(f"probe {module_name}.{path} not found") from missing
        setattr(owner, attribute, timed(label, target, stamps))


def profiled_serve(argv: Sequence[str]) -> int:
    """``splitplane serve argv`` with every probe installed; the stamps go to $STAMPS_ENV."""
    stamps: list[Stamp] = []
    install_probes(stamps)
    from xds_server.cli.main import main as splitplane_main

    try:
        return splitplane_main(["serve", *argv])
    finally:
        Path(os.environ[STAMPS_ENV]).write_text(json.dumps(stamps))


@dataclass(frozen=True)
class Stage:
    """One probe over the flips of a profiled run (medians over flips, ms after the write)."""

    label: str
    first_start_ms: float
    first_end_ms: float
    total_ms: float
    calls: float


def stages(outcome: Outcome, spacing_s: float) -> list[Stage]:
    """Each probe's median timing per flip (both passes); a call counts in a flip when it
    started between that flip's write and the next one (or ``spacing_s`` after the last)."""
    measured = outcome.measured
    starts = sorted(flip.started for flip in (*measured.applied, *measured.moved))
    windows = list(zip(starts, [*starts[1:], starts[-1] + spacing_s], strict=True))
    stamps = outcome.stamps
    out = []
    for label in [*(probe[0] for probe in PROBES), GC_LABEL]:
        per_flip = [
            [(start, end) for name, start, end in stamps if name == label and low <= start < high]
            for low, high in windows
        ]
        hit = [(calls, low) for calls, (low, _) in zip(per_flip, windows, strict=True) if calls]
        if not hit:
            continue
        out.append(
            Stage(
                label,
                statistics.median((calls[0][0] - low) * 1000 for calls, low in hit),
                statistics.median((calls[0][1] - low) * 1000 for calls, low in hit),
                statistics.median(sum(e - s for s, e in calls) * 1000 for calls, _ in hit),
                statistics.median(len(calls) for calls, _ in hit),
            )
        )
    return out


def stage_table(outcome: Outcome, spacing_s: float) -> str:
    """Where the time of a flip goes, as a Markdown table."""
    measured = outcome.measured
    flips = len(measured.applied) + len(measured.moved)
    lines = [
        f"{outcome.scenario}: medians over {flips} flips, ms after the write",
        "",
        "| stage | first call starts | first call ends | time in all calls | calls |",
        "|---|---:|---:|---:|---:|",
    ]
    for stage in stages(outcome, spacing_s):
        lines.append(
            f"| {stage.label.replace('  ', '· ')} "
            f"| {stage.first_start_ms:.2f} | {stage.first_end_ms:.2f} "
            f"| {stage.total_ms:.2f} | {stage.calls:g} |"
        )
    applied = statistics.median(flip.seconds for flip in measured.applied) * 1000
    moved = statistics.median(flip.seconds for flip in measured.moved) * 1000
    lines.append(f"| Envoy showed the new routes (admin poll, first pass) | | {applied:.2f} | | |")
    lines.append(f"| first answer from the new backend (second pass) | | {moved:.2f} | | |")
    return "\n".join(lines)


# -- figures ----------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0–100), interpolated between the two nearest ranks."""
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    return statistics.quantiles(ordered, n=100, method="inclusive")[round(q) - 1]


@dataclass(frozen=True)
class Figures:
    """p50 and p99 of one measure of one scenario, in milliseconds."""

    p50_ms: float
    p99_ms: float


def figures(values: Sequence[float]) -> Figures:
    return Figures(percentile(values, 50) * 1000, percentile(values, 99) * 1000)


def flips_until(measured: Measured, label: str) -> tuple[Flip, ...]:
    """The flips timed until "routes applied" or until "traffic moved"."""
    return measured.applied if label == "routes applied" else measured.moved


def table(outcomes: Sequence[Outcome]) -> str:
    """A Markdown table: p50/p99 per delivery and measure, and their ratios to the floor's."""
    floor = next((outcome for outcome in outcomes if outcome.scenario == "floor"), None)
    lines = [
        "| delivery | measured until | p50 (ms) | p99 (ms) | p50 / floor p50 | p99 / floor p99 "
        "| failed requests |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for outcome in outcomes:
        for label in ("routes applied", "traffic moved"):
            own = figures([flip.seconds for flip in flips_until(outcome.measured, label)])
            failed = str(outcome.measured.failed_requests) if label == "traffic moved" else ""
            ratios = "| – | – "
            if floor is not None and outcome is not floor:
                base = figures([flip.seconds for flip in flips_until(floor.measured, label)])
                p50_ratio, p99_ratio = own.p50_ms / base.p50_ms, own.p99_ms / base.p99_ms
                ratios = (
                    f"| {p50_ratio:.2f}× {verdict(p50_ratio <= TARGET_P50)} "
                    f"| {p99_ratio:.2f}× {verdict(p99_ratio <= TARGET_P99)} "
                )
            lines.append(
                f"| {outcome.scenario} | {label} | {own.p50_ms:.2f} | {own.p99_ms:.2f} "
                f"{ratios}| {failed} |"
            )
    return "\n".join(lines)


def verdict(met: bool) -> str:
    return "(met)" if met else "(missed)"


def report(outcomes: Sequence[Outcome], settings: Settings, command: str) -> str:
    """The RESULTS.md section: the command, what was measured, and the table."""
    setup = (
        f"Per delivery, two passes of {settings.flips} flips of a VirtualService between 100/0 "
        f"and 0/100, {settings.spacing_s * 1000:.0f} ms of quiet before each (the store's "
        "debounce quiet period is 100 ms, so each is the first change after quiet); one Envoy "
        "per delivery (`--concurrency 1`), two loopback backends. `folder` and `kubernetes` "
        "are a real `splitplane serve` subprocess (the fake API server runs in the benchmark "
        "process); `floor` is Envoy's own filesystem RDS (`path_config_source` + "
        "`watched_directory`) serving the route table splitplane builds, beside splitplane's "
        "listener and clusters given statically; `push` is splitplane's xDS server alone, "
        "switching between two prebuilt snapshots (no source, no translation); `watch` is that "
        "server switching when the VirtualService file is renamed over the watched one, after "
        "reading its bytes (no YAML parse, no translation, no build). Timed from the rename "
        "into place (folder, floor, watch), the API write returning (kubernetes) or the switch "
        "request (push). First pass: until Envoy's admin showed the new RDS `version_text` and "
        f"`update_success` (polled every {settings.poll_interval_s * 1000:.1f} ms over "
        "keep-alive, so this includes up to one poll interval and an admin round trip). Second "
        "pass: until the first answer from the new backend (one client sending requests back "
        f"to back). Targets: p50 ≤ {TARGET_P50}× and p99 ≤ {TARGET_P99}× the floor's. With "
        f"{settings.flips} samples a p99 is close to the worst flip: it moves a lot between runs."
    )
    return (
        f"{SECTION}\n\nCommand: `{command}`\n\n{textwrap.fill(setup, 100)}\n\n{table(outcomes)}\n"
    )


def run_all(
    scenarios: Sequence[str], ports: Mapping[str, int], workdir: Path, settings: Settings
) -> list[Outcome]:
    """Each delivery in turn, in its own folder under ``workdir``."""
    outcomes = []
    for scenario in scenarios:
        name = f"{scenario}-profiled" if settings.profile else scenario
        outcome = RUNNERS[scenario](ports, workdir / name, settings)
        outcomes.append(outcome)
        summary = figures([flip.seconds for flip in outcome.measured.moved])
        print(
            f"{name}: traffic moved p50 {summary.p50_ms:.2f} ms, p99 {summary.p99_ms:.2f} ms",
            flush=True,
        )
    return outcomes


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--flips", type=int, default=50, help="flips per delivery (default 50)")
    parser.add_argument(
        "--spacing",
        type=float,
        default=0.25,
        metavar="SECONDS",
        help="quiet before each flip, after the previous one landed (default 0.25)",
    )
    parser.add_argument(
        "--poll-interval",
        type=float,
        default=0.0005,
        metavar="SECONDS",
        help="pause between polls of Envoy's admin stats (default 0.0005)",
    )
    parser.add_argument(
        "--traffic-pause",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="pause between one answer and the next request (default 0: none)",
    )
    parser.add_argument(
        "--only", nargs="+", choices=SCENARIOS, default=list(SCENARIOS), metavar="DELIVERY"
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="then run every delivery but the floor again with timing probes, and print where"
        " the time goes in a flip",
    )
    parser.add_argument("--record", action="store_true", help="write the table to RESULTS.md")
    args = parser.parse_args()
    if args.flips < 1:
        parser.error("--flips must be at least 1")
    settings = Settings(args.flips, args.spacing, args.poll_interval, args.traffic_pause)
    scenarios = [scenario for scenario in SCENARIOS if scenario in args.only]
    with (
        tempfile.TemporaryDirectory(prefix="propagation-") as tmp,
        http_backend("v1") as v1,
        http_backend("v2") as v2,
    ):
        ports = {"v1": v1, "v2": v2}
        outcomes = run_all(scenarios, ports, Path(tmp), settings)
        print(table(outcomes), flush=True)
        profiled: list[Outcome] = []
        if args.profile:
            probed = dataclasses.replace(settings, profile=True)
            profiled = run_all([s for s in scenarios if s != "floor"], ports, Path(tmp), probed)
    command = ".venv/bin/python benchmarks/propagation.py " + " ".join(sys.argv[1:])
    text = report(outcomes, settings, command.strip())
    profiles = [stage_table(outcome, settings.spacing_s) for outcome in profiled]
    for profile in profiles:
        print(f"\n{profile}")
    if profiles:
        text += (
            "\nWhere the time goes: the same flips again, with timing probes in the server "
            "process (`--profile`).\n\n" + "\n\n".join(profiles) + "\n"
        )
    if args.record:
        record_section(SECTION, text)


if __name__ == "__main__":
    sys.path.append(str(Path(__file__).resolve().parent.parent))  # for tests.kube
    if sys.argv[1:2] == ["--profiled-serve"]:
        sys.exit(profiled_serve(sys.argv[2:]))
    if sys.argv[1:2] == ["--push-server"]:
        given = json.loads(sys.argv[2])
        asyncio.run(push_server(given["ports"], given["outbound"], given.get("watched")))
        sys.exit(0)
    main()
