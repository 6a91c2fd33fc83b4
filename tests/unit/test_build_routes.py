"""Model virtual hosts and rules → Envoy route configurations."""

from __future__ import annotations

from dataclasses import replace

import pytest
from envoy.config.core.v3 import base_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.http.cors.v3 import cors_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.type.v3 import percent_pb2

from translators.build_routes import (
    DEFAULT_RETRY_ON,
    FAULT_FILTER,
    build_routes,
    gateway_route_table,
    layout_key,
    port_route_tables,
    route_match,
    same_layout_key,
    sidecar_route_table,
)
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
    Rewrite,
    RouteMatch,
    StringMatch,
    TrafficPolicy,
    VirtualHost,
    WeightedCluster,
)

V1 = "outbound|80|v1|reviews.default.svc.cluster.local"
V2 = "outbound|80|v2|reviews.default.svc.cluster.local"
TO_V1 = (WeightedCluster(V1, 100),)


def one_route(route: HttpRoute, clusters: dict[str, Cluster] | None = None) -> rc.Route:
    routes = build_routes(route, clusters or {})
    assert len(routes) == 1
    return routes[0]


def match_of(match: RouteMatch) -> rc.RouteMatch:
    return one_route(HttpRoute(matches=(match,), destinations=TO_V1)).match


def exact(value: str) -> StringMatch:
    return StringMatch(MatchKind.EXACT, value)


def service_host(name: str, port: int, *extra: str) -> VirtualHost:
    fqdn = f"{name}.default.svc.cluster.local"
    return VirtualHost(
        name=f"{fqdn}:{port}",
        port=port,
        hosts=(name, f"{name}.default", f"{name}.default.svc", fqdn, *extra),
        routes=(HttpRoute(destinations=(WeightedCluster(f"outbound|{port}||{fqdn}", 100),)),),
    )


def domains(table: route_pb2.RouteConfiguration) -> dict[str, list[str]]:
    return {vh.name: list(vh.domains) for vh in table.virtual_hosts}


def all_domains(table: route_pb2.RouteConfiguration) -> list[str]:
    return [d for vh in table.virtual_hosts for d in vh.domains]


# ------------------------------------------------------------------------------------------------
# Matches


def test_a_rule_without_matches_matches_every_path() -> None:
    route = one_route(HttpRoute(destinations=TO_V1))
    assert route.match.prefix == "/"


@pytest.mark.parametrize(
    ("uri", "field", "value"),
    [
        (StringMatch(MatchKind.EXACT, "/login"), "path", "/login"),
        (StringMatch(MatchKind.PREFIX, "/api"), "prefix", "/api"),
        (StringMatch(MatchKind.PATH_PREFIX, "/api/"), "path_separated_prefix", "/api"),
        (StringMatch(MatchKind.PATH_PREFIX, "/api"), "path_separated_prefix", "/api"),
        (StringMatch(MatchKind.PATH_PREFIX, "/"), "prefix", "/"),
    ],
)
def test_uri_match_kinds(uri: StringMatch, field: str, value: str) -> None:
    match = match_of(RouteMatch(uri=uri))
    assert match.WhichOneof("path_specifier") == field
    assert getattr(match, field) == value


def test_uri_regex_is_a_safe_regex() -> None:
    match = match_of(RouteMatch(uri=StringMatch(MatchKind.REGEX, "/v[0-9]+/.*")))
    assert match.safe_regex.regex == "/v[0-9]+/.*"


def test_ignore_uri_case_makes_the_match_case_insensitive() -> None:
    match = match_of(RouteMatch(uri=StringMatch(MatchKind.PREFIX, "/A"), ignore_uri_case=True))
    assert match.HasField("case_sensitive")
    assert match.case_sensitive.value is False


@pytest.mark.parametrize(
    ("string_match", "field"),
    [
        (StringMatch(MatchKind.EXACT, "jason"), "exact"),
        (StringMatch(MatchKind.PREFIX, "ja"), "prefix"),
    ],
)
def test_header_value_matches(string_match: StringMatch, field: str) -> None:
    match = match_of(RouteMatch(headers=(KeyMatch("end-user", string_match),)))
    header = match.headers[0]
    assert header.name == "end-user"
    assert getattr(header.string_match, field) == string_match.value
    assert not header.invert_match


