"""VirtualService + DestinationRule + services → clusters, load assignments and virtual hosts.

Three steps, so that the last good version of an object can stand in for an invalid one:

1. `compile_destination_rule` checks one DestinationRule on its own;
   `index_destination_rules` keeps one rule per service host and namespace (rules of one
   namespace merged, as Istio merges them), and answers which one a client in a namespace gets
   (Istio's order: the client's namespace, the service's, the root namespace's).
2. `compile_virtual_service` checks one VirtualService against the services and the subsets the
   rules define, and turns its ``http``/``tcp`` rules into model routes.
3. `resolve_routing` assembles clusters and virtual hosts for the clients of one namespace (the
   VirtualService first by its rank for them, then the oldest, routes a host; see
   `resolve_scopes`); `cluster_endpoints` fills each cluster's load assignment from the
   services' ready endpoints.

Istio semantics throughout: short host names resolve in the object's namespace, port-level
settings replace the policy they are part of for their port, subset policy overrides the rule's
section by section, and weights follow Istio ≥ 1.15 (each ≥ 0, total > 0 when several, weight-0
destinations omitted).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import lru_cache

from google.protobuf.duration_pb2 import Duration

from translators.api.networking_pb2 import (
    ConnectionPoolSettings,
    Destination,
    DestinationRule,
    HTTPFaultInjection,
    HTTPMatchRequest,
    HTTPRoute,
    LoadBalancerSettings,
    VirtualService,
)
from translators.api.networking_pb2 import CorsPolicy as CorsPolicySpec
from translators.api.networking_pb2 import Headers as HeadersSpec
from translators.api.networking_pb2 import OutlierDetection as OutlierDetectionSpec
from translators.api.networking_pb2 import StringMatch as StringMatchSpec
from translators.api.networking_pb2 import TrafficPolicy as TrafficPolicySpec
from translators.diagnostics import Diagnostic, Severity
from translators.envoy_rules import header_value_problem, is_prime
from translators.hostnames import hostname_problem
from translators.memo import Memo
from translators.model import (
    Cluster,
    ClusterEndpoints,
    ConnectionPool,
    ConsistentHash,
    Cors,
    DirectResponse,
    Fault,
    HeaderOperations,
    Headers,
    HttpRoute,
    KeyMatch,
    Labels,
    LoadBalancer,
    MatchKind,
    Mirror,
    OutlierDetection,
    Redirect,
    RetryPolicy,
    Rewrite,
    RouteMatch,
    Service,
    StringMatch,
    TcpRoute,
    TrafficPolicy,
    VirtualHost,
    WeightedCluster,
    labels_of,
)
from translators.names import CLUSTER_DOMAIN, cluster_name, host_candidates, service_aliases
from translators.regex import regex_problem
from translators.visibility import EVERYWHERE, ExportTo, config_export_to

MESH_GATEWAY = "mesh"
# The gateway the load-balancer fleet serves unless told otherwise (`serve --gateway-name`).
DEFAULT_GATEWAY = "splitplane-system/splitplane"
PRESENT_REGEX = "*"  # Istio's spelling of "the header is present" in a header regex
# Shared immutable defaults: a large mesh would otherwise allocate one of each per route/cluster.
_NO_HEADERS = Headers()
_DEFAULT_POLICY = TrafficPolicy()
DEFAULT_HOST_PORT = 80
# Envoy's bound for a Maglev lookup table (its largest prime table size is 5000011).
MAX_MAGLEV_TABLE_SIZE = 5_000_011
# Envoy's default max_direct_response_body_size_bytes for a route configuration.
MAX_DIRECT_RESPONSE_BODY = 4096

_SIMPLE_LB: Mapping[int, LoadBalancer] = {
    LoadBalancerSettings.UNSPECIFIED: LoadBalancer.LEAST_REQUEST,  # Istio's default
    LoadBalancerSettings.ROUND_ROBIN: LoadBalancer.ROUND_ROBIN,
    LoadBalancerSettings.LEAST_CONN: LoadBalancer.LEAST_REQUEST,
    LoadBalancerSettings.LEAST_REQUEST: LoadBalancer.LEAST_REQUEST,
    LoadBalancerSettings.RANDOM: LoadBalancer.RANDOM,
    LoadBalancerSettings.PASSTHROUGH: LoadBalancer.PASSTHROUGH,
}


@dataclass(frozen=True, slots=True)
class Source:
    """The object a rule came from; ``age`` orders objects oldest first."""

    namespace: str
    name: str
    created: str = ""

    @property
    def age(self) -> tuple[str, str, str]:
        return (self.created, self.namespace, self.name)

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


class _Problems:
    def __init__(self, kind: str, source: Source) -> None:
        self.kind, self.source = kind, source
        self.found: list[Diagnostic] = []

    def add(self, field: str, message: str, severity: Severity = Severity.ERROR) -> None:
        self.found.append(
            Diagnostic(self.kind, self.source.namespace, self.source.name, field, message, severity)
        )

    @property
    def has_error(self) -> bool:
        return any(d.is_error for d in self.found)


def _percent(weight: int, total: int) -> str:
    share = 100 * weight / total
    return f"{share:.0f} %" if share == int(share) else f"{share:.1f} %"


def effective_split(entries: Sequence[tuple[Destination, int]], total: int) -> str:
    """What a route whose weights do not sum to 100 sends where (weights are relative)."""
    shares = []
    for destination, weight in entries:
        name = destination.host + (f" {destination.subset}" if destination.subset else "")
        if destination.HasField("port"):
            name += f":{destination.port.number}"
        shares.append(f"{name} {_percent(weight, total)}")
    return f"weights sum to {total}, not 100; they are relative: " + ", ".join(shares)


def _ms(duration: Duration) -> int:
    return duration.seconds * 1000 + duration.nanos // 1_000_000


# ------------------------------------------------------------------------------------------------
# DestinationRules


@dataclass(frozen=True, slots=True)
class DestinationRuleSpec:
    """A DestinationRule that passed its own checks."""

    source: Source
    host: str  # as written, normalised
    spec: DestinationRule = field(compare=False)
    # Each subset's labels as a canonical label set, in the order the rule lists them.
    subset_labels: Mapping[str, Labels] = field(default_factory=dict, compare=False)
    # Whether a traffic policy is set anywhere (top level or in a subset).
    has_policy: bool = field(default=True, compare=False)
    export_to: ExportTo = EVERYWHERE


def compile_destination_rule(
    source: Source, spec: DestinationRule
) -> tuple[DestinationRuleSpec | None, list[Diagnostic]]:
    """Check the parts of a DestinationRule the schema cannot: hosts, subsets, hash keys."""
    problems = _Problems("DestinationRule", source)
    host = _normal_host(spec.host)
    if not host:
        problems.add("spec.host", "is required")
    elif bad_host := hostname_problem(spec.host):
        problems.add("spec.host", bad_host)
    elif "*" in host:
        problems.add("spec.host", "wildcard hosts are not supported; name one service")
    names: set[str] = set()
    for i, subset in enumerate(spec.subsets):
        at = f"spec.subsets[{i}]"
        if not subset.name:
            problems.add(f"{at}.name", "is required")
        elif subset.name in names:
            problems.add(f"{at}.name", f"duplicate subset {subset.name!r}")
        names.add(subset.name)
        if subset.HasField("traffic_policy"):
            _check_policy(subset.traffic_policy, f"{at}.trafficPolicy", problems)
    if spec.HasField("traffic_policy"):
        _check_policy(spec.traffic_policy, "spec.trafficPolicy", problems)
    export_to = _export_to(spec.export_to, source.namespace, problems)
    if problems.has_error:
        return None, problems.found
    subset_labels = {subset.name: labels_of(subset.labels) for subset in spec.subsets}
    has_policy = spec.HasField("traffic_policy") or any(
        subset.HasField("traffic_policy") for subset in spec.subsets
    )
    return (
        DestinationRuleSpec(source, host, spec, subset_labels, has_policy, export_to),
        problems.found,
    )


def _check_policy(policy: TrafficPolicySpec, at: str, problems: _Problems) -> None:
    if policy.HasField("load_balancer"):
        _check_load_balancer(policy.load_balancer, f"{at}.loadBalancer", problems)
    if policy.HasField("outlier_detection"):
        _check_outlier_detection(policy.outlier_detection, f"{at}.outlierDetection", problems)
    if policy.HasField("connection_pool"):
        _check_connection_pool(policy.connection_pool, f"{at}.connectionPool", problems)
    seen: set[int] = set()
    for i, level in enumerate(policy.port_level_settings):
        where = f"{at}.portLevelSettings[{i}]"
        number = level.port.number
        if not 1 <= number <= 65535:
            problems.add(f"{where}.port.number", "must be a port from 1 to 65535")
        elif number in seen:
            problems.add(f"{where}.port.number", f"duplicate settings for port {number}")
        seen.add(number)
        if level.HasField("load_balancer"):
            _check_load_balancer(level.load_balancer, f"{where}.loadBalancer", problems)
        if level.HasField("outlier_detection"):
            _check_outlier_detection(level.outlier_detection, f"{where}.outlierDetection", problems)
        if level.HasField("connection_pool"):
            _check_connection_pool(level.connection_pool, f"{where}.connectionPool", problems)


def _check_outlier_detection(spec: OutlierDetectionSpec, at: str, problems: _Problems) -> None:
    """Percentages from 0 to 100, as Istio and Envoy take them."""
    for name, value in (
        ("maxEjectionPercent", spec.max_ejection_percent),
        ("minHealthPercent", spec.min_health_percent),
    ):
        if not 0 <= value <= 100:
            problems.add(f"{at}.{name}", f"must be a percentage from 0 to 100, got {value}")
    for k, code in enumerate(spec.outlier_detection_http_error_codes):
        if not 100 <= code <= 599:
            problems.add(
                f"{at}.outlierDetectionHttpErrorCodes[{k}]",
                f"must be an HTTP status from 100 to 599, got {code}",
            )


def _check_connection_pool(spec: ConnectionPoolSettings, at: str, problems: _Problems) -> None:
    """Istio's rules: limits are not negative; an HTTP/2 keep-alive needs both its interval and
    its timeout."""
    for side, name, value in (
        ("tcp", "maxConnections", spec.tcp.max_connections),
        ("http", "http1MaxPendingRequests", spec.http.http1_max_pending_requests),
        ("http", "http2MaxRequests", spec.http.http2_max_requests),
        ("http", "maxRequestsPerConnection", spec.http.max_requests_per_connection),
        ("http", "maxRetries", spec.http.max_retries),
    ):
        if value < 0:
            problems.add(f"{at}.{side}.{name}", f"must not be negative, got {value}")
    if not spec.http.HasField("http2_keep_alive"):
        return
    keepalive = spec.http.http2_keep_alive
    for name, given in (
        ("interval", keepalive.HasField("interval")),
        ("timeout", keepalive.HasField("timeout")),
    ):
        if not given:
            problems.add(f"{at}.http.http2KeepAlive.{name}", "is required")


def _export_to(entries: Sequence[str], namespace: str, problems: _Problems) -> ExportTo:
    return config_export_to(
        entries, namespace, lambda message: problems.add("spec.exportTo", message)
    )


def _check_load_balancer(lb: LoadBalancerSettings, at: str, problems: _Problems) -> None:
    if lb.WhichOneof("lb_policy") == "simple" and lb.simple == LoadBalancerSettings.PASSTHROUGH:
        problems.add(
            f"{at}.simple",
            "PASSTHROUGH is not supported (splitplane's clusters are EDS clusters, with no"
            " original destination to pass through to); the cluster balances round robin",
            Severity.WARNING,
        )
    if lb.WhichOneof("lb_policy") != "consistent_hash":
        return
    hashing = lb.consistent_hash
    key = hashing.WhichOneof("hash_key")
    if key is None:
        problems.add(
            f"{at}.consistentHash",
            "needs httpHeaderName, httpCookie, useSourceIp or httpQueryParameterName",
        )
    elif key == "http_cookie" and not hashing.http_cookie.name:
        problems.add(f"{at}.consistentHash.httpCookie.name", "is required")
    if hashing.WhichOneof("hash_algorithm") == "maglev":
        size = hashing.maglev.table_size
        where = f"{at}.consistentHash.maglev.tableSize"
        if size == 0:
            problems.add(where, "is required for maglev (a prime number, such as 65537)")
        elif size >= MAX_MAGLEV_TABLE_SIZE:
            problems.add(where, f"must be less than {MAX_MAGLEV_TABLE_SIZE}")
        elif not is_prime(size):
            problems.add(where, f"must be a prime number (Envoy's rule), got {size}")


ROOT_NAMESPACE = "istio-system"  # Istio's default meshConfig.rootNamespace


@dataclass(frozen=True, slots=True)
class DestinationRuleIndex:
    """The DestinationRules of each service hostname, and which one a client gets.

    ``by_host`` holds the rule of a client in a namespace no rule for the host names (in its
    own namespace or its ``exportTo``): the service namespace's rule if exported everywhere,
    else the root namespace's. `rule_for` answers for any namespace, as Istio does: the rule in
    the client's own namespace, else the service namespace's if exported to the client, else
    the root namespace's if exported to the client.
    """

    by_host: Mapping[str, DestinationRuleSpec]
    # The subset names any rule for each host defines (what a VirtualService may name), read
    # once per translation rather than per route.
    subset_names: Mapping[str, frozenset[str]] = field(default_factory=dict, compare=False)
    # hostname → namespace → the rule of that namespace for it
    by_namespace: Mapping[str, Mapping[str, DestinationRuleSpec]] = field(
        default_factory=dict, compare=False
    )
    root_namespace: str = ROOT_NAMESPACE

    def subsets(self, hostname: str) -> frozenset[str]:
        found = self.subset_names.get(hostname)
        if found is not None:
            return found
        rule = self.by_host.get(hostname)
        return frozenset(s.name for s in rule.spec.subsets) if rule else frozenset()

    def rule_for(
        self, namespace: str, hostname: str, service_namespace: str
    ) -> DestinationRuleSpec | None:
        """The rule a client in ``namespace`` gets for the service ``hostname``."""
        rules = self.by_namespace.get(hostname)
        if not rules:
            return None
        own = rules.get(namespace)
        if own is not None and own.export_to.visible_to(namespace):
            return own
        for owner in (service_namespace, self.root_namespace):
            rule = rules.get(owner)
            if rule is not None and rule.export_to.visible_to(namespace):
                return rule
        return None

    def namespaces_named(self, hostname: str) -> frozenset[str]:
        """The namespaces whose clients may get another rule for ``hostname`` than ``by_host``:
        those of its rules and those their ``exportTo`` names."""
        rules = self.by_namespace.get(hostname, {})
        return frozenset(rules).union(*(rule.export_to.namespaces for rule in rules.values()))


def index_destination_rules(
    rules: Iterable[DestinationRuleSpec],
    services: Mapping[str, Service],
    domain: str = CLUSTER_DOMAIN,
    root_namespace: str = ROOT_NAMESPACE,
) -> tuple[DestinationRuleIndex, list[Diagnostic]]:
    """The rules of each service host, one per namespace (younger ones in the same namespace
    merged into the oldest, with a warning); rules for unknown hosts get a warning."""
    diagnostics: list[Diagnostic] = []
    found: list[tuple[str, DestinationRuleSpec]] = []
    for rule in rules:
        hostname = _service_hostname(rule.host, rule.source.namespace, services, domain)
        if hostname is None:
            diagnostics.append(
                _diagnostic(
                    "DestinationRule",
                    rule.source,
                    "spec.host",
                    f"host {rule.host!r} is not a known service; the rule has no effect",
                    Severity.WARNING,
                )
            )
            continue
        found.append((hostname, rule))

    by_namespace: dict[str, dict[str, DestinationRuleSpec]] = {}
    for hostname, rule in sorted(found, key=lambda item: item[1].source.age):
        held = by_namespace.setdefault(hostname, {})
        winner = held.get(rule.source.namespace)
        if winner is not None:
            held[rule.source.namespace], message = _merged_rule(winner, rule)
            diagnostics.append(
                _diagnostic(
                    "DestinationRule",
                    rule.source,
                    "spec.host",
                    f"{hostname} already has the older DestinationRule {winner.source};"
                    f" merged into it as Istio merges them: {message}",
                    Severity.WARNING,
                )
            )
            continue
        held[rule.source.namespace] = rule
        if rule.subset_labels and services[hostname].external_name:
            diagnostics.append(
                _diagnostic(
                    "DestinationRule",
                    rule.source,
                    "spec.subsets",
                    f"{hostname} is an ExternalName service: its one endpoint is the DNS name"
                    f" {services[hostname].external_name}, with no labels for a subset to"
                    " select; the subsets are ignored",
                    Severity.WARNING,
                )
            )
    by_host: dict[str, DestinationRuleSpec] = {}
    for hostname, held in by_namespace.items():
        for owner in (services[hostname].namespace, root_namespace):
            found_rule = held.get(owner)
            if found_rule is not None and found_rule.export_to.everywhere:
                by_host[hostname] = found_rule
                break
    subset_names = {
        host: frozenset()
        if services[host].external_name
        else frozenset().union(*(rule.subset_labels for rule in held.values()))
        for host, held in by_namespace.items()
    }
    return (
        DestinationRuleIndex(by_host, subset_names, by_namespace, root_namespace),
        diagnostics,
    )


def _merged_rule(
    older: DestinationRuleSpec, later: DestinationRuleSpec
) -> tuple[DestinationRuleSpec, str]:
    """Two rules of one namespace for one host, merged as Istio merges them: the older one,
    plus the later one's subsets whose names it does not define yet, plus the later one's
    top-level traffic policy only if the older one has none. And what was taken, in words."""
    spec = DestinationRule()
    spec.CopyFrom(older.spec)
    labels = dict(older.subset_labels)
    added: list[str] = []
    clashing: list[str] = []
    for subset in later.spec.subsets:
        if subset.name in labels:
            clashing.append(subset.name)
            continue
        spec.subsets.append(subset)
        labels[subset.name] = later.subset_labels[subset.name]
        added.append(subset.name)
    parts = [f"subsets {', '.join(added)} added" if added else "no subset added"]
    if clashing:
        parts.append(f"subsets {', '.join(clashing)} are the older rule's and are ignored here")
    if later.spec.HasField("traffic_policy"):
        if spec.HasField("traffic_policy"):
            parts.append("the trafficPolicy is ignored (the older rule has one)")
        else:
            spec.traffic_policy.CopyFrom(later.spec.traffic_policy)
            parts.append("the trafficPolicy applies")
    has_policy = spec.HasField("traffic_policy") or any(
        subset.HasField("traffic_policy") for subset in spec.subsets
    )
    merged = replace(older, spec=spec, subset_labels=labels, has_policy=has_policy)
    return merged, "; ".join(parts)


def _diagnostic(
    kind: str, source: Source, field: str, message: str, severity: Severity = Severity.ERROR
) -> Diagnostic:
    return Diagnostic(kind, source.namespace, source.name, field, message, severity)


def _normal_host(host: str) -> str:
    return host.strip().lower().rstrip(".")


def _service_hostname(
    host: str, namespace: str, services: Mapping[str, Service], domain: str
) -> str | None:
    """The hostname of the service ``host`` (written in ``namespace``) names, if any."""
    for candidate in _candidates(host, namespace, domain):
        if candidate in services:
            return candidate
    return None


@lru_cache(maxsize=1 << 16)
def _candidates(host: str, namespace: str, domain: str) -> tuple[str, ...]:
    return host_candidates(host, namespace, domain)


def _has_labels(selector: Labels, labels: Labels) -> bool:
    """`labels_match` for the hot path: both are short sorted tuples of pairs."""
    return all(pair in labels for pair in selector)


# ------------------------------------------------------------------------------------------------
# Traffic policy


_Sections = tuple[
    LoadBalancerSettings | None, ConnectionPoolSettings | None, OutlierDetectionSpec | None
]


def effective_policy(
    rule: DestinationRuleSpec | None, port: int, subset: str = ""
) -> TrafficPolicy:
    """The policy of one cluster, by Istio's precedence.

    A policy's ``portLevelSettings`` for ``port`` replace that policy as a whole: a section they
    leave out is Istio's default, not the policy's. The subset's policy (so narrowed) then
    replaces the rule's section by section; when the subset has port-level settings for
    ``port``, every section is the subset's.
    """
    if rule is None or not rule.has_policy:
        return _DEFAULT_POLICY
    spec = rule.spec
    sections: _Sections = (None, None, None)
    if spec.HasField("traffic_policy"):
        sections, _ = _policy_sections(spec.traffic_policy, port)
    if subset:
        chosen = next((s for s in spec.subsets if s.name == subset), None)
        if chosen is not None and chosen.HasField("traffic_policy"):
            narrowed, whole = _policy_sections(chosen.traffic_policy, port)
            if whole:
                sections = narrowed
            else:
                lb, pool, outlier = sections
                own_lb, own_pool, own_outlier = narrowed
                sections = (
                    own_lb if own_lb is not None else lb,
                    own_pool if own_pool is not None else pool,
                    own_outlier if own_outlier is not None else outlier,
                )
    if sections == (None, None, None):
        return _DEFAULT_POLICY
    return _traffic_policy(*sections)


def _policy_sections(policy: TrafficPolicySpec, port: int) -> tuple[_Sections, bool]:
    """The sections of ``policy`` that apply on ``port``, and whether they are its port-level
    settings (which stand for the whole policy)."""
    layer: TrafficPolicySpec | TrafficPolicySpec.PortTrafficPolicy = policy
    level = next((p for p in policy.port_level_settings if p.port.number == port), None)
    if level is not None:
        layer = level
    sections = (
        layer.load_balancer if layer.HasField("load_balancer") else None,
        layer.connection_pool if layer.HasField("connection_pool") else None,
        layer.outlier_detection if layer.HasField("outlier_detection") else None,
    )
    return sections, level is not None


def _traffic_policy(
    lb: LoadBalancerSettings | None,
    pool: ConnectionPoolSettings | None,
    outlier: OutlierDetectionSpec | None,
) -> TrafficPolicy:
    balancer, hashing = LoadBalancer.LEAST_REQUEST, None
    if lb is not None:
        if lb.WhichOneof("lb_policy") == "consistent_hash":
            hashing = _consistent_hash(lb.consistent_hash)
        else:
            balancer = _SIMPLE_LB.get(lb.simple, LoadBalancer.LEAST_REQUEST)
    return TrafficPolicy(
        load_balancer=balancer,
        consistent_hash=hashing,
        connection_pool=_connection_pool(pool) if pool is not None else None,
        outlier_detection=_outlier_detection(outlier) if outlier is not None else None,
    )


def _consistent_hash(spec: LoadBalancerSettings.ConsistentHashLB) -> ConsistentHash:
    cookie = spec.http_cookie if spec.HasField("http_cookie") else None
    algorithm = spec.WhichOneof("hash_algorithm")
    return ConsistentHash(
        header=spec.http_header_name,
        cookie=cookie.name if cookie else "",
        cookie_path=cookie.path if cookie else "",
        cookie_ttl_ms=_ms(cookie.ttl) if cookie and cookie.HasField("ttl") else None,
        source_ip=spec.use_source_ip,
        query_parameter=spec.http_query_parameter_name,
        maglev=algorithm == "maglev",
        table_size=spec.maglev.table_size if algorithm == "maglev" else 0,
        minimum_ring_size=(
            spec.ring_hash.minimum_ring_size if algorithm == "ring_hash" else spec.minimum_ring_size
        ),
    )


def _connection_pool(spec: ConnectionPoolSettings) -> ConnectionPool:
    tcp, http = spec.tcp, spec.http
    return ConnectionPool(
        max_connections=tcp.max_connections or None,
        connect_timeout_ms=_ms(tcp.connect_timeout) if tcp.HasField("connect_timeout") else None,
        max_pending_requests=http.http1_max_pending_requests or None,
        max_requests=http.http2_max_requests or None,
        max_requests_per_connection=http.max_requests_per_connection or None,
        max_retries=http.max_retries or None,
        idle_timeout_ms=_ms(http.idle_timeout) if http.HasField("idle_timeout") else None,
        max_concurrent_streams=http.max_concurrent_streams or None,
        h2_keepalive_interval_ms=(
            _ms(http.http2_keep_alive.interval) if http.HasField("http2_keep_alive") else None
        ),
        h2_keepalive_timeout_ms=(
            _ms(http.http2_keep_alive.timeout) if http.HasField("http2_keep_alive") else None
        ),
    )


def _outlier_detection(spec: OutlierDetectionSpec) -> OutlierDetection:
    def wrapped(name: str) -> int | None:
        return int(getattr(spec, name).value) if spec.HasField(name) else None

    five_xx, gateway = wrapped("consecutive_5xx_errors"), wrapped("consecutive_gateway_errors")
    if spec.consecutive_errors > 0:  # Istio's deprecated form: gateway errors only
        gateway = spec.consecutive_errors if gateway is None else gateway
        five_xx = 0 if five_xx is None else five_xx
    return OutlierDetection(
        consecutive_5xx_errors=five_xx,
        consecutive_gateway_errors=gateway,
        consecutive_local_origin_failures=wrapped("consecutive_local_origin_failures"),
        split_external_local_origin_errors=spec.split_external_local_origin_errors,
        interval_ms=_ms(spec.interval) if spec.HasField("interval") else None,
        base_ejection_time_ms=(
            _ms(spec.base_ejection_time) if spec.HasField("base_ejection_time") else None
        ),
        max_ejection_percent=spec.max_ejection_percent or None,
        min_health_percent=spec.min_health_percent or None,
        error_codes=tuple(sorted(set(spec.outlier_detection_http_error_codes))),
    )


# ------------------------------------------------------------------------------------------------
# VirtualServices


@dataclass(frozen=True, slots=True)
class _HttpRule:
    route: HttpRoute
    destination_ports: frozenset[int]


@dataclass(frozen=True, slots=True)
class _TcpRule:
    ports: frozenset[int]  # empty: every port
    destinations: tuple[WeightedCluster, ...]


@dataclass(frozen=True, slots=True)
class VirtualServiceRules:
    """A VirtualService that passed its checks, with its rules as model routes."""

    source: Source
    hosts: tuple[str, ...]  # spec.hosts, normalised, same indexes
    hostnames: tuple[str | None, ...]  # the service each host names, None for other hosts
    mesh: bool
    gateway: bool
    http: tuple[_HttpRule, ...]
    tcp: tuple[_TcpRule, ...]
    export_to: ExportTo = EVERYWHERE

    @property
    def host_port(self) -> int:
        """The port of a virtual host that is not a service: the destinations' port, else 80."""
        ports = frozenset().union(*(r.destination_ports for r in self.http))
        return next(iter(ports)) if len(ports) == 1 else DEFAULT_HOST_PORT


