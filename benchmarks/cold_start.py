"""Cold start: how long `splitplane serve` takes to be ready on N services, and where the time goes.

Each service is one file (for the folder) or five objects (for the API server): a Service, two
Pods (no EndpointSlice), a DestinationRule with subsets v1/v2 and a VirtualService 100/0.

- folder ready: a real `splitplane serve --config-dir DIR` process, from its start until its
  debug endpoint's /readyz answers 200 (every source synced and the first translation out);
  median of ``--runs``;
- Kubernetes ready: the same with `--kubeconfig` against the in-process API server
  (tests/kube/apiserver.py, run in a process of its own so that it does not share the serve
  process's interpreter), listing with limit/continue as the source does; median of ``--runs``;
- stages: one cold pass of the folder's pipeline in a fresh interpreter, each stage timed
  (wall and CPU): importing the server, listing the folder, reading the files, parsing the YAML
  (and how many files the fast parser read), the per-document checks, the merge, the store,
  translation and building one sidecar group; and the Kubernetes source's list of everything,
  through the real client, into the store.

    .venv/bin/python benchmarks/cold_start.py                            # 1k and 10k, 3 runs
    .venv/bin/python benchmarks/cold_start.py --services 1000 10000 --runs 3 --record
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import yaml
from results import record_section

ROOT = Path(__file__).resolve().parent.parent
SECTION = "## cold start"
SPLITPLANE = str(Path(sys.executable).with_name("splitplane"))


def service_objects(index: int) -> list[dict[str, Any]]:
    """One service: a Service, two Pods, a DestinationRule (v1/v2), a VirtualService 100/0."""
    name = f"svc-{index}"
    meta = {"name": name, "namespace": "default"}
    pods = [
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": f"{name}-{version}",
                "namespace": "default",
                "labels": {"app": name, "version": version},
            },
            "status": {
                "phase": "Running",
                "podIP": f"10.{index // 250 % 250}.{index % 250}.{number}",
                "conditions": [{"type": "Ready", "status": "True"}],
            },
        }
        for number, version in enumerate(("v1", "v2"), start=1)
    ]
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
            "metadata": meta,
            "spec": {
                "hosts": [name],
                "http": [
                    {
                        "route": [
                            {"destination": {"host": name, "subset": "v1"}, "weight": 100},
                            {"destination": {"host": name, "subset": "v2"}, "weight": 0},
                        ]
                    }
                ],
            },
        },
    ]


def write_folder(folder: Path, services: int) -> None:
    for index in range(services):
        text = yaml.safe_dump_all(service_objects(index), sort_keys=False)
        (folder / f"svc-{index:05d}.yaml").write_text(text)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def serve_ready(source_flags: list[str], timeout: float = 300.0) -> float:
    """Seconds from starting `splitplane serve` to its /readyz answering 200."""
    debug = free_port()
    command = [
        SPLITPLANE,
        "serve",
        *source_flags,
        "--xds-address",
        f"127.0.0.1:{free_port()}",
        "--debug-address",
        f"127.0.0.1:{debug}",
        "--log-level",
        "warning",
    ]
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        while time.perf_counter() - started < timeout:
            if process.poll() is not None:
                raise RuntimeError(f"serve exited: {process.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
            try:
                url = f"http://127.0.0.1:{debug}/readyz"
                with urllib.request.urlopen(url, timeout=2) as answer:
                    if answer.status == 200:
                        return time.perf_counter() - started
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.01)
        raise RuntimeError("serve was not ready in time")
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# -- the API server, in a process of its own -----------------------------------------------------


def run_apiserver(services: int, kubeconfig: Path) -> None:
    """Serve N services' objects until standard input closes (the ``--apiserver`` child)."""
    sys.path.insert(0, str(ROOT))
    from tests.kube.apiserver import FakeApiServer

    server = FakeApiServer().start()
    for index in range(services):
        for obj in service_objects(index):
            server.create(obj)
    server.write_kubeconfig(kubeconfig)
    print("ready", flush=True)
    sys.stdin.read()
    server.stop()


