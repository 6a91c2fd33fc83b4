"""Hostile clients against a real `splitplane serve`: each scenario beside an undisturbed baseline.

A `splitplane serve --config-dir` of N services (translate.py's services: one port, two subsets,
a 90/10 VirtualService, four pods each; a file per service) runs under a 1,024 file-descriptor
limit, as in a default container. K sidecar-like ADS streams (CDS, LDS and SRDS wildcard, RDS
the route configurations the scopes name; ACKing everything; in worker processes that read only
each response's version and nonce, and the scopes' route configuration names) stay
connected throughout. A flip rewrites one VirtualService 90/10 ↔ 10/90; its propagation is the
time from the write until every one of the K streams has the new route configuration.

- baseline: flips with nothing else going on; the server's RSS.
- (a) churn: M short-lived streams, each with node metadata of its own (a distinct
  OUTBOUND_PORT, so a node group of its own, and a distinct pod name), open, ask for listeners,
  and leave, C at a time. Once the groups are dropped (--group-grace after the last one), the
  RSS against the baseline's (target: within 10 %), and flips again (target: ≤ 1.2×).
- (b) debug reads: /debug/snapshot and /debug/clients read back to back by three readers while
  flipping: push p99 against the baseline's (target ≤ 1.2×), and /healthz p99, probed every
  20 ms meanwhile from a process of its own (target < 50 ms), against /healthz probed so during
  the baseline's flips. The
  flips start once each reader has read both views once (the first read renders every
  resource, later ones only what changed; how long it took is shown).
- (c) slow headers: S connections to the debug port, each sending one header byte a second;
  then new xDS streams (a connection of their own each) are timed to their first response
  (target ≤ 1 s), against the same before.

    .venv/bin/python benchmarks/hostile.py --record      # 10k services, 1,000 streams
    .venv/bin/python benchmarks/hostile.py --services 1000 --streams 100 --short-lived 1000
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import multiprocessing
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import grpc
import yaml
from envoy.config.core.v3.base_pb2 import Node
from envoy.config.route.v3.scoped_route_pb2 import ScopedRouteConfiguration
from envoy.service.discovery.v3.discovery_pb2 import DiscoveryRequest, DiscoveryResponse
from google.protobuf.struct_pb2 import Struct
from propagation import percentile
from results import record_section
from translate import NAMESPACE, service_objects

from xds_server.xds.cache import CLUSTER, LISTENER, ROUTE, SCOPED_ROUTE

SECTION = "## hostile"
# Worker processes start fresh: a forked copy of a process that has used gRPC can hang.
SPAWN = multiprocessing.get_context("spawn")
SOTW_METHOD = "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources"
STREAMS_PER_CHANNEL = 100
RAMP_BATCH = 50  # streams per worker connecting at once
SERVER_FILE_LIMIT = 1024
READY_TIMEOUT_S = 600.0
FLIP_TIMEOUT_S = 30.0  # a flip not everywhere by then counts as this long
FIRST_RESPONSE_TIMEOUT_S = 10.0
# What deploy/control-plane.yaml sets for the server process that bears on these figures: the C
# allocator for Python objects, which hands freed pages back (see the Deployment's comment).
DEPLOYED_ENVIRONMENT = {"PYTHONMALLOC": "malloc"}


# -- a light ADS client: responses stay bytes; only version, type and nonce are read ----------


def _varint(data: bytes, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, at
        shift += 7


def response_fields(data: bytes) -> dict[int, str]:
    """A ``DiscoveryResponse``'s version (1), type URL (4) and nonce (5), skipping resources."""
    found: dict[int, str] = {}
    at = 0
    while at < len(data):
        tag, at = _varint(data, at)
        number, wire = tag >> 3, tag & 7
        if wire == 2:
            length, at = _varint(data, at)
            if number in (1, 4, 5):
                found[number] = data[at : at + length].decode()
            at += length
        elif wire == 0:
            _, at = _varint(data, at)
        else:
            raise ValueError(f"unexpected wire type {wire}")
    return found


