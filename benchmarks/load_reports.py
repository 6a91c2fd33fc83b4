"""What Envoy's load reports cost the xDS server: CPU, and the delay they add to the xDS loop.

The server (this process) serves ADS and the load reporting service on its event loop and asks
for the load of ``--clusters`` clusters (the destinations of the VirtualService routes shown on
the dashboard: 100 canaries of two subsets by default). Another process opens ``--proxies``
load-reporting streams, as that many Envoys would, and each sends a report every
``--interval`` seconds (staggered), listing every asked cluster as Envoy does, with request
counts on ``--busy`` of them.

A task ticking every 5 ms on the xDS loop records the gaps between ticks: how long a push, an
ACK or a new stream would have waited. Two runs of ``--seconds`` each: no reports, then reports;
the CPU the reports cost is the difference in this process's CPU time.

What of that is splitplane's own work is then timed alone: reading the same report into a
``LoadWindows`` (``record_report``) as many times as reports came in. With ``--empty``, a third
run serves the same streams with a servicer that reads each report and does nothing with it:
gRPC's own cost per message, the floor under any handling of the reports.

    .venv/bin/python benchmarks/load_reports.py --proxies 1000 --interval 5 --seconds 60 --empty
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import statistics
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import grpc
from envoy.config.core.v3.base_pb2 import Node
from envoy.config.endpoint.v3.load_report_pb2 import (
    ClusterStats,
    UpstreamLocalityStats,
)
from envoy.service.load_stats.v3 import lrs_pb2, lrs_pb2_grpc

from xds_server.xds.cache import SnapshotCache
from xds_server.xds.client_status import ClientRegistry
from xds_server.xds.grpc_server import start_xds_server
from xds_server.xds.load_reports import LoadReportingService, LoadWindows, record_report

TICK_S = 0.005
STREAMS_PER_CHANNEL = 100


def cluster_names(count: int) -> list[str]:
    return [
        f"outbound|80|v{n % 2 + 1}|svc{n // 2:05d}.default.svc.cluster.local" for n in range(count)
    ]


def report(names: list[str], busy: int) -> lrs_pb2.LoadStatsRequest:
    stats = []
    for n, name in enumerate(names):
        entry = ClusterStats(cluster_name=name, cluster_service_name=name)
        if n < busy:
            entry.upstream_locality_stats.append(
                UpstreamLocalityStats(
                    total_issued_requests=100,
                    total_successful_requests=99,
                    total_error_requests=1,
                    total_requests_in_progress=2,
                )
            )
        entry.load_report_interval.FromMilliseconds(5000)
        stats.append(entry)
    return lrs_pb2.LoadStatsRequest(cluster_stats=stats)


async def proxies(port: int, args: Any) -> int:
    count, interval, seconds = args.proxies, args.interval, args.seconds
    body = report(cluster_names(args.clusters), args.busy)
    sent = 0
    channels = [
        grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        for _ in range(-(-count // STREAMS_PER_CHANNEL))
    ]
    started = time.monotonic()

    async def one(n: int) -> None:
        nonlocal sent
        outgoing: asyncio.Queue[lrs_pb2.LoadStatsRequest | None] = asyncio.Queue()

        async def requests() -> AsyncIterator[lrs_pb2.LoadStatsRequest]:
            while (request := await outgoing.get()) is not None:
                yield request

        stub = lrs_pb2_grpc.LoadReportingServiceStub(channels[n // STREAMS_PER_CHANNEL])
        stream = stub.StreamLoadStats(requests())
        await outgoing.put(lrs_pb2.LoadStatsRequest(node=Node(id=f"sidecar-{n}")))
        await stream.read()
        await asyncio.sleep(interval * n / count)  # staggered, as proxies started apart
        while time.monotonic() - started < seconds:
            await outgoing.put(body)
            sent += 1
            await asyncio.sleep(interval)
        await outgoing.put(None)
        stream.cancel()

    await asyncio.gather(*(one(n) for n in range(count)))
    for channel in channels:
        await channel.close(None)
    return sent


def run_proxies(port: int, args: Any, results: Any) -> None:
    sent = asyncio.run(proxies(port, args))
    results.put(sent)


async def measure(seconds: float) -> tuple[list[float], float]:
    gaps: list[float] = []
    cpu = time.process_time()
    last = time.perf_counter()
    end = last + seconds
    while last < end:
        await asyncio.sleep(TICK_S)
        now = time.perf_counter()
        gaps.append(now - last - TICK_S)
        last = now
    return gaps, time.process_time() - cpu


def summary(name: str, gaps: list[float], cpu: float, seconds: float) -> str:
    gaps = sorted(gaps)
    p99 = gaps[int(len(gaps) * 0.99)]
    return (
        f"| {name} | {cpu / seconds * 100:.1f} % | {statistics.median(gaps) * 1000:.2f} ms"
        f" | {p99 * 1000:.2f} ms | {gaps[-1] * 1000:.1f} ms |"
    )


class EmptyService(LoadReportingService):
    """Reads every report and keeps nothing: what gRPC alone costs per message."""

    async def _read(
        self, requests: AsyncIterator[lrs_pb2.LoadStatsRequest], first: asyncio.Event
    ) -> None:
        async for _ in requests:
            first.set()
            self.reports += 1


async def reporting_run(
    args: argparse.Namespace, service: LoadReportingService
) -> tuple[list[float], float, int, int]:
    """One run of the proxies against ``service``: loop gaps, CPU, reports received and sent."""
    service.want(frozenset(cluster_names(args.clusters)))
    server, port = await start_xds_server(
        SnapshotCache(), ClientRegistry(), "127.0.0.1:0", load_reporting=service
    )
    spawn = multiprocessing.get_context("spawn")  # gRPC cannot be forked
    results: Any = spawn.Queue()
    process = spawn.Process(target=run_proxies, args=(port, args, results))
    process.start()
    while service.streams < args.proxies:  # every stream open and told what to report
        await asyncio.sleep(0.1)
    await asyncio.sleep(args.interval)  # every proxy past its staggered start
    before = service.reports
    gaps, cpu = await measure(args.seconds)
    reports = service.reports - before
    sent = await asyncio.to_thread(results.get)
    process.join()
    await server.stop(None)
    return gaps, cpu, reports, sent


def handling_cpu(args: argparse.Namespace, reports: int) -> float:
    """CPU seconds ``record_report`` takes for ``reports`` copies of the proxies' report."""
    body = report(cluster_names(args.clusters), args.busy)
    windows = LoadWindows()
    started = time.process_time()
    for _ in range(reports):
        record_report(windows, body)
    return time.process_time() - started