class ApiServer:
    """The ``--apiserver`` child process, holding N services' objects."""

    def __init__(self, services: int, folder: Path) -> None:
        self.kubeconfig = folder / "kubeconfig"
        command = [sys.executable, __file__, "--apiserver", str(services), str(self.kubeconfig)]
        self.process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert self.process.stdout is not None
        if self.process.stdout.readline().strip() != "ready":
            raise RuntimeError("the API server did not start")

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait(timeout=60)


# -- stages, in a fresh interpreter ---------------------------------------------------------------


def run_stages(folder: Path, kubeconfig: Path | None) -> None:
    """Time each stage of a cold start on ``folder`` (the ``--stages`` child); print JSON."""
    stages: dict[str, tuple[float, float]] = {}

    def stage(name: str, work: Callable[[], Any]) -> Any:
        wall, cpu = time.perf_counter(), time.process_time()
        result = work()
        stages[name] = (time.perf_counter() - wall, time.process_time() - cpu)
        return result

    sys.path.insert(0, str(ROOT))
    stage("import the server", lambda: __import__("xds_server.app"))
    from translators.build import ResourceBuilder
    from translators.model import NodeGroup, Role
    from translators.translate import translate
    from xds_server import collector
    from xds_server.sources import directory, fast_yaml
    from xds_server.sources.file_merge import FileMerge, ParsedFile
    from xds_server.store import ObjectStore

    collector.tune()
    with collector.long_lived():
        files = stage("list the folder", lambda: directory.config_files(str(folder))[0])

        def read() -> list[bytes]:
            contents = []
            for path in files:
                with open(path, "rb") as file:
                    contents.append(file.read())
            return contents

        contents = stage("read the files", read)
        fast = sum(fast_yaml.documents(data) is not None for data in contents[:500])
        documents = stage(
            "parse the YAML",
            lambda: [directory._documents(data, 4 << 20) for data in contents],
        )

        def check() -> list[ParsedFile]:
            parsed = []
            for path, found in zip(files, documents, strict=True):
                objects = [
                    directory._document_object(path, index, line, document)
                    for index, (line, document) in enumerate(found, start=1)
                ]
                parsed.append(ParsedFile(path, tuple(objects), ()))  # type: ignore[arg-type]
            return parsed

        parsed = stage("check each document", check)
        merge = stage("merge the files", lambda: FileMerge(parsed).objects())
        store = ObjectStore(lambda change: None)
        stage("hand to the store", lambda: store.replace_all("directory", merge.values()))
        objects = stage("the store's objects", store.objects)
        translation = stage("translate", lambda: translate(objects))
        stage(
            "build a sidecar group",
            lambda: ResourceBuilder().build_group(
                translation.model, NodeGroup(Role.SIDECAR, 15001), frozenset()
            ),
        )
    result: dict[str, Any] = {"stages": stages, "fast_of_500": fast, "objects": len(objects)}
    if kubeconfig is not None:
        result["kubernetes_list"] = kubernetes_list(kubeconfig)
    print(json.dumps(result))


def kubernetes_list(kubeconfig: Path) -> dict[str, float]:
    """Seconds (wall, CPU) the Kubernetes source takes to list everything into a store."""
    import threading

    from xds_server.sources.kubernetes import KubernetesSource, api_client_from_flags
    from xds_server.store import ObjectStore

    synced = threading.Event()

    class Store(ObjectStore):
        def mark_synced(self, source: str) -> None:
            super().mark_synced(source)
            synced.set()

    class NoConsumerTimer:
        """The store's clock, without a loop: the consumer is never called here."""

        def now(self) -> float:
            return time.monotonic()

        def call_later(self, delay: float, callback: Callable[[], None]) -> threading.Timer:
            return threading.Timer(delay, callback)  # never started

    store = Store(lambda change: None, timer=NoConsumerTimer())
    api = api_client_from_flags(kubeconfig=str(kubeconfig))

    def call_now(call: Callable[[], None]) -> None:
        with lock:
            call()

    lock = threading.Lock()
    wall, cpu = time.perf_counter(), time.process_time()
    source = KubernetesSource(api, store, call_soon=call_now)
    store.register_source(source.name)
    source.start()
    synced.wait(timeout=600)
    listed = {"wall": time.perf_counter() - wall, "cpu": time.process_time() - cpu}
    listed["objects"] = len(store.objects())
    source.stop()
    return listed


