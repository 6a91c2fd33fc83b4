"""Envoy's Load Reporting Service (LRS): what each cluster actually got, as proxies report it.

Generated bootstraps turn LRS on (``cluster_manager.load_stats_config`` pointing at the xDS
server). A proxy opens one ``StreamLoadStats`` stream; the server answers its first message with
the report interval and ``send_all_clusters``, and from then on the proxy sends, every interval,
the requests each of its clusters issued, completed and failed since its last report.

``LoadWindows`` keeps those counts per cluster, summed over every proxy, in a fixed ring of
time buckets (the recent window): memory is bounded by the number of clusters (itself capped),
and a cluster no proxy has reported for a whole window is dropped. Recording runs on the xDS
loop and costs a few additions per cluster; readers (the debug endpoint's worker threads) take
the window's totals under the same short lock.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import grpc
from envoy.service.load_stats.v3 import lrs_pb2
from google.protobuf.duration_pb2 import Duration

log = logging.getLogger(__name__)

DEFAULT_REPORT_INTERVAL = 5.0  # seconds between a proxy's reports
DEFAULT_WINDOW = 60.0  # seconds of reports the totals cover
DEFAULT_BUCKETS = 12  # the window's ring: 5 s a bucket by default
DEFAULT_MAX_CLUSTERS = 100_000  # clusters kept at once; reports of others are ignored
MAX_CLUSTERS_PER_REPORT = 20_000  # cluster entries read from one report; the rest are ignored


@dataclass(frozen=True, slots=True)
class Load:
    """Requests one cluster saw over the window, summed over every reporting proxy."""

    issued: int = 0  # sent to an endpoint of the cluster
    succeeded: int = 0  # completed without error
    failed: int = 0  # completed with an error (5xx, reset, connect failure)
    dropped: int = 0  # dropped by the proxy before reaching an endpoint

    @property
    def completed(self) -> int:
        return self.succeeded + self.failed

    @property
    def error_rate(self) -> float | None:
        """Failed among completed requests; None when none completed."""
        return self.failed / self.completed if self.completed else None


# One bucket: [epoch, issued, succeeded, failed, dropped].
_Bucket = list[int]


class LoadWindows:
    """Per cluster, the load of the last ``window`` seconds, in ``buckets`` fixed-size slots.

    Safe to use from several threads.
    """

    def __init__(
        self,
        window: float = DEFAULT_WINDOW,
        buckets: int = DEFAULT_BUCKETS,
        max_clusters: int = DEFAULT_MAX_CLUSTERS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if window <= 0 or buckets < 1:
            raise ValueError("the window must be positive and have at least one bucket")
        self.window = window
        self.buckets = buckets
        self.max_clusters = max_clusters
        self._width = window / buckets
        self._clock = clock
        self._lock = threading.Lock()
        self._rings: dict[str, list[_Bucket]] = {}
        self._seen: dict[str, int] = {}  # cluster → epoch of its last report
        self._swept = 0  # epoch of the last sweep
        self.ignored = 0  # cluster entries not kept: over max_clusters

    def _epoch(self, now: float | None) -> int:
        return int((self._clock() if now is None else now) // self._width)

    def record(
        self,
        cluster: str,
        issued: int,
        succeeded: int,
        failed: int,
        *,
        dropped: int = 0,
        now: float | None = None,
    ) -> None:
        """Add one report's counts for ``cluster`` to the current bucket."""
        epoch = self._epoch(now)
        with self._lock:
            ring = self._rings.get(cluster)
            if ring is None:
                if len(self._rings) >= self.max_clusters:
                    self._sweep(epoch)
                    if len(self._rings) >= self.max_clusters:
                        self.ignored += 1
                        return
                ring = [[-1, 0, 0, 0, 0] for _ in range(self.buckets)]
                self._rings[cluster] = ring
            bucket = ring[epoch % self.buckets]
            if bucket[0] != epoch:
                bucket[:] = (epoch, 0, 0, 0, 0)
            bucket[1] += issued
            bucket[2] += succeeded
            bucket[3] += failed
            bucket[4] += dropped
            self._seen[cluster] = epoch
            if epoch - self._swept >= self.buckets:
                self._sweep(epoch)

    def _sweep(self, epoch: int) -> None:
        """Drop the clusters not reported within the window (lock held)."""
        self._swept = epoch
        gone = [name for name, seen in self._seen.items() if epoch - seen >= self.buckets]
        for name in gone:
            del self._seen[name]
            del self._rings[name]

    def totals(self, now: float | None = None) -> dict[str, Load]:
        """Per cluster reported within the window, its load summed over the window."""
        epoch = self._epoch(now)
        oldest = epoch - self.buckets + 1
        out: dict[str, Load] = {}
        with self._lock:
            self._sweep(epoch)
            for name, ring in self._rings.items():
                issued = succeeded = failed = dropped = 0
                for bucket in ring:
                    if oldest <= bucket[0] <= epoch:
                        issued += bucket[1]
                        succeeded += bucket[2]
                        failed += bucket[3]
                        dropped += bucket[4]
                out[name] = Load(issued, succeeded, failed, dropped)
        return out

    def __len__(self) -> int:
        with self._lock:
            return len(self._rings)


