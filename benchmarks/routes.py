"""Route structure benchmark: what one weight change costs a real Envoy sidecar at N services,
with the sidecar's HTTP routes in each of three structures.

- ``single``: one RouteConfiguration for the listener's port holding every service's virtual
  host (RDS). A weight change re-sends the whole table; Envoy rebuilds it whole.
- ``srds``: scoped routes, what splitplane serves a sidecar: the listener's connection manager
  picks a ``ScopedRouteConfiguration`` by the ``:authority`` host, each naming a small
  RouteConfiguration per service fetched over RDS.
- ``vhds``: one RouteConfiguration whose virtual hosts come over VHDS (delta xDS only, with the
  ``on_demand`` filter): each virtual host is its own resource.

The mesh is ``benchmarks/translate.py``'s (N services, each with subsets v1/v2); routes and
scopes are the ones splitplane builds (``vhds`` takes the single table's virtual hosts, one
resource each). Only the flipped service's clusters are sent (to two loopback backends, v1 and
v2): the figures are those of the routes, not of 2N clusters. splitplane's own xDS server
(in-process, SotW ADS; delta for ``vhds``) serves one Envoy per structure (``--concurrency 1``).

Per structure: Envoy ready (``/ready`` and the last service routed), its RSS, the latency of a
first request to a host not asked for before; then ``--flips`` weight flips of one service
(100/0 ↔ 0/100), each timed from the publish to the first request answered by the new backend,
with the bytes of resources the server sent for it (its own count, per type), the time from
sending to Envoy's ACK, and Envoy's mean ``update_duration`` over the flips (its
``rds.<name>.update_duration`` histograms, for every route configuration that changed).

    .venv/bin/python benchmarks/routes.py                       # 10k services, 5 flips
    .venv/bin/python benchmarks/routes.py --services 1000 --only srds single
    .venv/bin/python benchmarks/routes.py --record               # also writes RESULTS.md
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import http.client
import re
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.http.on_demand.v3 import on_demand_pb2
from google.protobuf.message import Message
from results import record_section
from translate import service_objects

from tests.support.backends import BACKEND_HEADER, free_port, http_backend
from tests.support.envoy_resources import load_assignment
from tests.support.xds_bootstrap import envoy_bootstrap
from translators import names, resources
from translators.build import ResourceBuilder
from translators.build_clusters import ads_config_source
from translators.build_listeners import (
    http_connection_manager,
    http_filter,
    http_listener,
    sidecar_listeners,
)
from translators.build_routes import sidecar_route_tables
from translators.model import MeshModel, NodeGroup, Role
from translators.translate import translate
from xds_server.cli.local_envoy import RunningEnvoy, running_envoy
from xds_server.xds.cache import Serializer, Snapshot, SnapshotCache
from xds_server.xds.cache import snapshot_from_messages as snapshot_of
from xds_server.xds.client_status import ClientRegistry
from xds_server.xds.grpc_server import start_xds_server

SECTION = "## routes"
NOTES = (
    "\nEnvoy's update_duration is the mean of its histogram over the flips' route updates"
    " (0.0: every sample in its lowest bucket, under 1 ms). Only the flipped service's clusters"
    " are sent, so RSS and ready time are those of the routes.\n"
)
FLUSH_S = 1
STRUCTURES = ("single", "srds", "vhds")
VIRTUAL_HOST = resources.TYPE_PREFIX + rc.VirtualHost.DESCRIPTOR.full_name
ON_DEMAND = "envoy.filters.http.on_demand"
FLIPPED = "svc-0"
HOST = f"{FLIPPED}.bench.svc.cluster.local"
Resources = Mapping[str, Sequence[Message]]


def mesh(size: int, v1_weight: int) -> list[dict[str, Any]]:
    """``size`` services; the first routes ``v1_weight`` % to v1, the rest to v2."""
    objects = [obj for index in range(size) for obj in service_objects(index)]
    for obj in objects:
        if obj["kind"] == "VirtualService" and obj["metadata"]["name"] == FLIPPED:
            route = obj["spec"]["http"][0]["route"]
            route[0]["weight"], route[1]["weight"] = v1_weight, 100 - v1_weight
            if not v1_weight:
                del route[0]
            elif v1_weight == 100:
                del route[1]
    return objects


def flipped_only(built: Resources, backends: Mapping[str, int]) -> dict[str, Sequence[Message]]:
    """The flipped service's clusters, with load assignments to the loopback backends."""
    clusters = [c for c in built[resources.CLUSTER] if c.name.endswith("|" + HOST)]  # type: ignore[attr-defined]
    assignments = [
        load_assignment(c.name, [("127.0.0.1", backends.get(c.name.split("|")[2], backends["v1"]))])  # type: ignore[attr-defined]
        for c in clusters
    ]
    return {resources.CLUSTER: clusters, resources.ENDPOINT: assignments}


