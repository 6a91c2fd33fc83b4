"""Envoy's Load Reporting Service (LRS): what each cluster actually got, as proxies report it.

Generated bootstraps turn LRS on (``cluster_manager.load_stats_config`` pointing at the xDS
server). A proxy opens one ``StreamLoadStats`` stream; the server answers its first message with
the report interval and ``send_all_clusters``, and from then on the proxy sends, every interval,
the requests each of its clusters issued, completed and failed since its last report.

``LoadWindows`` keeps those counts per cluster, summed over every proxy, in time slots (the
recent window) beside a running sum per cluster: memory is bounded by the number of clusters
(itself capped) times the slots, and a cluster no proxy has reported for a whole window is
dropped. Recording runs on the xDS loop and costs a few additions per busy cluster of a report,
under one lock per report; readers (the debug endpoint's worker threads) copy the sums under
the same lock, which they hold for that copy only.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass

import grpc
from envoy.service.load_stats.v3 import lrs_pb2
from google.protobuf.duration_pb2 import Duration

log = logging.getLogger(__name__)

# Seconds between a proxy's reports. Each report costs the server about 0.6 ms of CPU on its
# event loop, most of it gRPC's own cost for one message (about 0.5 ms with a servicer that
# ignores the reports; reading one is about 0.1 ms), so 1,000 proxies every 5 s would take about
# 9 % of a core; every 10 s, about 4.5 %. The window of 60 s still holds six reports of each
# proxy, and a change of share shows within about 10 s.
DEFAULT_REPORT_INTERVAL = 10.0
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


# The counts of one cluster: (issued, succeeded, failed, dropped).
_Counts = tuple[int, int, int, int]
# One report's entry for one cluster: (cluster, issued, succeeded, failed, dropped).
Entry = tuple[str, int, int, int, int]


class LoadWindows:
    """Per cluster, the load of the last ``window`` seconds, in ``buckets`` time slots.

    Each slot (an epoch of ``window / buckets`` seconds) holds the counts reported in it, per
    cluster; beside them, each cluster's sum over the slots still in the window is kept up to
    date as reports come in and as slots leave the window (their counts subtracted, once). So a
    report costs a few additions per cluster it names, and reading the totals costs one copy of
    the sums, not a walk over every cluster's slots: the lock the recording side (the xDS loop)
    shares with readers (the debug endpoint's threads) is held for that copy only. A cluster no
    proxy reported within the window leaves with its last slot. Safe to use from several threads.
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
        self._slots: dict[int, dict[str, list[int]]] = {}  # epoch → cluster → counts
        self._sums: dict[str, _Counts] = {}  # cluster → its counts over the window
        self._seen: dict[str, int] = {}  # cluster → epoch of its last report
        self._newest = -(1 << 62)  # the newest epoch the window has moved to
        self.ignored = 0  # cluster entries not kept: over max_clusters

    def _epoch(self, now: float | None) -> int:
        return int((self._clock() if now is None else now) // self._width)

    def _advance(self, epoch: int) -> None:
        """Move the window to end at ``epoch``: the slots it leaves are taken out of the sums,
        and the clusters last reported in them dropped (lock held)."""
        if epoch <= self._newest:
            return
        self._newest = epoch
        oldest = epoch - self.buckets + 1
        for gone in [e for e in self._slots if e < oldest]:
            for cluster, counts in self._slots.pop(gone).items():
                if self._seen.get(cluster) == gone:
                    del self._seen[cluster]
                    del self._sums[cluster]
                    continue
                i, s, f, d = self._sums[cluster]
                self._sums[cluster] = (i - counts[0], s - counts[1], f - counts[2], d - counts[3])

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
        """Add one report's counts for ``cluster`` to the current slot."""
        self.record_many(((cluster, issued, succeeded, failed, dropped),), now=now)

    def record_many(self, entries: Iterable[Entry], now: float | None = None) -> None:
        """Add the counts of every cluster of one report (one lock, one clock reading)."""
        epoch = self._epoch(now)
        with self._lock:
            self._advance(epoch)
            if epoch < self._newest - self.buckets + 1:
                return  # already out of the window
            slot = self._slots.get(epoch)
            if slot is None:
                slot = self._slots[epoch] = {}
            sums, seen = self._sums, self._seen
            for cluster, issued, succeeded, failed, dropped in entries:
                total = sums.get(cluster)
                if total is None:
                    if len(sums) >= self.max_clusters:
                        self.ignored += 1
                        continue
                    total = (0, 0, 0, 0)
                counts = slot.get(cluster)
                if counts is None:
                    slot[cluster] = [issued, succeeded, failed, dropped]
                else:
                    counts[0] += issued
                    counts[1] += succeeded
                    counts[2] += failed
                    counts[3] += dropped
                sums[cluster] = (
                    total[0] + issued,
                    total[1] + succeeded,
                    total[2] + failed,
                    total[3] + dropped,
                )
                if seen.get(cluster, epoch - 1) < epoch:
                    seen[cluster] = epoch

    def totals(self, now: float | None = None) -> dict[str, Load]:
        """Per cluster reported within the window, its load summed over the window."""
        epoch = self._epoch(now)
        with self._lock:
            self._advance(epoch)
            sums = dict(self._sums)  # the values are immutable: a copy is a snapshot
        return {name: Load(*counts) for name, counts in sums.items()}

    def __len__(self) -> int:
        with self._lock:
            return len(self._sums)


def report_entries(request: lrs_pb2.LoadStatsRequest) -> list[Entry]:
    """The counts of every cluster in one LRS report that saw any request (at most
    ``MAX_CLUSTERS_PER_REPORT`` entries are read)."""
    entries: list[Entry] = []
    stats_list = request.cluster_stats
    if len(stats_list) > MAX_CLUSTERS_PER_REPORT:
        stats_list = stats_list[:MAX_CLUSTERS_PER_REPORT]
    for stats in stats_list:
        localities = stats.upstream_locality_stats
        dropped = stats.total_dropped_requests
        if not localities and not dropped:
            continue  # an idle cluster: Envoy lists it without locality stats
        issued = succeeded = failed = 0
        for locality in localities:
            issued += locality.total_issued_requests
            succeeded += locality.total_successful_requests
            failed += locality.total_error_requests
        if issued or succeeded or failed or dropped:
            name = stats.cluster_service_name or stats.cluster_name
            entries.append((name, issued, succeeded, failed, dropped))
    return entries


def record_report(windows: LoadWindows, request: lrs_pb2.LoadStatsRequest) -> int:
    """Add every cluster's counts in one LRS report to ``windows``; the clusters read."""
    entries = report_entries(request)
    if entries:
        windows.record_many(entries)
    return min(len(request.cluster_stats), MAX_CLUSTERS_PER_REPORT)


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