def record_report(windows: LoadWindows, request: lrs_pb2.LoadStatsRequest) -> int:
    """Add every cluster's counts in one LRS report to ``windows``; the clusters read."""
    read = 0
    for stats in request.cluster_stats:
        if read >= MAX_CLUSTERS_PER_REPORT:
            break
        read += 1
        issued = succeeded = failed = 0
        for locality in stats.upstream_locality_stats:
            issued += locality.total_issued_requests
            succeeded += locality.total_successful_requests
            failed += locality.total_error_requests
        if not (issued or succeeded or failed or stats.total_dropped_requests):
            continue  # an idle cluster: nothing to add, and it is not kept for it
        name = stats.cluster_service_name or stats.cluster_name
        windows.record(name, issued, succeeded, failed, dropped=stats.total_dropped_requests)
    return read


class LoadReportingService:
    """``envoy.service.load_stats.v3.LoadReportingService``: asks every proxy, every
    ``interval`` seconds, for the load of the clusters splitplane shows (``want``), and keeps the
    reports in ``windows``.

    Asking for those clusters only (the destinations of weighted routes, typically a few per
    canary) instead of ``send_all_clusters`` keeps each report small: a sidecar in a mesh of
    thousands of services would otherwise list every cluster it has, every interval. When the
    set changes, every stream is sent the new list at once (on the xDS loop, after the push that
    changed it); Envoy counts a cluster new to the list from then on.
    """

    def __init__(self, windows: LoadWindows, interval: float = DEFAULT_REPORT_INTERVAL) -> None:
        self.windows = windows
        self.interval = interval
        self.streams = 0  # proxies reporting now
        self.reports = 0  # reports received since start
        self._clusters: frozenset[str] = frozenset()
        self._version = 0
        self._changed: set[asyncio.Event] = set()

    @property
    def clusters(self) -> frozenset[str]:
        return self._clusters

    def want(self, clusters: frozenset[str]) -> None:
        """Ask every proxy for the load of ``clusters`` from now on (call on the xDS loop)."""
        if clusters == self._clusters:
            return
        self._clusters = clusters
        self._version += 1
        for changed in self._changed:
            changed.set()

    def _instructions(self) -> lrs_pb2.LoadStatsResponse:
        interval = Duration()
        interval.FromNanoseconds(int(self.interval * 1e9))
        return lrs_pb2.LoadStatsResponse(
            clusters=sorted(self._clusters), load_reporting_interval=interval
        )

    async def _read(
        self, requests: AsyncIterator[lrs_pb2.LoadStatsRequest], first: asyncio.Event
    ) -> None:
        async for request in requests:
            first.set()
            self.reports += 1
            record_report(self.windows, request)

    async def StreamLoadStats(  # noqa: N802 (the gRPC method's name)
        self,
        request_iterator: AsyncIterator[lrs_pb2.LoadStatsRequest],
        context: grpc.aio.ServicerContext[lrs_pb2.LoadStatsRequest, lrs_pb2.LoadStatsResponse],
    ) -> AsyncIterator[lrs_pb2.LoadStatsResponse]:
        self.streams += 1
        first, changed = asyncio.Event(), asyncio.Event()
        self._changed.add(changed)
        reader = asyncio.ensure_future(self._read(request_iterator, first))
        try:
            # The proxy speaks first (its node); then it is told what to report, and again
            # whenever that changes, until it goes away.
            await _until(first, reader)
            sent = -1
            while first.is_set() and not reader.done():
                if sent != self._version:
                    sent = self._version
                    changed.clear()
                    yield self._instructions()
                await _until(changed, reader)
        finally:
            self._changed.discard(changed)
            reader.cancel()
            self.streams -= 1


async def _until(event: asyncio.Event, reader: asyncio.Future[None]) -> None:
    """Wait until ``event`` is set or ``reader`` ends."""
    if event.is_set() or reader.done():
        return
    waiter = asyncio.ensure_future(event.wait())
    try:
        await asyncio.wait((waiter, reader), return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