@dataclass(frozen=True, slots=True)
class RoutingContext:
    """What a VirtualService's destinations are checked against."""

    services: Mapping[str, Service]  # by hostname
    rules: DestinationRuleIndex
    domain: str = CLUSTER_DOMAIN
    # The gateways (namespace/name) whose VirtualServices the load-balancer fleet serves.
    gateway_names: frozenset[str] = frozenset({DEFAULT_GATEWAY})


def gateway_reference(name: str, namespace: str) -> str:
    """A VirtualService's ``gateways`` entry as ``namespace/name``, read as Istio reads it: a
    bare name is in the VirtualService's namespace; ``name.namespace.svc.<domain>`` is the
    older long form."""
    if "/" in name:
        return name
    if "." in name:
        gateway, gateway_namespace = name.split(".")[:2]
        return f"{gateway_namespace}/{gateway}"
    return f"{namespace}/{name}"


class _Lookups:
    """The mesh as one VirtualService sees it, recording every answer it was given."""

    def __init__(self, context: RoutingContext, namespace: str) -> None:
        self.context, self.namespace = context, namespace
        self.hostnames: dict[str, str | None] = {}
        self.ports: dict[str, tuple[tuple[int, ...], str]] = {}
        self.subset_names: dict[str, frozenset[str]] = {}

    def hostname(self, host: str) -> str | None:
        found = _service_hostname(host, self.namespace, self.context.services, self.context.domain)
        self.hostnames[host] = found
        return found

    def service(self, hostname: str) -> Service:
        service = self.context.services[hostname]
        self.ports[hostname] = (tuple(port.port for port in service.ports), service.external_name)
        return service

    def subsets(self, hostname: str) -> frozenset[str]:
        found = self.subset_names[hostname] = self.context.rules.subsets(hostname)
        return found

    def answers(self) -> MeshAnswers:
        return MeshAnswers(
            self.namespace,
            tuple(self.hostnames.items()),
            tuple(self.ports.items()),
            tuple(self.subset_names.items()),
        )


