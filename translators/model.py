"""The mesh model: what the user's objects mean, with no Envoy, Kubernetes or protobuf types.

Resolvers turn objects into this model (plus diagnostics); builders turn the model into Envoy
resources. Everything here is a frozen dataclass of plain values so a model can be compared, hashed,
rendered for `/debug/model`, and reused unchanged when only part of the input changed.

Ports are numbers, durations are milliseconds, percentages are floats in [0, 100], and label sets
are sorted tuples of pairs so that equal inputs give equal models.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

Labels = tuple[tuple[str, str], ...]


def labels_of(mapping: Mapping[str, str] | None) -> Labels:
    """A canonical, hashable label set."""
    if not mapping:
        return ()
    return tuple(sorted((str(k), str(v)) for k, v in mapping.items()))


def labels_match(selector: Labels, labels: Labels) -> bool:
    """True when every selector pair is in ``labels`` (an empty selector matches everything)."""
    have = dict(labels)
    return all(have.get(key) == value for key, value in selector)


class Protocol(StrEnum):
    """How Envoy talks to a service port (from ``appProtocol`` or the port name, as Istio does)."""

    HTTP = "http"
    HTTP2 = "http2"
    GRPC = "grpc"
    TCP = "tcp"

    @property
    def is_http(self) -> bool:
        return self is not Protocol.TCP


# ------------------------------------------------------------------------------------------------
# Services and endpoints


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One ready backend address of a service port (``port`` is the resolved target port)."""

    address: str
    port: int
    labels: Labels = ()
    zone: str = ""
    pod: str = ""  # "namespace/name" of the pod behind it, when known


@dataclass(frozen=True, slots=True)
class ServicePort:
    port: int
    name: str = ""
    protocol: Protocol = Protocol.HTTP
    target_port: int | str = 0
    endpoints: tuple[Endpoint, ...] = ()


@dataclass(frozen=True, slots=True)
class Service:
    name: str
    namespace: str
    hostname: str  # reviews.default.svc.cluster.local
    ports: tuple[ServicePort, ...] = ()
    type: str = "ClusterIP"  # ClusterIP | NodePort | LoadBalancer | ExternalName
    load_balancer_class: str = ""
    headless: bool = False
    # An ExternalName service's DNS name: its clusters resolve this name, on each service port.
    external_name: str = ""

    def port(self, number: int) -> ServicePort | None:
        for port in self.ports:
            if port.port == number:
                return port
        return None


# ------------------------------------------------------------------------------------------------
# Traffic policy (DestinationRule)


class LoadBalancer(StrEnum):
    ROUND_ROBIN = "ROUND_ROBIN"
    LEAST_REQUEST = "LEAST_REQUEST"
    RANDOM = "RANDOM"
    PASSTHROUGH = "PASSTHROUGH"


@dataclass(frozen=True, slots=True)
class ConsistentHash:
    """Exactly one key is set: header, cookie, source IP or query parameter."""

    header: str = ""
    cookie: str = ""
    cookie_path: str = ""
    cookie_ttl_ms: int | None = None
    source_ip: bool = False
    query_parameter: str = ""
    maglev: bool = False
    table_size: int = 0  # Maglev table size, 0 = Envoy default
    minimum_ring_size: int = 0  # ring hash, 0 = Envoy default


@dataclass(frozen=True, slots=True)
class ConnectionPool:
    max_connections: int | None = None
    connect_timeout_ms: int | None = None
    max_pending_requests: int | None = None
    max_requests: int | None = None
    max_requests_per_connection: int | None = None
    max_retries: int | None = None
    idle_timeout_ms: int | None = None
    max_concurrent_streams: int | None = None
    # HTTP/2 PING keep-alive of upstream connections: interval and timeout
    h2_keepalive_interval_ms: int | None = None
    h2_keepalive_timeout_ms: int | None = None