# -- the report -----------------------------------------------------------------------------------


def measure(services: int, runs: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as directory:
        folder = Path(directory) / "mesh"
        folder.mkdir()
        write_folder(folder, services)
        folder_times = [serve_ready(["--config-dir", str(folder)]) for _ in range(runs)]
        apiserver = ApiServer(services, Path(directory))
        try:
            kube_times = [
                serve_ready(["--kubeconfig", str(apiserver.kubeconfig)]) for _ in range(runs)
            ]
            stages = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--stages",
                    str(folder),
                    str(apiserver.kubeconfig),
                ],
                check=True,
                capture_output=True,
                text=True,
            )
        finally:
            apiserver.close()
    return {
        "services": services,
        "folder": folder_times,
        "kubernetes_ready": kube_times,
        **json.loads(stages.stdout.strip().splitlines()[-1]),
    }


def report(results: Iterable[dict[str, Any]], command: str, load: str) -> str:
    results = list(results)
    lines = [
        SECTION,
        "",
        f"Command: `{command}` (2 shared cores; load average before the run: {load}).",
        "",
        "Ready = `splitplane serve` started → /readyz 200 (sources synced, first translation "
        "out); median of the runs, each run shown. Objects per service: a Service, two Pods, a "
        "DestinationRule (v1/v2), a VirtualService 100/0 (one file per service for the folder).",
        "",
        "| services | objects | folder ready (s) | runs | Kubernetes ready (s) | runs |",
        "|---:|---:|---:|---|---:|---|",
    ]
    for result in results:
        folder, kube = result["folder"], result["kubernetes_ready"]
        lines.append(
            f"| {result['services']} | {result['objects']} "
            f"| {statistics.median(folder):.2f} | {' / '.join(f'{t:.2f}' for t in folder)} "
            f"| {statistics.median(kube):.2f} | {' / '.join(f'{t:.2f}' for t in kube)} |"
        )
    lines += [
        "",
        "Stages of one cold pass over the folder (fresh interpreter), wall / CPU seconds:",
    ]
    lines += ["", "| stage | " + " | ".join(f"{r['services']} services" for r in results) + " |"]
    lines.append("|---|" + "---:|" * len(results))
    for name in results[0]["stages"]:
        cells = ["{:.2f} / {:.2f}".format(*result["stages"][name]) for result in results]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    cells = [
        "{:.2f} / {:.2f}".format(r["kubernetes_list"]["wall"], r["kubernetes_list"]["cpu"])
        for r in results
    ]
    lines.append(
        "| Kubernetes source: list everything into the store | " + " | ".join(cells) + " |"
    )
    cells = [f"{r['fast_of_500']} of 500" for r in results]
    lines.append("| files the fast parser read (first 500) | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--apiserver":
        run_apiserver(int(sys.argv[2]), Path(sys.argv[3]))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "--stages":
        run_stages(Path(sys.argv[2]), Path(sys.argv[3]) if len(sys.argv) > 3 else None)
        return
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--services", type=int, nargs="+", default=[1000, 10_000])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--record", action="store_true", help="write into benchmarks/RESULTS.md")
    args = parser.parse_args()
    load = " / ".join(f"{value:.1f}" for value in os.getloadavg())
    results = []
    for services in args.services:
        results.append(measure(services, args.runs))
    command = "python benchmarks/cold_start.py " + " ".join(sys.argv[1:])
    text = report(results, command, load)
    print(text)
    if args.record:
        record_section(SECTION, text)


if __name__ == "__main__":
    main()