def test_header_regex_match() -> None:
    match = match_of(RouteMatch(headers=(KeyMatch("x", StringMatch(MatchKind.REGEX, "a+")),)))
    assert match.headers[0].string_match.safe_regex.regex == "a+"


def test_header_presence_and_inverted_match() -> None:
    match = match_of(
        RouteMatch(headers=(KeyMatch("x-debug"), KeyMatch("end-user", exact("jason"), True)))
    )
    assert match.headers[0].present_match
    assert match.headers[1].invert_match
    assert match.headers[1].string_match.exact == "jason"


def test_an_inverted_value_match_takes_a_missing_header_as_empty() -> None:
    """Istio's withoutHeaders {x: {exact: v}} matches requests without ``x`` too: Envoy would
    otherwise fail the match when the header is missing, inverted or not."""
    match = match_of(RouteMatch(headers=(KeyMatch("x-canary", exact("true"), invert=True),)))
    assert match.headers[0].invert_match
    assert match.headers[0].treat_missing_header_as_empty


def test_an_inverted_presence_match_means_absent() -> None:
    match = match_of(RouteMatch(headers=(KeyMatch("x-canary", None, invert=True),)))
    assert match.headers[0].present_match
    assert match.headers[0].invert_match
    assert not match.headers[0].treat_missing_header_as_empty


def test_a_plain_value_match_fails_on_a_missing_header() -> None:
    match = match_of(RouteMatch(headers=(KeyMatch("end-user", exact("jason")),)))
    assert not match.headers[0].treat_missing_header_as_empty


def test_query_parameter_value_and_presence() -> None:
    match = match_of(RouteMatch(query_params=(KeyMatch("v", exact("2")), KeyMatch("debug"))))
    assert match.query_parameters[0].name == "v"
    assert match.query_parameters[0].string_match.exact == "2"
    assert match.query_parameters[1].present_match


def test_scheme_method_and_authority_match_pseudo_headers() -> None:
    match = match_of(
        RouteMatch(scheme=exact("https"), method=exact("GET"), authority=exact("a.example.com"))
    )
    assert {h.name: h.string_match.exact for h in match.headers} == {
        ":scheme": "https",
        ":method": "GET",
        ":authority": "a.example.com",
    }


def test_each_match_of_a_rule_is_its_own_route_in_order() -> None:
    rule = HttpRoute(
        name="r",
        matches=(RouteMatch(uri=exact("/a")), RouteMatch(uri=exact("/b"))),
        destinations=TO_V1,
    )
    routes = build_routes(rule, {})
    assert [r.match.path for r in routes] == ["/a", "/b"]
    assert {r.name for r in routes} == {"r"}


def test_matches_for_another_port_are_left_out() -> None:
    rule = HttpRoute(
        matches=(RouteMatch(uri=exact("/a"), port=80), RouteMatch(uri=exact("/b"), port=9080)),
        destinations=TO_V1,
    )
    assert [r.match.path for r in build_routes(rule, {}, port=80)] == ["/a"]
    assert build_routes(HttpRoute(matches=(RouteMatch(port=9080),)), {}, port=80) == []


def test_route_match_without_model_match_is_prefix_slash() -> None:
    assert route_match(None).prefix == "/"


# ------------------------------------------------------------------------------------------------
# Destinations


def test_one_destination_is_a_plain_cluster() -> None:
    action = one_route(HttpRoute(destinations=TO_V1)).route
    assert action.cluster == V1
    assert not action.HasField("weighted_clusters")


def test_several_destinations_are_weighted_clusters_without_total_weight() -> None:
    rule = HttpRoute(destinations=(WeightedCluster(V1, 90), WeightedCluster(V2, 10)))
    weighted = one_route(rule).route.weighted_clusters
    assert [(c.name, c.weight.value) for c in weighted.clusters] == [(V1, 90), (V2, 10)]
    assert not weighted.HasField("total_weight")


def test_weight_zero_destinations_are_omitted() -> None:
    rule = HttpRoute(destinations=(WeightedCluster(V1, 100), WeightedCluster(V2, 0)))
    assert one_route(rule).route.cluster == V1