def structure(
    kind: str, model: MeshModel, port: int, built: Resources, backends: Mapping[str, int]
) -> dict[str, Sequence[Message]]:
    """The sidecar's resources in structure ``kind``."""
    out = flipped_only(built, backends)
    if kind == "srds":
        out[resources.LISTENER] = built[resources.LISTENER]
        out[resources.SCOPED_ROUTE] = built[resources.SCOPED_ROUTE]
        out[resources.ROUTE] = built[resources.ROUTE]
        return out
    table = sidecar_route_tables(model, port)
    if kind == "single":
        out[resources.LISTENER] = sidecar_listeners(port)
        out[resources.ROUTE] = table
        return out
    name = names.route_table_name(port)
    listener = http_listener("127.0.0.1", port, f"outbound_{port}")
    hcm = http_connection_manager(f"outbound_{port}", name, with_fault=True)
    hcm.http_protocol_options.allow_absolute_url.value = True
    hcm.http_filters.insert(0, http_filter(ON_DEMAND, on_demand_pb2.OnDemand()))
    listener.filter_chains[0].filters[0].typed_config.Pack(hcm)
    out[resources.LISTENER] = [listener]
    out[resources.ROUTE] = [
        route_pb2.RouteConfiguration(name=name, vhds=route_pb2.Vhds(config_source=_delta_ads()))
    ]
    vhosts = []
    for vhost in table[0].virtual_hosts:
        copied = rc.VirtualHost()
        copied.CopyFrom(vhost)
        copied.name = f"{name}/{vhost.name}"
        vhosts.append(copied)
    out[VIRTUAL_HOST] = vhosts
    return out


def _delta_ads() -> Any:
    return ads_config_source()


class Sent:
    """What the server sent and when Envoy ACKed it, per type (its client observer)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.sizes: list[tuple[float, str, int]] = []
        self.acks: list[tuple[float, str, float]] = []

    def response_sent(self, type_url: str, size: int) -> None:
        with self.lock:
            self.sizes.append((time.monotonic(), type_url, size))

    def response_acked(self, type_url: str, seconds_since_sent: float) -> None:
        with self.lock:
            self.acks.append((time.monotonic(), type_url, seconds_since_sent))

    def client_connected(self, protocol: str) -> None:
        pass

    def client_disconnected(self, protocol: str) -> None:
        pass

    def response_rejected(self, type_url: str) -> None:
        print(f"rejected {type_url}", file=sys.stderr)

    def mark(self) -> tuple[int, int]:
        with self.lock:
            return len(self.sizes), len(self.acks)

    def since(self, mark: tuple[int, int]) -> tuple[Counter[str], dict[str, float]]:
        with self.lock:
            sizes: Counter[str] = Counter()
            for _, type_url, size in self.sizes[mark[0] :]:
                sizes[type_url.rsplit(".", 1)[1]] += size
            acks = {t.rsplit(".", 1)[1]: s for _, t, s in self.acks[mark[1] :]}
        return sizes, acks


class Server:
    """splitplane's xDS server on its own event loop thread."""

    def __init__(self, observer: Sent) -> None:
        self.loop = asyncio.new_event_loop()
        self.cache = SnapshotCache()
        self.registry = ClientRegistry(observer)
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server, self.port = asyncio.run_coroutine_threadsafe(
            start_xds_server(self.cache, self.registry), self.loop
        ).result()

    def publish(self, group: str, snapshot: Snapshot) -> None:
        asyncio.run_coroutine_threadsafe(self._set(group, snapshot), self.loop).result()

    async def _set(self, group: str, snapshot: Snapshot) -> None:
        assert self.cache.set_snapshot(group, snapshot), self.cache.rejections

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(None), self.loop).result()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()