@dataclass(frozen=True, slots=True)
class MeshAnswers:
    """What compiling a VirtualService read from the mesh. While every answer still holds, the
    same VirtualService compiles to the same result, so the result can be reused."""

    namespace: str
    hostnames: tuple[tuple[str, str | None], ...]  # host as written → the service it names
    # service hostname → its port numbers and external name
    ports: tuple[tuple[str, tuple[tuple[int, ...], str]], ...]
    subsets: tuple[tuple[str, frozenset[str]], ...]  # service hostname → its subset names

    def still_hold(self, context: RoutingContext) -> bool:
        services, domain = context.services, context.domain
        for host, hostname in self.hostnames:
            if _service_hostname(host, self.namespace, services, domain) != hostname:
                return False
        for hostname, (ports, external_name) in self.ports:
            service = services.get(hostname)
            if (
                service is None
                or tuple(port.port for port in service.ports) != ports
                or service.external_name != external_name
            ):
                return False
        return all(context.rules.subsets(hostname) == names for hostname, names in self.subsets)


def compile_virtual_service(
    source: Source, spec: VirtualService, context: RoutingContext
) -> tuple[VirtualServiceRules | None, list[Diagnostic], MeshAnswers]:
    """Check a VirtualService against the mesh and turn its rules into model routes.

    Also returns what the check read from the mesh (see `MeshAnswers`).
    """
    lookups = _Lookups(context, source.namespace)
    compiler = _Compiler(source, lookups)
    gateways = tuple(spec.gateways)
    mesh = not gateways or MESH_GATEWAY in gateways
    served = foreign = False
    for g, name in enumerate(gateways):
        if name == MESH_GATEWAY or not name.strip():
            continue
        reference = gateway_reference(name.strip(), source.namespace)
        if reference in context.gateway_names:
            served = True
        else:
            foreign = True
            compiler.problems.add(
                f"spec.gateways[{g}]",
                f"gateway {reference} is not splitplane's "
                f"({', '.join(sorted(context.gateway_names))}); its routes are left to its owner",
                Severity.INFO,
            )
    if not mesh and not served and foreign:
        # Bound only to other owners' gateways (Istio's ingress, say): not splitplane's to check.
        return None, compiler.problems.found, lookups.answers()
    hosts = tuple(_normal_host(h) for h in spec.hosts)
    if not hosts:
        compiler.problems.add("spec.hosts", "needs at least one host")
    for k, host in enumerate(hosts):
        if not host:
            compiler.problems.add(f"spec.hosts[{k}]", "must not be empty")
        elif bad_host := hostname_problem(spec.hosts[k], ip_address=True):
            compiler.problems.add(f"spec.hosts[{k}]", bad_host)
        elif host == "*" and mesh:
            compiler.problems.add(
                f"spec.hosts[{k}]", "'*' is not allowed for the mesh; name the hosts"
            )
    for g, name in enumerate(gateways):
        if not name.strip():
            compiler.problems.add(f"spec.gateways[{g}]", "must not be empty")
    export_to = _export_to(spec.export_to, source.namespace, compiler.problems)
    http = tuple(
        rule
        for i, route in enumerate(spec.http)
        if (rule := compiler.http_rule(route, f"spec.http[{i}]")) is not None
    )
    tcp: list[_TcpRule] = []
    for i, tcp_route in enumerate(spec.tcp):
        at = f"spec.tcp[{i}]"
        ports: set[int] = set()
        for m, match in enumerate(tcp_route.match):
            compiler.unsupported_l4(match, f"{at}.match[{m}]")
            if match.port:
                compiler.check_port(match.port, f"{at}.match[{m}].port")
                ports.add(match.port)
            else:
                ports.clear()
                break
        entries = [(r.destination, r.weight, None) for r in tcp_route.route]
        destinations, _ = compiler.destinations(entries, f"{at}.route")
        tcp.append(_TcpRule(frozenset(ports), destinations))
    if not spec.http and not spec.tcp:
        compiler.problems.add("spec", "needs http or tcp routes")
    if compiler.problems.has_error:
        return None, compiler.problems.found, lookups.answers()
    hostnames = tuple(lookups.hostname(h) for h in hosts)
    rules = VirtualServiceRules(source, hosts, hostnames, mesh, served, http, tuple(tcp), export_to)
    return rules, compiler.problems.found, lookups.answers()


