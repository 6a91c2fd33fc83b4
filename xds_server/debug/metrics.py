"""Prometheus metrics, rendered as text exposition format 0.0.4.

Names follow Istio's pilot metrics so dashboards translate directly:

=====================================  =========  ===========================================
splitplane                              Istio      meaning
=====================================  =========  ===========================================
splitplane_xds_pushes_total{type}       pilot_xds_pushes            responses sent, by type
splitplane_xds_rejects_total{type}      pilot_total_xds_rejects     NACKs received, by type
splitplane_xds_clients{protocol}        pilot_xds                   connected streams
splitplane_xds_push_time_seconds        pilot_xds_push_time         snapshot build and publish
splitplane_proxy_convergence_seconds    pilot_proxy_convergence_time response → ACK, per type
splitplane_xds_config_size_bytes{type}  pilot_xds_config_size_bytes  size of each response
splitplane_diagnostics{severity}        pilot_total_xds_internal_errors  current diagnostics
splitplane_xds_refused_total{reason}    (none)                      streams refused by identity
=====================================  =========  ===========================================

A tiny registry of our own: one process, a handful of series, no dependency worth adding.

Metrics are updated on the xDS event loop and rendered on the debug endpoint's thread. A series'
value is never changed in place: each update stores a new number (or, for a histogram, a new
tuple of bucket counts and sum), and ``render`` copies each metric's dictionary in one C-level
call that no other thread can interleave. So every series renders whole, and an update never
waits for a reader.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass, field

LabelValues = tuple[str, ...]

SECONDS_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
BYTES_BUCKETS = (1e2, 1e3, 1e4, 1e5, 1e6, 4e6, 1.6e7)


def _escape(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _labels(names: Sequence[str], values: Sequence[str], extra: str = "") -> str:
    parts = [f'{n}="{_escape(v)}"' for n, v in zip(names, values, strict=True)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(value)


@dataclass
class Counter:
    name: str
    help: str
    label_names: tuple[str, ...] = ()
    kind: str = "counter"
    values: dict[LabelValues, float] = field(default_factory=dict)

    def inc(self, *labels: str, amount: float = 1.0) -> None:
        self.values[labels] = self.values.get(labels, 0.0) + amount

    def remove(self, *labels: str) -> None:
        """Drop the series with ``labels`` (what it counted is gone)."""
        self.values.pop(labels, None)

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]
        for labels, value in sorted(self.values.copy().items()):
            lines.append(f"{self.name}{_labels(self.label_names, labels)} {_number(value)}")
        return lines


@dataclass
class Gauge(Counter):
    kind: str = "gauge"

    def set(self, *labels: str, value: float) -> None:
        self.values[labels] = value

    def dec(self, *labels: str, amount: float = 1.0) -> None:
        self.inc(*labels, amount=-amount)


@dataclass
class Histogram:
    name: str
    help: str
    buckets: tuple[float, ...]
    label_names: tuple[str, ...] = ()
    # Per label values: the count in each bucket (the last is +Inf) and the sum.
    series: dict[LabelValues, tuple[tuple[int, ...], float]] = field(default_factory=dict)

    def observe(self, value: float, *labels: str) -> None:
        old = self.series.get(labels)
        counts, total = old if old is not None else ((0,) * (len(self.buckets) + 1), 0.0)
        at = bisect.bisect_left(self.buckets, value)
        self.series[labels] = ((*counts[:at], counts[at] + 1, *counts[at + 1 :]), total + value)

    @property
    def sums(self) -> dict[LabelValues, float]:
        return {labels: total for labels, (_, total) in self.series.copy().items()}

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} histogram"]
        for labels, (counts, total) in sorted(self.series.copy().items()):
            cumulative = 0
            for bound, count in zip((*self.buckets, float("inf")), counts, strict=True):
                cumulative += count
                le = "+Inf" if bound == float("inf") else _number(bound)
                bucket_labels = _labels(self.label_names, labels, f'le="{le}"')
                lines.append(f"{self.name}_bucket{bucket_labels} {cumulative}")
            plain = _labels(self.label_names, labels)
            lines.append(f"{self.name}_sum{plain} {_number(total)}")
            lines.append(f"{self.name}_count{plain} {cumulative}")
        return lines


class Metrics:
    """Every metric splitplane exports; updated on the server's event loop, rendered anywhere."""

    def __init__(self) -> None:
        self.pushes = Counter(
            "splitplane_xds_pushes_total", "xDS responses sent, by type.", ("type",)
        )
        self.rejects = Counter(
            "splitplane_xds_rejects_total", "xDS responses rejected by clients (NACK).", ("type",)
        )
        self.clients = Gauge(
            "splitplane_xds_clients", "Connected xDS streams, by protocol.", ("protocol",)
        )
        self.push_time = Histogram(
            "splitplane_xds_push_time_seconds",
            "Time to translate the objects and publish the snapshots of one change.",
            SECONDS_BUCKETS,
        )
        self.convergence = Histogram(
            "splitplane_proxy_convergence_seconds",
            "Time from sending a response until the client ACKed it, by type.",
            SECONDS_BUCKETS,
            ("type",),
        )
        self.config_size = Histogram(
            "splitplane_xds_config_size_bytes",
            "Size of each xDS response, by type.",
            BYTES_BUCKETS,
            ("type",),
        )
        self.diagnostics = Gauge(
            "splitplane_diagnostics", "Current diagnostics, by severity.", ("severity",)
        )
        self.refused = Counter(
            "splitplane_xds_refused_total",
            "xDS and CSDS streams refused by the identity checks, by reason (namespace, role,"
            " no_identity, trust_domain, status).",
            ("reason",),
        )
        self.snapshots = Counter(
            "splitplane_snapshots_published_total",
            "Snapshots published, by node group.",
            ("group",),
        )

    # -- ClientObserver: what the xDS streams report ------------------------------------------

    def client_connected(self, protocol: str) -> None:
        self.clients.inc(protocol)

    def client_disconnected(self, protocol: str) -> None:
        self.clients.dec(protocol)

    def response_sent(self, type_url: str, size: int) -> None:
        self.pushes.inc(short_type(type_url))
        self.config_size.observe(size, short_type(type_url))

    def response_acked(self, type_url: str, seconds_since_sent: float) -> None:
        self.convergence.observe(seconds_since_sent, short_type(type_url))

    def response_rejected(self, type_url: str) -> None:
        self.rejects.inc(short_type(type_url))

    def stream_refused(self, reason: str) -> None:
        self.refused.inc(reason)

    def render(self) -> str:
        metrics: list[Counter | Histogram] = [
            self.pushes,
            self.rejects,
            self.clients,
            self.push_time,
            self.convergence,
            self.config_size,
            self.diagnostics,
            self.snapshots,
            self.refused,
        ]
        return "\n".join(line for metric in metrics for line in metric.render()) + "\n"


def short_type(type_url: str) -> str:
    """``type.googleapis.com/envoy.config.cluster.v3.Cluster`` → ``cds``."""
    return TYPE_SHORT.get(type_url, type_url.rsplit(".", 1)[-1])


TYPE_SHORT = {
    "type.googleapis.com/envoy.config.cluster.v3.Cluster": "cds",
    "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment": "eds",
    "type.googleapis.com/envoy.config.listener.v3.Listener": "lds",
    "type.googleapis.com/envoy.config.route.v3.RouteConfiguration": "rds",
}
