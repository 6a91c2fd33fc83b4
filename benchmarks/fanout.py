"""Fan-out benchmark: how fast a new snapshot reaches K state-of-the-world ADS streams.

The server runs in this process on a snapshot of N services (one EDS cluster, one load
assignment with three endpoints and one virtual host each; one listener, one route
configuration). Client streams run in worker processes, each stream subscribing like an Envoy
sidecar (CDS and LDS wildcard, EDS for every cluster, RDS for the one route configuration) and
ACKing every response. Each round publishes a snapshot in which every virtual host and one load
assignment changed, and measures, per stream, the time from publishing until the stream has
both the new EDS and the new RDS response. Memory per stream is the growth of the server's RSS
(after ``malloc_trim``) from before the first stream to all streams connected and idle.

    .venv/bin/python benchmarks/fanout.py --streams 100 1000 --services 1000 --workers 3
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import gc
import multiprocessing
import statistics
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

import grpc
from envoy.config.cluster.v3.cluster_pb2 import Cluster
from envoy.config.core.v3.address_pb2 import Address, SocketAddress
from envoy.config.core.v3.base_pb2 import Node
from envoy.config.core.v3.config_source_pb2 import (
    AggregatedConfigSource,
    ApiVersion,
    ConfigSource,
)
from envoy.config.endpoint.v3.endpoint_components_pb2 import (
    Endpoint,
    LbEndpoint,
    LocalityLbEndpoints,
)
from envoy.config.endpoint.v3.endpoint_pb2 import ClusterLoadAssignment
from envoy.config.listener.v3.listener_components_pb2 import Filter, FilterChain
from envoy.config.listener.v3.listener_pb2 import Listener
from envoy.config.route.v3.route_components_pb2 import Route, RouteAction, RouteMatch, VirtualHost
from envoy.config.route.v3.route_pb2 import RouteConfiguration
from envoy.extensions.filters.http.router.v3.router_pb2 import Router
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.service.discovery.v3 import ads_pb2_grpc
from envoy.service.discovery.v3.discovery_pb2 import DiscoveryRequest, DiscoveryResponse
from google.protobuf.any_pb2 import Any as AnyProto
from google.protobuf.duration_pb2 import Duration
from google.protobuf.message import Message
from google.protobuf.struct_pb2 import Struct

from xds_server.xds import ads
from xds_server.xds.cache import (
    CLUSTER,
    ENDPOINT,
    LISTENER,
    ROUTE,
    Snapshot,
    SnapshotCache,
    snapshot_from_messages,
)
from xds_server.xds.client_status import ClientRegistry
from xds_server.xds.grpc_server import ServerOptions, start_xds_server

GROUP = "sidecar:15001"
STREAMS_PER_CHANNEL = 100
SYNC_TIMEOUT_S = 300.0


def _ads() -> ConfigSource:
    return ConfigSource(ads=AggregatedConfigSource(), resource_api_version=ApiVersion.V3)


def _packed(message: Message) -> AnyProto:
    packed = AnyProto()
    packed.Pack(message, deterministic=True)
    return packed


def service_name(index: int) -> str:
    """The cluster name of service ``index``."""
    return f"outbound|80||svc-{index}.default.svc.cluster.local"


def mesh_snapshot(services: int, generation: int) -> Snapshot:
    """N services; ``generation`` changes every route timeout and service 0's endpoints."""
    names = [service_name(i) for i in range(services)]
    clusters = [
        Cluster(
            name=name,
            type=Cluster.EDS,
            eds_cluster_config=Cluster.EdsClusterConfig(eds_config=_ads(), service_name=name),
            connect_timeout=Duration(seconds=1),
        )
        for name in names
    ]
    assignments = [
        ClusterLoadAssignment(
            cluster_name=name,
            endpoints=[
                LocalityLbEndpoints(
                    lb_endpoints=[
                        LbEndpoint(
                            endpoint=Endpoint(
                                address=Address(
                                    socket_address=SocketAddress(
                                        address=f"10.{i // 250}.{i % 250}.{host}",
                                        port_value=8080 + (generation if i == 0 else 0),
                                    )
                                )
                            )
                        )
                        for host in (1, 2, 3)
                    ]
                )
            ],
        )
        for i, name in enumerate(names)
    ]
    hcm = hcm_pb2.HttpConnectionManager(
        stat_prefix="outbound_80",
        rds=hcm_pb2.Rds(config_source=_ads(), route_config_name="80"),
        http_filters=[hcm_pb2.HttpFilter(name="router", typed_config=_packed(Router()))],
    )
    listener = Listener(
        name="outbound_80",
        address=Address(socket_address=SocketAddress(address="0.0.0.0", port_value=15001)),
        filter_chains=[
            FilterChain(filters=[Filter(name="hcm", typed_config=_packed(hcm))]),
        ],
    )
    routes = RouteConfiguration(
        name="80",
        virtual_hosts=[
            VirtualHost(
                name=f"svc-{i}",
                domains=[f"svc-{i}", f"svc-{i}.default", f"svc-{i}.default.svc.cluster.local"],
                routes=[
                    Route(
                        match=RouteMatch(prefix="/"),
                        route=RouteAction(cluster=name, timeout=Duration(seconds=10 + generation)),
                    )
                ],
            )
            for i, name in enumerate(names)
        ],
    )
    return snapshot_from_messages(
        {CLUSTER: clusters, ENDPOINT: assignments, LISTENER: [listener], ROUTE: [routes]}
    )