class _Compiler:
    """Turns one VirtualService's rules into model routes, collecting its problems."""

    def __init__(self, source: Source, mesh: _Lookups) -> None:
        self.source, self.mesh = source, mesh
        self.problems = _Problems("VirtualService", source)

    def check_port(self, port: int, at: str) -> None:
        if not 1 <= port <= 65535:
            self.problems.add(at, "must be a port from 1 to 65535")

    def check_percent(self, value: float, at: str) -> None:
        if not 0 <= value <= 100:
            self.problems.add(at, "must be from 0 to 100")

    def unsupported_l4(self, match: object, at: str) -> None:
        if getattr(match, "source_labels", None):
            self.problems.add(
                f"{at}.sourceLabels",
                "splitplane does not apply sourceLabels per workload; the rule applies to all",
                Severity.WARNING,
            )
        if getattr(match, "destination_subnets", None):
            self.problems.add(
                f"{at}.destinationSubnets", "not supported by splitplane; ignored", Severity.WARNING
            )

    def http_rule(self, spec: HTTPRoute, at: str) -> _HttpRule | None:
        has_redirect = spec.HasField("redirect")
        has_direct = spec.HasField("direct_response")
        actions = [
            name
            for name, given in (
                ("route", len(spec.route) > 0),
                ("redirect", has_redirect),
                ("directResponse", has_direct),
            )
            if given
        ]
        if len(actions) > 1:
            self.problems.add(at, f"has {' and '.join(actions)}; use one")
        elif not actions:
            self.problems.add(
                f"{at}.route", "needs at least one destination (or a redirect or a directResponse)"
            )
        matches = tuple(self.match(m, f"{at}.match[{k}]") for k, m in enumerate(spec.match))
        entries = [
            (r.destination, r.weight, r.headers if r.HasField("headers") else None)
            for r in spec.route
        ]
        destinations, ports = self.destinations(entries, f"{at}.route")
        mirror = None
        if spec.HasField("mirror"):
            cluster, _ = self.cluster(spec.mirror, f"{at}.mirror")
            percent = 100.0
            if spec.HasField("mirror_percentage"):
                percent = spec.mirror_percentage.value
                self.check_percent(percent, f"{at}.mirrorPercentage.value")
            elif spec.HasField("mirror_percent"):  # Istio's deprecated whole-number form
                percent = float(spec.mirror_percent.value)
                self.check_percent(percent, f"{at}.mirrorPercent")
            mirror = Mirror(cluster, percent) if cluster else None
        elif spec.HasField("mirror_percentage") or spec.HasField("mirror_percent"):
            field = "mirrorPercentage" if spec.HasField("mirror_percentage") else "mirrorPercent"
            self.problems.add(f"{at}.{field}", "needs a mirror")
        route = HttpRoute(
            name=spec.name,
            matches=matches,
            destinations=destinations,
            redirect=self.redirect(spec, f"{at}.redirect") if has_redirect else None,
            rewrite=self.rewrite(spec, f"{at}.rewrite") if spec.HasField("rewrite") else None,
            timeout_ms=_ms(spec.timeout) if spec.HasField("timeout") else None,
            retries=self.retries(spec, f"{at}.retries") if spec.HasField("retries") else None,
            fault=self.fault(spec.fault, f"{at}.fault") if spec.HasField("fault") else None,
            mirror=mirror,
            headers=(
                self.headers(spec.headers, f"{at}.headers")
                if spec.HasField("headers")
                else _NO_HEADERS
            ),
            one_destination=len(spec.route) == 1,
            mirrors=self.mirrors(spec, at),
            cors=self.cors(spec, f"{at}.corsPolicy") if spec.HasField("cors_policy") else None,
            direct_response=(
                self.direct_response(spec, f"{at}.directResponse") if has_direct else None
            ),
        )
        return _HttpRule(route, frozenset(ports))

    def match(self, spec: HTTPMatchRequest, at: str) -> RouteMatch:
        if spec.port:
            self.check_port(spec.port, f"{at}.port")
        self.unsupported_l4(spec, at)
        if spec.gateways:
            self.problems.add(
                f"{at}.gateways", "not supported by splitplane; ignored", Severity.WARNING
            )
        if spec.source_namespace:
            self.problems.add(
                f"{at}.sourceNamespace", "not supported by splitplane; ignored", Severity.WARNING
            )
        for where, keyed in (
            ("headers", spec.headers),
            ("withoutHeaders", spec.without_headers),
            ("queryParams", spec.query_params),
        ):
            for name in keyed:
                if not name:
                    self.problems.add(f"{at}.{where}[]", "name must not be empty")
        headers = [
            KeyMatch(k, self.value_match(v, f"{at}.headers[{k}]")) for k, v in spec.headers.items()
        ]
        headers += [
            KeyMatch(k, self.value_match(v, f"{at}.withoutHeaders[{k}]"), invert=True)
            for k, v in spec.without_headers.items()
        ]
        query_params = [
            KeyMatch(k, self.value_match(v, f"{at}.queryParams[{k}]"))
            for k, v in spec.query_params.items()
        ]
        return RouteMatch(
            uri=(
                self.string_match(spec.uri, f"{at}.uri", empty_prefix=True)
                if spec.HasField("uri")
                else None
            ),
            scheme=(
                self.value_match(spec.scheme, f"{at}.scheme") if spec.HasField("scheme") else None
            ),
            method=(
                self.value_match(spec.method, f"{at}.method") if spec.HasField("method") else None
            ),
            authority=(
                self.value_match(spec.authority, f"{at}.authority")
                if spec.HasField("authority")
                else None
            ),
            headers=tuple(sorted(headers, key=lambda h: (h.name, h.invert))),
            query_params=tuple(sorted(query_params, key=lambda q: q.name)),
            ignore_uri_case=spec.ignore_uri_case,
            port=spec.port,
            source_labels=labels_of(dict(spec.source_labels)),
        )

    def string_match(
        self, spec: StringMatchSpec, at: str, empty_prefix: bool = False
    ) -> StringMatch | None:
        """A string match; as in Istio, a prefix or regex must not be empty (but a uri prefix
        may: it matches every path)."""
        match = _string_match(spec)
        if match is None:
            return None
        if match.kind is MatchKind.REGEX:
            if not match.value:
                self.problems.add(f"{at}.regex", "must not be empty")
            else:
                self.check_regex(match.value, f"{at}.regex")
        elif match.kind is MatchKind.PREFIX and not match.value and not empty_prefix:
            self.problems.add(f"{at}.prefix", "must not be empty")
        return match

    def value_match(self, spec: StringMatchSpec, at: str) -> StringMatch | None:
        """A header or query parameter value match; None means "present".

        As in Istio, ``regex: "*"`` (not a valid regex) is taken to mean "present".
        """
        if spec.WhichOneof("match_type") == "regex" and spec.regex == PRESENT_REGEX:
            return None
        return self.string_match(spec, at)

    def check_regex(self, pattern: str, at: str) -> None:
        problem = regex_problem(pattern)
        if problem is not None:
            self.problems.add(at, problem)

    def service(self, destination: Destination, at: str) -> Service | None:
        host = _normal_host(destination.host)
        if not host:
            self.problems.add(f"{at}.host", "is required")
            return None
        if bad_host := hostname_problem(destination.host):
            self.problems.add(f"{at}.host", bad_host)
            return None
        hostname = self.mesh.hostname(host)
        if hostname is None:
            self.problems.add(f"{at}.host", f"{destination.host!r} is not a known service")
            return None
        return self.mesh.service(hostname)

    def cluster(self, destination: Destination, at: str) -> tuple[str, int]:
        """The cluster name and port a destination means; ("", 0) when it is invalid."""
        service = self.service(destination, at)
        if service is None:
            return "", 0
        port = destination.port.number if destination.HasField("port") else 0
        if port:
            if service.port(port) is None:
                known = ", ".join(str(p.port) for p in service.ports) or "none"
                self.problems.add(
                    f"{at}.port.number", f"{service.hostname} has no port {port} (ports: {known})"
                )
                return "", 0
        elif len(service.ports) == 1:
            port = service.ports[0].port
        else:
            self.problems.add(
                f"{at}.port",
                f"{service.hostname} has {len(service.ports)} ports; name one with port.number",
            )
            return "", 0
        if destination.subset and service.external_name:
            self.problems.add(
                f"{at}.subset",
                f"{service.hostname} is an ExternalName service ({service.external_name}):"
                " it has no subsets",
            )
            return "", 0
        if destination.subset and destination.subset not in self.mesh.subsets(service.hostname):
            self.problems.add(
                f"{at}.subset",
                f"subset {destination.subset!r} is not defined in a DestinationRule"
                f" for {service.hostname}",
            )
            return "", 0
        return cluster_name(port, destination.subset, service.hostname), port

    def destinations(
        self, entries: Sequence[tuple[Destination, int, HeadersSpec | None]], at: str
    ) -> tuple[tuple[WeightedCluster, ...], set[int]]:
        """Weighted clusters by Istio ≥ 1.15 rules, weight-0 ones left out; and their ports."""
        found: list[WeightedCluster] = []
        ports: set[int] = set()
        total = 0
        unknown = False
        for j, (destination, weight, headers) in enumerate(entries):
            host = _normal_host(destination.host)
            if host and not hostname_problem(destination.host) and self.mesh.hostname(host) is None:
                # As in Istio: the VirtualService stands, this rule's requests get 503.
                self.problems.add(
                    f"{at}[{j}].destination.host",
                    f"{destination.host!r} is not a known service; this rule answers 503"
                    " until it is",
                    Severity.WARNING,
                )
                unknown = True
                total += max(weight, 0)
                continue
            cluster, port = self.cluster(destination, f"{at}[{j}].destination")
            if headers is not None:
                self.headers(headers, f"{at}[{j}].headers")
            if weight < 0:
                self.problems.add(f"{at}[{j}].weight", f"must not be negative (got {weight})")
                continue
            total += weight
            share = 100 if len(entries) == 1 else weight
            if cluster and share > 0:
                ports.add(port)
                found.append(
                    WeightedCluster(
                        cluster, share, _headers(headers) if headers is not None else _NO_HEADERS
                    )
                )
        negative = any(w < 0 for _, w, _ in entries)
        if len(entries) > 1 and total == 0 and not negative:
            self.problems.add(at, "weights sum to 0; give at least one destination a weight")
        elif len(entries) > 1 and total != 100 and not negative:
            self.problems.add(
                at, effective_split([(d, w) for d, w, _ in entries], total), Severity.INFO
            )
        if unknown:  # no share of the split goes elsewhere: the whole rule answers 503
            return (), ports
        return tuple(found), ports

    def headers(self, spec: HeadersSpec, at: str) -> Headers:
        """Header operations; names must not be empty, and values must be what Envoy's header
        formatter takes (``%`` starts a command, ``%%`` is a percent sign)."""
        for side in ("request", "response"):
            operations = getattr(spec, side)
            for verb in ("set", "add"):
                for name, value in getattr(operations, verb).items():
                    where = f"{at}.{side}.{verb}[{name}]"
                    if not name:
                        self.problems.add(where, "header name must not be empty")
                    problem = header_value_problem(value)
                    if problem is not None:
                        self.problems.add(where, f"header value {problem}")
            for k, name in enumerate(operations.remove):
                if not name:
                    self.problems.add(f"{at}.{side}.remove[{k}]", "header name must not be empty")
        return _headers(spec)

    def cors(self, spec: HTTPRoute, at: str) -> Cors:
        policy = spec.cors_policy
        origins = []
        for k, origin in enumerate(policy.allow_origins):
            match = self.string_match(origin, f"{at}.allowOrigins[{k}]")
            if match is None:
                self.problems.add(f"{at}.allowOrigins[{k}]", "needs exact, prefix or regex")
            elif not match.value and match.kind is MatchKind.EXACT:  # prefix, regex: above
                self.problems.add(
                    f"{at}.allowOrigins[{k}].{match.kind.value}", "must not be empty (as in Istio)"
                )
            else:
                origins.append(match)
        preflights = {
            CorsPolicySpec.UnmatchedPreflights.FORWARD: True,
            CorsPolicySpec.UnmatchedPreflights.IGNORE: False,
        }.get(policy.unmatched_preflights)
        return Cors(
            allow_origins=tuple(origins),
            allow_methods=tuple(policy.allow_methods),
            allow_headers=tuple(policy.allow_headers),
            expose_headers=tuple(policy.expose_headers),
            max_age_s=policy.max_age.seconds if policy.HasField("max_age") else None,
            allow_credentials=(
                policy.allow_credentials.value if policy.HasField("allow_credentials") else None
            ),
            forward_unmatched_preflights=preflights,
        )

    def mirrors(self, spec: HTTPRoute, at: str) -> tuple[Mirror, ...]:
        if spec.mirrors and spec.HasField("mirror"):
            self.problems.add(f"{at}.mirrors", "cannot be given with mirror; use one")
        found = []
        for k, policy in enumerate(spec.mirrors):
            where = f"{at}.mirrors[{k}]"
            if not policy.HasField("destination"):
                self.problems.add(f"{where}.destination", "is required")
                continue
            cluster, _ = self.cluster(policy.destination, f"{where}.destination")
            percent = 100.0
            if policy.HasField("percentage"):
                percent = policy.percentage.value
                self.check_percent(percent, f"{where}.percentage.value")
            if cluster:
                found.append(Mirror(cluster, percent))
        return tuple(found)

    def direct_response(self, spec: HTTPRoute, at: str) -> DirectResponse:
        direct = spec.direct_response
        if not 200 <= direct.status <= 599:
            self.problems.add(f"{at}.status", "must be from 200 to 599")
        body: str | bytes | None = None
        kind = direct.body.WhichOneof("specifier") if direct.HasField("body") else None
        if kind == "string":
            body = direct.body.string
        elif kind == "bytes":
            body = bytes(direct.body.bytes)
        size = len(body.encode() if isinstance(body, str) else body or b"")
        if size > MAX_DIRECT_RESPONSE_BODY:
            self.problems.add(
                f"{at}.body",
                f"is {size} bytes; Envoy takes at most {MAX_DIRECT_RESPONSE_BODY} in a route"
                " configuration and would reject the whole table",
            )
        return DirectResponse(direct.status, body)

    def redirect(self, spec: HTTPRoute, at: str) -> Redirect:
        redirect = spec.redirect
        if redirect.port:
            self.check_port(redirect.port, f"{at}.port")
        changes = (redirect.uri, redirect.prefix_rewrite, redirect.authority, redirect.scheme)
        if not (any(changes) or redirect.port):
            # Istio rejects it: it would send every request back to its own URL, forever.
            self.problems.add(
                at,
                "must change the uri (or its prefix), authority, scheme or port; this one"
                " redirects to itself",
            )
        code = redirect.redirect_code or 301
        if code not in (301, 302, 303, 307, 308):
            self.problems.add(f"{at}.redirectCode", "must be 301, 302, 303, 307 or 308")
        if redirect.prefix_rewrite:
            if redirect.uri:
                self.problems.add(f"{at}.prefixRewrite", "cannot be given with uri; use one")
            for k, match in enumerate(spec.match):
                kind = match.uri.WhichOneof("match_type") if match.HasField("uri") else None
                if kind in ("exact", "regex"):
                    self.problems.add(
                        f"{at}.prefixRewrite",
                        f"replaces a matched prefix, but match[{k}].uri is an {kind} match"
                        " (as in Istio, match a uri prefix or no uri)",
                    )
        return Redirect(
            uri=redirect.uri,
            authority=redirect.authority,
            port=redirect.port,
            scheme=redirect.scheme,
            code=code,
            prefix_rewrite=redirect.prefix_rewrite,
        )

    def rewrite(self, spec: HTTPRoute, at: str) -> Rewrite:
        rewrite = spec.rewrite
        regex = rewrite.uri_regex_rewrite
        if rewrite.HasField("uri_regex_rewrite"):
            self.check_regex(regex.match, f"{at}.uriRegexRewrite.match")
            if rewrite.uri:  # as Istio: one path rewrite, not one of them dropped
                self.problems.add(at, "may only contain one of uri or uriRegexRewrite")
        return Rewrite(
            uri=rewrite.uri,
            authority=rewrite.authority,
            regex=regex.match,
            regex_substitution=regex.rewrite,
        )

    def retries(self, spec: HTTPRoute, at: str) -> RetryPolicy:
        retries = spec.retries
        if retries.attempts < 0:
            self.problems.add(f"{at}.attempts", "must not be negative")
        if retries.retry_remote_localities.value:
            self.problems.add(
                f"{at}.retryRemoteLocalities",
                "not supported: splitplane gives every endpoint the same locality priority,"
                " so there is no other locality to retry in; ignored",
                Severity.WARNING,
            )
        conditions = [item.strip() for item in retries.retry_on.split(",")]
        if "retriable-status-codes" in conditions and not any(c.isdigit() for c in conditions):
            self.problems.add(
                f"{at}.retryOn",
                "retriable-status-codes names no status code, so no status is retried (as in"
                " Istio); list the codes too, such as 503",
                Severity.WARNING,
            )
        return RetryPolicy(
            attempts=retries.attempts,
            per_try_timeout_ms=(
                _ms(retries.per_try_timeout) if retries.HasField("per_try_timeout") else None
            ),
            retry_on=retries.retry_on,
            backoff_ms=self.backoff(retries.backoff, f"{at}.backoff")
            if retries.HasField("backoff")
            else None,
            ignore_previous_hosts=(
                retries.retry_ignore_previous_hosts.value
                if retries.HasField("retry_ignore_previous_hosts")
                else True
            ),
        )

    def backoff(self, spec: Duration, at: str) -> int | None:
        """The retry back-off base interval; Envoy takes only more than 1 ms."""
        if spec.seconds * 1_000_000_000 + spec.nanos <= 1_000_000:
            self.problems.add(at, "must be more than 1ms (Envoy's smallest retry back-off)")
            return None
        return _ms(spec)

    def fault(self, spec: HTTPFaultInjection, at: str) -> Fault:
        """A fault; as in Istio, a delay or abort without a percentage applies to no request."""
        delay_ms, delay_percent = None, 0.0
        if spec.HasField("delay"):
            delay = spec.delay
            if not delay.HasField("fixed_delay"):
                self.problems.add(f"{at}.delay.fixedDelay", "is required")
            delay_ms = _ms(delay.fixed_delay)
            if delay.HasField("percentage"):
                delay_percent = delay.percentage.value
                self.check_percent(delay_percent, f"{at}.delay.percentage.value")
            elif delay.percent:
                delay_percent = float(delay.percent)
                self.check_percent(delay_percent, f"{at}.delay.percent")
            else:
                self._no_percentage(f"{at}.delay", "delayed")
        status, grpc_status, abort_percent = None, "", 0.0
        if spec.HasField("abort"):
            abort = spec.abort
            kind = abort.WhichOneof("error_type")
            if kind is None:
                self.problems.add(f"{at}.abort", "needs httpStatus or grpcStatus")
            elif kind == "http_status":
                status = abort.http_status
                if not 200 <= status <= 599:
                    self.problems.add(f"{at}.abort.httpStatus", "must be from 200 to 599")
            else:
                grpc_status = abort.grpc_status
            if abort.HasField("percentage"):
                abort_percent = abort.percentage.value
                self.check_percent(abort_percent, f"{at}.abort.percentage.value")
            else:
                self._no_percentage(f"{at}.abort", "aborted")
        if not spec.HasField("delay") and not spec.HasField("abort"):
            self.problems.add(at, "needs a delay or an abort")
        return Fault(delay_ms, delay_percent, status, grpc_status, abort_percent)

    def _no_percentage(self, at: str, done: str) -> None:
        self.problems.add(
            f"{at}.percentage",
            f"not given, so no request is {done} (as in Istio); "
            f"percentage.value: 100 applies it to every request",
            Severity.WARNING,
        )


