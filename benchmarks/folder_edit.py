"""The CPU time a watched folder spends on one edited file, in a folder of many files.

N services (as ``benchmarks/translate.py`` makes them: a Service, 4 Pods, an EndpointSlice, a
DestinationRule and a VirtualService each, 8 objects) are written one file per service. A
``DirectorySource`` follows the folder with a sink that only counts calls, the collector tuned as
``splitplane serve`` tunes it. Then one file at a time is rewritten with a new weight (spread over
the folder), and the process CPU time of the source's event handling for that write (inotify read,
parse, merge, sink calls) is recorded. The median over the edits is printed for each folder size,
with the CPU time of the first read of the whole folder (``start``) for comparison.

    .venv/bin/python benchmarks/folder_edit.py                    # 10k services, 31 edits
    .venv/bin/python benchmarks/folder_edit.py --services 1000 10000 --edits 51
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml
from translate import service_objects


class CountingSink:
    """An ObjectSink that keeps nothing but how many objects it was told about."""

    def __init__(self) -> None:
        self.upserts = 0
        self.problem_lists = 0

    def replace_all(self, source: str, objects: Iterable[Any]) -> None:
        self.upserts = 0

    def upsert(self, source: str, obj: Any) -> None:
        self.upserts += 1

    def delete(self, source: str, key: Any) -> None:
        pass

    def set_problems(self, source: str, problems: Iterable[Any]) -> None:
        self.problem_lists += 1

    def mark_synced(self, source: str) -> None:
        pass


def service_file(index: int, weight: int) -> str:
    objects = service_objects(index)
    objects[-1]["spec"]["http"][0]["route"][0]["weight"] = weight
    objects[-1]["spec"]["http"][0]["route"][1]["weight"] = 100 - weight
    return yaml.safe_dump_all(objects, sort_keys=False)


async def measure(folder: Path, services: int, edits: int) -> tuple[float, list[float]]:
    """The CPU seconds the source spent reading the folder, and on each of ``edits`` single-file
    edits."""
    from xds_server import collector
    from xds_server.sources.directory import DirectorySource

    collector.tune()  # as serve runs

    sink = CountingSink()
    source = DirectorySource(folder, sink)
    spent: list[float] = []
    handle_events = source._on_events

    def timed_on_events() -> None:
        start = time.process_time()
        handle_events()
        spent.append(time.process_time() - start)

    source._on_events = timed_on_events  # type: ignore[method-assign]
    start = time.process_time()
    await source.start()
    started = time.process_time() - start
    try:
        per_edit: list[float] = []
        for edit in range(edits):
            path = folder / f"svc-{edit * 7919 % services:05d}.yaml"
            before = sink.upserts
            spent.clear()
            path.write_text(service_file(edit * 7919 % services, weight=edit % 100))
            while sink.upserts == before:
                await asyncio.sleep(0.001)
            per_edit.append(sum(spent))
        return started, per_edit
    finally:
        await source.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--services", type=int, nargs="+", default=[10_000])
    parser.add_argument("--edits", type=int, default=31)
    args = parser.parse_args()
    print("| services | objects | start, CPU (s) | one file edit, CPU (ms): median | min | max |")
    print("|---:|---:|---:|---:|---:|---:|")
    for services in args.services:
        with tempfile.TemporaryDirectory() as directory:
            folder = Path(directory)
            for index in range(services):
                (folder / f"svc-{index:05d}.yaml").write_text(service_file(index, weight=90))
            started, per_edit = asyncio.run(measure(folder, services, args.edits))
        print(
            f"| {services} | {services * 8} | {started:.2f} "
            f"| {statistics.median(per_edit) * 1000:.2f} "
            f"| {min(per_edit) * 1000:.2f} | {max(per_edit) * 1000:.2f} |"
        )


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    main()