def test_weighted_destination_header_operations_stay_per_cluster() -> None:
    headers = Headers(
        request=HeaderOperations(set=(("x-version", "v2"),), remove=("x-old",)),
        response=HeaderOperations(add=(("x-served-by", "v2"),)),
    )
    rule = HttpRoute(destinations=(WeightedCluster(V1, 50), WeightedCluster(V2, 50, headers)))
    second = one_route(rule).route.weighted_clusters.clusters[1]
    assert second.request_headers_to_add[0].header.key == "x-version"
    assert (
        second.request_headers_to_add[0].append_action
        == base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
    )
    assert list(second.request_headers_to_remove) == ["x-old"]
    assert second.response_headers_to_add[0].header.value == "v2"
    assert (
        second.response_headers_to_add[0].append_action
        == base_pb2.HeaderValueOption.APPEND_IF_EXISTS_OR_ADD
    )


def test_single_destination_headers_move_to_the_route() -> None:
    headers = Headers(request=HeaderOperations(set=(("x-a", "1"),)))
    route = one_route(HttpRoute(destinations=(WeightedCluster(V1, 100, headers),)))
    assert [h.header.key for h in route.request_headers_to_add] == ["x-a"]


def host_header(operation: str, name: str, value: str) -> Headers:
    pairs = ((name, value),)
    ops = HeaderOperations(set=pairs) if operation == "set" else HeaderOperations(add=pairs)
    return Headers(request=ops)


@pytest.mark.parametrize(
    ("headers", "authority"),
    [
        (host_header("set", "host", "a.example"), "a.example"),
        (host_header("set", ":authority", "b.example"), "b.example"),
        (host_header("add", "Host", "c.example"), "c.example"),
        (
            Headers(
                request=HeaderOperations(set=(("host", "set.example"),), add=(("host", "add"),))
            ),
            "set.example",
        ),
    ],
    ids=["set-host", "set-authority", "add-host", "set-wins-over-add"],
)
def test_setting_the_host_header_rewrites_the_authority_as_in_istio(
    headers: Headers, authority: str
) -> None:
    action = one_route(HttpRoute(destinations=TO_V1, headers=headers)).route
    assert action.host_rewrite_literal == authority


def test_a_rewrite_authority_wins_over_a_host_header() -> None:
    rule = HttpRoute(
        destinations=TO_V1,
        headers=host_header("set", "host", "header.example"),
        rewrite=Rewrite(authority="rewrite.example"),
    )
    assert one_route(rule).route.host_rewrite_literal == "rewrite.example"


def test_a_single_destinations_host_header_rewrites_the_authority() -> None:
    headers = host_header("set", "host", "d.example")
    action = one_route(HttpRoute(destinations=(WeightedCluster(V1, 100, headers),))).route
    assert action.host_rewrite_literal == "d.example"


def test_a_route_host_header_wins_over_a_single_destinations() -> None:
    rule = HttpRoute(
        destinations=(WeightedCluster(V1, 100, host_header("set", "host", "dest.example")),),
        headers=host_header("set", "host", "route.example"),
    )
    assert one_route(rule).route.host_rewrite_literal == "route.example"


def test_a_weighted_destinations_host_header_rewrites_its_authority() -> None:
    headers = host_header("set", "host", "v2.example")
    rule = HttpRoute(destinations=(WeightedCluster(V1, 50), WeightedCluster(V2, 50, headers)))
    first, second = one_route(rule).route.weighted_clusters.clusters
    assert not first.host_rewrite_literal
    assert second.host_rewrite_literal == "v2.example"


def test_route_header_operations_skip_pseudo_headers_and_host() -> None:
    headers = Headers(
        request=HeaderOperations(set=((":path", "/x"), ("Host", "h"), ("x-ok", "1"))),
        response=HeaderOperations(remove=("server",)),
    )
    route = one_route(HttpRoute(destinations=TO_V1, headers=headers))
    assert [h.header.key for h in route.request_headers_to_add] == ["x-ok"]
    assert list(route.response_headers_to_remove) == ["server"]


# ------------------------------------------------------------------------------------------------
# Redirect and rewrite


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (301, rc.RedirectAction.MOVED_PERMANENTLY),
        (302, rc.RedirectAction.FOUND),
        (303, rc.RedirectAction.SEE_OTHER),
        (307, rc.RedirectAction.TEMPORARY_REDIRECT),
        (308, rc.RedirectAction.PERMANENT_REDIRECT),
    ],
)
def test_redirect_codes(code: int, expected: int) -> None:
    route = one_route(HttpRoute(redirect=Redirect(uri="/new", code=code)))
    assert route.redirect.response_code == expected
    assert not route.HasField("route")


