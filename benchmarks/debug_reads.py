"""What reading the debug endpoint back to back costs the xDS event loop.

A `ControlPlane`'s cache holds one group of N services (``fanout.mesh_snapshot``), replaced by a
new generation every second (every route and one service's endpoints change) as a weight flip
would. A task ticking every 5 ms on the xDS loop records the gaps between ticks: how long a push,
an ACK or a new stream would have waited. Meanwhile, from another process, a client reads
``/debug/snapshot`` and ``/debug/clients`` back to back, and another ``/healthz`` every 20 ms.

Four runs of ``--seconds`` each: nobody reading; reading the debug endpoint (its own thread and
loop); the same views rendered on the xDS loop itself, as the endpoint used to; and 2,000
connections sending a request head one byte a second, coming back when closed ("reads" counts
their reconnections).

    .venv/bin/python benchmarks/debug_reads.py --services 3000
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import socket
import statistics
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from fanout import mesh_snapshot

TICK_S = 0.005
GROUP = "sidecar:15001"
SLOW_CLIENTS = 2000
MODES = ("unread", "endpoint", "on the loop", "slow clients")


def reader(base: str, stop: Any, results: Any) -> None:
    reads = 0
    while not stop.is_set():
        for path in ("/debug/snapshot", "/debug/clients"):
            with urllib.request.urlopen(base + path, timeout=60) as response:
                response.read()
            reads += 1
    results.put(("reads", reads))


def prober(base: str, stop: Any, results: Any) -> None:
    health = []
    while not stop.is_set():
        started = time.perf_counter()
        with urllib.request.urlopen(base + "/healthz", timeout=60) as response:
            response.read()
        health.append(time.perf_counter() - started)
        time.sleep(0.02)
    results.put(("health", health))


def slow_clients(port: int, count: int, stop: Any, results: Any) -> None:
    """``count`` connections that send a request head one byte a second, reconnecting when
    the server closes them."""
    held: list[socket.socket] = []

    def opened() -> socket.socket:
        sock = socket.socket()
        sock.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            sock.connect(("127.0.0.1", port))
        return sock

    held = [opened() for _ in range(count)]
    reconnects = 0
    while not stop.is_set():
        for index, sock in enumerate(held):
            try:
                sock.send(b"G")
            except (BlockingIOError, InterruptedError):
                pass
            except OSError:  # closed by the server (timed out or evicted): come back
                sock.close()
                held[index] = opened()
                reconnects += 1
        stop.wait(1.0)
    for sock in held:
        sock.close()
    results.put(("reads", reconnects))


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else 0.0


async def run(services: int, seconds: float, mode: str) -> dict[str, Any]:
    from xds_server import collector
    from xds_server.app import ControlPlane
    from xds_server.debug.http import handle, start_debug_server
    from xds_server.debug.views import SnapshotRenderer

    collector.tune()  # as serve does
    with collector.long_lived():
        generations = [mesh_snapshot(services, g) for g in (1, 2)]
    plane = ControlPlane()
    plane.cache.set_snapshot(GROUP, generations[0])
    server = start_debug_server(plane, "127.0.0.1", 0)
    base = f"http://127.0.0.1:{server.port}"
    gaps: list[float] = []
    reads = 0
    context = multiprocessing.get_context("spawn")
    stop = context.Event()
    results: multiprocessing.Queue[Any] = context.Queue()
    # The clients are other processes, as they would be.
    clients = [context.Process(target=prober, args=(base, stop, results))]
    if mode == "endpoint":
        clients.append(context.Process(target=reader, args=(base, stop, results)))
    if mode == "slow clients":
        hostile = (server.port, SLOW_CLIENTS, stop, results)
        clients.append(context.Process(target=slow_clients, args=hostile))
    for client in clients:
        client.start()
    deadline = time.perf_counter() + seconds
    last = time.perf_counter()
    next_flip = last + 1.0
    generation = 0
    peak = 0  # connections the debug endpoint held at once
    while time.perf_counter() < deadline:
        await asyncio.sleep(TICK_S)
        now = time.perf_counter()
        gaps.append(now - last)
        last = now
        peak = max(peak, server.http.connections)
        if now >= next_flip:
            generation += 1
            plane.cache.set_snapshot(GROUP, generations[generation % 2])
            next_flip = now + 1.0
        if mode == "on the loop":  # what the endpoint did before: render on the xDS loop, afresh
            for path in ("/debug/snapshot", "/debug/clients"):
                handle(plane, path, SnapshotRenderer())
                reads += 1
    stop.set()
    health: list[float] = []
    for _ in clients:
        kind, value = await asyncio.to_thread(results.get)
        if kind == "reads":
            reads += value
        else:
            health = value
    for client in clients:
        client.join()
    await asyncio.to_thread(server.stop)
    return {
        "mode": mode,
        "reads": reads,
        "loop gap p50 ms": statistics.median(gaps) * 1e3,
        "loop gap p99 ms": percentile(gaps, 0.99) * 1e3,
        "loop gap max ms": max(gaps) * 1e3,
        "healthz p50 ms": statistics.median(health) * 1e3 if health else 0.0,
        "healthz p99 ms": percentile(health, 0.99) * 1e3,
        "peak connections": peak,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--services", type=int, default=3000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    for mode in args.modes:
        result = asyncio.run(run(args.services, args.seconds, mode))
        print(
            "  ".join(
                f"{k}={v:.1f}" if isinstance(v, float) else f"{k}={v}" for k, v in result.items()
            )
        )


if __name__ == "__main__":
    main()