def _string_match(spec: StringMatchSpec) -> StringMatch | None:
    kind = spec.WhichOneof("match_type")
    if kind is None:
        return None
    return StringMatch(MatchKind(kind), getattr(spec, kind))


def _operations(spec: HeadersSpec.HeaderOperations) -> HeaderOperations:
    return HeaderOperations(
        set=tuple(sorted(spec.set.items())),
        add=tuple(sorted(spec.add.items())),
        remove=tuple(spec.remove),
    )


def _headers(spec: HeadersSpec) -> Headers:
    return Headers(request=_operations(spec.request), response=_operations(spec.response))


# ------------------------------------------------------------------------------------------------
# Assembly


@dataclass(frozen=True, slots=True)
class Routing:
    """Clusters and virtual hosts of the mesh, and the diagnostics found assembling them."""

    clusters: tuple[Cluster, ...]
    mesh_hosts: tuple[VirtualHost, ...]
    gateway_hosts: tuple[VirtualHost, ...]
    tcp_routes: tuple[TcpRoute, ...]
    diagnostics: tuple[Diagnostic, ...]
    # Which VirtualService routes each mesh host (by service hostname) and each gateway host.
    mesh_claims: Mapping[str, VirtualServiceRules] = field(default_factory=dict)
    gateway_claims: Mapping[str, VirtualServiceRules] = field(default_factory=dict)


