"""Clusters: one cluster per service port and subset, with the DestinationRule's policy.

A service's clusters get their endpoints over EDS; an ExternalName service's clusters are DNS
clusters instead, whose one endpoint (the DNS name on the service port) is in the cluster.
"""

from __future__ import annotations

from collections.abc import Iterable
from operator import attrgetter
from typing import NamedTuple

from envoy.config.cluster.v3 import circuit_breaker_pb2, cluster_pb2, outlier_detection_pb2
from envoy.config.common.matcher.v3 import matcher_pb2
from envoy.config.core.v3 import config_source_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2
from envoy.type.matcher.v3 import string_pb2
from google.protobuf import duration_pb2

from translators.build_endpoints import build_load_assignment
from translators.model import (
    Cluster,
    ClusterEndpoints,
    ConnectionPool,
    Endpoint,
    LoadBalancer,
    OutlierDetection,
    Protocol,
    TrafficPolicy,
)
from translators.resources import (
    Built,
    LengthPrefixes,
    fields_around,
    length_delimited,
    serialize,
)

HTTP_PROTOCOL_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
DEFAULT_CONNECT_TIMEOUT_MS = 10_000
DNS_REFRESH_RATE_MS = 60_000  # Istio's default meshConfig.dnsRefreshRate
UNLIMITED = 2**32 - 1  # Istio's default for every connection pool limit

_LB_POLICIES = {
    LoadBalancer.ROUND_ROBIN: cluster_pb2.Cluster.ROUND_ROBIN,
    LoadBalancer.LEAST_REQUEST: cluster_pb2.Cluster.LEAST_REQUEST,
    LoadBalancer.RANDOM: cluster_pb2.Cluster.RANDOM,
    # An EDS cluster has no original destination to pass through to; balance evenly instead.
    LoadBalancer.PASSTHROUGH: cluster_pb2.Cluster.ROUND_ROBIN,
}
# Proxyless gRPC clients reject least request, random and Maglev (they NACK the cluster): they
# get round robin, or a ring hash for Maglev.
_GRPC_LB_POLICIES = {
    LoadBalancer.ROUND_ROBIN: cluster_pb2.Cluster.ROUND_ROBIN,
    LoadBalancer.LEAST_REQUEST: cluster_pb2.Cluster.ROUND_ROBIN,
    LoadBalancer.RANDOM: cluster_pb2.Cluster.ROUND_ROBIN,
    LoadBalancer.PASSTHROUGH: cluster_pb2.Cluster.ROUND_ROBIN,
}


