"""Event-loop stalls while `splitplane serve`'s pipeline works on a large mesh.

A `ControlPlane` (the pipeline serve runs, in this process) takes N services (as
``benchmarks/translate.py`` makes them) with a sidecar node group watched, then one VirtualService
change, then a proxyless gRPC client's group is asked for. A task ticking every 5 ms on the event
loop records the longest gap between two ticks: how long ADS streams (ACKs, new connections,
pushes) would have waited. Run once with translating and building in the worker thread (the
default for 5,000 objects or more) and once with everything on the loop.

    .venv/bin/python benchmarks/loop_stall.py                  # 10k services
    .venv/bin/python benchmarks/loop_stall.py --services 1000
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import sys
import time
from pathlib import Path
from typing import Any

from translate import service_objects

TICK_S = 0.005
GROUP = "sidecar:15001"
LATER_GROUP = "proxyless"


async def measure(services: int, offload_objects: int) -> dict[str, float]:
    from xds_server import collector
    from xds_server.app import ControlPlane

    collector.tune()
    objects = [obj for index in range(services) for obj in service_objects(index)]
    plane = ControlPlane(quiet=0.01, max_delay=0.05, offload_objects=offload_objects)
    plane.cache.watch(GROUP, lambda: None)
    gaps: list[float] = []
    running = True

    async def ticker() -> None:
        last = time.perf_counter()
        while running:
            await asyncio.sleep(TICK_S)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    async def published(before: Any, group: str = GROUP, start: float | None = None) -> float:
        start = start or time.perf_counter()
        while plane.cache.snapshot(group) is before:
            await asyncio.sleep(TICK_S)
        await asyncio.sleep(4 * TICK_S)  # a few more ticks after it
        return time.perf_counter() - start

    task = asyncio.create_task(ticker())
    plane.store.replace_all("bench", objects)
    plane.store.mark_synced("bench")
    cold = await published(None)
    cold_stall = max(gaps)
    gaps.clear()
    index = next(i for i, obj in enumerate(objects) if obj["kind"] == "VirtualService")
    changed = copy.deepcopy(objects[index])
    changed["spec"]["http"][0]["route"][0]["weight"] = 50
    before = plane.cache.snapshot(GROUP)
    plane.store.upsert("bench", changed)
    change = await published(before)
    change_stall = max(gaps)
    gaps.clear()
    asked = time.perf_counter()
    plane.cache.watch(LATER_GROUP, lambda: None)  # on the loop, this builds it before returning
    later = await published(None, LATER_GROUP, asked)
    running = False
    await task
    plane.store.close()
    return {
        "cold": cold,
        "cold_stall": cold_stall,
        "change": change,
        "change_stall": change_stall,
        "later": later,
        "later_stall": max(gaps),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--services", type=int, default=10_000)
    args = parser.parse_args()
    columns = ["translate and build", "cold start (s)", "longest stall (ms)"]
    columns += ["one change (s)", "longest stall (ms)", "a new group (s)", "longest stall (ms)"]
    print("| " + " | ".join(columns) + " |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for label, offload in (("worker thread", 5_000), ("on the loop", sys.maxsize)):
        found = asyncio.run(measure(args.services, offload))
        print(
            f"| {label} | {found['cold']:.2f} | {found['cold_stall'] * 1000:.0f} "
            f"| {found['change']:.2f} | {found['change_stall'] * 1000:.0f} "
            f"| {found['later']:.2f} | {found['later_stall'] * 1000:.0f} |"
        )


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    main()