@dataclass(frozen=True, slots=True)
class OutlierDetection:
    consecutive_5xx_errors: int | None = None
    consecutive_gateway_errors: int | None = None
    consecutive_local_origin_failures: int | None = None
    split_external_local_origin_errors: bool = False
    interval_ms: int | None = None
    base_ejection_time_ms: int | None = None
    max_ejection_percent: int | None = None
    min_health_percent: int | None = None
    error_codes: tuple[int, ...] = ()  # the statuses counted as errors (only 5xx when empty)


@dataclass(frozen=True, slots=True)
class TrafficPolicy:
    load_balancer: LoadBalancer = LoadBalancer.LEAST_REQUEST  # Istio's default since 1.14
    consistent_hash: ConsistentHash | None = None
    connection_pool: ConnectionPool | None = None
    outlier_detection: OutlierDetection | None = None


# ------------------------------------------------------------------------------------------------
# Clusters and their endpoints


@dataclass(frozen=True, slots=True)
class Cluster:
    """One Envoy cluster: a service port, optionally narrowed to a subset."""

    name: str  # outbound|80|v1|reviews.default.svc.cluster.local
    service: str  # hostname of the service
    port: int
    subset: str = ""
    subset_labels: Labels = ()
    protocol: Protocol = Protocol.HTTP
    policy: TrafficPolicy = field(default_factory=TrafficPolicy)
    # A DNS name (an ExternalName service's): the cluster's one endpoint is this name on
    # ``port``, resolved by the proxy, rather than endpoints sent over EDS ("" for EDS).
    dns_name: str = ""

    @property
    def uses_eds(self) -> bool:
        return not self.dns_name


@dataclass(frozen=True, slots=True)
class ClusterEndpoints:
    """The load assignment of one cluster (possibly empty: a service with no ready endpoints)."""

    cluster: str
    endpoints: tuple[Endpoint, ...] = ()


# ------------------------------------------------------------------------------------------------
# HTTP routing


class MatchKind(StrEnum):
    EXACT = "exact"
    PREFIX = "prefix"
    REGEX = "regex"
    PATH_PREFIX = "path_prefix"  # Kubernetes Ingress `Prefix`: matches whole path elements


@dataclass(frozen=True, slots=True)
class StringMatch:
    kind: MatchKind
    value: str


@dataclass(frozen=True, slots=True)
class KeyMatch:
    """A header or query parameter match; ``match`` None means "present"."""

    name: str
    match: StringMatch | None = None
    invert: bool = False


@dataclass(frozen=True, slots=True)
class RouteMatch:
    uri: StringMatch | None = None
    scheme: StringMatch | None = None
    method: StringMatch | None = None
    authority: StringMatch | None = None
    headers: tuple[KeyMatch, ...] = ()
    query_params: tuple[KeyMatch, ...] = ()
    ignore_uri_case: bool = False
    port: int = 0  # 0 = any port
    source_labels: Labels = ()


@dataclass(frozen=True, slots=True)
class HeaderOperations:
    set: tuple[tuple[str, str], ...] = ()
    add: tuple[tuple[str, str], ...] = ()
    remove: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.set or self.add or self.remove)


@dataclass(frozen=True, slots=True)
class Headers:
    request: HeaderOperations = field(default_factory=HeaderOperations)
    response: HeaderOperations = field(default_factory=HeaderOperations)

    def __bool__(self) -> bool:
        return bool(self.request or self.response)


@dataclass(frozen=True, slots=True)
class WeightedCluster:
    cluster: str
    weight: int
    headers: Headers = field(default_factory=Headers)


@dataclass(frozen=True, slots=True)
class Redirect:
    uri: str = ""
    authority: str = ""
    port: int = 0
    scheme: str = ""
    code: int = 301
    prefix_rewrite: str = ""  # replaces the matched path prefix


@dataclass(frozen=True, slots=True)
class Cors:
    """Cross-origin resource sharing for a route, as Istio's ``corsPolicy`` gives it."""

    allow_origins: tuple[StringMatch, ...] = ()
    allow_methods: tuple[str, ...] = ()
    allow_headers: tuple[str, ...] = ()
    expose_headers: tuple[str, ...] = ()
    max_age_s: int | None = None
    allow_credentials: bool | None = None
    forward_unmatched_preflights: bool | None = None  # None: Envoy's default (forward)