def duration(ms: int) -> duration_pb2.Duration:
    """A protobuf Duration from milliseconds."""
    return duration_pb2.Duration(seconds=ms // 1000, nanos=(ms % 1000) * 1_000_000)


def ads_config_source() -> config_source_pb2.ConfigSource:
    """Fetch over the ADS stream, v3 API."""
    return config_source_pb2.ConfigSource(
        ads=config_source_pb2.AggregatedConfigSource(),
        resource_api_version=config_source_pb2.V3,
    )


def build_cluster(cluster: Cluster, *, grpc: bool = False) -> cluster_pb2.Cluster:
    """The Envoy cluster for one model cluster; endpoints come over EDS under the same name,
    or for a cluster with a DNS name, from resolving that name (see `dns_cluster`).

    ``grpc``: for proxyless gRPC clients, with only the balancing they support.
    """
    if not cluster.uses_eds:
        return dns_cluster(cluster, grpc=grpc)
    template = ClusterTemplate.of(cluster_template(cluster.protocol, cluster.policy, grpc=grpc))
    return cluster_pb2.Cluster.FromString(template.encode(cluster.name))


def build_clusters(
    clusters: Iterable[Cluster], *, grpc: bool = False
) -> Built[cluster_pb2.Cluster]:
    """Every cluster, sorted by name (``grpc``: for proxyless gRPC clients).

    Clusters that share a protocol and a policy differ only in their names, so each such
    combination is built once and its bytes are reused around each cluster's names.
    """
    templates: dict[tuple[Protocol, TrafficPolicy], ClusterTemplate] = {}
    names = []
    bodies = []
    eds_names = []
    for cluster in sorted(clusters, key=attrgetter("name")):
        names.append(cluster.name)
        if not cluster.uses_eds:
            bodies.append(serialize(dns_cluster(cluster, grpc=grpc)))
            continue
        eds_names.append(cluster.name)
        key = (cluster.protocol, cluster.policy)
        template = templates.get(key)
        if template is None:
            template = templates[key] = ClusterTemplate.of(cluster_template(*key, grpc=grpc))
        bodies.append(template.encode(cluster.name))
    # every EDS cluster is fetched over EDS under its own name
    return Built(cluster_pb2.Cluster, names, bodies, frozenset(eds_names))


def dns_cluster(cluster: Cluster, *, grpc: bool = False) -> cluster_pb2.Cluster:
    """A cluster whose one endpoint is ``cluster.dns_name`` on the cluster's port, resolved by
    the client, with the same timeouts, balancing and limits as an EDS cluster.

    As Istio builds the cluster of a service resolved by DNS (a ServiceEntry with ``resolution:
    DNS``, or a Kubernetes ExternalName Service): STRICT_DNS, IPv4 lookups, refreshed every 60 s
    (Istio's default ``dnsRefreshRate``) or sooner when the record's TTL says so, the endpoint in
    the cluster's ``load_assignment``. Proxyless gRPC clients support LOGICAL_DNS, not STRICT_DNS
    (gRFC A37), and get that: one connection target, the name resolved when connecting.
    """
    out = cluster_template(cluster.protocol, cluster.policy, grpc=grpc)
    out.ClearField("eds_cluster_config")
    out.name = cluster.name
    out.type = cluster_pb2.Cluster.LOGICAL_DNS if grpc else cluster_pb2.Cluster.STRICT_DNS
    out.dns_lookup_family = cluster_pb2.Cluster.V4_ONLY
    out.dns_refresh_rate.CopyFrom(duration(DNS_REFRESH_RATE_MS))
    out.respect_dns_ttl = True
    endpoint = Endpoint(cluster.dns_name, cluster.port)
    out.load_assignment.CopyFrom(build_load_assignment(ClusterEndpoints(cluster.name, (endpoint,))))
    return out


_EDS_CLUSTER_CONFIG = cluster_pb2.Cluster.EDS_CLUSTER_CONFIG_FIELD_NUMBER
_NAMES = LengthPrefixes(cluster_pb2.Cluster.NAME_FIELD_NUMBER)
_EDS_CLUSTER_CONFIGS = LengthPrefixes(_EDS_CLUSTER_CONFIG)
_SERVICE_NAMES = LengthPrefixes(cluster_pb2.Cluster.EdsClusterConfig.SERVICE_NAME_FIELD_NUMBER)


class ClusterTemplate(NamedTuple):
    """The bytes of a cluster template around the two places its name goes: ``name`` and the
    EDS ``service_name`` (the last field of ``eds_cluster_config``)."""

    before: bytes  # fields between name and eds_cluster_config
    eds_config: bytes  # eds_cluster_config without its service_name
    after: bytes  # fields after eds_cluster_config

    @classmethod
    def of(cls, template: cluster_pb2.Cluster) -> ClusterTemplate:
        before, after = fields_around(template, _EDS_CLUSTER_CONFIG)
        return cls(before, serialize(template.eds_cluster_config), after)

    def encode(self, name: str) -> bytes:
        """The cluster named ``name``, with ``name`` as its EDS service name too."""
        data = name.encode()
        if not data:  # proto3 leaves empty strings out
            eds = self.eds_config
            return self.before + length_delimited(_EDS_CLUSTER_CONFIG, eds) + self.after
        size = len(data)
        eds = b"".join((self.eds_config, _SERVICE_NAMES[size], data))
        return b"".join(
            (_NAMES[size], data, self.before, _EDS_CLUSTER_CONFIGS[len(eds)], eds, self.after)
        )


def cluster_template(
    protocol: Protocol, policy: TrafficPolicy, *, grpc: bool = False
) -> cluster_pb2.Cluster:
    """Everything of a cluster but its names: EDS over ADS, timeouts, balancing, limits."""
    pool = policy.connection_pool
    connect_ms = DEFAULT_CONNECT_TIMEOUT_MS
    if pool is not None and pool.connect_timeout_ms is not None:
        connect_ms = pool.connect_timeout_ms
    out = cluster_pb2.Cluster(type=cluster_pb2.Cluster.EDS, connect_timeout=duration(connect_ms))
    out.eds_cluster_config.eds_config.CopyFrom(ads_config_source())
    if policy.consistent_hash is None:
        # Locality weighting is for the balancers that pick a locality, then a host in it.
        # Ring hash and Maglev put every host on one ring or table, where locality weights
        # only scale host weights (equal here), and Istio leaves it off for them; with it,
        # Envoy picked no host at all when the endpoints had no locality (every request 503).
        out.common_lb_config.locality_weighted_lb_config.SetInParent()
    _set_load_balancing(out, policy, grpc=grpc)
    out.circuit_breakers.thresholds.append(circuit_breaker_thresholds(pool))
    codes = policy.outlier_detection.error_codes if policy.outlier_detection else ()
    options = http_protocol_options(protocol, pool, codes)
    if options is not None:
        out.typed_extension_protocol_options[HTTP_PROTOCOL_OPTIONS].Pack(options)
    if policy.outlier_detection is not None:
        out.outlier_detection.CopyFrom(outlier_detection(policy.outlier_detection))
        # Istio's minHealthPercent defaults to 0 %: no panic mode, which Envoy would otherwise
        # enter below 50 % healthy hosts and then send traffic to ejected hosts again.
        out.common_lb_config.healthy_panic_threshold.value = float(
            policy.outlier_detection.min_health_percent or 0
        )
    return out


def _set_load_balancing(out: cluster_pb2.Cluster, policy: TrafficPolicy, *, grpc: bool) -> None:
    chash = policy.consistent_hash
    if chash is None:
        policies = _GRPC_LB_POLICIES if grpc else _LB_POLICIES
        out.lb_policy = policies[policy.load_balancer]
    elif chash.maglev and not grpc:
        out.lb_policy = cluster_pb2.Cluster.MAGLEV
        if chash.table_size:
            out.maglev_lb_config.table_size.value = chash.table_size
    else:
        out.lb_policy = cluster_pb2.Cluster.RING_HASH
        if chash.minimum_ring_size:
            out.ring_hash_lb_config.minimum_ring_size.value = chash.minimum_ring_size


def circuit_breaker_thresholds(
    pool: ConnectionPool | None,
) -> circuit_breaker_pb2.CircuitBreakers.Thresholds:
    """The default-priority thresholds: the pool's limits, the rest unlimited.

    Istio's connection pool limits default to 2^32-1, and Istio sets them on every cluster:
    Envoy's own defaults (1024 connections, pending and active requests; 3 concurrent retries)
    would otherwise shed requests and retries under load.
    """
    given = pool or ConnectionPool()
    limits = {
        "max_connections": given.max_connections,
        "max_pending_requests": given.max_pending_requests,
        "max_requests": given.max_requests,
        "max_retries": given.max_retries,
    }
    thresholds = circuit_breaker_pb2.CircuitBreakers.Thresholds(track_remaining=True)
    for field, value in limits.items():
        getattr(thresholds, field).value = UNLIMITED if value is None else value
    return thresholds


def http_protocol_options(
    protocol: Protocol, pool: ConnectionPool | None, error_codes: tuple[int, ...] = ()
) -> http_protocol_options_pb2.HttpProtocolOptions | None:
    """Upstream HTTP options: HTTP/2 for http2/grpc ports (with the pool's keep-alive), the
    pool's per-connection limits, and the statuses outlier detection counts as errors.

    None when Envoy's defaults already fit (an HTTP/1 port with no limits, or a TCP port).
    """
    if not protocol.is_http:
        return None
    h2 = protocol in (Protocol.HTTP2, Protocol.GRPC)
    idle_ms = pool.idle_timeout_ms if pool is not None else None
    per_connection = pool.max_requests_per_connection if pool is not None else None
    streams = pool.max_concurrent_streams if pool is not None else None
    if not h2 and idle_ms is None and per_connection is None and not error_codes:
        return None
    options = http_protocol_options_pb2.HttpProtocolOptions()
    if error_codes:
        options.outlier_detection.error_matcher.CopyFrom(_status_matcher(error_codes))
    common = options.common_http_protocol_options
    if idle_ms is not None:
        common.idle_timeout.CopyFrom(duration(idle_ms))
    if per_connection is not None:
        common.max_requests_per_connection.value = per_connection
    explicit = options.explicit_http_config
    if h2:
        explicit.http2_protocol_options.SetInParent()
        if streams is not None:
            explicit.http2_protocol_options.max_concurrent_streams.value = streams
        if pool is not None and pool.h2_keepalive_interval_ms is not None:
            keepalive = explicit.http2_protocol_options.connection_keepalive
            keepalive.interval.CopyFrom(duration(pool.h2_keepalive_interval_ms))
            keepalive.timeout.CopyFrom(duration(pool.h2_keepalive_timeout_ms or 0))
    else:
        explicit.http_protocol_options.SetInParent()
    if idle_ms is None and per_connection is None:
        options.ClearField("common_http_protocol_options")
    return options


def _status_matcher(codes: tuple[int, ...]) -> matcher_pb2.MatchPredicate:
    """A response whose status is one of ``codes`` (as Istio matches them: ``:status`` exactly)."""
    rules = []
    for code in codes:
        rule = matcher_pb2.MatchPredicate()
        rule.http_response_headers_match.headers.add(
            name=":status", string_match=string_pb2.StringMatcher(exact=str(code))
        )
        rules.append(rule)
    if len(rules) == 1:
        return rules[0]
    out = matcher_pb2.MatchPredicate()
    out.or_match.rules.extend(rules)
    return out


def outlier_detection(od: OutlierDetection) -> outlier_detection_pb2.OutlierDetection:
    """Istio semantics: a given error count is enforced at 100 %, a count of 0 disables it.

    What is not given keeps Envoy's default, as in Istio: 5xx ejection after 5 errors stays on
    when only gateway errors are given. Success-rate ejection, on by default in Envoy, is off.
    """
    out = outlier_detection_pb2.OutlierDetection()
    out.enforcing_success_rate.value = 0
    if od.consecutive_5xx_errors is not None:
        out.consecutive_5xx.value = od.consecutive_5xx_errors
        out.enforcing_consecutive_5xx.value = 100 if od.consecutive_5xx_errors > 0 else 0
    if od.consecutive_gateway_errors is not None:
        out.consecutive_gateway_failure.value = od.consecutive_gateway_errors
        out.enforcing_consecutive_gateway_failure.value = (
            100 if od.consecutive_gateway_errors > 0 else 0
        )
    if od.split_external_local_origin_errors:
        out.split_external_local_origin_errors = True
        out.enforcing_local_origin_success_rate.value = 0
        if od.consecutive_local_origin_failures is not None:
            out.consecutive_local_origin_failure.value = od.consecutive_local_origin_failures
            out.enforcing_consecutive_local_origin_failure.value = (
                100 if od.consecutive_local_origin_failures > 0 else 0
            )
    if od.interval_ms is not None:
        out.interval.CopyFrom(duration(od.interval_ms))
    if od.base_ejection_time_ms is not None:
        out.base_ejection_time.CopyFrom(duration(od.base_ejection_time_ms))
    if od.max_ejection_percent is not None:
        out.max_ejection_percent.value = od.max_ejection_percent
    return out