def services_by_hostname(services: Iterable[Service]) -> dict[str, Service]:
    return {s.hostname: s for s in services}


@dataclass(frozen=True, slots=True)
class _ServiceClusters:
    """One service's clusters, and the DestinationRule they were made with."""

    rule: DestinationRuleSpec | None
    clusters: tuple[Cluster, ...]


@dataclass(frozen=True, slots=True)
class _ServiceRoutes:
    """One service's virtual hosts and TCP routes, and what they were made from."""

    vs: VirtualServiceRules | None
    domain: str
    hosts: tuple[VirtualHost, ...]
    tcp_routes: tuple[TcpRoute, ...]


def _service_clusters(service: Service, rule: DestinationRuleSpec | None) -> _ServiceClusters:
    return _ServiceClusters(rule, tuple(_clusters(service, rule)))


def _service_routes(
    service: Service, vs: VirtualServiceRules | None, domain: str
) -> _ServiceRoutes:
    return _ServiceRoutes(
        vs,
        domain,
        tuple(_service_hosts(service, vs, domain)),
        tuple(_tcp_routes(vs, service, gateway=False)) if vs is not None else (),
    )


def _made_with(rule: DestinationRuleSpec | None) -> Callable[[_ServiceClusters], bool]:
    return lambda held: held.rule is rule