@dataclass(frozen=True, slots=True)
class DirectResponse:
    """A fixed response sent instead of forwarding: a status and an optional body."""

    status: int
    body: str | bytes | None = None


@dataclass(frozen=True, slots=True)
class Rewrite:
    uri: str = ""
    authority: str = ""
    regex: str = ""
    regex_substitution: str = ""


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    attempts: int
    per_try_timeout_ms: int | None = None
    retry_on: str = ""
    backoff_ms: int | None = None  # base interval between retries; Envoy's 25 ms when None
    ignore_previous_hosts: bool = True  # a retry avoids the hosts already tried


@dataclass(frozen=True, slots=True)
class Fault:
    """A delay and/or an abort, each applied to a percentage of requests (none if not given)."""

    delay_ms: int | None = None
    delay_percent: float = 0.0
    abort_http_status: int | None = None
    abort_grpc_status: str = ""
    abort_percent: float = 0.0


@dataclass(frozen=True, slots=True)
class Mirror:
    cluster: str
    percent: float = 100.0


@dataclass(frozen=True, slots=True)
class HttpRoute:
    """One rule: the first route whose matches (any of them; none = everything) fit wins."""

    name: str = ""
    matches: tuple[RouteMatch, ...] = ()
    destinations: tuple[WeightedCluster, ...] = ()  # empty only with a redirect
    redirect: Redirect | None = None
    rewrite: Rewrite | None = None
    timeout_ms: int | None = None
    retries: RetryPolicy | None = None
    fault: Fault | None = None
    mirror: Mirror | None = None
    headers: Headers = field(default_factory=Headers)
    # The VirtualService rule names exactly one destination. Istio keeps that destination's
    # consistent-hash affinity on retries (no "another host" predicate) only then.
    one_destination: bool = False
    direct_response: DirectResponse | None = None  # instead of destinations or a redirect
    mirrors: tuple[Mirror, ...] = ()  # Istio's ``mirrors``, after ``mirror`` if any
    cors: Cors | None = None


@dataclass(frozen=True, slots=True)
class VirtualHost:
    """Every name a client may use for one HTTP service port, and the rules for it.

    ``hosts`` are names without a port (``reviews``, ``reviews.default``, …, plus VirtualService
    hosts); builders add the ``:port`` forms a route table needs.
    """

    name: str  # reviews.default.svc.cluster.local:80
    port: int
    hosts: tuple[str, ...]
    routes: tuple[HttpRoute, ...]
    source: str = ""  # namespace/name of the VirtualService whose rules these are, if any


@dataclass(frozen=True, slots=True)
class TcpListener:
    """A gateway TCP listener (a LoadBalancer Service port) and where its connections go."""

    name: str  # namespace/name:port of the Service
    port: int
    destinations: tuple[WeightedCluster, ...]


@dataclass(frozen=True, slots=True)
class TcpRoute:
    """Where a VirtualService's ``tcp`` rules send the connections of one service port.

    ``gateway`` tells the scope: False for the mesh (sidecars), True for the load-balancer fleet.
    """

    service: str  # hostname of the service the rule is for
    port: int
    destinations: tuple[WeightedCluster, ...]
    gateway: bool = False


@dataclass(frozen=True, slots=True)
class MeshView:
    """What the clients in ``namespaces`` see where it differs from what every namespace sees.

    Objects exported to some namespaces only (``exportTo``) and DestinationRules outside a
    service's namespace make the difference. For each of ``hosts`` (service hostnames, or hosts
    that are no service) these clients get ``clusters``, ``endpoints`` and ``mesh_hosts``
    instead of the model's; nothing, for a service they do not see.

    A view with ``scope`` "sidecar" is what the sidecars of ``namespaces`` see under their
    Sidecar (``exportTo`` included); the one with no namespaces is the mesh default's.
    """

    namespaces: tuple[str, ...]
    hosts: tuple[str, ...]
    clusters: tuple[Cluster, ...] = ()
    endpoints: tuple[ClusterEndpoints, ...] = ()
    mesh_hosts: tuple[VirtualHost, ...] = ()
    scope: str = ""  # "" for exportTo; "sidecar" for a Sidecar's

    @property
    def key(self) -> str:
        """A name for the view, unique in its model."""
        names = ",".join(self.namespaces) if self.namespaces else "*"
        return f"{self.scope}:{names}" if self.scope else names