def scoped_tables(data: bytes) -> set[str]:
    """The route configurations the scopes of an SRDS ``DiscoveryResponse`` name."""
    response = DiscoveryResponse.FromString(data)
    tables = set()
    for packed in response.resources:
        scope = ScopedRouteConfiguration.FromString(packed.value)
        tables.add(scope.route_configuration_name)
    return tables


def raw_bytes(data: bytes) -> bytes:
    return data


def sotw_call(channel: grpc.aio.Channel) -> Any:
    return channel.stream_stream(
        SOTW_METHOD,
        request_serializer=DiscoveryRequest.SerializeToString,
        response_deserializer=raw_bytes,
    )


def sidecar_node(node_id: str, **metadata: str) -> Node:
    fields = Struct()
    fields.update({"ROLE": "sidecar", "NAMESPACE": NAMESPACE, **metadata})
    return Node(id=node_id, cluster="bench", metadata=fields)


class Sidecar:
    """One ADS stream subscribing like an Envoy sidecar (without EDS) and ACKing everything:
    every scope of its outbound port (SRDS), then the route configurations they name."""

    def __init__(self, channel: grpc.aio.Channel, node_id: str) -> None:
        self._channel = channel
        self._node = sidecar_node(node_id)
        self.outbox: asyncio.Queue[DiscoveryRequest] = asyncio.Queue()
        self.route_version = ""
        self.route_at = 0.0
        self.armed = ""  # the route version before a flip
        self.changed = asyncio.Event()
        self.names: dict[str, list[str]] = {SCOPED_ROUTE: [], ROUTE: []}

    async def _requests(self) -> AsyncIterator[DiscoveryRequest]:
        while True:
            yield await self.outbox.get()

    async def run(self) -> None:
        self.outbox.put_nowait(DiscoveryRequest(type_url=CLUSTER, node=self._node))
        self.outbox.put_nowait(DiscoveryRequest(type_url=LISTENER))
        self.outbox.put_nowait(DiscoveryRequest(type_url=SCOPED_ROUTE))
        async for data in sotw_call(self._channel)(self._requests()):
            fields = response_fields(data)
            type_url = fields.get(4, "")
            if type_url == ROUTE:
                self.route_version, self.route_at = fields.get(1, ""), time.monotonic()
                self.changed.set()
            self.outbox.put_nowait(
                DiscoveryRequest(
                    type_url=type_url,
                    version_info=fields.get(1, ""),
                    response_nonce=fields.get(5, ""),
                    resource_names=self.names.get(type_url, []),
                )
            )
            if type_url == SCOPED_ROUTE:
                tables = sorted(scoped_tables(data))
                if tables != self.names[ROUTE]:  # as Envoy does: the routes its scopes name
                    self.names[ROUTE] = tables
                    self.outbox.put_nowait(DiscoveryRequest(type_url=ROUTE, resource_names=tables))


async def _until(streams: Sequence[Sidecar], done: Callable[[Sidecar], bool]) -> None:
    for stream in streams:
        while not done(stream):
            stream.changed.clear()
            await stream.changed.wait()


