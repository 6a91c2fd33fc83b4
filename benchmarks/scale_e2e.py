"""A weight flip at mesh scale, end to end: a real ``splitplane serve`` and a real Envoy sidecar.

For each size N (``--sizes``, default 1,000 and 10,000 services), a folder holds one file per
service ``svc-<i>`` in namespace ``bench``: a Service (port 80), two Pods (``version: v1`` and
``v2``; no EndpointSlice, so endpoints come from the Pods), a DestinationRule with subsets v1 and
v2, and a VirtualService sending 100/0. Then:

1. ``splitplane serve --config-dir`` on the folder: time from its start until ``/readyz`` answers
   200, and its RSS then.
2. One Envoy sidecar bootstrapped by ``splitplane bootstrap --role sidecar --namespace bench``
   (``--concurrency 1``, ``--disable-hot-restart``, its own admin port): time from its start until
   ``/ready`` says LIVE, and its RSS; then until every cluster has warmed
   (``cluster_manager.warming_clusters`` 0, the active count steady, ``/clusters`` listing them
   all) and a request through it reaches ``svc-0``'s v1 pod, and its RSS again.
3. ``--flips`` flips of ``svc-0``'s file between 100/0 and 0/100, each an atomic rename (written to
   a temporary name, then ``os.replace``), more than ``--spacing`` seconds after the previous
   flip's traffic moved. A thread sends requests for ``svc-0`` through Envoy back to back on one
   keep-alive connection; a flip's time is from the ``os.replace`` to the first answer from the
   other version's pod. Only ``svc-0``'s pods have backends (on 127.0.0.2 and 127.0.0.3); the
   other services' pods have addresses in 10.0.0.0/8 that nothing answers.
4. Per flip, from the server's ``/metrics``: the push time (``splitplane_xds_push_time_seconds``)
   and the bytes sent by type (``splitplane_xds_config_size_bytes``), and from Envoy's
   ``/stats/prometheus`` the time it took to apply each route update
   (``rds.<route>.update_duration``): where a flip's time goes.

With ``--sidecar-scope K`` each size is run a second time with an Istio ``Sidecar`` resource in the
folder (namespace-wide, in ``bench``: ``egress: [{hosts: [bench/svc-0.bench.svc.cluster.local,
... K hosts]}]``), so the sidecar should receive only K services (``--scoped-only``: only that).

Every process the benchmark starts (the server, Envoy, the backends' threads) is stopped when it
ends, on failure and on Ctrl-C or SIGTERM too.

    .venv/bin/python benchmarks/scale_e2e.py                         # 1k and 10k, 20 flips
    .venv/bin/python benchmarks/scale_e2e.py --sizes 1000 --flips 30 --sidecar-scope 50
    .venv/bin/python benchmarks/scale_e2e.py --sizes 1000 10000 --record
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import math
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import yaml
from results import record_section

from xds_server.cli.local_envoy import RunningEnvoy, running_envoy

SECTION = "## scale_e2e"
NAMESPACE = "bench"
FLIPPED = 0  # the service whose VirtualService is flipped
SERVICE_PORT = 80
OTHER_TARGET_PORT = 8080  # the pods nothing answers for
BACKEND_IPS = {"v1": "127.0.0.2", "v2": "127.0.0.3"}
BACKEND_HEADER = "x-backend"  # what tests/support/backends.py answers with
NODE_ID = f"sidecar~127.0.0.1~bench-client.{NAMESPACE}~{NAMESPACE}.svc.cluster.local"
TIMEOUT_S = 120.0
CLUSTERS_PER_SERVICE = 3  # the service's port, and one per subset
# Envoy's default stats_flush_interval (5 s), and a margin (generated bootstraps flush on reads)
ENVOY_FLUSH_S = 5.5
HISTOGRAM_MERGE_S = 0.5  # for Envoy's workers to hand their histograms to the main thread
TARGETS = {
    "flip p50": 0.050,
    "flip p99": 0.150,
    "scoped Envoy RSS": 100.0,
    "serve ready": 3.0,
}


# -- the folder (pure) ------------------------------------------------------------------------


def service_name(index: int) -> str:
    return f"svc-{index}"


def service_host(index: int) -> str:
    return f"{service_name(index)}.{NAMESPACE}.svc.cluster.local"


def pod_ip(index: int, version: str) -> str:
    """``svc-<index>``'s pod address: loopback for the flipped service, 10.0.0.0/8 otherwise."""
    if index == FLIPPED:
        return BACKEND_IPS[version]
    number = 2 * index + (0 if version == "v1" else 1) + 1
    return f"10.{number >> 16 & 255}.{number >> 8 & 255}.{number & 255}"