def test_redirect_rewrites_path_host_port_and_scheme() -> None:
    redirect = Redirect(uri="/v2", authority="new.example.com", port=8443, scheme="https")
    out = one_route(HttpRoute(redirect=redirect)).redirect
    assert (out.path_redirect, out.host_redirect, out.port_redirect, out.scheme_redirect) == (
        "/v2",
        "new.example.com",
        8443,
        "https",
    )


@pytest.mark.parametrize(
    ("port", "scheme", "expected"),
    [(80, "", 0), (80, "http", 0), (443, "https", 0), (80, "https", 80), (443, "", 443)],
)
def test_a_redirect_to_the_schemes_default_port_names_no_port(
    port: int, scheme: str, expected: int
) -> None:
    """As Istio: no ``:80`` in an http Location (the listener is plain HTTP), no ``:443`` in an
    https one."""
    out = one_route(HttpRoute(redirect=Redirect(uri="/n", port=port, scheme=scheme))).redirect
    assert out.port_redirect == expected


def test_rewrite_of_a_prefix_match_replaces_the_prefix() -> None:
    rule = HttpRoute(
        matches=(RouteMatch(uri=StringMatch(MatchKind.PREFIX, "/old")),),
        destinations=TO_V1,
        rewrite=Rewrite(uri="/new"),
    )
    assert one_route(rule).route.prefix_rewrite == "/new"


def test_rewrite_of_an_exact_match_replaces_the_whole_path() -> None:
    rule = HttpRoute(
        matches=(RouteMatch(uri=exact("/old")),), destinations=TO_V1, rewrite=Rewrite(uri="/new")
    )
    action = one_route(rule).route
    assert action.regex_rewrite.pattern.regex == "^.*$"
    assert action.regex_rewrite.substitution == "/new"
    assert not action.prefix_rewrite


def test_uri_regex_rewrite_and_authority_rewrite() -> None:
    rewrite = Rewrite(regex="^/v1/(.*)$", regex_substitution="/v2/\\1", authority="internal")
    action = one_route(HttpRoute(destinations=TO_V1, rewrite=rewrite)).route
    assert action.regex_rewrite.pattern.regex == "^/v1/(.*)$"
    assert action.regex_rewrite.substitution == "/v2/\\1"
    assert action.host_rewrite_literal == "internal"


# ------------------------------------------------------------------------------------------------
# Timeouts, retries, fault, mirror, hashing


def test_no_timeout_means_no_timeout_as_in_istio() -> None:
    action = one_route(HttpRoute(destinations=TO_V1)).route
    assert action.HasField("timeout")
    assert action.timeout.ToMilliseconds() == 0


def test_timeout_in_milliseconds() -> None:
    assert (
        one_route(HttpRoute(destinations=TO_V1, timeout_ms=1500)).route.timeout.ToMilliseconds()
        == 1500
    )


def test_retries_default_to_istio_conditions() -> None:
    rule = HttpRoute(destinations=TO_V1, retries=RetryPolicy(attempts=3, per_try_timeout_ms=2000))
    policy = one_route(rule).route.retry_policy
    assert policy.retry_on == DEFAULT_RETRY_ON
    assert policy.num_retries.value == 3
    assert policy.per_try_timeout.ToMilliseconds() == 2000
    assert list(policy.retriable_status_codes) == [503]


def test_retry_on_status_codes_become_retriable_status_codes() -> None:
    rule = HttpRoute(
        destinations=TO_V1, retries=RetryPolicy(attempts=2, retry_on="gateway-error,502")
    )
    policy = one_route(rule).route.retry_policy
    assert policy.retry_on == "gateway-error,retriable-status-codes"
    assert list(policy.retriable_status_codes) == [502]


def test_retriable_status_codes_without_codes_retries_no_status_as_in_istio() -> None:
    rule = HttpRoute(
        destinations=TO_V1,
        retries=RetryPolicy(attempts=2, retry_on="connect-failure,retriable-status-codes"),
    )
    policy = one_route(rule).route.retry_policy
    assert policy.retry_on == "connect-failure,retriable-status-codes"
    assert list(policy.retriable_status_codes) == []