# ---- client side (worker processes) ----


class SidecarStream:
    """One ADS stream that subscribes like an Envoy sidecar and ACKs everything."""

    def __init__(self, stub: ads_pb2_grpc.AggregatedDiscoveryServiceStub, node_id: str) -> None:
        self.outbox: asyncio.Queue[DiscoveryRequest] = asyncio.Queue()
        self.versions: dict[str, str] = {}
        self.received_at: dict[str, float] = {}
        self.changed = asyncio.Event()
        self._stub = stub
        self._node = Node(id=node_id, metadata=Struct())
        self._node.metadata.update({"ROLE": "sidecar"})

    async def _requests(self) -> AsyncIterator[DiscoveryRequest]:
        while True:
            yield await self.outbox.get()

    async def run(self, eds_names: list[str]) -> None:
        first = DiscoveryRequest(type_url=CLUSTER, node=self._node)
        for request in (
            first,
            DiscoveryRequest(type_url=ENDPOINT, resource_names=eds_names),
            DiscoveryRequest(type_url=LISTENER),
            DiscoveryRequest(type_url=ROUTE, resource_names=["80"]),
        ):
            self.outbox.put_nowait(request)
        names = {ENDPOINT: eds_names, ROUTE: ["80"]}
        call = self._stub.StreamAggregatedResources(self._requests())
        async for response in call:
            assert isinstance(response, DiscoveryResponse)
            type_url = response.type_url
            self.versions[type_url] = response.version_info
            self.received_at[type_url] = time.monotonic()
            self.outbox.put_nowait(
                DiscoveryRequest(
                    type_url=type_url,
                    version_info=response.version_info,
                    response_nonce=response.nonce,
                    resource_names=names.get(type_url, []),
                )
            )
            self.changed.set()


async def _all_have(streams: list[SidecarStream], expected: dict[str, str]) -> None:
    for stream in streams:
        while any(stream.versions.get(t) != v for t, v in expected.items()):
            stream.changed.clear()
            await stream.changed.wait()


async def _worker(port: int, streams: int, services: int, worker_id: int, conn: Connection) -> None:
    options = [("grpc.max_receive_message_length", -1)]
    channels = [
        grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=options)
        for _ in range(max(1, -(-streams // STREAMS_PER_CHANNEL)))
    ]
    eds_names = [service_name(i) for i in range(services)]
    clients = [
        SidecarStream(
            ads_pb2_grpc.AggregatedDiscoveryServiceStub(channels[i % len(channels)]),
            f"sidecar-{worker_id}-{i}",
        )
        for i in range(streams)
    ]
    tasks = [asyncio.create_task(c.run(eds_names)) for c in clients]
    while True:
        command, expected = await asyncio.to_thread(conn.recv)
        if command == "stop":
            break
        await asyncio.wait_for(_all_have(clients, expected), SYNC_TIMEOUT_S)
        conn.send([max(c.received_at[t] for t in expected) for c in clients])
    for task in tasks:
        task.cancel()
    for channel in channels:
        await channel.close(grace=None)


def worker_main(port: int, streams: int, services: int, worker_id: int, conn: Connection) -> None:
    """Entry point of a client worker process."""
    asyncio.run(_worker(port, streams, services, worker_id, conn))


# ---- server side ----


def rss_bytes() -> int:
    """This process's resident set size, after returning freed heap to the system."""
    gc.collect()
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


@dataclass(frozen=True)
class RoundResult:
    """Latencies (seconds) of one published snapshot, one per stream."""

    latencies: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.latencies)

    @property
    def p99(self) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]

    @property
    def slowest(self) -> float:
        return max(self.latencies)


