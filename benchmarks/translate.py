"""Cold translation benchmark: N services → model → Envoy resources for three node groups.

Each service has one HTTP port, two subsets (a DestinationRule), a 90/10 VirtualService and two
ready pods per subset behind an EndpointSlice. Every run happens in a fresh interpreter, so the
time is cold and the peak RSS is that run's own.

    .venv/bin/python benchmarks/translate.py                 # 1k and 10k services, 3 runs each
    .venv/bin/python benchmarks/translate.py --sizes 10000 --runs 5 --record
    .venv/bin/python benchmarks/translate.py --groups sidecar:15001 gateway:8080 proxyless \
        --groups sidecar:15001 gateway:8080 --record              # one table per group set
"""

from __future__ import annotations

import argparse
import copy
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from results import record_section

NAMESPACE = "bench"
# The listener names proxyless clients asked for: none at a cold start, so the proxyless group
# is its clusters, load assignments and route tables (serve adds an api listener per name a
# client subscribes to).
NO_NAMES: frozenset[str] = frozenset()
SECTION = "## translate"


def service_objects(index: int) -> list[dict[str, Any]]:
    """One service with its pods, EndpointSlice, DestinationRule and VirtualService."""
    name = f"svc-{index}"
    meta = {"name": name, "namespace": NAMESPACE}
    pods: list[dict[str, Any]] = []
    endpoints = []
    for version in ("v1", "v2"):
        for replica in range(2):
            pod = f"{name}-{version}-{replica}"
            ip = f"10.{index // 250 % 250}.{index % 250}.{len(pods) + 1}"
            pods.append(
                {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "metadata": {
                        "name": pod,
                        "namespace": NAMESPACE,
                        "labels": {"app": name, "version": version},
                    },
                    "status": {
                        "phase": "Running",
                        "podIP": ip,
                        "conditions": [{"type": "Ready", "status": "True"}],
                    },
                }
            )
            endpoints.append(
                {
                    "addresses": [ip],
                    "conditions": {"ready": True},
                    "zone": f"zone-{replica}",
                    "targetRef": {"kind": "Pod", "name": pod, "namespace": NAMESPACE},
                }
            )
    return [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": meta,
            "spec": {
                "selector": {"app": name},
                "ports": [{"name": "http", "port": 80, "targetPort": 8080}],
            },
        },
        *pods,
        {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": f"{name}-abcde",
                "namespace": NAMESPACE,
                "labels": {"kubernetes.io/service-name": name},
            },
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": endpoints,
        },
        {
            "apiVersion": "networking.istio.io/v1",
            "kind": "DestinationRule",
            "metadata": meta,
            "spec": {
                "host": name,
                "subsets": [
                    {"name": "v1", "labels": {"version": "v1"}},
                    {"name": "v2", "labels": {"version": "v2"}},
                ],
            },
        },
        {
            "apiVersion": "networking.istio.io/v1",
            "kind": "VirtualService",
            "metadata": {**meta, "creationTimestamp": "2024-01-01T00:00:00Z"},
            "spec": {
                "hosts": [name],
                "http": [
                    {
                        "route": [
                            {"destination": {"host": name, "subset": "v1"}, "weight": 90},
                            {"destination": {"host": name, "subset": "v2"}, "weight": 10},
                        ]
                    }
                ],
            },
        },
    ]


def child(size: int, server_gc: bool, group_keys: list[str]) -> dict[str, Any]:
    """One cold run in this process, as `splitplane serve` does it: translate, build the
    default groups, serialize every distinct resource once into snapshots."""
    from translators.build import ResourceBuilder
    from translators.translate import translate
    from xds_server import collector
    from xds_server.app import parse_group
    from xds_server.xds.cache import Serializer, snapshot_from_messages

    if server_gc:
        collector.tune()

    groups = [group for key in group_keys if (group := parse_group(key)) is not None]
    objects = [obj for index in range(size) for obj in service_objects(index)]
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    cpu_start = time.process_time()
    start = time.perf_counter()
    with collector.long_lived(cold=server_gc):
        translation = translate(objects)
        translated = time.perf_counter()
        builder = ResourceBuilder()
        built = [builder.build_group(translation.model, group, NO_NAMES) for group in groups]
        done_build = time.perf_counter()
        serializer = Serializer()
        snapshots = [snapshot_from_messages(resources, serializer) for resources in built]
    counts: dict[str, int] = {}
    distinct: dict[int, int] = {}
    for snapshot in snapshots:
        for type_url, held in snapshot.types.items():
            counts[type_url] = counts.get(type_url, 0) + len(held.by_name)
            for item in held.resources:
                distinct[id(item)] = len(item.body)
    end = time.perf_counter()
    cpu = time.process_time() - cpu_start
    serializer.end_round()
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    change_seconds, endpoint_change_seconds = one_change(
        objects, translation, builder, serializer, groups
    )
    return {
        "size": size,
        "seconds": end - start,
        "cpu_seconds": cpu,
        "translate_seconds": translated - start,
        "build_seconds": done_build - translated,
        "serialize_seconds": end - done_build,
        "bytes": sum(distinct.values()),
        "resources": {url.rsplit(".", 1)[-1]: n for url, n in counts.items()},
        "peak_rss_mb": peak_rss / 1024,
        "input_rss_mb": rss_before / 1024,
        "change_seconds": change_seconds,
        "endpoint_change_seconds": endpoint_change_seconds,
    }