def test_a_route_without_retries_gets_istios_default_of_two_on_another_host() -> None:
    policy = one_route(HttpRoute(destinations=TO_V1)).route.retry_policy
    assert policy.num_retries.value == 2
    assert policy.retry_on == DEFAULT_RETRY_ON
    assert list(policy.retriable_status_codes) == [503]
    assert [p.name for p in policy.retry_host_predicate] == [
        "envoy.retry_host_predicates.previous_hosts"
    ]
    assert policy.host_selection_retry_max_attempts == 5


def test_zero_attempts_means_no_retries() -> None:
    rule = HttpRoute(destinations=TO_V1, retries=RetryPolicy(attempts=0))
    assert not one_route(rule).route.HasField("retry_policy")


def fault_of(route: rc.Route) -> fault_pb2.HTTPFault:
    fault = fault_pb2.HTTPFault()
    assert route.typed_per_filter_config[FAULT_FILTER].Unpack(fault)
    return fault


def test_fault_delay_and_http_abort_as_fractions_of_a_million() -> None:
    fault = Fault(delay_ms=5000, delay_percent=10, abort_http_status=503, abort_percent=0.5)
    out = fault_of(one_route(HttpRoute(destinations=TO_V1, fault=fault)))
    assert out.delay.fixed_delay.ToMilliseconds() == 5000
    assert out.delay.percentage.numerator == 100_000
    assert out.delay.percentage.denominator == percent_pb2.FractionalPercent.MILLION
    assert out.abort.http_status == 503
    assert out.abort.percentage.numerator == 5_000


@pytest.mark.parametrize(("status", "code"), [("UNAVAILABLE", 14), ("14", 14), ("not_found", 5)])
def test_fault_grpc_abort_by_name_or_number(status: str, code: int) -> None:
    fault = Fault(abort_grpc_status=status)
    out = fault_of(one_route(HttpRoute(destinations=TO_V1, fault=fault)))
    assert out.abort.grpc_status == code
    assert not out.HasField("delay")


def test_no_fault_no_per_filter_config() -> None:
    assert FAULT_FILTER not in one_route(HttpRoute(destinations=TO_V1)).typed_per_filter_config


def test_mirror_with_percentage() -> None:
    rule = HttpRoute(destinations=TO_V1, mirror=Mirror(V2, 25.0))
    mirrors = one_route(rule).route.request_mirror_policies
    assert [m.cluster for m in mirrors] == [V2]
    assert mirrors[0].runtime_fraction.default_value.numerator == 250_000


@pytest.mark.parametrize(
    ("chash", "field"),
    [
        (ConsistentHash(header="x-user"), "header"),
        (ConsistentHash(cookie="session", cookie_ttl_ms=60_000), "cookie"),
        (ConsistentHash(source_ip=True), "connection_properties"),
        (ConsistentHash(query_parameter="user"), "query_parameter"),
    ],
)
def test_hash_policy_follows_the_destination_clusters_consistent_hash(
    chash: ConsistentHash, field: str
) -> None:
    clusters = {V1: Cluster(V1, "reviews", 80, policy=TrafficPolicy(consistent_hash=chash))}
    policies = one_route(HttpRoute(destinations=TO_V1), clusters).route.hash_policy
    assert len(policies) == 1
    assert policies[0].WhichOneof("policy_specifier") == field


def test_cookie_hash_policy_carries_ttl() -> None:
    chash = ConsistentHash(cookie="session", cookie_path="/", cookie_ttl_ms=60_000)
    clusters = {V1: Cluster(V1, "reviews", 80, policy=TrafficPolicy(consistent_hash=chash))}
    cookie = one_route(HttpRoute(destinations=TO_V1), clusters).route.hash_policy[0].cookie
    assert (cookie.name, cookie.path, cookie.ttl.ToMilliseconds()) == ("session", "/", 60_000)


@pytest.mark.parametrize(
    ("route", "other_host"),
    [
        (HttpRoute(destinations=TO_V1, one_destination=True), False),
        (HttpRoute(destinations=TO_V1), True),  # a service's default route, or 100/0 in a rule
    ],
    ids=["rule-with-one-destination", "default-route-or-several-destinations"],
)
def test_retries_keep_a_consistent_hash_on_its_host_only_for_a_rule_with_one_destination(
    route: HttpRoute, other_host: bool
) -> None:
    chash = ConsistentHash(header="x-user")
    clusters = {V1: Cluster(V1, "reviews", 80, policy=TrafficPolicy(consistent_hash=chash))}
    policy = one_route(route, clusters).route.retry_policy
    assert policy.num_retries.value == 2
    assert bool(policy.retry_host_predicate) == other_host
    assert policy.host_selection_retry_max_attempts == (5 if other_host else 0)