def _made_from(vs: VirtualServiceRules | None, domain: str) -> Callable[[_ServiceRoutes], bool]:
    return lambda held: held.vs is vs and held.domain == domain


Precedence = Callable[[VirtualServiceRules], "int | None"]
"""A VirtualService's rank for the mesh's clients (lower first, then the oldest), or None for one
they do not see."""


def _same_rank(vs: VirtualServiceRules) -> int | None:
    return 0


def resolve_routing(
    services: Mapping[str, Service],
    rules: DestinationRuleIndex,
    virtual_services: Iterable[VirtualServiceRules],
    domain: str = CLUSTER_DOMAIN,
    memo: Memo | None = None,
    *,
    visible: Callable[[str], bool] | None = None,
    precedence: Precedence = _same_rank,
    mesh_only: bool = False,
) -> Routing:
    """Clusters for every service port and subset, and the virtual hosts that route to them.

    For the mesh's clients, only the services whose hostname is ``visible`` count, and for each
    host the VirtualService first by ``precedence`` (then the oldest) routes it; the fleet's
    hosts are routed by the oldest VirtualService bound to it (skipped when ``mesh_only``).

    With a ``memo``, a service that is the very same object as last time keeps its clusters
    while its DestinationRule is the same, and its virtual hosts while its VirtualService is.
    """
    memo = memo or Memo()
    mesh_claims, gateway_claims, diagnostics = _claim_hosts(virtual_services, precedence)
    clusters: list[Cluster] = []
    mesh_hosts: list[VirtualHost] = []
    tcp_routes: list[TcpRoute] = []
    for service in services.values():
        if visible is not None and not visible(service.hostname):
            continue
        rule = rules.by_host.get(service.hostname)
        vs = mesh_claims.get(service.hostname)
        made = memo.get_checked(
            "service-clusters", service, _made_with(rule), _service_clusters, service, rule
        )
        routed = memo.get_checked(
            "service-routes", service, _made_from(vs, domain), _service_routes, service, vs, domain
        )
        clusters.extend(made.clusters)
        mesh_hosts.extend(routed.hosts)
        tcp_routes.extend(routed.tcp_routes)
    for host, vs in mesh_claims.items():
        shown = host in services and (visible is None or visible(host))
        if not shown and vs.http:
            mesh_hosts.append(_named_host(host, vs))
    gateway_hosts: list[VirtualHost] = []
    for host, vs in () if mesh_only else gateway_claims.items():
        hostname = vs.hostnames[vs.hosts.index(host)]
        if hostname is not None:
            tcp_routes.extend(_tcp_routes(vs, services[hostname], gateway=True))
        if vs.http:
            gateway_hosts.append(_named_host(host, vs))
    return Routing(
        clusters=tuple(sorted(clusters, key=lambda c: c.name)),
        mesh_hosts=tuple(sorted(mesh_hosts, key=lambda v: (v.port, v.name))),
        gateway_hosts=tuple(sorted(gateway_hosts, key=lambda v: (v.port, v.name))),
        tcp_routes=tuple(sorted(tcp_routes, key=lambda t: (t.gateway, t.service, t.port))),
        diagnostics=tuple(sorted(diagnostics)),
        mesh_claims=mesh_claims,
        gateway_claims=gateway_claims,
    )