@dataclass(frozen=True, slots=True)
class EndpointsChange:
    """How a model's ``endpoints`` were made from an earlier model's: the assignments at ``at``
    were replaced in ``source``, giving ``result``; every other one is the very same object.

    A hint for the builder, which rewrites those assignments alone when what it built last is
    ``source`` (checked by identity; the hint is worth nothing for other tuples)."""

    source: tuple[ClusterEndpoints, ...]
    result: tuple[ClusterEndpoints, ...]
    at: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class MeshModel:
    """Everything one translation produced; sorted, so equal inputs give equal models.

    ``clusters``, ``endpoints`` and ``mesh_hosts`` are what the clients of a namespace see when
    no ``exportTo`` names their namespace; ``views`` hold what the others see instead.
    ``sidecar_views`` hold what the sidecars (and proxyless clients) of namespaces a Sidecar
    scopes see, and ``sidecar_default`` what those of every other namespace see under the root
    namespace's Sidecar (None without one).
    """

    services: tuple[Service, ...] = ()
    clusters: tuple[Cluster, ...] = ()
    endpoints: tuple[ClusterEndpoints, ...] = ()
    mesh_hosts: tuple[VirtualHost, ...] = ()  # sidecars and proxyless gRPC clients
    gateway_hosts: tuple[VirtualHost, ...] = ()  # the load-balancer fleet's HTTP listener
    gateway_tcp: tuple[TcpListener, ...] = ()  # the fleet's TCP listeners
    tcp_routes: tuple[TcpRoute, ...] = ()  # VirtualService tcp rules, for the TCP listeners
    views: tuple[MeshView, ...] = ()  # by namespaces; each namespace in one view at most
    sidecar_views: tuple[MeshView, ...] = ()  # likewise
    sidecar_default: MeshView | None = None
    # How ``endpoints`` differ from an earlier model's (not part of what the model is)
    endpoints_change: EndpointsChange | None = field(default=None, compare=False, repr=False)

    def view_for(self, namespace: str, sidecar: bool = False) -> MeshView | None:
        """What the clients in ``namespace`` see differently (None: what every namespace sees);
        with ``sidecar``, what its sidecars see (a Sidecar applies)."""
        if sidecar and (self.sidecar_views or self.sidecar_default is not None):
            if namespace:
                for view in self.sidecar_views:
                    if namespace in view.namespaces:
                        return view
            if self.sidecar_default is not None:
                return self.sidecar_default
        if namespace:
            for view in self.views:
                if namespace in view.namespaces:
                    return view
        return None

    @property
    def every_view(self) -> tuple[MeshView, ...]:
        """Every view of the model (exportTo's, the Sidecars', the mesh default's)."""
        default = (self.sidecar_default,) if self.sidecar_default is not None else ()
        return (*self.views, *self.sidecar_views, *default)


class Role(StrEnum):
    SIDECAR = "sidecar"
    GATEWAY = "gateway"
    PROXYLESS = "proxyless"


@dataclass(frozen=True, slots=True)
class NodeGroup:
    """Nodes that receive the same snapshot.

    ``port`` is the listener port the role serves HTTP on: a sidecar's outbound port (default 15001)
    or a gateway's HTTP port (default 8080); unused for proxyless gRPC clients. ``namespace`` is
    the namespace the nodes run in: they see what is exported to it ("" for none: only what is
    exported to every namespace).
    """

    role: Role
    port: int = 0
    namespace: str = ""

    @property
    def key(self) -> str:
        """``sidecar:15001``, ``gateway:8080`` or ``proxyless``, then ``/namespace`` if any."""
        base = f"{self.role.value}:{self.port}" if self.port else self.role.value
        return f"{base}/{self.namespace}" if self.namespace else base