def test_a_rule_with_one_destination_without_consistent_hash_retries_on_another_host() -> None:
    route = HttpRoute(destinations=TO_V1, one_destination=True)
    policy = one_route(route, {V1: Cluster(V1, "reviews", 80)}).route.retry_policy
    assert [p.name for p in policy.retry_host_predicate] == [
        "envoy.retry_host_predicates.previous_hosts"
    ]


def test_no_hash_policy_without_consistent_hash() -> None:
    clusters = {V1: Cluster(V1, "reviews", 80)}
    assert len(one_route(HttpRoute(destinations=TO_V1), clusters).route.hash_policy) == 0


# ------------------------------------------------------------------------------------------------
# Tables


def test_port_tables_are_named_by_port_with_host_and_host_port_domains() -> None:
    model = MeshModel(mesh_hosts=(service_host("reviews", 80), service_host("ratings", 9080)))
    tables = port_route_tables(model)
    assert [t.name for t in tables] == ["80", "9080"]
    assert domains(tables[0])["reviews.default.svc.cluster.local:80"] == [
        "reviews",
        "reviews:80",
        "reviews.default",
        "reviews.default:80",
        "reviews.default.svc",
        "reviews.default.svc:80",
        "reviews.default.svc.cluster.local",
        "reviews.default.svc.cluster.local:80",
    ]


def test_sidecar_table_has_host_port_domains_and_bare_hosts_prefer_port_80() -> None:
    model = MeshModel(
        mesh_hosts=(
            service_host("reviews", 9080),
            service_host("reviews", 80),
            service_host("ratings", 9090),
        )
    )
    table = sidecar_route_table(model, 15001)
    assert table.name == "15001"
    by_name = domains(table)
    assert "reviews" in by_name["reviews.default.svc.cluster.local:80"]
    assert "reviews" not in by_name["reviews.default.svc.cluster.local:9080"]
    assert "reviews:9080" in by_name["reviews.default.svc.cluster.local:9080"]
    assert "ratings" in by_name["ratings.default.svc.cluster.local:9090"]


def test_bare_host_goes_to_the_lowest_port_when_there_is_no_port_80() -> None:
    model = MeshModel(mesh_hosts=(service_host("a", 9090), service_host("a", 8080)))
    by_name = domains(sidecar_route_table(model, 15001))
    assert "a" in by_name["a.default.svc.cluster.local:8080"]
    assert "a" not in by_name["a.default.svc.cluster.local:9090"]


@pytest.mark.parametrize("table", ["sidecar", "port"])
def test_every_domain_appears_once_per_table_even_for_hosts_shared_across_services(
    table: str,
) -> None:
    model = MeshModel(
        mesh_hosts=(
            service_host("a", 80, "shop.example.com"),
            service_host("b", 80, "shop.example.com"),
            service_host("a", 9080, "shop.example.com"),
        )
    )
    tables = (
        [sidecar_route_table(model, 15001)]
        if table == "sidecar"
        else list(port_route_tables(model))
    )
    for config in tables:
        seen = all_domains(config)
        assert len(seen) == len(set(seen))
        assert "shop.example.com" in seen


def test_a_virtual_host_left_without_domains_is_dropped() -> None:
    twin = service_host("a", 80)
    model = MeshModel(mesh_hosts=(twin, VirtualHost("other", 80, twin.hosts, twin.routes)))
    (table,) = port_route_tables(model)
    assert [vh.name for vh in table.virtual_hosts] == [twin.name]


def test_gateway_table_is_named_by_its_port_and_passes_wildcards_through() -> None:
    model = MeshModel(
        gateway_hosts=(
            VirtualHost("shop", 80, ("shop.example.com",), (HttpRoute(destinations=TO_V1),)),
            VirtualHost("any", 80, ("*.example.com", "*"), (HttpRoute(destinations=TO_V1),)),
        )
    )
    table = gateway_route_table(model, 8080)
    assert table.name == "8080"
    assert domains(table) == {
        "shop": ["shop.example.com", "shop.example.com:8080"],
        "any": ["*.example.com", "*.example.com:8080", "*"],
    }