def service_file(index: int, target: str, target_port: int = OTHER_TARGET_PORT) -> str:
    """The YAML of one service's file: Service, two Pods, DestinationRule, VirtualService sending
    everything to subset ``target`` (the other one at weight 0).

    Written from a template rather than dumped: dumping 50,000 objects takes longer than the
    server takes to read them.
    """
    name = service_name(index)
    weights = {version: 100 if version == target else 0 for version in ("v1", "v2")}
    pods = "".join(
        f"""---
apiVersion: v1
kind: Pod
metadata:
  name: {name}-{version}
  namespace: {NAMESPACE}
  labels: {{app: {name}, version: {version}}}
status:
  phase: Running
  podIP: {pod_ip(index, version)}
  conditions: [{{type: Ready, status: "True"}}]
"""
        for version in ("v1", "v2")
    )
    return f"""apiVersion: v1
kind: Service
metadata:
  name: {name}
  namespace: {NAMESPACE}
spec:
  selector: {{app: {name}}}
  ports: [{{name: http, port: {SERVICE_PORT}, targetPort: {target_port}}}]
{pods}---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: {name}
  namespace: {NAMESPACE}
spec:
  host: {name}
  subsets:
  - {{name: v1, labels: {{version: v1}}}}
  - {{name: v2, labels: {{version: v2}}}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: {name}
  namespace: {NAMESPACE}
spec:
  hosts: [{name}]
  http:
  - route:
    - {{destination: {{host: {name}, subset: v1}}, weight: {weights["v1"]}}}
    - {{destination: {{host: {name}, subset: v2}}, weight: {weights["v2"]}}}
"""


def sidecar_resource(scope: int) -> dict[str, Any]:
    """Istio's namespace-wide ``Sidecar`` for ``bench``: egress to ``svc-0`` … ``svc-<scope-1>``."""
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "Sidecar",
        "metadata": {"name": "default", "namespace": NAMESPACE},
        "spec": {
            "egress": [{"hosts": [f"{NAMESPACE}/{service_host(i)}" for i in range(scope)]}],
        },
    }


def write_folder(folder: Path, services: int, backend_port: int, scope: int | None) -> None:
    for index in range(services):
        port = backend_port if index == FLIPPED else OTHER_TARGET_PORT
        (folder / f"{service_name(index)}.yaml").write_text(service_file(index, "v1", port))
    if scope is not None:
        (folder / "sidecar.yaml").write_text(yaml.safe_dump(sidecar_resource(scope)))


def other(version: str) -> str:
    return "v2" if version == "v1" else "v1"


# -- reading figures (pure) -------------------------------------------------------------------

Series = dict[tuple[str, str], float]  # (metric name, label text) → value

_SAMPLE = re.compile(r"^([A-Za-z_:][A-Za-z0-9_:]*)(\{[^}]*\})?\s+(\S+)")


def parse_prometheus(text: str) -> Series:
    """Prometheus text exposition → ``{(name, "{labels}"): value}`` (comments skipped)."""
    series: Series = {}
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match is None:
            continue
        name, labels, value = match.groups()
        with contextlib.suppress(ValueError):
            series[(name, labels or "")] = float(value)
    return series


def label(labels: str, key: str) -> str:
    """The value of ``key`` in a ``{a="b",...}`` label text ("" when absent)."""
    match = re.search(rf'(?:^|[{{,]){re.escape(key)}="([^"]*)"', labels)
    return match.group(1) if match else ""


