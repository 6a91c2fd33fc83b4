"""Cold translation benchmark: N services → model → Envoy resources for three node groups.

Each service has one HTTP port, two subsets (a DestinationRule), a 90/10 VirtualService and two
ready pods per subset behind an EndpointSlice. Every run happens in a fresh interpreter, so the
time is cold and the peak RSS is that run's own.

    .venv/bin/python benchmarks/translate.py                 # 1k and 10k services, 3 runs each
    .venv/bin/python benchmarks/translate.py --sizes 10000 --runs 5 --record
    .venv/bin/python benchmarks/translate.py --groups sidecar:15001 gateway:8080 proxyless \
        --groups sidecar:15001 gateway:8080 --record              # one table per group set

Namespace scoping (``exportTo``): ``--namespaces 10`` spreads the services over ten namespaces,
``--private-every 20`` exports every 20th VirtualService and every 20th Service (another one) to
its own namespace only (``.``), and group keys may name a namespace (``sidecar:15001/bench-3``);
``--scoped-groups`` adds a sidecar group in each namespace and one in a namespace nothing names.
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
SCOPED_SECTION = "## translate, namespace-scoped"
EXPORT_TO = "networking.istio.io/exportTo"


def service_objects(
    index: int, namespaces: int = 1, private_every: int = 0
) -> list[dict[str, Any]]:
    """One service with its pods, EndpointSlice, DestinationRule and VirtualService; in one of
    ``namespaces``; with ``private_every``, every so many VirtualServices (and as many other
    Services) are exported to their own namespace only."""
    name = f"svc-{index}"
    namespace = NAMESPACE if namespaces == 1 else f"{NAMESPACE}-{index % namespaces}"
    meta = {"name": name, "namespace": namespace}
    nth = index // namespaces  # the service's rank in its namespace
    private_vs = bool(private_every) and nth % private_every == 0
    private_service = bool(private_every) and nth % private_every == private_every // 2
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
                        "namespace": namespace,
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
                    "targetRef": {"kind": "Pod", "name": pod, "namespace": namespace},
                }
            )
    return [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {**meta, "annotations": {EXPORT_TO: "."}} if private_service else meta,
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
                "namespace": namespace,
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
                **({"exportTo": ["."]} if private_vs else {}),
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


def child(
    size: int, server_gc: bool, group_keys: list[str], namespaces: int = 1, private_every: int = 0
) -> dict[str, Any]:
    """One cold run in this process, as `splitplane serve` does it: translate, build the
    default groups, serialize every distinct resource once into snapshots."""
    from translators.build import ResourceBuilder
    from translators.incremental import Translator
    from xds_server import collector
    from xds_server.app import parse_group
    from xds_server.xds.cache import Serializer, snapshot_from_messages

    if server_gc:
        collector.tune()

    groups = [group for key in group_keys if (group := parse_group(key)) is not None]
    objects = [
        obj for index in range(size) for obj in service_objects(index, namespaces, private_every)
    ]
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    cpu_start = time.process_time()
    start = time.perf_counter()
    translator = Translator()
    with collector.long_lived(cold=server_gc):
        translation = translator.reset({key_of(obj): obj for obj in objects})
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
    # snapshots that share every type's resources are one snapshot held once
    distinct_snapshots = {
        tuple(id(held) for held in snapshot.types.values()) for snapshot in snapshots
    }
    serializer.end_round()
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    change_seconds, endpoint_change_seconds = changes(
        objects, translator, builder, serializer, groups
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
        "groups": len(groups),
        "distinct_snapshots": len(distinct_snapshots),
        "views": len(translation.model.views),
    }


CHANGES = 15  # of each kind, after the cold start; the median is reported


def key_of(obj: dict[str, Any]) -> tuple[str, str, str]:
    meta = obj["metadata"]
    return (obj["kind"], meta.get("namespace") or "default", meta["name"])


def changes(
    objects: list[dict[str, Any]],
    translator: Any,
    builder: Any,
    serializer: Any,
    groups: list[Any],
) -> tuple[float, float]:
    """Median seconds to publish, after the cold start, one VirtualService's new weights and
    one EndpointSlice's new address (alternately, each a different object), as serve does:
    the change translated on its own, every group built, snapshots made."""
    from xds_server.xds.cache import snapshot_from_messages

    def publish(change: dict[str, Any]) -> float:
        start = time.perf_counter()
        translation = translator.apply({key_of(change): change})
        for group in groups:
            snapshot_from_messages(
                builder.build_group(translation.model, group, NO_NAMES), serializer
            )
        serializer.end_round()
        return time.perf_counter() - start

    virtual_services = [obj for obj in objects if obj["kind"] == "VirtualService"]
    slices = [obj for obj in objects if obj["kind"] == "EndpointSlice"]
    routes: list[float] = []
    endpoints: list[float] = []
    for n in range(CHANGES):
        vs = copy.deepcopy(virtual_services[n * 7 % len(virtual_services)])
        vs["spec"]["http"][0]["route"][0]["weight"] = 50
        routes.append(publish(vs))
        moved = copy.deepcopy(slices[n * 11 % len(slices)])
        moved["endpoints"][0]["addresses"] = [f"10.255.255.{n + 1}"]
        endpoints.append(publish(moved))
    return statistics.median(routes), statistics.median(endpoints)


def run_fresh(
    size: int, server_gc: bool, group_keys: list[str], namespaces: int = 1, private_every: int = 0
) -> dict[str, Any]:
    gc_flag = [] if server_gc else ["--python-gc"]
    scoping = ["--namespaces", str(namespaces), "--private-every", str(private_every)]
    out = subprocess.run(
        [
            sys.executable,
            __file__,
            "--child",
            str(size),
            *gc_flag,
            *scoping,
            "--groups",
            *group_keys,
        ],
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
        "groups": runs[0]["groups"],
        "distinct_snapshots": runs[0]["distinct_snapshots"],
        "views": runs[0]["views"],
    }


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| services | cold total (s) | CPU (s) | translate (s) | build groups (s) "
        "| serialize (s) | serialized (MB) | peak RSS (MB) | RSS of input objects (MB) "
        "| then one VirtualService change (ms) | then one EndpointSlice change (ms) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['size']} | {r['seconds']:.2f} | {r['cpu_seconds']:.2f} "
            f"| {r['translate_seconds']:.2f} "
            f"| {r['build_seconds']:.2f} | {r['serialize_seconds']:.2f} | {r['mb']:.1f} "
            f"| {r['peak_rss_mb']:.0f} | {r['input_rss_mb']:.0f} "
            f"| {1000 * r['change_seconds']:.1f} | {1000 * r['endpoint_change_seconds']:.1f} |"
        )
    return "\n".join(lines)


def scoped_table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| services | private every | groups | views | snapshots held | cold total (s) "
        "| CPU (s) | translate (s) | build groups (s) | serialized (MB) | peak RSS (MB) "
        "| then one VirtualService change (ms) | then one EndpointSlice change (ms) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        every = r["private_every"] or "none"
        lines.append(
            f"| {r['size']} | {every} | {r['groups']} | {r['views']} "
            f"| {r['distinct_snapshots']} | {r['seconds']:.2f} | {r['cpu_seconds']:.2f} "
            f"| {r['translate_seconds']:.2f} | {r['build_seconds']:.2f} | {r['mb']:.1f} "
            f"| {r['peak_rss_mb']:.0f} | {1000 * r['change_seconds']:.1f} "
            f"| {1000 * r['endpoint_change_seconds']:.1f} |"
        )
    return "\n".join(lines)


def scoped(args: argparse.Namespace) -> None:
    """The same mesh over ``--namespaces`` namespaces with a sidecar group in each (and one in a
    namespace nothing names), first with everything exported everywhere, then with every
    ``--private-every``-th VirtualService and Service exported to its own namespace only."""
    keys = ["sidecar:15001/elsewhere"] + [
        f"sidecar:15001/{NAMESPACE}-{i}" for i in range(args.namespaces)
    ]
    rows = []
    for size in args.sizes:
        for every in (0, args.private_every):
            runs = [
                run_fresh(size, not args.python_gc, keys, args.namespaces, every)
                for _ in range(args.runs)
            ]
            rows.append({**summary(size, runs), "private_every": every})
            print(json.dumps(rows[-1]), flush=True)
    print(scoped_table(rows))
    if args.record:
        command = "python benchmarks/translate.py " + " ".join(sys.argv[1:])
        record_section(
            SCOPED_SECTION,
            f"{SCOPED_SECTION}\n\n"
            f"The services of the cold translation above, spread over {args.namespaces} "
            f"namespaces, with a sidecar group in each namespace and one in a namespace no "
            f"exportTo names ({len(keys)} groups); first with everything exported everywhere, "
            f"then with every {args.private_every}th VirtualService and every "
            f"{args.private_every}th Service (others) exported to their own namespace only "
            '(`exportTo: ["."]`). Fresh interpreter per run, median of '
            f'{args.runs} runs. "views": the namespaces that see something of their own; '
            '"snapshots held": distinct snapshots over all groups (groups that see the '
            'same share one); "serialized": the bytes of every distinct resource held.\n\n'
            f"Command: `{command}`\n\n{scoped_table(rows)}\n",
        )


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
    parser.add_argument("--namespaces", type=int, default=1, help="spread services over N")
    parser.add_argument(
        "--private-every",
        type=int,
        default=0,
        metavar="N",
        help="export every Nth VirtualService and Service to its own namespace only",
    )
    parser.add_argument(
        "--scoped-groups",
        action="store_true",
        help="measure namespace scoping: a sidecar group per namespace, everything exported "
        "everywhere and then with --private-every (default 20)",
    )
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    group_sets: list[list[str]] = args.groups or [["sidecar:15001", "gateway:8080", "proxyless"]]
    if args.child is not None:
        result = child(
            args.child, not args.python_gc, group_sets[0], args.namespaces, args.private_every
        )
        print(json.dumps(result))
        return
    if args.scoped_groups:
        args.private_every = args.private_every or 20
        args.namespaces = max(args.namespaces, 2)
        scoped(args)
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
            "Target: 10k services ≤ 2 s. Then, as serve does it, one change at a time "
            f"(the median of {CHANGES} of each kind): one VirtualService's weights (target "
            "≤ 20 ms) and one EndpointSlice's address (target ≤ 5 ms), each translated on its "
            "own (`translators.incremental`), every group built and its snapshot made.\n\n"
            f"Command: `{command}`\n\n" + "\n".join(sections),
        )


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    main()