def test_virtual_host_routes_are_built_in_rule_order() -> None:
    host = VirtualHost(
        "r",
        80,
        ("r",),
        (
            HttpRoute(name="first", matches=(RouteMatch(uri=exact("/a")),), destinations=TO_V1),
            HttpRoute(name="second", destinations=TO_V1),
        ),
    )
    (table,) = port_route_tables(MeshModel(mesh_hosts=(host,)))
    assert [r.name for r in table.virtual_hosts[0].routes] == ["first", "second"]


def test_a_rule_without_destinations_or_redirect_answers_503() -> None:
    route = one_route(HttpRoute(name="empty"))
    assert route.direct_response.status == 503
    assert not route.HasField("route")


@pytest.mark.parametrize(
    ("direct", "body_field", "body"),
    [
        (DirectResponse(503, "down"), "inline_string", "down"),
        (DirectResponse(200, b"\x00\x01"), "inline_bytes", b"\x00\x01"),
        (DirectResponse(204), None, None),
    ],
    ids=["text", "bytes", "no-body"],
)
def test_a_direct_response_answers_instead_of_forwarding(
    direct: DirectResponse, body_field: str | None, body: object
) -> None:
    route = one_route(HttpRoute(direct_response=direct))
    assert route.WhichOneof("action") == "direct_response"
    assert route.direct_response.status == direct.status
    assert route.direct_response.body.WhichOneof("specifier") == body_field
    if body_field is not None:
        assert getattr(route.direct_response.body, body_field) == body


def test_a_retry_backoff_sets_envoys_base_interval() -> None:
    rule = HttpRoute(destinations=TO_V1, retries=RetryPolicy(attempts=2, backoff_ms=50))
    policy = one_route(rule).route.retry_policy
    assert policy.retry_back_off.base_interval.ToMilliseconds() == 50
    default = one_route(HttpRoute(destinations=TO_V1)).route.retry_policy
    assert not default.HasField("retry_back_off")


def test_every_mirror_gets_a_mirror_policy_with_its_fraction() -> None:
    rule = HttpRoute(destinations=TO_V1, mirrors=(Mirror(V1, 100.0), Mirror(V2, 5.0)))
    policies = one_route(rule).route.request_mirror_policies
    assert [(p.cluster, p.runtime_fraction.default_value.numerator) for p in policies] == [
        (V1, 1_000_000),
        (V2, 50_000),
    ]


def test_a_cors_policy_is_an_optional_per_route_config_of_envoys_cors_filter() -> None:
    cors = Cors(
        allow_origins=(exact("https://shop.example"),),
        allow_methods=("GET", "POST"),
        max_age_s=600,
        allow_credentials=True,
    )
    config = one_route(HttpRoute(destinations=TO_V1, cors=cors)).typed_per_filter_config
    wrapper = rc.FilterConfig()
    assert config["envoy.filters.http.cors"].Unpack(wrapper)
    assert wrapper.is_optional  # a proxyless gRPC client has no CORS filter and ignores it
    policy = cors_pb2.CorsPolicy()
    assert wrapper.config.Unpack(policy)
    assert [m.exact for m in policy.allow_origin_string_match] == ["https://shop.example"]
    assert (policy.allow_methods, policy.max_age) == ("GET,POST", "600")
    assert policy.allow_credentials.value is True


def test_retries_may_go_back_to_a_host_already_tried_when_the_rule_says_so() -> None:
    rule = HttpRoute(destinations=TO_V1, retries=RetryPolicy(2, ignore_previous_hosts=False))
    policy = one_route(rule).route.retry_policy
    assert policy.num_retries.value == 2
    assert not policy.retry_host_predicate


def test_a_routing_change_keeps_the_layout_key_and_a_new_name_or_port_does_not() -> None:
    hosts = tuple(
        VirtualHost(f"{name}.default.svc.cluster.local:80", 80, (name,), ())
        for name in ("reviews", "ratings")
    )
    rerouted = (replace(hosts[0], routes=(HttpRoute(destinations=()),)), hosts[1])
    for changed, same in (
        (rerouted, True),
        ((replace(hosts[0], hosts=("stars",)), hosts[1]), False),
        ((hosts[0], replace(hosts[1], port=81)), False),
        (hosts[:1], False),
    ):
        assert same_layout_key(hosts, changed) is same
        assert (layout_key(hosts) == layout_key(changed)) is same