def claimed_hosts(
    vs: VirtualServiceRules,
    services: Mapping[str, Service],
    domain: str,
    memo: Memo,
) -> tuple[list[VirtualHost], list[VirtualHost]]:
    """The mesh and gateway virtual hosts of a VirtualService that routes every host it names
    (see `resolve_routing`: a service's host per HTTP port, else one virtual host per name)."""
    mesh_hosts: list[VirtualHost] = []
    if vs.mesh:
        keys = dict.fromkeys(
            name or host for host, name in zip(vs.hosts, vs.hostnames, strict=True)
        )
        for key in keys:
            service = services.get(key)
            if service is not None:
                routed = memo.get_checked(
                    "service-routes",
                    service,
                    _made_from(vs, domain),
                    _service_routes,
                    service,
                    vs,
                    domain,
                )
                mesh_hosts.extend(routed.hosts)
            elif vs.http:
                mesh_hosts.append(_named_host(key, vs))
    gateway_hosts = [_named_host(host, vs) for host in vs.hosts] if vs.gateway and vs.http else []
    return mesh_hosts, gateway_hosts


def _claim_hosts(
    virtual_services: Iterable[VirtualServiceRules], precedence: Precedence = _same_rank
) -> tuple[dict[str, VirtualServiceRules], dict[str, VirtualServiceRules], list[Diagnostic]]:
    """Which VirtualService routes each mesh host (by service hostname) and each gateway host.

    For the mesh, the first by ``precedence`` wins, then the oldest; for the fleet, the oldest.
    A younger one of the same rank gets an error on the host, which is dropped from it.
    """
    diagnostics: list[Diagnostic] = []
    mesh: dict[str, VirtualServiceRules] = {}
    gateway: dict[str, VirtualServiceRules] = {}
    by_age = sorted(virtual_services, key=lambda v: v.source.age)
    ranked = [(rank, vs) for vs in by_age if vs.mesh and (rank := precedence(vs)) is not None]
    ranked.sort(key=lambda item: item[0])  # stable: the oldest first within a rank
    ranks = {id(vs): rank for rank, vs in ranked}
    passes = (
        (mesh, [vs for _, vs in ranked], True),
        (gateway, [vs for vs in by_age if vs.gateway], False),
    )
    for claims, ordered, for_mesh in passes:
        for vs in ordered:
            for k, host in enumerate(vs.hosts):
                key = (vs.hostnames[k] or host) if for_mesh else host
                owner = claims.setdefault(key, vs)
                if owner is vs or (for_mesh and ranks[id(owner)] != ranks[id(vs)]):
                    continue
                diagnostics.append(
                    _diagnostic(
                        "VirtualService",
                        vs.source,
                        f"spec.hosts[{k}]",
                        f"{key} is already routed by the older VirtualService"
                        f" {owner.source}; the host is dropped here",
                    )
                )
    return mesh, gateway, diagnostics


def _service_hosts(
    service: Service, vs: VirtualServiceRules | None, domain: str
) -> list[VirtualHost]:
    """One virtual host per HTTP port: the VirtualService's rules, else one default route."""
    aliases = service_aliases(service.name, service.namespace, domain)
    written: tuple[str, ...] = ()
    if vs is not None:
        written = tuple(
            h for h, n in zip(vs.hosts, vs.hostnames, strict=True) if n == service.hostname
        )
    found: list[VirtualHost] = []
    for port in service.ports:
        if not port.protocol.is_http:
            continue
        routes = _routes_for_port(vs, port.port) if vs is not None else ()
        hosts = tuple(dict.fromkeys(aliases + written))
        source = str(vs.source) if vs is not None and routes else ""
        if not routes:
            default = cluster_name(port.port, "", service.hostname)
            routes = (HttpRoute(destinations=(WeightedCluster(default, 100),)),)
            hosts = aliases
        found.append(
            VirtualHost(f"{service.hostname}:{port.port}", port.port, hosts, routes, source)
        )
    return found


def _named_host(host: str, vs: VirtualServiceRules) -> VirtualHost:
    """The virtual host of a host that is not a service, or of a gateway host."""
    port = vs.host_port
    routes = tuple(rule.route for rule in vs.http)
    return VirtualHost(f"{host}:{port}", port, (host,), routes, str(vs.source))


def _clusters(service: Service, rule: DestinationRuleSpec | None) -> list[Cluster]:
    """The service's cluster per port and subset; an ExternalName service's clusters resolve
    its DNS name, and it has no subset clusters (no endpoints with labels to select)."""
    found: list[Cluster] = []
    subsets = rule.subset_labels if rule and not service.external_name else {}
    for port in service.ports:
        found.append(
            Cluster(
                name=cluster_name(port.port, "", service.hostname),
                service=service.hostname,
                port=port.port,
                protocol=port.protocol,
                policy=effective_policy(rule, port.port),
                dns_name=service.external_name,
            )
        )
        for subset, labels in subsets.items():
            found.append(
                Cluster(
                    name=cluster_name(port.port, subset, service.hostname),
                    service=service.hostname,
                    port=port.port,
                    subset=subset,
                    subset_labels=labels,
                    protocol=port.protocol,
                    policy=effective_policy(rule, port.port, subset),
                )
            )
    return found


def _routes_for_port(vs: VirtualServiceRules, port: int) -> tuple[HttpRoute, ...]:
    """The rules that apply on ``port``: matches naming another port are dropped."""
    routes: list[HttpRoute] = []
    for rule in vs.http:
        route = rule.route
        if any(m.port for m in route.matches):
            kept = tuple(m for m in route.matches if m.port in (0, port))
            if not kept:
                continue
            route = replace(route, matches=kept)
        routes.append(route)
    return tuple(routes)


def _tcp_routes(vs: VirtualServiceRules, service: Service, gateway: bool) -> list[TcpRoute]:
    """Per service port, the first ``tcp`` rule whose matches take that port."""
    found: list[TcpRoute] = []
    for port in service.ports:
        rule = next((r for r in vs.tcp if not r.ports or port.port in r.ports), None)
        if rule is not None and rule.destinations:
            found.append(TcpRoute(service.hostname, port.port, rule.destinations, gateway))
    return found


def cluster_endpoints(
    clusters: Iterable[Cluster], services: Mapping[str, Service]
) -> tuple[ClusterEndpoints, ...]:
    """The load assignment of each EDS cluster: its port's ready endpoints, narrowed to the
    subset."""
    assignments: list[ClusterEndpoints] = []
    for cluster in clusters:
        if not cluster.uses_eds:
            continue  # its endpoint is in the cluster itself
        service = services.get(cluster.service)
        port = service.port(cluster.port) if service else None
        endpoints = port.endpoints if port else ()
        wanted = cluster.subset_labels
        if len(wanted) == 1:
            pair = wanted[0]
            endpoints = tuple(e for e in endpoints if pair in e.labels)
        elif wanted:
            endpoints = tuple(e for e in endpoints if _has_labels(wanted, e.labels))
        assignments.append(ClusterEndpoints(cluster.name, endpoints))
    return tuple(sorted(assignments, key=lambda a: a.cluster))