def one_change(
    objects: list[dict[str, Any]],
    previous: Any,
    builder: Any,
    serializer: Any,
    groups: list[Any],
) -> tuple[float, float]:
    """Seconds to publish, after the cold start, one VirtualService's new weights and then one
    EndpointSlice's new address, as serve does: translate with the previous translation (only
    the endpoints for an endpoint-only change), build, snapshot."""
    from translators.translate import translate, translate_endpoints
    from xds_server.xds.cache import snapshot_from_messages

    def publish(translation: Any) -> None:
        for group in groups:
            snapshot_from_messages(
                builder.build_group(translation.model, group, NO_NAMES), serializer
            )
        serializer.end_round()

    def replaced(kind: str, change: Any) -> list[dict[str, Any]]:
        index = next(i for i, obj in enumerate(objects) if obj["kind"] == kind)
        changed = copy.deepcopy(objects[index])
        change(changed)
        return [*objects[:index], changed, *objects[index + 1 :]]

    def new_weight(vs: dict[str, Any]) -> None:
        vs["spec"]["http"][0]["route"][0]["weight"] = 50

    def new_address(endpoint_slice: dict[str, Any]) -> None:
        endpoint_slice["endpoints"][0]["addresses"] = ["10.255.255.1"]

    objects = replaced("VirtualService", new_weight)
    start = time.perf_counter()
    translation = translate(objects, previous=previous)
    publish(translation)
    routes = time.perf_counter() - start
    objects = replaced("EndpointSlice", new_address)
    start = time.perf_counter()
    publish(translate_endpoints(translation, objects))
    return routes, time.perf_counter() - start


def run_fresh(size: int, server_gc: bool, group_keys: list[str]) -> dict[str, Any]:
    gc_flag = [] if server_gc else ["--python-gc"]
    out = subprocess.run(
        [sys.executable, __file__, "--child", str(size), *gc_flag, "--groups", *group_keys],
        check=True,
        capture_output=True,
        text=True,
    )
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def summary(size: int, runs: list[dict[str, Any]]) -> dict[str, Any]:
    def median(key: str) -> float:
        return float(statistics.median(r[key] for r in runs))

    return {
        "size": size,
        "runs": len(runs),
        "seconds": median("seconds"),
        "cpu_seconds": median("cpu_seconds"),
        "translate_seconds": median("translate_seconds"),
        "build_seconds": median("build_seconds"),
        "serialize_seconds": median("serialize_seconds"),
        "mb": median("bytes") / 1e6,
        "peak_rss_mb": median("peak_rss_mb"),
        "input_rss_mb": median("input_rss_mb"),
        "change_seconds": median("change_seconds"),
        "endpoint_change_seconds": median("endpoint_change_seconds"),
        "resources": runs[0]["resources"],
    }


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| services | cold total (s) | CPU (s) | translate (s) | build groups (s) "
        "| serialize (s) | serialized (MB) | peak RSS (MB) | RSS of input objects (MB) "
        "| then one VirtualService change (s) | then one EndpointSlice change (s) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['size']} | {r['seconds']:.2f} | {r['cpu_seconds']:.2f} "
            f"| {r['translate_seconds']:.2f} "
            f"| {r['build_seconds']:.2f} | {r['serialize_seconds']:.2f} | {r['mb']:.1f} "
            f"| {r['peak_rss_mb']:.0f} | {r['input_rss_mb']:.0f} | {r['change_seconds']:.2f} "
            f"| {r['endpoint_change_seconds']:.2f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--record", action="store_true", help="write the figures to RESULTS.md")
    parser.add_argument(
        "--python-gc",
        action="store_true",
        help="keep Python's default collector settings instead of the server's",
    )
    parser.add_argument(
        "--groups",
        nargs="+",
        action="append",
        help="node groups to build (a server builds a group once a node of it connects); "
        "repeat for one table per group set (default: sidecar:15001 gateway:8080 proxyless)",
    )
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    group_sets: list[list[str]] = args.groups or [["sidecar:15001", "gateway:8080", "proxyless"]]
    if args.child is not None:
        print(json.dumps(child(args.child, not args.python_gc, group_sets[0])))
        return
    sections = []
    for group_keys in group_sets:
        rows = []
        for size in args.sizes:
            runs = [run_fresh(size, not args.python_gc, group_keys) for _ in range(args.runs)]
            rows.append(summary(size, runs))
            print(json.dumps(rows[-1]), flush=True)
        print(table(rows))
        counts = ", ".join(f"{n} {kind}" for kind, n in rows[-1]["resources"].items())
        sections.append(
            f"Groups {', '.join(group_keys)}:\n\n{table(rows)}\n\n"
            f"Resources summed over these groups at {rows[-1]['size']} services: {counts}.\n"
        )
    if args.record:
        command = "python benchmarks/translate.py " + " ".join(sys.argv[1:])
        record_section(
            SECTION,
            f"{SECTION}\n\n"
            "Cold translation (fresh interpreter per run; median of "
            f"{args.runs} runs), as `splitplane serve` does it: `translate`, then build "
            "the groups with one `ResourceBuilder`, then one "
            "snapshot per group with a shared `Serializer` (every distinct resource serialized "
            "once), with the server's collector settings (raised thresholds; a cold build runs "
            "without collections and what survives it is frozen) unless `--python-gc` is given. "
            "Each service: one HTTP port, "
            "2 subsets, a 90/10 VirtualService, 4 ready pods in an EndpointSlice. "
            "Target: 10k services ≤ 2 s.\n\n"
            f"Command: `{command}`\n\n" + "\n".join(sections),
        )


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    main()