async def main(args: argparse.Namespace) -> None:
    rows = []
    idle_gaps, idle_cpu = await measure(args.seconds)
    rows.append(summary("no reports", idle_gaps, idle_cpu, args.seconds))
    windows = LoadWindows()
    service = LoadReportingService(windows, args.interval)
    gaps, cpu, reports, sent = await reporting_run(args, service)
    rows.append(summary(f"{args.proxies:,} proxies reporting", gaps, cpu, args.seconds))
    if args.empty:
        empty_gaps, empty_cpu, empty_reports, _ = await reporting_run(
            args, EmptyService(LoadWindows(), args.interval)
        )
        rows.append(
            summary(
                f"{args.proxies:,} proxies, a servicer that ignores reports",
                empty_gaps,
                empty_cpu,
                args.seconds,
            )
        )
    handling = handling_cpu(args, reports)

    print(
        f"{args.proxies} proxies, a report every {args.interval:g} s each, {args.clusters}"
        f" clusters per report ({args.busy} with requests), {args.seconds:g} s per run;"
        f" {reports} reports received ({sent} sent), {len(windows)} clusters kept"
    )
    print("| run | server CPU (share of one core) | loop tick gap p50 | p99 | max |")
    print("|---|---:|---:|---:|---:|")
    print("\n".join(rows))
    print(f"reports cost {(cpu - idle_cpu) / args.seconds * 100:.1f} % of a core")
    print(
        f"of which reading them into the windows (record_report, {reports} times alone):"
        f" {handling / args.seconds * 100:.2f} % of a core"
        f" ({handling / max(1, reports) * 1e6:.0f} µs a report)"
    )
    if args.empty:
        print(
            f"gRPC alone ({empty_reports} reports to a servicer that ignores them):"
            f" {(empty_cpu - idle_cpu) / args.seconds * 100:.1f} % of a core"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--proxies", type=int, default=1000)
    parser.add_argument("--interval", type=float, default=5.0)
    parser.add_argument("--clusters", type=int, default=200)
    parser.add_argument("--busy", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument(
        "--empty", action="store_true", help="also run against a servicer that ignores reports"
    )
    asyncio.run(main(parser.parse_args()))