def _expected(snapshot: Snapshot) -> dict[str, str]:
    return {t: snapshot.of_type(t).version for t in (CLUSTER, ENDPOINT, LISTENER, ROUTE)}


async def _gather(conns: list[Connection], expected: dict[str, str]) -> list[float]:
    for conn in conns:
        conn.send(("wait", expected))
    times: list[float] = []
    for conn in conns:
        times += await asyncio.to_thread(conn.recv)
    return times


async def run_scenario(streams: int, services: int, workers: int, rounds: int) -> dict[str, Any]:
    """One stream count: connect, sync, publish ``rounds`` snapshots, measure."""
    snapshots = [mesh_snapshot(services, g) for g in range(rounds + 1)]
    cache = SnapshotCache()
    cache.set_snapshot(GROUP, snapshots[0])
    registry = ClientRegistry()
    server, port = await start_xds_server(cache, registry, "127.0.0.1:0", ServerOptions())
    for s in snapshots:  # shared, once-per-snapshot bytes: not a per-stream cost
        for t in (CLUSTER, ENDPOINT, LISTENER, ROUTE):
            _ = s.of_type(t).sotw_entries
    rss_before = rss_bytes()
    context = multiprocessing.get_context("spawn")
    pipes = [context.Pipe() for _ in range(workers)]
    shares = [streams // workers + (1 if i < streams % workers else 0) for i in range(workers)]
    processes = [
        context.Process(target=worker_main, args=(port, shares[i], services, i, pipes[i][1]))
        for i in range(workers)
    ]
    for process in processes:
        process.start()
    conns = [parent for parent, _ in pipes]
    try:
        started = time.monotonic()
        await _gather(conns, _expected(snapshots[0]))
        initial_sync = time.monotonic() - started
        await asyncio.sleep(1)
        rss_idle = rss_bytes()
        results = []
        for snapshot in snapshots[1:]:
            published = time.monotonic()
            cache.set_snapshot(GROUP, snapshot)
            times = await _gather(conns, _expected(snapshot))
            results.append(RoundResult([t - published for t in times]))
            await asyncio.sleep(0.5)
        for conn in conns:
            conn.send(("stop", {}))
    finally:
        for process in processes:
            process.join(timeout=30)
            if process.is_alive():
                process.kill()
        await server.stop(grace=None)
    return {
        "streams": streams,
        "initial_sync_s": initial_sync,
        "rss_per_stream_kb": (rss_idle - rss_before) / streams / 1024,
        "median_s": statistics.median(r.median for r in results),
        "p99_s": statistics.median(r.p99 for r in results),
        "all_updated_s": statistics.median(r.slowest for r in results),
        "worst_all_updated_s": max(r.slowest for r in results),
        "response_bytes": {
            t: len(snapshots[0].of_type(t).sotw_entries) for t in (CLUSTER, ENDPOINT, ROUTE)
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--services", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--reencode-per-stream",
        action="store_true",
        help="for comparison: parse and re-serialize every response on every stream",
    )
    args = parser.parse_args()
    if args.reencode_per_stream:
        shared = ads.sotw_response

        def reencoded(type_url: str, version: str, entries: bytes, nonce: str) -> bytes:
            body = shared(type_url, version, entries, nonce)
            return bytes(DiscoveryResponse.FromString(body).SerializeToString())

        ads.sotw_response = reencoded
    print(f"{args.services} services, {args.workers} client processes, {args.rounds} rounds")
    print(
        "streams | initial sync s | median s | p99 s | all updated s (median / worst)"
        " | RSS/stream KB"
    )
    for streams in args.streams:
        r = asyncio.run(run_scenario(streams, args.services, args.workers, args.rounds))
        print(
            f"{r['streams']} | {r['initial_sync_s']:.2f} | {r['median_s']:.3f} | "
            f"{r['p99_s']:.3f} | {r['all_updated_s']:.3f} / {r['worst_all_updated_s']:.3f} | "
            f"{r['rss_per_stream_kb']:.1f}"
        )
    print(f"response sizes (bytes, full set): {r['response_bytes']}")


if __name__ == "__main__":
    main()