async def _sidecars(port: int, count: int, worker: int, conn: Connection) -> None:
    options = [("grpc.max_receive_message_length", -1)]
    channels = [
        grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=options)
        for _ in range(max(1, -(-count // STREAMS_PER_CHANNEL)))
    ]
    streams = [
        Sidecar(channels[i % len(channels)], f"sidecar~bench-{worker}-{i}") for i in range(count)
    ]
    # Streams connect a batch at a time, each batch once the one before has its routes: the
    # first responses (every cluster) of all of them at once would sit in the server's and
    # these processes' buffers together, gigabytes at 10k services.
    tasks = []
    for start in range(0, len(streams), RAMP_BATCH):
        batch = streams[start : start + RAMP_BATCH]
        tasks += [asyncio.create_task(s.run()) for s in batch]
        await asyncio.wait_for(_until(batch, lambda s: bool(s.route_version)), READY_TIMEOUT_S)
    conn.send("ready")
    while True:
        command = await asyncio.to_thread(conn.recv)
        if command == "stop":
            break
        if command == "arm":
            for stream in streams:
                stream.armed = stream.route_version
            conn.send("armed")
        elif command == "wait":
            try:
                await asyncio.wait_for(
                    _until(streams, lambda s: s.route_version != s.armed), FLIP_TIMEOUT_S
                )
                conn.send(max(s.route_at for s in streams))
            except TimeoutError:
                conn.send(None)
    for task in tasks:
        task.cancel()
    for channel in channels:
        await channel.close(grace=None)


def sidecars_main(port: int, count: int, worker: int, conn: Connection) -> None:
    asyncio.run(_sidecars(port, count, worker, conn))


class Fleet:
    """K sidecar streams in worker processes."""

    def __init__(self, port: int, streams: int, workers: int) -> None:
        self._conns: list[Connection] = []
        self._processes: list[Any] = []
        for worker in range(workers):
            count = streams // workers + (1 if worker < streams % workers else 0)
            mine, theirs = SPAWN.Pipe()
            process = SPAWN.Process(
                target=sidecars_main, args=(port, count, worker, theirs), daemon=True
            )
            process.start()
            self._conns.append(mine)
            self._processes.append(process)
        for conn in self._conns:
            if not conn.poll(READY_TIMEOUT_S):
                raise TimeoutError("sidecar streams never got their routes")
            conn.recv()

    def flip(self, write: Callable[[], None]) -> float:
        """Seconds from ``write`` until every stream has the new route configuration."""
        for conn in self._conns:
            conn.send("arm")
        for conn in self._conns:
            conn.recv()
        started = time.monotonic()
        write()
        for conn in self._conns:
            conn.send("wait")
        done: list[float | None] = [conn.recv() for conn in self._conns]
        if None in done:
            return FLIP_TIMEOUT_S
        return max(d for d in done if d is not None) - started

    def close(self) -> None:
        for conn in self._conns:
            conn.send("stop")
        for process in self._processes:
            process.join(30)


# -- the server --------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def write_mesh(folder: Path, services: int) -> None:
    for index in range(services):
        objects = service_objects(index)
        (folder / f"svc-{index}.yaml").write_text(yaml.dump_all(objects[:-1], Dumper=DUMPER))
        (folder / f"svc-{index}-vs.yaml").write_text(yaml.dump(objects[-1], Dumper=DUMPER))


def flip_writer(folder: Path) -> Callable[[], None]:
    """Each call swaps svc-0's weights (90/10 ↔ 10/90), written as an editor saves."""
    path = folder / "svc-0-vs.yaml"
    state = {"v1": 90}

    def write() -> None:
        state["v1"] = 100 - state["v1"]
        virtual_service = yaml.safe_load(path.read_text())
        routes = virtual_service["spec"]["http"][0]["route"]
        routes[0]["weight"], routes[1]["weight"] = state["v1"], 100 - state["v1"]
        staged = path.with_suffix(".tmp")
        staged.write_text(yaml.safe_dump(virtual_service))
        staged.replace(path)

    return write


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    xds_port: int
    debug_port: int
    log_path: Path

    def get(self, path: str, timeout_s: float = 60.0) -> tuple[int, bytes]:
        """The status and body of a GET on the debug endpoint."""
        connection = http.client.HTTPConnection("127.0.0.1", self.debug_port, timeout=timeout_s)
        try:
            connection.request("GET", path)
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()

    def ready(self) -> bool:
        if self.process.poll() is not None:
            log = self.log_path.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"splitplane serve exited {self.process.returncode}:\n{log}")
        try:
            return self.get("/readyz", timeout_s=2)[0] == 200
        except OSError:
            return False

    def rss_mb(self) -> float:
        with open(f"/proc/{self.process.pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        return 0.0

    def group_series(self) -> int:
        """How many node groups the server has a metric series for."""
        metrics = self.get("/metrics")[1].decode()
        return sum(
            1
            for line in metrics.splitlines()
            if line.startswith("splitplane_snapshots_published_total{")
        )


@contextlib.contextmanager
def serving(folder: Path, workdir: Path, group_grace: float) -> Iterator[Server]:
    xds_port, debug_port = free_port(), free_port()
    command = [
        str(Path(sys.executable).with_name("splitplane")),
        "serve",
        "--config-dir",
        str(folder),
        "--xds-address",
        f"127.0.0.1:{xds_port}",
        "--debug-address",
        f"127.0.0.1:{debug_port}",
        "--group-grace",
        str(group_grace),
        # These streams do not reconnect as Envoy does: a run longer than the default 30 minutes
        # would lose them all to the connection age.
        "--max-connection-age",
        "0",
        "--log-level",
        "warning",
    ]
    log_path = workdir / "splitplane.log"
    # The server inherits a soft limit of SERVER_FILE_LIMIT descriptors.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (SERVER_FILE_LIMIT, hard))
    try:
        with log_path.open("wb") as log:
            environment = {**os.environ, **DEPLOYED_ENVIRONMENT}
            process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env=environment
            )
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    server = Server(process, xds_port, debug_port, log_path)
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not server.ready():
            if time.monotonic() > deadline:
                raise TimeoutError("splitplane serve never became ready")
            time.sleep(0.2)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# -- disturbances -----------------------------------------------------------------------------


@dataclass
class Churned:
    answered: int = 0
    refused: int = 0
    failed: int = 0
    seconds: float = 0.0
    refusal: str = ""


async def _churn(port: int, first: int, count: int, concurrency: int) -> Churned:
    result = Churned()
    channel = grpc.aio.insecure_channel(
        f"127.0.0.1:{port}", options=[("grpc.max_receive_message_length", -1)]
    )
    queue: asyncio.Queue[int] = asyncio.Queue()
    for index in range(first, first + count):
        queue.put_nowait(index)

    async def one(index: int) -> None:
        node = sidecar_node(
            f"sidecar~10.9.{index // 250 % 250}.{index % 250}~churn-{index}.{NAMESPACE}",
            OUTBOUND_PORT=str(20000 + index % 40000),
            POD_NAME=f"churn-{index}",
            INSTANCE=os.urandom(8).hex(),
        )

        async def requests() -> AsyncIterator[DiscoveryRequest]:
            yield DiscoveryRequest(type_url=LISTENER, node=node)
            await asyncio.sleep(FIRST_RESPONSE_TIMEOUT_S)

        call = sotw_call(channel)(requests())
        try:
            await asyncio.wait_for(call.read(), FIRST_RESPONSE_TIMEOUT_S)
            result.answered += 1
        except grpc.aio.AioRpcError as error:
            if error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED:
                result.refused += 1
                result.refusal = error.details() or ""
            else:
                result.failed += 1
        except TimeoutError:
            result.failed += 1
        finally:
            call.cancel()

    async def runner() -> None:
        while not queue.empty():
            await one(queue.get_nowait())

    started = time.monotonic()
    await asyncio.gather(*(runner() for _ in range(concurrency)))
    result.seconds = time.monotonic() - started
    await channel.close(grace=None)
    return result


def churn_main(port: int, first: int, count: int, concurrency: int, conn: Connection) -> None:
    conn.send(asyncio.run(_churn(port, first, count, concurrency)))


def churn(port: int, count: int, concurrency: int, processes: int = 2) -> Churned:
    """``count`` short-lived streams from ``processes`` worker processes."""
    conns, workers = [], []
    share = -(-count // processes)
    for worker in range(processes):
        mine, theirs = SPAWN.Pipe()
        first = worker * share
        process = SPAWN.Process(
            target=churn_main,
            args=(port, first, min(share, count - first), concurrency, theirs),
            daemon=True,
        )
        process.start()
        conns.append(mine)
        workers.append(process)
    total = Churned()
    for conn, process in zip(conns, workers, strict=True):
        part: Churned = conn.recv()
        process.join(30)
        total.answered += part.answered
        total.refused += part.refused
        total.failed += part.failed
        total.seconds = max(total.seconds, part.seconds)
        total.refusal = total.refusal or part.refusal
    return total


def probe_main(port: int, stop: Any, conn: Connection) -> None:
    """GET /healthz every 20 ms until ``stop`` is set; sends back (start, seconds or None) per
    probe (monotonic clock: the same in every process)."""
    probes: list[tuple[float, float | None]] = []
    while not stop.is_set():
        started = time.monotonic()
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            connection.request("GET", "/healthz")
            connection.getresponse().read()
            probes.append((started, time.monotonic() - started))
        except OSError:
            probes.append((started, None))
        finally:
            connection.close()
        time.sleep(0.02)
    conn.send(probes)
    conn.close()


@dataclass
class Pollers:
    """Readers of /debug/snapshot and /debug/clients back to back, and a /healthz prober in a
    process of its own (as a kubelet probes: not sharing an interpreter with the readers)."""

    server: Server
    readers: int = 3
    stop: threading.Event = field(default_factory=threading.Event)
    reads: int = 0
    read_errors: int = 0
    bytes_read: int = 0
    healthz: list[float] = field(default_factory=list)
    healthz_failures: int = 0

    first_round: list[float] = field(default_factory=list)  # seconds, per reader

    def _read(self) -> None:
        started = time.monotonic()
        while not self.stop.is_set():
            for path in ("/debug/snapshot", "/debug/clients"):
                try:
                    self.bytes_read += len(self.server.get(path, timeout_s=READY_TIMEOUT_S)[1])
                    self.reads += 1
                except OSError:
                    self.read_errors += 1
            if started:
                self.first_round.append(time.monotonic() - started)
                started = 0.0

    def warm(self) -> None:
        """Wait until every reader has read each view once (the first read renders every
        resource; later ones only what changed)."""
        deadline = time.monotonic() + READY_TIMEOUT_S
        while len(self.first_round) < self.readers and time.monotonic() < deadline:
            time.sleep(0.1)
        self._measured_from = time.monotonic()  # probes from here on

    def __enter__(self) -> Pollers:
        self._measured_from = 0.0
        self._probe_stop = SPAWN.Event()
        self._probes, sender = SPAWN.Pipe(duplex=False)
        self._prober = SPAWN.Process(
            target=probe_main, args=(self.server.debug_port, self._probe_stop, sender)
        )
        self._prober.start()
        sender.close()
        self._threads = [threading.Thread(target=self._read) for _ in range(self.readers)]
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self._probe_stop.set()
        probes = self._probes.recv()
        self._prober.join(30)
        measured = [took for started, took in probes if started >= self._measured_from]
        self.healthz = [took for took in measured if took is not None]
        self.healthz_failures = sum(1 for took in measured if took is None)
        for thread in self._threads:
            thread.join(2 * FLIP_TIMEOUT_S)


class SlowHeaders:
    """Connections to the debug port that send one header byte a second and never finish."""

    def __init__(self, port: int, count: int) -> None:
        self._sockets: list[socket.socket] = []
        self.refused = 0
        for _ in range(count):
            sock = socket.socket()
            sock.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                sock.connect(("127.0.0.1", port))
            self._sockets.append(sock)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._drip, daemon=True)
        self._thread.start()

    def _drip(self) -> None:
        header = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100_000
        at = 0
        while not self._stop.wait(1.0):
            byte = header[at : at + 1]
            at = min(at + 1, len(header) - 1)
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.send(byte)

    def open_count(self) -> int:
        """How many are still open from the server's side (not reset or closed)."""
        alive = 0
        for sock in self._sockets:
            try:
                data = sock.recv(1, socket.MSG_PEEK)
                alive += 0 if data == b"" else 1  # b"": closed; data: an error answer
            except BlockingIOError:
                alive += 1
            except OSError:
                pass
        return alive

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        for sock in self._sockets:
            sock.close()


def first_response_seconds(port: int) -> float | None:
    """Seconds until a new stream, on a connection of its own, gets its first response (None:
    nothing within the timeout)."""

    async def measure() -> float | None:
        channel = grpc.aio.insecure_channel(
            f"127.0.0.1:{port}", options=[("grpc.max_receive_message_length", -1)]
        )

        async def requests() -> AsyncIterator[DiscoveryRequest]:
            yield DiscoveryRequest(type_url=CLUSTER, node=sidecar_node("sidecar~newcomer"))
            await asyncio.sleep(FIRST_RESPONSE_TIMEOUT_S)

        started = time.monotonic()
        call = sotw_call(channel)(requests())
        try:
            await asyncio.wait_for(call.read(), FIRST_RESPONSE_TIMEOUT_S)
            return time.monotonic() - started
        except (TimeoutError, grpc.aio.AioRpcError):
            return None
        finally:
            call.cancel()
            await channel.close(grace=None)

    return asyncio.run(measure())


# -- the run ----------------------------------------------------------------------------------


def _ms_list(took: Sequence[float]) -> str:
    return ", ".join(f"{seconds * 1000:.0f}" for seconds in took) + " ms"


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def flips(fleet: Fleet, write: Callable[[], None], count: int, pause_s: float = 0.5) -> list[float]:
    took = []
    for _ in range(count):
        took.append(fleet.flip(write))
        time.sleep(pause_s)
    return took


def probed(pollers: Pollers) -> str:
    """/healthz latency as the prober saw it."""
    health = pollers.healthz
    if not health:
        return "no answer"
    return (
        f"{ms(statistics.median(health))} / {ms(percentile(health, 99))} ({len(health)} probes,"
        f" {pollers.healthz_failures} failed)"
    )


def late(took: Sequence[float]) -> str:
    """How many flips did not reach every stream within the timeout."""
    count = sum(1 for t in took if t >= FLIP_TIMEOUT_S)
    return f"{count} of {len(took)} flips not everywhere within {FLIP_TIMEOUT_S:g} s"


def run(args: argparse.Namespace) -> list[tuple[str, str, str, str]]:
    """Rows: scenario, measure, result, target."""
    rows: list[tuple[str, str, str, str]] = []
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # for the slow connections
    with tempfile.TemporaryDirectory(prefix="hostile-") as tmp:
        workdir = Path(tmp)
        folder = workdir / "mesh"
        folder.mkdir()
        write_mesh(folder, args.services)
        write = flip_writer(folder)
        with serving(folder, workdir, args.group_grace) as server:
            fleet = Fleet(server.xds_port, args.streams, args.workers)
            try:
                time.sleep(2)
                with Pollers(server, readers=0) as probe:  # /healthz alone
                    base = flips(fleet, write, args.flips)
                base_rss = server.rss_mb()
                print(f"baseline: flip p50 {ms(statistics.median(base))}, RSS {base_rss:.0f} MB")
                rows.append(
                    (
                        "baseline",
                        "flip → all streams, p50 / p99",
                        f"{ms(statistics.median(base))} / {ms(percentile(base, 99))}",
                        "–",
                    )
                )
                rows.append(("baseline", "server RSS", f"{base_rss:.0f} MB", "–"))
                rows.append(("baseline", "/healthz p50 / p99", probed(probe), "–"))

                if "a" in args.scenarios:
                    churned = churn(server.xds_port, args.short_lived, args.concurrency)
                    print(f"churn: {churned}")
                    peak_series = server.group_series()
                    deadline = time.monotonic() + args.group_grace + 120
                    while server.group_series() > 1 and time.monotonic() < deadline:
                        time.sleep(0.5)
                    time.sleep(2)
                    after = flips(fleet, write, args.flips)
                    rss = server.rss_mb()
                    ratio = statistics.median(after) / statistics.median(base)
                    rows += [
                        ("(a) churn", f"{args.short_lived:,} short-lived streams",
                         f"{churned.answered} answered, {churned.refused} refused"
                         f" (\"{churned.refusal}\"), {churned.failed} failed, in"
                         f" {churned.seconds:.0f} s", "–"),
                        ("(a) churn", "group metric series at the end / after the grace",
                         f"{peak_series} / {server.group_series()}", "1 after"),
                        ("(a) churn", "server RSS after / before",
                         f"{rss:.0f} / {base_rss:.0f} MB ({rss / base_rss - 1:+.1%})",
                         "within 10 %"),
                        ("(a) churn", "flip p50 after / baseline",
                         f"{ms(statistics.median(after))} ({ratio:.2f}×)", "≤ 1.2×"),
                    ]  # fmt: skip
                    print(rows[-3:])

                if "b" in args.scenarios:
                    with Pollers(server) as pollers:
                        pollers.warm()
                        time.sleep(1)
                        polled = flips(fleet, write, args.flips)
                        print(f"flips polled: {_ms_list(polled)}; unpolled: {_ms_list(base)}")
                    p99 = percentile(polled, 99) / percentile(base, 99)
                    rows += [
                        ("(b) debug reads", "flip p99 polled / unpolled",
                         f"{ms(percentile(polled, 99))} / {ms(percentile(base, 99))}"
                         f" ({p99:.2f}×); {late(polled)}", "≤ 1.2×"),
                        ("(b) debug reads", "/healthz p50 / p99 while polled",
                         probed(pollers), "p99 < 50 ms"),
                        ("(b) debug reads", "debug reads done",
                         f"{pollers.reads} ({pollers.read_errors} failed),"
                         f" {pollers.bytes_read / 1e6:,.0f} MB", "–"),
                        ("(b) debug reads", "first read of both views (renders all), worst",
                         ms(max(pollers.first_round, default=0.0)), "–"),
                    ]  # fmt: skip
                    print(rows[-3:])

                if "c" in args.scenarios:
                    before = [first_response_seconds(server.xds_port) for _ in range(5)]
                    slow = SlowHeaders(server.debug_port, args.slow)
                    try:
                        time.sleep(5)
                        during = [first_response_seconds(server.xds_port) for _ in range(5)]
                        still_open = slow.open_count()
                    finally:
                        slow.close()

                    def shown(values: list[float | None]) -> str:
                        got = [v for v in values if v is not None]
                        worst = ms(max(got)) if got else "–"
                        missing = len(values) - len(got)
                        return f"worst {worst}, {missing} of {len(values)} unanswered"

                    rows += [
                        ("(c) slow headers", "new xDS stream → first response, before",
                         shown(before), "–"),
                        ("(c) slow headers", f"… with {args.slow:,} slow connections",
                         shown(during), "≤ 1 s"),
                        ("(c) slow headers", "slow connections still open after 5 s",
                         f"{still_open:,}", "–"),
                    ]  # fmt: skip
                    print(rows[-3:])
            finally:
                fleet.close()
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    return rows


def table(rows: Sequence[tuple[str, str, str, str]]) -> str:
    lines = ["| scenario | measure | result | target |", "|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--services", type=int, default=10_000)
    parser.add_argument("--streams", type=int, default=1_000)
    parser.add_argument("--workers", type=int, default=3, help="processes for the streams")
    parser.add_argument("--flips", type=int, default=5, help="flips per measurement")
    parser.add_argument("--short-lived", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=25, help="per churn process")
    parser.add_argument("--group-grace", type=float, default=5.0)
    parser.add_argument("--slow", type=int, default=2_000)
    parser.add_argument("--scenarios", nargs="+", default=["a", "b", "c"], choices="abc")
    parser.add_argument("--record", action="store_true", help="write the figures to RESULTS.md")
    args = parser.parse_args()
    started = time.monotonic()
    rows = run(args)
    print(table(rows))
    print(f"({time.monotonic() - started:.0f} s)")
    if args.record:
        command = "python benchmarks/hostile.py " + " ".join(sys.argv[1:])
        record_section(
            SECTION,
            f"{SECTION}\n\nCommand: `{command}`\n\n"
            f"`splitplane serve --config-dir` of {args.services:,} services (one file each, a"
            f" VirtualService file each), under a {SERVER_FILE_LIMIT} file limit, with"
            f" `--group-grace {args.group_grace:g}`; {args.streams:,} sidecar-like SotW streams"
            " (CDS, LDS and SRDS wildcard, RDS the route configurations the scopes name,"
            f" ACKing) in {args.workers} processes; a flip swaps"
            " one VirtualService's weights and is timed until every stream has the new route"
            f" configuration; {args.flips} flips per measurement. See the module docstring for"
            " each scenario.\n\n" + table(rows) + "\n",
        )


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    main()