def delta(before: Series, after: Series, name: str, **labels: str) -> float:
    """The growth of the series ``name`` (summed over those carrying ``labels``)."""

    def total(series: Series) -> float:
        return sum(
            value
            for (metric, text), value in series.items()
            if metric == name and all(label(text, k) == v for k, v in labels.items())
        )

    return total(after) - total(before)


def by_label(before: Series, after: Series, name: str, key: str) -> dict[str, float]:
    """The growth of ``name`` per value of label ``key`` (only those that grew)."""
    values = {label(text, key) for (metric, text) in after if metric == name}
    grown = {value: delta(before, after, name, **{key: value}) for value in sorted(values)}
    return {value: amount for value, amount in grown.items() if amount}


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q`` percentile (0-100) by the nearest-rank method: a value that was measured."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("no values")
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def rss_mb(pid: int) -> tuple[float, float]:
    """A process's resident memory now and at its peak (``VmRSS``, ``VmHWM``), in MB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) / 1024
    return fields["VmRSS"], fields["VmHWM"]


# -- processes --------------------------------------------------------------------------------


def free_port(host: str = "127.0.0.1") -> int:
    import socket

    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def wait_for(condition: Callable[[], bool], what: str, timeout_s: float = TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.02)


def http_get(port: int, path: str, timeout_s: float = 30.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout_s) as reply:
            return int(reply.status), reply.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, ""


@dataclass
class Serve:
    process: subprocess.Popen[bytes]
    xds_port: int
    debug_port: int
    log_path: Path

    def check_running(self) -> None:
        if self.process.poll() is not None:
            log = self.log_path.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"splitplane serve exited {self.process.returncode}:\n{log}")

    def ready(self) -> bool:
        self.check_running()
        try:
            return http_get(self.debug_port, "/readyz", timeout_s=2)[0] == 200
        except (urllib.error.URLError, OSError):
            return False

    def metrics(self) -> Series:
        return parse_prometheus(http_get(self.debug_port, "/metrics")[1])


@contextlib.contextmanager
def splitplane_serve(folder: Path, workdir: Path) -> Iterator[Serve]:
    """``splitplane serve --config-dir folder`` on free loopback ports; stopped after.

    In its own session, so a Ctrl-C reaches only this process, which stops the server itself.
    """
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
    ]
    log_path = workdir / "splitplane.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        yield Serve(process, xds_port, debug_port, log_path)
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def sidecar_bootstrap(xds_port: int, outbound_port: int) -> dict[str, Any]:
    """What ``splitplane bootstrap`` prints for this benchmark's sidecar, parsed."""
    text = subprocess.run(
        [
            str(Path(sys.executable).with_name("splitplane")),
            "bootstrap",
            "--node-id",
            NODE_ID,
            "--role",
            "sidecar",
            "--namespace",
            NAMESPACE,
            "--xds-address",
            f"127.0.0.1:{xds_port}",
            "--admin-port",
            "0",  # running_envoy puts admin on a free port of its own
            "--outbound-port",
            str(outbound_port),
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    bootstrap: dict[str, Any] = yaml.safe_load(text)
    return bootstrap


def cluster_gauges(envoy: RunningEnvoy) -> tuple[int, int]:
    """Envoy's ``cluster_manager.warming_clusters`` and ``active_clusters``, in one admin read
    of gauges only (a filter over every stat of 30,000 clusters is slow enough to matter)."""
    names = ("cluster_manager.warming_clusters", "cluster_manager.active_clusters")
    pattern = urllib.parse.quote(r"^cluster_manager\.(warming|active)_clusters$")
    values = dict.fromkeys(names, 0)
    for line in envoy.admin_get(f"/stats?type=Gauges&filter={pattern}").splitlines():
        key, _, value = line.partition(": ")
        if key in values:
            values[key] = int(value)
    return values[names[0]], values[names[1]]


def api_clusters(envoy: RunningEnvoy) -> int:
    """How many clusters ``/clusters`` lists as added over xDS."""
    body = envoy.admin_get("/clusters", timeout_s=120)
    return sum(1 for line in body.splitlines() if line.endswith("::added_via_api::true"))


class Traffic:
    """Requests for ``host`` sent through the sidecar back to back on one keep-alive connection.

    Remembers, for each change of the answering backend, when the first answer from the new one
    came back.
    """

    def __init__(self, port: int, host: str) -> None:
        self._port, self._host = port, host
        self._changed = threading.Condition()
        self.answering = ""
        self.since = 0.0
        self.requests = 0
        self.failures = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", self._port, timeout=10)
        while not self._stop.is_set():
            try:
                connection.request("GET", "/", headers={"Host": self._host})
                reply = connection.getresponse()
                reply.read()
                backend = reply.getheader(BACKEND_HEADER) or ""
            except (OSError, http.client.HTTPException):
                connection.close()
                backend = ""
            now = time.perf_counter()
            self.requests += 1
            if not backend:
                self.failures += 1
                time.sleep(0.001)  # not routed (yet): do not spin
                continue
            if backend != self.answering:
                with self._changed:
                    self.answering, self.since = backend, now
                    self._changed.notify_all()
        connection.close()

    def wait_answering(self, backend: str, timeout_s: float = TIMEOUT_S) -> float:
        """When the first answer from ``backend`` came back, once it answers."""
        with self._changed:
            if not self._changed.wait_for(lambda: self.answering == backend, timeout_s):
                raise TimeoutError(f"traffic never moved to {backend}")
            return self.since

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(15)


# -- one run ----------------------------------------------------------------------------------


@dataclass
class FlipFigures:
    """One flip: seconds to moved traffic, and what the server and Envoy did for it."""

    seconds: float
    push_s: float  # sum of splitplane_xds_push_time_seconds over the flip
    pushes: int  # how many push-time observations (snapshot publications)
    sent_bytes: dict[str, float]  # by xDS type
    sent_count: dict[str, float]
    acked_rds_s: float  # server: response → ACK for RDS (splitplane_proxy_convergence_seconds)


@dataclass
class Run:
    services: int
    scope: int | None
    serve_ready_s: float
    serve_rss_mb: float
    serve_peak_mb: float
    envoy_ready_s: float
    envoy_rss_ready_mb: float
    envoy_warmed_s: float
    envoy_rss_warmed_mb: float
    envoy_peak_mb: float
    clusters: int  # received over xDS
    load_before: tuple[float, float, float]
    flips: list[FlipFigures] = field(default_factory=list)
    failed_requests: int = 0
    requests: int = 0
    serve_rss_after_mb: float = 0.0
    envoy_rss_after_mb: float = 0.0
    load_after: tuple[float, float, float] = (0.0, 0.0, 0.0)
    rds_apply: RdsApply | None = None


Bins = dict[tuple[float, float], int]  # (lower bound, width) → count


def envoy_rds_bins(envoy: RunningEnvoy) -> Bins:
    """Envoy's ``rds.<route>.update_duration`` histograms (ms), summed: their detailed bins.

    Asks for histograms only: a read that walks every stat of 30,000 clusters takes seconds.
    The generated bootstrap flushes stats on admin reads, and Envoy merges histograms after
    it has answered the read that asked: a first read flushes, the second shows the merge.
    """
    pattern = urllib.parse.quote(r"\.rds\..*\.update_duration$")
    path = f"/stats?format=json&type=Histograms&histogram_buckets=detailed&filter={pattern}"
    envoy.admin_get(path, timeout_s=60)
    time.sleep(HISTOGRAM_MERGE_S)
    body = envoy.admin_get(path, timeout_s=60)
    bins: Bins = {}
    for stat in json.loads(body).get("stats", []):
        histograms = stat.get("histograms")
        if not isinstance(histograms, dict):
            continue
        for detail in histograms.get("details", []):
            for entry in detail.get("totals", []):
                key = (float(entry["lower_bound"]), float(entry["width"]))
                bins[key] = bins.get(key, 0) + int(entry["count"])
    return bins


@dataclass(frozen=True)
class RdsApply:
    """Envoy's ``rds.<route>.update_duration`` over the flips, from its histogram's bins."""

    updates: int
    mean_s: float
    p50_s: float
    p99_s: float


def rds_update_duration(before: Bins, after: Bins) -> RdsApply:
    """The route updates Envoy applied between two reads of its bins. Envoy records whole
    milliseconds, so a value is its bin's lower bound."""
    values: list[float] = []
    for (lower, width), count in sorted(after.items()):
        values += [lower / 1000] * (count - before.get((lower, width), 0))
    if not values:
        return RdsApply(0, 0.0, 0.0, 0.0)
    return RdsApply(
        len(values), statistics.fmean(values), percentile(values, 50), percentile(values, 99)
    )


def wait_warmed(envoy: RunningEnvoy, traffic_port: int, expect_backend: str) -> tuple[int, float]:
    """Until no cluster is warming and the active count held still for a second, then until a
    request for the flipped service reaches ``expect_backend``.

    Returns the number of active clusters, and when (``perf_counter``) a poll first showed that
    count with none warming.
    """
    steady_since, last, settled = time.monotonic(), -1, 0.0
    deadline = time.monotonic() + TIMEOUT_S * 5
    while True:
        if envoy.process.poll() is not None:
            raise RuntimeError(f"envoy exited:\n{envoy.log_tail()}")
        if time.monotonic() > deadline:
            raise TimeoutError("Envoy's clusters never finished warming")
        warming, active = cluster_gauges(envoy)
        if active != last:
            steady_since, last, settled = time.monotonic(), active, 0.0
        if warming == 0 and not settled:
            settled = time.perf_counter()
        if warming == 0 and active > 0 and time.monotonic() - steady_since >= 1.0:
            break
        time.sleep(0.2)
    with Traffic(traffic_port, service_host(FLIPPED)) as traffic:
        traffic.wait_answering(expect_backend)
    return last, settled


def check_diagnostics(serve: Serve) -> None:
    """Fail when the server finds errors in the folder; print how many diagnostics it has."""
    metrics = serve.metrics()
    counts = {
        label(text, "severity"): int(value)
        for (name, text), value in metrics.items()
        if name == "splitplane_diagnostics"
    }
    print(f"   diagnostics: {counts}", flush=True)
    if counts.get("error", 0):
        body = http_get(serve.debug_port, "/debug/diagnostics")[1]
        raise RuntimeError(f"the server finds errors in the folder:\n{body[:3000]}")


def run_size(services: int, scope: int | None, flips: int, spacing_s: float, tmp: Path) -> Run:
    from tests.support.backends import http_backend

    label_text = f"{services} services" + (f", Sidecar scope {scope}" if scope else "")
    print(f"-- {label_text}", flush=True)
    workdir = Path(tempfile.mkdtemp(prefix=f"scale-{services}-", dir=tmp))
    folder = workdir / "mesh"
    folder.mkdir()
    backend_port = free_port(BACKEND_IPS["v1"])
    with (
        http_backend("v1", host=BACKEND_IPS["v1"], port=backend_port),
        http_backend("v2", host=BACKEND_IPS["v2"], port=backend_port),
    ):
        write_folder(folder, services, backend_port, scope)
        texts = {t: service_file(FLIPPED, t, backend_port) for t in ("v1", "v2")}
        flipped_path = folder / f"{service_name(FLIPPED)}.yaml"
        load_before = os.getloadavg()
        started = time.perf_counter()
        with splitplane_serve(folder, workdir) as serve:
            wait_for(serve.ready, "splitplane serve ready")
            serve_ready_s = time.perf_counter() - started
            serve_rss, serve_peak = rss_mb(serve.process.pid)
            print(f"   serve ready {serve_ready_s:.2f} s, RSS {serve_rss:.0f} MB", flush=True)
            check_diagnostics(serve)
            outbound = free_port()
            bootstrap = sidecar_bootstrap(serve.xds_port, outbound)
            started = time.perf_counter()
            with running_envoy(bootstrap, workdir / "envoy", wait_ready=False) as envoy:
                wait_for(envoy.is_ready, "Envoy ready", TIMEOUT_S * 5)
                envoy_ready_s = time.perf_counter() - started
                envoy_rss_ready, _ = rss_mb(envoy.process.pid)
                print(f"   Envoy ready {envoy_ready_s:.2f} s, RSS {envoy_rss_ready:.0f} MB")
                clusters, warmed_at = wait_warmed(envoy, outbound, "v1")
                envoy_warmed_s = warmed_at - started
                envoy_rss_warmed, envoy_peak = rss_mb(envoy.process.pid)
                static = len(bootstrap.get("static_resources", {}).get("clusters", []))
                listed = api_clusters(envoy)
                if listed != clusters - static:
                    raise RuntimeError(
                        f"/clusters lists {listed} from xDS, the stats {clusters} active"
                        f" of which {static} static"
                    )
                clusters = listed
                print(
                    f"   Envoy warmed {envoy_warmed_s:.2f} s, {clusters} clusters,"
                    f" RSS {envoy_rss_warmed:.0f} MB",
                    flush=True,
                )
                run = Run(
                    services,
                    scope,
                    serve_ready_s,
                    serve_rss,
                    serve_peak,
                    envoy_ready_s,
                    envoy_rss_ready,
                    envoy_warmed_s,
                    envoy_rss_warmed,
                    envoy_peak,
                    clusters,
                    load_before,
                )
                flip_all(
                    run,
                    serve=serve,
                    envoy=envoy,
                    outbound=outbound,
                    path=flipped_path,
                    texts=texts,
                    flips=flips,
                    spacing_s=spacing_s,
                )
                run.serve_rss_after_mb = rss_mb(serve.process.pid)[0]
                run.envoy_rss_after_mb = rss_mb(envoy.process.pid)[0]
                run.load_after = os.getloadavg()
    return run


def flip_all(
    run: Run,
    *,
    serve: Serve,
    envoy: RunningEnvoy,
    outbound: int,
    path: Path,
    texts: Mapping[str, str],
    flips: int,
    spacing_s: float,
) -> None:
    """``flips`` flips of ``path``, starting from v1; appends each flip's figures to ``run``."""
    staged = path.with_name("." + path.name + ".tmp")  # a dotfile: not a document to the folder
    target = "v1"
    # Envoy merges histograms into what its admin shows once per stats flush (5 s): read
    # update_duration around all the flips, each read after a flush.
    time.sleep(max(spacing_s, ENVOY_FLUSH_S))
    metrics, rds = serve.metrics(), envoy_rds_bins(envoy)
    with Traffic(outbound, service_host(FLIPPED)) as traffic:
        traffic.wait_answering(target)
        failed_before, requests_before = traffic.failures, traffic.requests
        for number in range(flips):
            target = other(target)
            staged.write_text(texts[target])
            started = time.perf_counter()
            os.replace(staged, path)
            seconds = traffic.wait_answering(target) - started
            time.sleep(spacing_s)  # the rest of the flip's pushes land, then quiet
            serve.check_running()
            now_metrics = serve.metrics()
            run.flips.append(
                FlipFigures(
                    seconds=seconds,
                    push_s=delta(metrics, now_metrics, "splitplane_xds_push_time_seconds_sum"),
                    pushes=int(
                        delta(metrics, now_metrics, "splitplane_xds_push_time_seconds_count")
                    ),
                    sent_bytes=by_label(
                        metrics, now_metrics, "splitplane_xds_config_size_bytes_sum", "type"
                    ),
                    sent_count=by_label(
                        metrics, now_metrics, "splitplane_xds_config_size_bytes_count", "type"
                    ),
                    acked_rds_s=delta(
                        metrics,
                        now_metrics,
                        "splitplane_proxy_convergence_seconds_sum",
                        type="rds",
                    ),
                )
            )
            metrics = now_metrics
            figures = run.flips[-1]
            print(
                f"   flip {number + 1}: {seconds * 1000:.1f} ms (push"
                f" {figures.push_s * 1000:.1f} ms, RDS sent → ACKed"
                f" {figures.acked_rds_s * 1000:.1f} ms)",
                flush=True,
            )
        run.failed_requests = traffic.failures - failed_before
        run.requests = traffic.requests - requests_before
    time.sleep(ENVOY_FLUSH_S)
    run.rds_apply = rds_update_duration(rds, envoy_rds_bins(envoy))


# -- the report -------------------------------------------------------------------------------


def ms(seconds: float) -> str:
    if seconds < 0.01:
        return f"{seconds * 1000:.1f} ms"
    return f"{seconds * 1000:.0f} ms" if seconds < 10 else f"{seconds:.1f} s"


def size(amount: float) -> str:
    if amount >= 1e6:
        return f"{amount / 1e6:.2f} MB"
    if amount >= 1e3:
        return f"{amount / 1e3:.1f} KB"
    return f"{amount:.0f} B"


def per_flip(run: Run, pick: Callable[[FlipFigures], float]) -> float:
    return statistics.median(pick(flip) for flip in run.flips)


def summary_table(runs: Sequence[Run]) -> str:
    lines = [
        "| services | Sidecar scope | serve ready | serve RSS | Envoy ready | Envoy RSS ready"
        " / warmed | xDS clusters | flip → traffic moved p50 | p99 | flips |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for run in runs:
        moved = [flip.seconds for flip in run.flips]
        lines.append(
            f"| {run.services:,} | {run.scope or '–'} | {run.serve_ready_s:.2f} s"
            f" | {run.serve_rss_mb:.0f} MB | {run.envoy_ready_s:.2f} s"
            f" | {run.envoy_rss_ready_mb:.0f} / {run.envoy_rss_warmed_mb:.0f} MB"
            f" | {run.clusters:,} | {ms(percentile(moved, 50))} | {ms(percentile(moved, 99))}"
            f" | {len(moved)} |"
        )
    return "\n".join(lines)


def breakdown_table(runs: Sequence[Run]) -> str:
    """Medians per flip: server push time and bytes sent, Envoy's RDS apply time."""
    lines = [
        "| services | Sidecar scope | server push time | snapshots | bytes sent (by type)"
        " | Envoy RDS apply, mean | RDS sent → ACKed | rest | flip → moved | requests failed |",
        "|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for run in runs:
        kinds = sorted({kind for flip in run.flips for kind in flip.sent_bytes})
        sent = ", ".join(
            f"{kind} {size(statistics.median(f.sent_bytes.get(kind, 0.0) for f in run.flips))}"
            f" ×{statistics.median(f.sent_count.get(kind, 0.0) for f in run.flips):.0f}"
            for kind in kinds
        )
        applied = run.rds_apply
        apply_text = (
            f"{ms(applied.mean_s)} (p50 {ms(applied.p50_s)}, p99"
            f" {ms(applied.p99_s)}; {applied.updates} updates)"
            if applied is not None and applied.updates
            else "–"
        )
        lines.append(
            f"| {run.services:,} | {run.scope or '–'} | {ms(per_flip(run, lambda f: f.push_s))}"
            f" | {per_flip(run, lambda f: f.pushes):.0f} | {sent or '–'} | {apply_text}"
            f" | {ms(per_flip(run, lambda f: f.acked_rds_s))}"
            f" | {ms(per_flip(run, lambda f: f.seconds - f.push_s - f.acked_rds_s))}"
            f" | {ms(per_flip(run, lambda f: f.seconds))}"
            f" | {run.failed_requests} of {run.requests:,} |"
        )
    return "\n".join(lines)


def scope_notes(runs: Sequence[Run]) -> str:
    """A line for each scoped run whose sidecar received more than its scope's services."""
    notes = []
    unscoped = {run.services: run.clusters for run in runs if run.scope is None}
    for run in runs:
        if run.scope is None or run.clusters <= CLUSTERS_PER_SERVICE * run.scope:
            continue
        notes.append(
            f"With the Sidecar scoped to {run.scope} services the sidecar still received"
            f" {run.clusters:,} clusters (unscoped: {unscoped.get(run.services, 0):,}; the"
            f" scope's services make {CLUSTERS_PER_SERVICE * run.scope:,}): the server did not"
            " apply the Sidecar resource.\n\n"
        )
    return "".join(notes)


def report(runs: Sequence[Run], command: str, flips: int, spacing_s: float) -> str:
    loads = ", ".join(
        f"{run.services:,}{' scoped' if run.scope else ''}:"
        f" {run.load_before[0]:.2f} → {run.load_after[0]:.2f}"
        for run in runs
    )
    return f"""{SECTION}

A real `splitplane serve --config-dir` and one real Envoy sidecar (`splitplane bootstrap --role
sidecar`, `--concurrency 1`), on a folder of one file per service (Service, two Pods without an
EndpointSlice, DestinationRule with subsets v1/v2, VirtualService 100/0). One service's file is
flipped 100/0 ↔ 0/100 by an atomic rename, {flips} times, {spacing_s} s apart once traffic moved;
a flip is timed from the `os.replace` until requests sent back to back through Envoy on one
keep-alive connection land on the other version; percentiles by nearest rank (with fewer than
100 flips the p99 is the slowest flip). RSS is `VmRSS`; "warmed" is once no cluster is
warming and `/clusters` lists them all. Targets at 10k services: flip p50 ≤ 50 ms, p99 ≤ 150 ms;
folder ready ≤ 3 s; a sidecar scoped to 50 services ≤ 100 MB of Envoy RSS.

Command: `{command}`

{summary_table(runs)}

Where a flip's time goes (medians per flip): the server's `splitplane_xds_push_time_seconds`
(sum over the flip), `splitplane_xds_config_size_bytes` (sum and count of responses, by type),
Envoy's `rds.*.update_duration` (per update over all flips: mean, p50 and p99, from its
histogram's detailed bins; Envoy records whole milliseconds) and the server's response → ACK
time for RDS (`splitplane_proxy_convergence_seconds`, which holds Envoy's apply time); "rest" is
the flip less those two (the folder's inotify event and YAML parse, the wait for the event
loop, gRPC scheduling, and the first request after the update; below zero when the two
overlap, as the response → ACK clock starts once a response is handed to the stream, which can
be before the push time is taken).

{breakdown_table(runs)}

{scope_notes(runs)}Load average (1 min) before → after each run, on the shared 2-core machine:
{loads}.
"""


# -- main -------------------------------------------------------------------------------------


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10_000], metavar="N")
    parser.add_argument("--flips", type=int, default=20, help="flips per size (default 20)")
    parser.add_argument(
        "--spacing",
        type=float,
        default=1.0,
        metavar="SECONDS",
        help="wait after a flip's traffic moved before the next flip (default 1.0)",
    )
    parser.add_argument(
        "--sidecar-scope",
        type=int,
        metavar="K",
        help="also run each size with a namespace-wide Sidecar whose egress holds K services",
    )
    parser.add_argument(
        "--scoped-only",
        action="store_true",
        help="with --sidecar-scope: run only the scoped sidecar, not the unscoped one first",
    )
    parser.add_argument("--record", action="store_true", help="write the tables to RESULTS.md")
    args = parser.parse_args(argv)
    if args.flips < 1:
        parser.error("--flips must be at least 1")
    if args.scoped_only and args.sidecar_scope is None:
        parser.error("--scoped-only needs --sidecar-scope")
    if args.sidecar_scope is not None and args.sidecar_scope < 1:
        parser.error("--sidecar-scope must be at least 1")
    if any(size < max(1, args.sidecar_scope or 1) for size in args.sizes):
        parser.error("every size must be at least 1 and at least --sidecar-scope")
    # Set both, also when started with SIGINT ignored (a background job of a script): every
    # process started here is stopped by the context managers on the way out.
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGINT, _terminate)
    runs: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="scale-e2e-") as tmp:
        for services in args.sizes:
            scopes = [args.sidecar_scope] if args.scoped_only else [None, args.sidecar_scope]
            for scope in scopes if args.sidecar_scope else [None]:
                runs.append(run_size(services, scope, args.flips, args.spacing, Path(tmp)))
    command = ".venv/bin/python benchmarks/scale_e2e.py " + " ".join(
        sys.argv[1:] if argv is None else argv
    )
    text = report(runs, command.strip(), args.flips, args.spacing)
    print("\n" + text)
    if args.record:
        record_section(SECTION, text)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # for tests.support
    try:
        sys.exit(main())
    except KeyboardInterrupt as stopped:
        print(f"stopped ({stopped}); every process it started has been stopped", file=sys.stderr)
        sys.exit(130)