def answer(port: int, host: str, timeout_s: float = 5.0) -> str:
    """One request through the sidecar: the backend's name, or ``status <code>``."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s)
    try:
        connection.request("GET", "/", headers={"Host": host})
        reply = connection.getresponse()
        reply.read()
        return reply.getheader(BACKEND_HEADER) or f"status {reply.status}"
    except (OSError, http.client.HTTPException):
        return "error"
    finally:
        connection.close()


def wait_until(check: Callable[[], bool], timeout_s: float = 120.0) -> float:
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > timeout_s:
            raise TimeoutError("gave up waiting")
        time.sleep(0.001)
    return time.monotonic() - start


_PROM = re.compile(r"^(envoy_\S*update_duration_(?:sum|count))(\{[^}]*\})? (\S+)$")


def update_durations(envoy: RunningEnvoy) -> dict[str, float]:
    """Envoy's ``update_duration`` histograms' sums and counts, by name and tags."""
    body = envoy.admin_get("/stats/prometheus?filter=update_duration")
    out = {}
    for line in body.splitlines():
        found = _PROM.match(line)
        if found:
            out[found.group(1) + (found.group(2) or "")] = float(found.group(3))
    return out


def mean_update_ms(before: Mapping[str, float], after: Mapping[str, float]) -> float | None:
    """Mean duration of the updates counted between ``before`` and ``after`` (route
    configurations and VHDS alike), in ms."""
    total = count = 0.0
    for key, value in after.items():
        if "_count" in key and ("_rds_" in key or "vhds" in key):
            samples = value - before.get(key, 0.0)
            if samples > 0:
                count += samples
                sum_key = key.replace("_count", "_sum")
                total += after.get(sum_key, 0.0) - before.get(sum_key, 0.0)
    return total / count if count else None


def rss_mb(envoy: RunningEnvoy) -> float:
    for line in Path(f"/proc/{envoy.process.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def run(kind: str, size: int, flips: int, models: Sequence[Any], workdir: Path) -> dict[str, Any]:
    port = free_port()
    group = NodeGroup(Role.SIDECAR, port)
    observer = Sent()
    server = Server(observer)
    try:
        with http_backend("v1") as v1, http_backend("v2") as v2:
            backends = {"v1": v1.port, "v2": v2.port}
            builder = ResourceBuilder()
            serializer = Serializer()
            snapshots = []
            for translation in models:
                built = builder.build_group(translation.model, group)
                made = structure(kind, translation.model, port, built, backends)
                snapshots.append(snapshot_of(made, serializer))
            route_bytes = {
                url.rsplit(".", 1)[1]: sum(len(r.body) for r in held.resources)
                for url, held in snapshots[0].types.items()
                if url not in (resources.CLUSTER, resources.ENDPOINT, resources.LISTENER)
            }
            counts = {
                url.rsplit(".", 1)[1]: len(held.by_name) for url, held in snapshots[0].types.items()
            }
            # as serve does (collector.long_lived): what was built is never collected again, so a
            # full collection of the models cannot land inside a flip
            gc.collect()
            gc.freeze()
            server.publish(group.key, snapshots[0])
            bootstrap = envoy_bootstrap(
                server.port,
                f"routes-{kind}",
                delta=kind == "vhds",
                metadata={"ROLE": "sidecar", "OUTBOUND_PORT": str(port)},
            )
            bootstrap["stats_flush_interval"] = f"{FLUSH_S}s"  # histograms show flushed samples
            start = time.monotonic()
            with running_envoy(bootstrap, workdir / kind, wait_ready=False) as envoy:
                envoy.wait_ready(timeout_s=600)
                last = f"svc-{size - 1}.bench.svc.cluster.local"
                wait_until(lambda: answer(port, HOST) == "v1", 600)
                wait_until(lambda: answer(port, last).startswith("status 5"), 600)
                ready = time.monotonic() - start
                time.sleep(2)
                rss = rss_mb(envoy)
                first_host = f"svc-{size // 2}:80"
                t = time.monotonic()
                first_answer = answer(port, first_host)
                first_ms = (time.monotonic() - t) * 1000
                t = time.monotonic()
                answer(port, first_host)
                second_ms = (time.monotonic() - t) * 1000
                rows: list[dict[str, Any]] = []
                time.sleep(FLUSH_S * 2)
                before = update_durations(envoy)
                for flip in range(flips):
                    target = 1 - flip % 2
                    expected = "v2" if target == 1 else "v1"
                    mark = observer.mark()
                    t = time.monotonic()
                    server.publish(group.key, snapshots[target])
                    wait_until(lambda e=expected: answer(port, HOST) == e, 120)  # type: ignore[misc]
                    moved = time.monotonic() - t
                    time.sleep(1.0)  # every response of the flip sent and ACKed
                    sizes, acks = observer.since(mark)
                    rows.append({"moved_ms": moved * 1000, "bytes": dict(sizes), "ack_s": acks})
                time.sleep(FLUSH_S * 2)
                after = update_durations(envoy)
                return {
                    "structure": kind,
                    "services": size,
                    "resources": counts,
                    "route_bytes": route_bytes,
                    "ready_s": ready,
                    "rss_mb": rss,
                    "first_request_ms": first_ms,
                    "first_answer": first_answer,
                    "second_request_ms": second_ms,
                    "moved_ms": [r["moved_ms"] for r in rows],
                    "flip_bytes": rows[-1]["bytes"],
                    "ack_ms": [1000 * max(r["ack_s"].values(), default=0.0) for r in rows],
                    "update_ms": mean_update_ms(before, after),
                }
    finally:
        server.stop()


def table(rows: list[dict[str, Any]]) -> str:
    head = (
        "| structure | services | resources (route types) | route bytes | Envoy ready | Envoy RSS "
        "| first request | flip: bytes sent | flip: sent → ACK (median) "
        "| flip: Envoy update_duration (mean) | flip → traffic moved (median, max) |\n"
        "|---|---:|---|---:|---:|---:|---:|---|---:|---:|---:|\n"
    )
    lines = []
    for r in rows:
        kinds = {
            k: v
            for k, v in r["resources"].items()
            if k not in ("Cluster", "ClusterLoadAssignment", "Listener")
        }
        update = f"{r['update_ms']:.1f} ms" if r["update_ms"] is not None else "–"
        sent = ", ".join(f"{k} {v:,} B" for k, v in sorted(r["flip_bytes"].items()))
        lines.append(
            f"| {r['structure']} | {r['services']:,} "
            f"| {', '.join(f'{k} {v:,}' for k, v in sorted(kinds.items()))} "
            f"| {sum(r['route_bytes'].values()):,} B | {r['ready_s']:.1f} s | {r['rss_mb']:.0f} MB "
            f"| {r['first_request_ms']:.1f} ms | {sent} "
            f"| {statistics.median(r['ack_ms']):.1f} ms | {update} "
            f"| {statistics.median(r['moved_ms']):.1f} ms, {max(r['moved_ms']):.1f} ms |"
        )
    return head + "\n".join(lines) + "\n"


def _stop(signum: int, frame: object) -> None:
    raise SystemExit(f"stopped by signal {signum}")  # so every Envoy started is stopped


def main() -> None:
    signal.signal(signal.SIGTERM, _stop)
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--services", type=int, default=10_000)
    parser.add_argument("--flips", type=int, default=5)
    parser.add_argument("--only", nargs="*", choices=STRUCTURES, default=list(STRUCTURES))
    parser.add_argument("--record", action="store_true", help="write the table to RESULTS.md")
    args = parser.parse_args()
    first = translate(mesh(args.services, 100))
    models = [first, translate(mesh(args.services, 0), previous=first)]
    rows = []
    with tempfile.TemporaryDirectory(prefix="routes-bench-") as tmp:
        for kind in args.only:
            row = run(kind, args.services, args.flips, models, Path(tmp))
            print(row, flush=True)
            rows.append(row)
    text = table(rows)
    print(text)
    if args.record:
        command = "    .venv/bin/python benchmarks/routes.py " + " ".join(sys.argv[1:])
        record_section(
            SECTION,
            f"{SECTION}\n\nOne weight change at {args.services:,} services, per route structure "
            f"(real Envoy 1.40, `--concurrency 1`; {args.flips} flips each; see the module's "
            "docstring):\n\n" + command.replace(" --record", "") + "\n\n" + text + NOTES,
        )


if __name__ == "__main__":
    main()
