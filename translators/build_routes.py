"""Route configurations: mesh tables per port, the sidecar's outbound table and the gateway's.

Envoy rejects a route configuration in which a domain appears twice, so every table claims each
domain once: the first virtual host to claim a name keeps it.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Iterable, Mapping, Sequence
from itertools import compress, count

from envoy.config.core.v3 import base_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.common.fault.v3 import fault_pb2 as common_fault_pb2
from envoy.extensions.filters.http.cors.v3 import cors_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.extensions.retry.host.previous_hosts.v3 import previous_hosts_pb2
from envoy.type.matcher.v3 import regex_pb2, string_pb2
from envoy.type.v3 import percent_pb2

from translators import names
from translators.build_clusters import duration
from translators.model import (
    Cluster,
    ConsistentHash,
    Cors,
    DirectResponse,
    Fault,
    HeaderOperations,
    Headers,
    HttpRoute,
    KeyMatch,
    MatchKind,
    MeshModel,
    Mirror,
    Redirect,
    RetryPolicy,
    RouteMatch,
    StringMatch,
    VirtualHost,
    WeightedCluster,
)
from translators.resources import (
    Built,
    LengthPrefixes,
    length_delimited,
    repeated_string_field,
    serialize,
    string_field,
    varint_field,
)

FAULT_FILTER = "envoy.filters.http.fault"
CORS_FILTER = "envoy.filters.http.cors"
DEFAULT_RETRY_ON = "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes"
DEFAULT_RETRIABLE_STATUS_CODES = (503,)
# What a route gets when its VirtualService says nothing about retries (Istio's default).
DEFAULT_RETRIES = RetryPolicy(attempts=2)
# Istio retries on another host than the one that failed, trying up to 5 times to pick one.
PREVIOUS_HOSTS = "envoy.retry_host_predicates.previous_hosts"
HOST_SELECTION_RETRY_MAX_ATTEMPTS = 5
NO_DESTINATION_STATUS = 503  # a rule with neither destinations nor a redirect

# Default ports by redirect scheme; listeners are plain HTTP, so no scheme means http.
_SCHEME_PORTS = {"": 80, "http": 80, "https": 443}
_REDIRECT_CODES = {
    301: rc.RedirectAction.MOVED_PERMANENTLY,
    302: rc.RedirectAction.FOUND,
    303: rc.RedirectAction.SEE_OTHER,
    307: rc.RedirectAction.TEMPORARY_REDIRECT,
    308: rc.RedirectAction.PERMANENT_REDIRECT,
}

GRPC_STATUS_CODES = {
    "OK": 0,
    "CANCELLED": 1,
    "UNKNOWN": 2,
    "INVALID_ARGUMENT": 3,
    "DEADLINE_EXCEEDED": 4,
    "NOT_FOUND": 5,
    "ALREADY_EXISTS": 6,
    "PERMISSION_DENIED": 7,
    "RESOURCE_EXHAUSTED": 8,
    "FAILED_PRECONDITION": 9,
    "ABORTED": 10,
    "OUT_OF_RANGE": 11,
    "UNIMPLEMENTED": 12,
    "INTERNAL": 13,
    "UNAVAILABLE": 14,
    "DATA_LOSS": 15,
    "UNAUTHENTICATED": 16,
}

# Envoy refuses header operations on pseudo-headers and Host.
_PROTECTED_HEADERS = frozenset({"host"})
_AUTHORITY_HEADERS = frozenset({"host", ":authority"})


# ------------------------------------------------------------------------------------------------
# Matches


def string_matcher(match: StringMatch) -> string_pb2.StringMatcher:
    """An Envoy StringMatcher (path-prefix semantics become a plain prefix outside paths)."""
    if match.kind is MatchKind.EXACT:
        return string_pb2.StringMatcher(exact=match.value)
    if match.kind is MatchKind.REGEX:
        return string_pb2.StringMatcher(safe_regex=regex_pb2.RegexMatcher(regex=match.value))
    return string_pb2.StringMatcher(prefix=match.value)


def header_matcher(name: str, match: StringMatch | None, invert: bool = False) -> rc.HeaderMatcher:
    """Match a header's value, or its presence when ``match`` is None.

    An inverted value match (Istio's ``withoutHeaders``) takes a missing header as empty, as
    Istio configures it, so that it matches requests without the header; Envoy would otherwise
    fail the match whenever the header is missing.
    """
    out = rc.HeaderMatcher(name=name, invert_match=invert)
    if match is None:
        out.present_match = True
    else:
        out.string_match.CopyFrom(string_matcher(match))
        out.treat_missing_header_as_empty = invert
    return out


def query_matcher(key: KeyMatch) -> rc.QueryParameterMatcher:
    out = rc.QueryParameterMatcher(name=key.name)
    if key.match is None:
        out.present_match = True
    else:
        out.string_match.CopyFrom(string_matcher(key.match))
    return out


def route_match(match: RouteMatch | None) -> rc.RouteMatch:
    """The Envoy match for one model match; no match (or no uri) matches every path."""
    out = rc.RouteMatch()
    uri = match.uri if match is not None else None
    if uri is None:
        out.prefix = "/"
    elif uri.kind is MatchKind.EXACT:
        out.path = uri.value
    elif uri.kind is MatchKind.REGEX:
        out.safe_regex.regex = uri.value
    elif uri.kind is MatchKind.PATH_PREFIX:
        trimmed = uri.value.rstrip("/")
        if trimmed:
            out.path_separated_prefix = trimmed
        else:
            out.prefix = "/"
    else:
        out.prefix = uri.value
    if match is None:
        return out
    if match.ignore_uri_case:
        out.case_sensitive.value = False
    for pseudo, value in ((":scheme", match.scheme), (":method", match.method)):
        if value is not None:
            out.headers.append(header_matcher(pseudo, value))
    if match.authority is not None:
        out.headers.append(header_matcher(":authority", match.authority))
    for key in match.headers:
        out.headers.append(header_matcher(key.name, key.match, key.invert))
    for key in match.query_params:
        out.query_parameters.append(query_matcher(key))
    return out


# ------------------------------------------------------------------------------------------------
# Header operations, percentages, faults


def header_value_options(ops: HeaderOperations) -> list[base_pb2.HeaderValueOption]:
    """``set`` overwrites, ``add`` appends; pseudo-headers and Host are left alone."""
    overwrite = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
    append = base_pb2.HeaderValueOption.APPEND_IF_EXISTS_OR_ADD
    out = []
    for pairs, action in ((ops.set, overwrite), (ops.add, append)):
        for key, value in pairs:
            if _modifiable(key):
                out.append(
                    base_pb2.HeaderValueOption(
                        header=base_pb2.HeaderValue(key=key, value=value), append_action=action
                    )
                )
    return out


def _modifiable(header: str) -> bool:
    return not header.startswith(":") and header.lower() not in _PROTECTED_HEADERS


def header_authority(ops: HeaderOperations) -> str:
    """The authority a request header operation on ``host`` or ``:authority`` sets ("" for
    none): Envoy cannot set those headers, so Istio rewrites the authority instead (``set``
    winning over ``add``)."""
    for pairs in (ops.set, ops.add):
        found = [value for key, value in pairs if key.lower() in _AUTHORITY_HEADERS]
        if found:
            return found[-1]
    return ""


def _removable(ops: HeaderOperations) -> list[str]:
    return [h for h in ops.remove if _modifiable(h)]


def fractional_percent(percent: float) -> percent_pb2.FractionalPercent:
    """A percentage in [0, 100] as parts per million, exact to four decimals."""
    clamped = min(max(percent, 0.0), 100.0)
    return percent_pb2.FractionalPercent(
        numerator=round(clamped * 10_000), denominator=percent_pb2.FractionalPercent.MILLION
    )


def http_fault(fault: Fault) -> fault_pb2.HTTPFault:
    """The fault filter's per-route config: a fixed delay and/or an HTTP or gRPC abort."""
    out = fault_pb2.HTTPFault()
    if fault.delay_ms is not None:
        out.delay.CopyFrom(
            common_fault_pb2.FaultDelay(
                fixed_delay=duration(fault.delay_ms),
                percentage=fractional_percent(fault.delay_percent),
            )
        )
    if fault.abort_http_status is not None:
        out.abort.http_status = fault.abort_http_status
        out.abort.percentage.CopyFrom(fractional_percent(fault.abort_percent))
    elif fault.abort_grpc_status:
        out.abort.grpc_status = grpc_status_code(fault.abort_grpc_status)
        out.abort.percentage.CopyFrom(fractional_percent(fault.abort_percent))
    return out


def grpc_status_code(status: str) -> int:
    """A gRPC status given by name (``UNAVAILABLE``) or number (``14``); unknown → UNKNOWN."""
    text = status.strip().upper()
    if text.isdigit():
        return int(text)
    return GRPC_STATUS_CODES.get(text, GRPC_STATUS_CODES["UNKNOWN"])


# ------------------------------------------------------------------------------------------------
# Actions


def retry_policy(retries: RetryPolicy, other_host: bool = True) -> rc.RetryPolicy | None:
    """Istio's retry semantics; None when retries are off (0 attempts).

    Status codes in ``retry_on`` (``"503,gateway-error"``) become retriable status codes (503
    only when ``retry_on`` is not given). With ``other_host`` a retry goes to another host than
    the one that failed, as in Istio, which leaves that out where it would break a consistent
    hash's affinity.
    """
    if retries.attempts <= 0:
        return None
    conditions: list[str] = []
    codes: list[int] = []
    if not retries.retry_on:
        codes.extend(DEFAULT_RETRIABLE_STATUS_CODES)
    for raw in (retries.retry_on or DEFAULT_RETRY_ON).split(","):
        item = raw.strip()
        if item.isdigit():
            codes.append(int(item))
        elif item and item not in conditions:
            conditions.append(item)
    if codes and "retriable-status-codes" not in conditions:
        conditions.append("retriable-status-codes")
    out = rc.RetryPolicy(retry_on=",".join(conditions), retriable_status_codes=sorted(set(codes)))
    out.num_retries.value = retries.attempts
    if retries.per_try_timeout_ms is not None:
        out.per_try_timeout.CopyFrom(duration(retries.per_try_timeout_ms))
    if retries.backoff_ms is not None:
        out.retry_back_off.base_interval.CopyFrom(duration(retries.backoff_ms))
    if other_host and retries.ignore_previous_hosts:
        predicate = out.retry_host_predicate.add(name=PREVIOUS_HOSTS)
        predicate.typed_config.Pack(previous_hosts_pb2.PreviousHostsPredicate())
        out.host_selection_retry_max_attempts = HOST_SELECTION_RETRY_MAX_ATTEMPTS
    return out


def hash_policy(chash: ConsistentHash) -> rc.RouteAction.HashPolicy:
    """The request attribute a consistent-hash cluster hashes on."""
    out = rc.RouteAction.HashPolicy()
    if chash.header:
        out.header.header_name = chash.header
    elif chash.cookie:
        out.cookie.name = chash.cookie
        out.cookie.path = chash.cookie_path
        if chash.cookie_ttl_ms is not None:
            out.cookie.ttl.CopyFrom(duration(chash.cookie_ttl_ms))
    elif chash.query_parameter:
        out.query_parameter.name = chash.query_parameter
    else:
        out.connection_properties.source_ip = True
    return out


def _mirror_policy(mirror: Mirror) -> rc.RouteAction.RequestMirrorPolicy:
    out = rc.RouteAction.RequestMirrorPolicy(cluster=mirror.cluster)
    out.runtime_fraction.default_value.CopyFrom(fractional_percent(mirror.percent))
    return out


def _add_headers(
    target: rc.Route | rc.WeightedCluster.ClusterWeight | rc.VirtualHost, headers: Headers
) -> None:
    if not headers:
        return
    target.request_headers_to_add.extend(header_value_options(headers.request))
    target.request_headers_to_remove.extend(_removable(headers.request))
    target.response_headers_to_add.extend(header_value_options(headers.response))
    target.response_headers_to_remove.extend(_removable(headers.response))


def cors_policy(cors: Cors) -> cors_pb2.CorsPolicy:
    """Envoy's per-route CORS policy, as Istio writes it."""
    out = cors_pb2.CorsPolicy(
        allow_origin_string_match=[string_matcher(origin) for origin in cors.allow_origins],
        allow_methods=",".join(cors.allow_methods),
        allow_headers=",".join(cors.allow_headers),
        expose_headers=",".join(cors.expose_headers),
    )
    if cors.max_age_s is not None:
        out.max_age = str(cors.max_age_s)
    if cors.allow_credentials is not None:
        out.allow_credentials.value = cors.allow_credentials
    if cors.forward_unmatched_preflights is not None:
        out.forward_not_matching_preflights.value = cors.forward_unmatched_preflights
    return out


def _direct(direct: DirectResponse) -> rc.DirectResponseAction:
    out = rc.DirectResponseAction(status=direct.status)
    if isinstance(direct.body, str):
        out.body.inline_string = direct.body
    elif direct.body is not None:
        out.body.inline_bytes = direct.body
    return out


def _redirect(redirect: Redirect) -> rc.RedirectAction:
    out = rc.RedirectAction(
        response_code=_REDIRECT_CODES.get(redirect.code, rc.RedirectAction.MOVED_PERMANENTLY)
    )
    if redirect.uri:
        out.path_redirect = redirect.uri
    elif redirect.prefix_rewrite:
        out.prefix_rewrite = redirect.prefix_rewrite
    if redirect.authority:
        out.host_redirect = redirect.authority
    # As Istio: the scheme's default port is left out of the Location.
    if redirect.port and redirect.port != _SCHEME_PORTS.get(redirect.scheme):
        out.port_redirect = redirect.port
    if redirect.scheme:
        out.scheme_redirect = redirect.scheme
    return out


# A route is written field by field in field number order (see ``resources``); the parts most
# routes do not have are built as messages and serialized in their place.
_MATCH = rc.Route.MATCH_FIELD_NUMBER
_ACTION = rc.Route.ROUTE_FIELD_NUMBER
_REDIRECT = rc.Route.REDIRECT_FIELD_NUMBER
_DIRECT_RESPONSE = rc.Route.DIRECT_RESPONSE_FIELD_NUMBER
# then request/response header operations and typed_per_filter_config (9–13), then:
_ROUTE_NAME = rc.Route.NAME_FIELD_NUMBER
_CLUSTER = rc.RouteAction.CLUSTER_FIELD_NUMBER
_WEIGHTED_CLUSTERS = rc.RouteAction.WEIGHTED_CLUSTERS_FIELD_NUMBER
_PREFIX_REWRITE = rc.RouteAction.PREFIX_REWRITE_FIELD_NUMBER
_HOST_REWRITE_LITERAL = rc.RouteAction.HOST_REWRITE_LITERAL_FIELD_NUMBER
_TIMEOUT = rc.RouteAction.TIMEOUT_FIELD_NUMBER
_RETRY_POLICY = rc.RouteAction.RETRY_POLICY_FIELD_NUMBER
_HASH_POLICY = rc.RouteAction.HASH_POLICY_FIELD_NUMBER
_MIRROR_POLICIES = rc.RouteAction.REQUEST_MIRROR_POLICIES_FIELD_NUMBER
_REGEX_REWRITE = rc.RouteAction.REGEX_REWRITE_FIELD_NUMBER
_WEIGHTED_CLUSTER = rc.WeightedCluster.CLUSTERS_FIELD_NUMBER
_WEIGHT_NAME = rc.WeightedCluster.ClusterWeight.NAME_FIELD_NUMBER
_WEIGHT = rc.WeightedCluster.ClusterWeight.WEIGHT_FIELD_NUMBER
# then the cluster's header operations (4–9)

_ACTIONS = LengthPrefixes(_ACTION)
_WEIGHTED_CLUSTER_ENTRIES = LengthPrefixes(_WEIGHTED_CLUSTER)
_NO_DESTINATION = length_delimited(_DIRECT_RESPONSE, varint_field(1, NO_DESTINATION_STATUS))
_NO_TIMEOUT = length_delimited(_TIMEOUT, b"")  # 0: no timeout; Envoy would otherwise use 15 s


@functools.cache
def _match_all() -> bytes:
    return length_delimited(_MATCH, serialize(route_match(None)))


@functools.lru_cache(maxsize=1024)
def _retry_policy_field(retries: RetryPolicy, other_host: bool) -> bytes:
    """``retry_policy`` as a RouteAction field, written once per distinct policy: most routes
    have the default one."""
    policy = retry_policy(retries, other_host)
    return length_delimited(_RETRY_POLICY, serialize(policy)) if policy is not None else b""


def _regex_rewrite(pattern: str, substitution: str) -> bytes:
    rewrite = regex_pb2.RegexMatchAndSubstitute(
        pattern=regex_pb2.RegexMatcher(regex=pattern), substitution=substitution
    )
    return length_delimited(_REGEX_REWRITE, serialize(rewrite))


@functools.lru_cache(maxsize=1024)
def _weight_field(weight: int) -> bytes:
    return length_delimited(_WEIGHT, varint_field(1, weight))


def _cluster_weight(destination: WeightedCluster) -> bytes:
    data = string_field(_WEIGHT_NAME, destination.cluster) + _weight_field(destination.weight)
    if destination.headers:
        headers = rc.WeightedCluster.ClusterWeight()
        _add_headers(headers, destination.headers)
        authority = header_authority(destination.headers.request)
        if authority:
            headers.host_rewrite_literal = authority
        data += serialize(headers)
    return _WEIGHTED_CLUSTER_ENTRIES[len(data)] + data


def _route_action(
    route: HttpRoute,
    destinations: Sequence[WeightedCluster],
    match: RouteMatch | None,
    clusters: Mapping[str, Cluster],
) -> bytes:
    """The forwarding action to ``destinations`` (at least one), encoded."""
    if len(destinations) == 1:
        parts = [length_delimited(_CLUSTER, destinations[0].cluster.encode())]  # oneof: always
    else:
        weighted = b"".join([_cluster_weight(d) for d in destinations])
        parts = [length_delimited(_WEIGHTED_CLUSTERS, weighted)]
    regex_rewrite = b""
    rewrite = route.rewrite
    if rewrite is not None:
        if rewrite.regex:
            regex_rewrite = _regex_rewrite(rewrite.regex, rewrite.regex_substitution)
        elif rewrite.uri:
            uri = match.uri if match is not None else None
            if uri is None or uri.kind in (MatchKind.PREFIX, MatchKind.PATH_PREFIX):
                parts.append(string_field(_PREFIX_REWRITE, rewrite.uri))
            else:
                regex_rewrite = _regex_rewrite("^.*$", rewrite.uri)
    authority = _authority(route, destinations)
    if authority:
        parts.append(string_field(_HOST_REWRITE_LITERAL, authority))
    if route.timeout_ms:
        parts.append(length_delimited(_TIMEOUT, serialize(duration(route.timeout_ms))))
    else:
        parts.append(_NO_TIMEOUT)
    hashing = None
    for destination in destinations:
        target = clusters.get(destination.cluster)
        if target is not None and target.policy.consistent_hash is not None:
            hashing = target.policy.consistent_hash
            break
    # A rule with one destination that hashes consistently retries on the same host (Istio).
    other_host = hashing is None or not route.one_destination
    retries = route.retries if route.retries is not None else DEFAULT_RETRIES
    parts.append(_retry_policy_field(retries, other_host))
    if hashing is not None:
        parts.append(length_delimited(_HASH_POLICY, serialize(hash_policy(hashing))))
    for mirror in (route.mirror, *route.mirrors):
        if mirror is not None:
            policy = _mirror_policy(mirror)
            parts.append(length_delimited(_MIRROR_POLICIES, serialize(policy)))
    parts.append(regex_rewrite)
    data = b"".join(parts)
    return _ACTIONS[len(data)] + data


def _authority(route: HttpRoute, destinations: Sequence[WeightedCluster]) -> str:
    """The authority the route rewrites to, by Istio's precedence: ``rewrite.authority``, then
    the rule's host header, then a single destination's (weighted ones rewrite their own)."""
    if route.rewrite is not None and route.rewrite.authority:
        return route.rewrite.authority
    found = header_authority(route.headers.request)
    if not found and len(destinations) == 1:
        found = header_authority(destinations[0].headers.request)
    return found


def encode_routes(route: HttpRoute, clusters: Mapping[str, Cluster], port: int = 0) -> list[bytes]:
    """One Envoy route per match of a rule (a rule without matches matches everything).

    Matches bound to another port than ``port`` are left out; a rule left with none is dropped.
    """
    matches: Sequence[RouteMatch | None] = route.matches or (None,)
    if port:
        matches = [m for m in matches if m is None or not m.port or m.port == port]
    destinations = [d for d in route.destinations if d.weight > 0] or list(route.destinations[:1])
    outcome = b""
    lifted: Headers | None = None  # a single destination's headers move up to the route
    if route.redirect is not None:
        outcome = length_delimited(_REDIRECT, serialize(_redirect(route.redirect)))
    elif route.direct_response is not None:
        outcome = length_delimited(_DIRECT_RESPONSE, serialize(_direct(route.direct_response)))
    elif not route.destinations:
        outcome = _NO_DESTINATION
    elif len(destinations) == 1:
        lifted = destinations[0].headers
    tail = string_field(_ROUTE_NAME, route.name)
    if route.headers or lifted or route.fault is not None or route.cors is not None:
        extra = rc.Route()
        _add_headers(extra, route.headers)
        if lifted:
            _add_headers(extra, lifted)
        if route.fault is not None:
            extra.typed_per_filter_config[FAULT_FILTER].Pack(http_fault(route.fault))
        if route.cors is not None:
            # Optional: a proxyless gRPC client, which has no CORS filter, ignores it.
            optional = rc.FilterConfig(is_optional=True)
            optional.config.Pack(cors_policy(route.cors))
            extra.typed_per_filter_config[CORS_FILTER].Pack(optional)
        tail = serialize(extra) + tail
    out = []
    for match in matches:
        head = (
            _match_all()
            if match is None
            else length_delimited(_MATCH, serialize(route_match(match)))
        )
        action = outcome or _route_action(route, destinations, match, clusters)
        out.append(head + action + tail)
    return out


def build_routes(
    route: HttpRoute, clusters: Mapping[str, Cluster], port: int = 0
) -> list[rc.Route]:
    """The Envoy routes of a rule (see ``encode_routes``)."""
    return [rc.Route.FromString(data) for data in encode_routes(route, clusters, port)]


# ------------------------------------------------------------------------------------------------
# Virtual hosts and tables


def host_domains(host: str, port: int) -> tuple[str, ...]:
    """A host and its ``host:port`` form (``*`` alone already matches every authority)."""
    if host == "*" or not port:
        return (host,)
    return (host, f"{host}:{port}")


class VirtualHostRoutes:
    """The routes of each virtual host of one model, built once and shared by every table.

    With ``shared`` (those of a model this one differs from only in the clusters named
    ``changed``), a virtual host that routes to none of those takes the shared bytes.
    """

    def __init__(
        self,
        model: MeshModel,
        shared: VirtualHostRoutes | None = None,
        changed: frozenset[str] = frozenset(),
    ) -> None:
        self.clusters: dict[str, Cluster] = {c.name: c for c in model.clusters}
        self._built: dict[int, tuple[VirtualHost, bytes]] = {}
        self._shared, self._changed = shared, changed

    def serialized(self, vhost: VirtualHost) -> bytes:
        """The routes of ``vhost`` as Envoy ``VirtualHost.routes`` fields, canonical bytes."""
        found = self._built.get(id(vhost))
        if found is not None and found[0] is vhost:
            return found[1]
        if self._shared is not None and not _routes_to(vhost, self._changed):
            return self._shared.serialized(vhost)
        prefixes = _ROUTE_ENTRIES
        data = b"".join(
            [
                part
                for route in vhost.routes
                for encoded in encode_routes(route, self.clusters, vhost.port)
                for part in (prefixes[len(encoded)], encoded)
            ]
        )
        self._built[id(vhost)] = (vhost, data)
        return data


def _routes_to(vhost: VirtualHost, clusters: frozenset[str]) -> bool:
    """Whether a route of ``vhost`` sends or mirrors requests to one of ``clusters``."""
    return bool(clusters) and any(
        target in clusters
        for route in vhost.routes
        for target in (
            *(d.cluster for d in route.destinations),
            *((route.mirror.cluster,) if route.mirror else ()),
            *(m.cluster for m in route.mirrors),
        )
    )


_TABLE_NAME = route_pb2.RouteConfiguration.NAME_FIELD_NUMBER
_VIRTUAL_HOSTS = route_pb2.RouteConfiguration.VIRTUAL_HOSTS_FIELD_NUMBER
# A virtual host is written as its name and domains, then the bytes of its routes (which hold
# nothing else): the field order of rc.VirtualHost.
_VHOST_NAME = rc.VirtualHost.NAME_FIELD_NUMBER
_DOMAINS = rc.VirtualHost.DOMAINS_FIELD_NUMBER
_ROUTE_ENTRIES = LengthPrefixes(rc.VirtualHost.ROUTES_FIELD_NUMBER)
_VIRTUAL_HOST_ENTRIES = LengthPrefixes(_VIRTUAL_HOSTS)

Layout = tuple[bytes | None, ...]
"""Where each virtual host (in the model's order) goes in its route table: its name and domains
there, encoded, or None when it claims no domain. A layout depends only on the names, ports and
hosts of the virtual hosts, not on their routes, so a routing change keeps it."""


class _Claims:
    """The domains and virtual host names of one route table: each claimed once."""

    def __init__(self) -> None:
        self.domains: set[str] = set()
        self.vhost_names: set[str] = set()

    def claim(self, domains: Iterable[str]) -> list[str]:
        taken = self.domains
        claimed = [domain for domain in dict.fromkeys(domains) if domain not in taken]
        taken.update(claimed)
        return claimed

    def place(self, vhost: VirtualHost, domains: list[str]) -> bytes | None:
        """``vhost``'s name (made unique) and ``domains`` in this table, encoded."""
        if not domains:
            return None
        name = vhost.name
        suffix = 1
        while name in self.vhost_names:
            suffix += 1
            name = f"{vhost.name}#{suffix}"
        self.vhost_names.add(name)
        return string_field(_VHOST_NAME, name) + repeated_string_field(_DOMAINS, domains)


def layout_key(
    hosts: Sequence[VirtualHost],
) -> tuple[tuple[str, ...], tuple[int, ...], tuple[tuple[str, ...], ...]]:
    """What the layouts of ``hosts`` depend on: their names, ports and hosts."""
    return (
        tuple(vhost.name for vhost in hosts),
        tuple(vhost.port for vhost in hosts),
        tuple(vhost.hosts for vhost in hosts),
    )


def same_layout_key(before: Sequence[VirtualHost], after: Sequence[VirtualHost]) -> bool:
    """Whether ``layout_key`` of the two is equal, looking only at the virtual hosts of
    ``after`` that are not the very objects of ``before``."""
    if len(before) != len(after):
        return False
    return all(
        (before[at].name, before[at].port, before[at].hosts)
        == (after[at].name, after[at].port, after[at].hosts)
        for at in compress(count(), map(operator.is_not, before, after))
    )


def table_bytes(
    name: str, placed: Iterable[tuple[VirtualHost, bytes | None]], routes: VirtualHostRoutes
) -> bytes:
    parts = [string_field(_TABLE_NAME, name)]
    for vhost, place in placed:
        if place is not None:
            routes_data = routes.serialized(vhost)
            parts += (_VIRTUAL_HOST_ENTRIES[len(place) + len(routes_data)], place, routes_data)
    return b"".join(parts)


def port_layout(hosts: Sequence[VirtualHost]) -> Layout:
    """Each virtual host in the table of its port; domains are each host and ``host:port``."""
    tables: dict[int, _Claims] = {}
    out = []
    for vhost in hosts:
        claims = tables.get(vhost.port)
        if claims is None:
            claims = tables[vhost.port] = _Claims()
        domains = [d for host in vhost.hosts for d in host_domains(host, vhost.port)]
        out.append(claims.place(vhost, claims.claim(domains)))
    return tuple(out)


def port_route_tables(
    model: MeshModel, routes: VirtualHostRoutes | None = None, layout: Layout | None = None
) -> Built[route_pb2.RouteConfiguration]:
    """One table per mesh port, named by the port (see ``port_layout``)."""
    routes = routes or VirtualHostRoutes(model)
    if layout is None:
        layout = port_layout(model.mesh_hosts)
    by_port: dict[int, list[tuple[VirtualHost, bytes | None]]] = {}
    for vhost, place in zip(model.mesh_hosts, layout, strict=True):
        by_port.setdefault(vhost.port, []).append((vhost, place))
    ports = sorted(by_port)
    table_names = [names.route_table_name(port) for port in ports]
    bodies = [
        table_bytes(name, by_port[port], routes)
        for name, port in zip(table_names, ports, strict=True)
    ]
    return Built(route_pb2.RouteConfiguration, table_names, bodies)


def owned_bare_hosts(hosts: Sequence[VirtualHost]) -> list[list[str]]:
    """For each virtual host (by index), the bare host names it owns, in its order: a name
    belongs to the first virtual host that has it, port 80 first, then ascending."""
    order = sorted(range(len(hosts)), key=lambda i: (hosts[i].port != 80, hosts[i].port, i))
    taken: set[str] = set()
    owned: list[list[str]] = [[] for _ in hosts]
    for index in order:
        mine = [host for host in dict.fromkeys(hosts[index].hosts) if host not in taken]
        taken.update(mine)
        owned[index] = mine
    return owned


def sidecar_layout(hosts: Sequence[VirtualHost]) -> Layout:
    """Every mesh virtual host in a sidecar's outbound table.

    A client may send ``host:port`` for any service port, or the bare host, which goes to port 80
    when the service has it (else to its lowest port).
    """
    claims = _Claims()
    claim = claims.claim
    with_port = []
    for vhost in hosts:
        suffix = f":{vhost.port}"
        with_port.append(claim([host + suffix for host in vhost.hosts if host != "*"]))
    place = claims.place
    owned = owned_bare_hosts(hosts)
    return tuple(
        place(vhost, claim(bare) + domains)
        for vhost, bare, domains in zip(hosts, owned, with_port, strict=True)
    )


def sidecar_route_tables(
    model: MeshModel,
    port: int,
    routes: VirtualHostRoutes | None = None,
    layout: Layout | None = None,
) -> Built[route_pb2.RouteConfiguration]:
    """The tables of a sidecar listening on ``port``: its one outbound table, with every mesh
    virtual host (see ``sidecar_layout``)."""
    routes = routes or VirtualHostRoutes(model)
    if layout is None:
        layout = sidecar_layout(model.mesh_hosts)
    name = names.route_table_name(port)
    placed = zip(model.mesh_hosts, layout, strict=True)
    return Built(route_pb2.RouteConfiguration, [name], [table_bytes(name, placed, routes)])


def sidecar_route_table(
    model: MeshModel, port: int, routes: VirtualHostRoutes | None = None
) -> route_pb2.RouteConfiguration:
    """The outbound table of a sidecar listening on ``port`` (see ``sidecar_route_tables``)."""
    return sidecar_route_tables(model, port, routes)[0]


def gateway_layout(hosts: Sequence[VirtualHost], port: int) -> Layout:
    """The gateway's virtual hosts in its table; domains are the hosts and ``host:port``."""
    claims = _Claims()
    return tuple(
        claims.place(vhost, claims.claim([d for h in vhost.hosts for d in host_domains(h, port)]))
        for vhost in hosts
    )


def gateway_route_tables(
    model: MeshModel,
    port: int,
    routes: VirtualHostRoutes | None = None,
    layout: Layout | None = None,
) -> Built[route_pb2.RouteConfiguration]:
    """The gateway's one table, named by its HTTP port (see ``gateway_layout``)."""
    routes = routes or VirtualHostRoutes(model)
    if layout is None:
        layout = gateway_layout(model.gateway_hosts, port)
    name = names.route_table_name(port)
    placed = zip(model.gateway_hosts, layout, strict=True)
    return Built(route_pb2.RouteConfiguration, [name], [table_bytes(name, placed, routes)])


def gateway_route_table(
    model: MeshModel, port: int, routes: VirtualHostRoutes | None = None
) -> route_pb2.RouteConfiguration:
    """The gateway's table (see ``gateway_route_tables``)."""
    return gateway_route_tables(model, port, routes)[0]


def _sidecar_domains(vhost: VirtualHost) -> tuple[str, ...]:
    """Every domain a virtual host may claim in a sidecar's table: its hosts, bare and with
    its port."""
    suffix = f":{vhost.port}"
    return (*vhost.hosts, *(host + suffix for host in vhost.hosts if host != "*"))


def sidecar_claimants(hosts: Sequence[VirtualHost]) -> dict[str, str | None]:
    """For each domain some of ``hosts`` may claim in a sidecar's table, the host key (the
    virtual host's name without its port) of the only one that may, or None when several may."""
    found: dict[str, str | None] = {}
    for vhost in hosts:
        key = vhost.name.rpartition(":")[0]
        for domain in _sidecar_domains(vhost):
            if found.setdefault(domain, key) != key:
                found[domain] = None
    return found


def sidecar_layout_changed(
    base: Sequence[VirtualHost],
    base_layout: Layout,
    claimants: Mapping[str, str | None],
    hosts: Sequence[VirtualHost],
    keys: frozenset[str],
) -> Layout | None:
    """The sidecar layout of ``hosts``, which are ``base`` with the virtual hosts of ``keys``
    (host keys) replaced, from ``base_layout``: the others keep their place when no domain the
    replaced ones (old or new) may claim is one another virtual host may claim. None when one
    is (then only a whole layout is right)."""
    replaced = [v for v in hosts if v.name.rpartition(":")[0] in keys]
    removed = [v for v in base if v.name.rpartition(":")[0] in keys]
    for vhost in (*replaced, *removed):
        for domain in _sidecar_domains(vhost):
            owner = claimants.get(domain, vhost.name.rpartition(":")[0])
            if owner not in keys:
                return None
    placed = dict(zip(map(id, base), base_layout, strict=True))
    mine = dict(zip(map(id, replaced), sidecar_layout(replaced), strict=True))
    return tuple(mine[id(v)] if id(v) in mine else placed[id(v)] for v in hosts)
