"""VirtualService + DestinationRule + services → clusters, load assignments and virtual hosts."""

from __future__ import annotations

from typing import Any

import pytest

from tests.unit.objects import (
    Obj,
    destination,
    destination_rule,
    http_route,
    pod,
    service,
    service_port,
    versioned_service,
    virtual_service,
)
from translators.diagnostics import Diagnostic, Severity
from translators.model import (
    Cluster,
    ConnectionPool,
    ConsistentHash,
    Cors,
    DirectResponse,
    Fault,
    HeaderOperations,
    Headers,
    HttpRoute,
    KeyMatch,
    LoadBalancer,
    MatchKind,
    MeshModel,
    Mirror,
    OutlierDetection,
    Redirect,
    RetryPolicy,
    Rewrite,
    RouteMatch,
    StringMatch,
    TcpRoute,
    TrafficPolicy,
    VirtualHost,
    WeightedCluster,
)
from translators.translate import Options, Translation, translate

REVIEWS = "reviews.default.svc.cluster.local"
V1 = f"outbound|80|v1|{REVIEWS}"
V2 = f"outbound|80|v2|{REVIEWS}"
V3 = f"outbound|80|v3|{REVIEWS}"
DEFAULT = f"outbound|80||{REVIEWS}"
ALIASES = ("reviews", "reviews.default", "reviews.default.svc", REVIEWS)


def run(*objects: Obj) -> Translation:
    return translate(objects)


def cluster(model: MeshModel, name: str) -> Cluster:
    return next(c for c in model.clusters if c.name == name)


def vhost(hosts: tuple[VirtualHost, ...], name: str) -> VirtualHost:
    found = [v for v in hosts if v.name == name]
    assert found, [v.name for v in hosts]
    return found[0]


def only_route(translation: Translation, name: str = f"{REVIEWS}:80") -> HttpRoute:
    (route,) = vhost(translation.model.mesh_hosts, name).routes
    return route


def has(
    diagnostics: tuple[Diagnostic, ...], where: str, field: str, severity: Severity, fragment: str
) -> bool:
    """True when a diagnostic on ``Kind/name`` at ``field`` has ``severity`` and ``fragment``."""
    return any(
        (f"{d.kind}/{d.name}", d.field, d.severity) == (where, field, severity)
        and fragment in d.message
        for d in diagnostics
    )


# ------------------------------------------------------------------------------------------------
# Clusters


def test_every_service_port_gets_a_default_cluster_and_one_per_subset() -> None:
    objects = versioned_service()
    objects[0] = service("reviews", ports=[service_port(80, "http"), service_port(9080, "tcp-x")])
    names = [c.name for c in run(*objects).model.clusters]
    assert names == sorted(
        f"outbound|{port}|{subset}|{REVIEWS}" for port in (80, 9080) for subset in ("", "v1", "v2")
    )


def test_subset_clusters_carry_their_labels_and_endpoints_match_them() -> None:
    model = run(*versioned_service()).model
    assert cluster(model, V2).subset_labels == (("version", "v2"),)
    endpoints = {e.cluster: [x.address for x in e.endpoints] for e in model.endpoints}
    assert endpoints == {
        DEFAULT: ["10.0.0.1", "10.0.0.2"],
        V1: ["10.0.0.1"],
        V2: ["10.0.0.2"],
    }


POLICY_RULE: dict[str, Any] = {
    "trafficPolicy": {
        "loadBalancer": {"simple": "RANDOM"},
        "connectionPool": {"tcp": {"maxConnections": 10}},
        "portLevelSettings": [
            {"port": {"number": 80}, "loadBalancer": {"simple": "LEAST_REQUEST"}},
        ],
    },
    "subsets": [
        {"name": "v1", "labels": {"version": "v1"}},
        {
            "name": "v2",
            "labels": {"version": "v2"},
            "trafficPolicy": {
                "outlierDetection": {"consecutive5xxErrors": 3, "interval": "10s"},
                "connectionPool": {"http": {"http2MaxRequests": 50}},
            },
        },
        {
            "name": "v3",
            "labels": {"version": "v3"},
            "trafficPolicy": {
                "loadBalancer": {"consistentHash": {"httpHeaderName": "x-user"}},
                "portLevelSettings": [
                    {"port": {"number": 80}, "loadBalancer": {"simple": "ROUND_ROBIN"}}
                ],
            },
        },
    ],
}


@pytest.mark.parametrize(
    ("cluster_name", "expected"),
    [
        (
            f"outbound|9080||{REVIEWS}",
            TrafficPolicy(LoadBalancer.RANDOM, connection_pool=ConnectionPool(max_connections=10)),
        ),
        (DEFAULT, TrafficPolicy(LoadBalancer.LEAST_REQUEST)),
        (V1, TrafficPolicy(LoadBalancer.LEAST_REQUEST)),
        (
            V2,
            TrafficPolicy(
                LoadBalancer.LEAST_REQUEST,
                connection_pool=ConnectionPool(max_requests=50),
                outlier_detection=OutlierDetection(consecutive_5xx_errors=3, interval_ms=10_000),
            ),
        ),
        (V3, TrafficPolicy(LoadBalancer.ROUND_ROBIN)),
        (
            f"outbound|9080|v3|{REVIEWS}",
            TrafficPolicy(
                consistent_hash=ConsistentHash(header="x-user"),
                connection_pool=ConnectionPool(max_connections=10),
            ),
        ),
    ],
    ids=[
        "top-level-policy-applies-to-the-default-cluster",
        "port-level-settings-replace-the-whole-top-level-policy-for-their-port",
        "a-subset-without-policy-inherits-the-port-level-policy",
        "subset-policy-replaces-whole-sections-and-keeps-the-rest",
        "subset-port-level-settings-replace-the-whole-policy-for-their-port",
        "subset-policy-applies-on-other-ports",
    ],
)
def test_traffic_policy_precedence(cluster_name: str, expected: TrafficPolicy) -> None:
    """Istio: subset settings override the rule's section by section; port-level settings
    replace the whole policy for their port ("default values will be applied to fields omitted
    in port-level traffic policies")."""
    rule = destination_rule("reviews", "reviews")
    rule["spec"].update(POLICY_RULE)
    svc = service("reviews", ports=[service_port(80, "http"), service_port(9080, "http-alt")])
    assert cluster(run(svc, rule).model, cluster_name).policy == expected


@pytest.mark.parametrize(
    ("outlier", "expected"),
    [
        (
            {"consecutiveErrors": 7, "interval": "5s"},
            OutlierDetection(
                consecutive_5xx_errors=0, consecutive_gateway_errors=7, interval_ms=5000
            ),
        ),
        (
            {"consecutiveErrors": 7, "consecutiveGatewayErrors": 3, "consecutive5xxErrors": 4},
            OutlierDetection(consecutive_5xx_errors=4, consecutive_gateway_errors=3),
        ),
    ],
    ids=["deprecated-consecutive-errors-are-gateway-errors", "the-current-fields-win"],
)
def test_outlier_detection_reads_istios_deprecated_consecutive_errors(
    outlier: Obj, expected: OutlierDetection
) -> None:
    rule = destination_rule("reviews", "reviews", trafficPolicy={"outlierDetection": outlier})
    result = run(service("reviews"), rule)
    assert [d for d in result.diagnostics if d.kind == "DestinationRule"] == []
    assert cluster(result.model, DEFAULT).policy.outlier_detection == expected


def test_without_a_destination_rule_clusters_get_the_default_policy() -> None:
    assert cluster(run(service("reviews")).model, DEFAULT).policy == TrafficPolicy()


def test_two_destination_rules_for_a_host_in_one_namespace_merge_as_in_istio() -> None:
    # Istio: the older rule, plus the later one's subsets whose names are new, plus the later
    # one's top-level policy only when the older rule has none.
    older = destination_rule(
        "a-old", "reviews", {"v1": {"version": "v1"}}, created="2024-01-01T00:00:00Z"
    )
    newer = destination_rule(
        "b-new",
        "reviews.default.svc.cluster.local",
        {"v1": {"version": "other"}, "v9": {"version": "v9"}},
        created="2024-02-01T00:00:00Z",
        trafficPolicy={"loadBalancer": {"simple": "RANDOM"}},
    )
    result = run(service("reviews"), newer, older)
    assert sorted(c.subset for c in result.model.clusters) == ["", "v1", "v9"]
    assert cluster(result.model, DEFAULT).policy.load_balancer is LoadBalancer.RANDOM
    assert not result.has_errors, result.diagnostics
    (warning,) = [d for d in result.diagnostics if d.name == "b-new"]
    assert (warning.field, warning.severity) == ("spec.host", Severity.WARNING)
    assert "a-old" in warning.message
    assert "subsets v9 added" in warning.message
    assert "v1 are the older rule's" in warning.message
    assert "the trafficPolicy applies" in warning.message


def test_a_later_rules_policy_does_not_replace_the_older_rules() -> None:
    older = destination_rule(
        "a-old",
        "reviews",
        {},
        created="2024-01-01T00:00:00Z",
        trafficPolicy={"loadBalancer": {"simple": "ROUND_ROBIN"}},
    )
    newer = destination_rule(
        "b-new",
        "reviews",
        {},
        created="2024-02-01T00:00:00Z",
        trafficPolicy={"loadBalancer": {"simple": "RANDOM"}},
    )
    result = run(service("reviews"), newer, older)
    assert cluster(result.model, DEFAULT).policy.load_balancer is LoadBalancer.ROUND_ROBIN
    assert has(
        result.diagnostics, "DestinationRule/b-new", "spec.host", Severity.WARNING, "ignored"
    )


def test_a_destination_rule_elsewhere_applies_only_to_clients_in_its_namespace() -> None:
    elsewhere = destination_rule(
        "reviews-for-web",
        "reviews.default.svc.cluster.local",
        {"v9": {"version": "v9"}},
        namespace="web",
        created="2024-01-01T00:00:00Z",
    )
    own = destination_rule(
        "reviews", "reviews", {"v1": {"version": "v1"}}, created="2024-02-01T00:00:00Z"
    )
    result = run(service("reviews"), elsewhere, own)
    assert sorted(c.subset for c in result.model.clusters) == ["", "v1"]
    web = result.model.view_for("web")
    assert web is not None
    assert sorted(c.subset for c in web.clusters) == ["", "v9"]
    assert result.diagnostics == run(service("reviews"), own).diagnostics


def test_a_destination_rule_for_an_unknown_host_is_a_warning() -> None:
    result = run(destination_rule("ghost", "ghost", {"v1": {"version": "v1"}}))
    assert has(
        result.diagnostics, "DestinationRule/ghost", "spec.host", Severity.WARNING, "not a known"
    )
    assert not result.has_errors


# ------------------------------------------------------------------------------------------------
# Virtual hosts


def test_every_http_service_port_gets_a_mesh_virtual_host_with_a_default_route() -> None:
    svc = service("reviews", ports=[service_port(80, "http"), service_port(3306, "tcp-db")])
    model = run(svc).model
    assert model.mesh_hosts == (
        VirtualHost(
            f"{REVIEWS}:80",
            80,
            ALIASES,
            (HttpRoute(destinations=(WeightedCluster(DEFAULT, 100),)),),
        ),
    )


def test_a_virtual_service_replaces_the_default_route_of_the_ports_its_hosts_name() -> None:
    vs = virtual_service("reviews", ["reviews"], [http_route(destination("reviews", "v2"))])
    route = only_route(run(*versioned_service(), vs))
    assert route.destinations == (WeightedCluster(V2, 100),)


def test_short_hosts_resolve_in_the_objects_namespace() -> None:
    objects = [
        service("reviews", "prod"),
        service("reviews", "test"),
        virtual_service("r", ["reviews"], [http_route(destination("reviews"))], namespace="test"),
    ]
    model = run(*objects).model
    hosts = {v.name: v.routes[0].destinations[0].cluster for v in model.mesh_hosts}
    assert (
        hosts["reviews.test.svc.cluster.local:80"] == "outbound|80||reviews.test.svc.cluster.local"
    )
    assert (
        hosts["reviews.prod.svc.cluster.local:80"] == "outbound|80||reviews.prod.svc.cluster.local"
    )


def test_match_port_narrows_a_rule_to_that_port() -> None:
    svc = service("reviews", ports=[service_port(80, "http"), service_port(9080, "http-admin")])
    vs = virtual_service(
        "reviews",
        ["reviews"],
        [
            http_route(
                destination("reviews", port=9080),
                match=[{"port": 9080, "uri": {"prefix": "/admin"}}],
            ),
            http_route(destination("reviews", port=80), match=[{"port": 80}]),
        ],
    )
    model = run(svc, vs).model
    admin = vhost(model.mesh_hosts, f"{REVIEWS}:9080").routes
    web = vhost(model.mesh_hosts, f"{REVIEWS}:80").routes
    assert [r.destinations[0].cluster for r in admin] == [f"outbound|9080||{REVIEWS}"]
    assert [r.destinations[0].cluster for r in web] == [DEFAULT]


def test_a_host_that_is_not_a_service_gets_its_own_virtual_host_on_the_destination_port() -> None:
    vs = virtual_service(
        "my-virtual-service",
        ["my-service.example.com"],
        [
            http_route(
                destination("reviews", "v1", weight=100), destination("reviews", "v2", weight=0)
            )
        ],
    )
    model = run(*versioned_service(), vs).model
    host = vhost(model.mesh_hosts, "my-service.example.com:80")
    assert host.hosts == ("my-service.example.com",)
    assert host.routes[0].destinations == (WeightedCluster(V1, 100),)
    assert vhost(model.mesh_hosts, f"{REVIEWS}:80").hosts == ALIASES


def test_a_host_that_is_not_a_service_uses_port_80_when_destination_ports_disagree() -> None:
    svc = service("reviews", ports=[service_port(8000, "http"), service_port(9000, "http-b")])
    vs = virtual_service(
        "ext",
        ["api.example.com"],
        [
            http_route(destination("reviews", port=8000), match=[{"uri": {"prefix": "/a"}}]),
            http_route(destination("reviews", port=9000)),
        ],
    )
    assert vhost(run(svc, vs).model.mesh_hosts, "api.example.com:80").port == 80


@pytest.mark.parametrize(
    ("weights", "expected"),
    [
        ((90, 10), ((V1, 90), (V2, 10))),
        ((100, 0), ((V1, 100),)),
        ((3, 1), ((V1, 3), (V2, 1))),
        ((None,), ((V1, 100),)),
        ((0,), ((V1, 100),)),
    ],
    ids=[
        "a-90-10-canary-keeps-both-weights",
        "weight-0-destinations-are-omitted",
        "weights-need-not-sum-to-100",
        "a-single-destination-without-weight-gets-all-traffic",
        "a-single-destination-gets-all-traffic-whatever-its-weight",
    ],
)
def test_weights(weights: tuple[int | None, ...], expected: tuple[tuple[str, int], ...]) -> None:
    dests = [destination("reviews", f"v{i}", weight=w) for i, w in enumerate(weights, start=1)]
    vs = virtual_service("reviews", ["reviews"], [http_route(*dests)])
    route = only_route(run(*versioned_service(), vs))
    assert tuple((d.cluster, d.weight) for d in route.destinations) == expected


@pytest.mark.parametrize(
    ("match", "expected", "warning"),
    [
        ({"uri": {"exact": "/a"}}, RouteMatch(uri=StringMatch(MatchKind.EXACT, "/a")), ""),
        ({"uri": {"prefix": "/a"}}, RouteMatch(uri=StringMatch(MatchKind.PREFIX, "/a")), ""),
        ({"uri": {"regex": "/a.*"}}, RouteMatch(uri=StringMatch(MatchKind.REGEX, "/a.*")), ""),
        (
            {
                "scheme": {"exact": "https"},
                "method": {"exact": "GET"},
                "authority": {"prefix": "api"},
            },
            RouteMatch(
                scheme=StringMatch(MatchKind.EXACT, "https"),
                method=StringMatch(MatchKind.EXACT, "GET"),
                authority=StringMatch(MatchKind.PREFIX, "api"),
            ),
            "",
        ),
        (
            {"headers": {"end-user": {"exact": "jason"}}},
            RouteMatch(headers=(KeyMatch("end-user", StringMatch(MatchKind.EXACT, "jason")),)),
            "",
        ),
        (
            {"withoutHeaders": {"x-test": {}}},
            RouteMatch(headers=(KeyMatch("x-test", None, invert=True),)),
            "",
        ),
        (
            {"withoutHeaders": {"x-canary": {"exact": "true"}}},
            RouteMatch(headers=(KeyMatch("x-canary", StringMatch(MatchKind.EXACT, "true"), True),)),
            "",
        ),
        (
            {"headers": {"x-a": {"regex": "*"}}, "withoutHeaders": {"x-b": {"regex": "*"}}},
            RouteMatch(headers=(KeyMatch("x-a"), KeyMatch("x-b", None, invert=True))),
            "",
        ),
        (
            {"queryParams": {"debug": {"regex": "*"}}},
            RouteMatch(query_params=(KeyMatch("debug"),)),
            "",
        ),
        (
            {"queryParams": {"debug": {"exact": "1"}}},
            RouteMatch(query_params=(KeyMatch("debug", StringMatch(MatchKind.EXACT, "1")),)),
            "",
        ),
        (
            {"uri": {"prefix": "/A"}, "ignoreUriCase": True},
            RouteMatch(uri=StringMatch(MatchKind.PREFIX, "/A"), ignore_uri_case=True),
            "",
        ),
        ({"port": 80}, RouteMatch(port=80), ""),
        (
            {"sourceLabels": {"app": "web"}},
            RouteMatch(source_labels=(("app", "web"),)),
            "spec.http[0].match[0].sourceLabels",
        ),
    ],
    ids=[
        "uri-exact",
        "uri-prefix",
        "uri-regex",
        "scheme-method-authority",
        "header-match",
        "without-headers-is-an-inverted-header-match",
        "without-headers-with-a-value",
        "regex-star-means-present-as-in-istio",
        "regex-star-query-param-means-present",
        "query-params",
        "ignore-uri-case",
        "port",
        "source-labels-are-kept-with-a-warning",
    ],
)
def test_matches(match: Obj, expected: RouteMatch, warning: str) -> None:
    vs = virtual_service(
        "reviews", ["reviews"], [http_route(destination("reviews", "v2"), match=[match])]
    )
    result = run(*versioned_service(), vs)
    assert only_route(result).matches == (expected,)
    if warning:
        assert has(
            result.diagnostics,
            "VirtualService/reviews",
            warning,
            Severity.WARNING,
            "sourceLabels",
        )


@pytest.mark.parametrize(
    ("rule", "attribute", "expected"),
    [
        ({"redirect": {"uri": "/new", "authority": "b"}}, "redirect", Redirect("/new", "b")),
        (
            {"redirect": {"uri": "/n", "redirectCode": 302}},
            "redirect",
            Redirect("/n", code=302),
        ),
        (
            {"directResponse": {"status": 503, "body": {"string": "down for maintenance"}}},
            "direct_response",
            DirectResponse(503, "down for maintenance"),
        ),
        (
            {"directResponse": {"status": 200, "body": {"bytes": "AAE="}}},
            "direct_response",
            DirectResponse(200, b"\x00\x01"),
        ),
        ({"directResponse": {"status": 204}}, "direct_response", DirectResponse(204)),
        (
            {
                "corsPolicy": {
                    "allowOrigins": [{"exact": "https://shop.example"}, {"prefix": "https://dev."}],
                    "allowMethods": ["GET", "POST"],
                    "allowHeaders": ["content-type"],
                    "exposeHeaders": ["x-trace"],
                    "maxAge": "24h",
                    "allowCredentials": True,
                    "unmatchedPreflights": "IGNORE",
                }
            },
            "cors",
            Cors(
                allow_origins=(
                    StringMatch(MatchKind.EXACT, "https://shop.example"),
                    StringMatch(MatchKind.PREFIX, "https://dev."),
                ),
                allow_methods=("GET", "POST"),
                allow_headers=("content-type",),
                expose_headers=("x-trace",),
                max_age_s=86400,
                allow_credentials=True,
                forward_unmatched_preflights=False,
            ),
        ),
        ({"rewrite": {"uri": "/v2/"}}, "rewrite", Rewrite(uri="/v2/")),
        (
            {"rewrite": {"uriRegexRewrite": {"match": "^/old/(.*)", "rewrite": "/new/\\1"}}},
            "rewrite",
            Rewrite(regex="^/old/(.*)", regex_substitution="/new/\\1"),
        ),
        ({"timeout": "1.5s"}, "timeout_ms", 1500),
        (
            {"retries": {"attempts": 3, "perTryTimeout": "2s", "retryOn": "5xx"}},
            "retries",
            RetryPolicy(3, 2000, "5xx"),
        ),
        (
            {"retries": {"attempts": 3, "backoff": "50ms"}},
            "retries",
            RetryPolicy(3, backoff_ms=50),
        ),
        (
            {"retries": {"attempts": 2, "retryIgnorePreviousHosts": False}},
            "retries",
            RetryPolicy(2, ignore_previous_hosts=False),
        ),
        (
            {"fault": {"delay": {"fixedDelay": "5s", "percentage": {"value": 10}}}},
            "fault",
            Fault(delay_ms=5000, delay_percent=10.0),
        ),
        (
            {"fault": {"abort": {"httpStatus": 503, "percentage": {"value": 50}}}},
            "fault",
            Fault(abort_http_status=503, abort_percent=50.0),
        ),
        (
            {"fault": {"delay": {"fixedDelay": "5s"}}},
            "fault",
            Fault(delay_ms=5000, delay_percent=0.0),
        ),
        (
            {"fault": {"abort": {"httpStatus": 503}}},
            "fault",
            Fault(abort_http_status=503, abort_percent=0.0),
        ),
        (
            {"mirror": {"host": "reviews", "subset": "v1"}, "mirrorPercentage": {"value": 25}},
            "mirror",
            Mirror(V1, 25.0),
        ),
        ({"mirror": {"host": "reviews", "subset": "v1"}}, "mirror", Mirror(V1, 100.0)),
        (
            {
                "mirrors": [
                    {"destination": {"host": "reviews", "subset": "v1"}},
                    {
                        "destination": {"host": "reviews", "subset": "v2"},
                        "percentage": {"value": 5},
                    },
                ]
            },
            "mirrors",
            (Mirror(V1, 100.0), Mirror(V2, 5.0)),
        ),
        (
            {"mirror": {"host": "reviews", "subset": "v1"}, "mirrorPercent": 10},
            "mirror",
            Mirror(V1, 10.0),
        ),
        (
            {
                "mirror": {"host": "reviews", "subset": "v1"},
                "mirrorPercent": 10,
                "mirrorPercentage": {"value": 2.5},
            },
            "mirror",
            Mirror(V1, 2.5),
        ),
        (
            {
                "headers": {
                    "request": {"set": {"x-b": "2", "x-a": "1"}},
                    "response": {"remove": ["server"]},
                }
            },
            "headers",
            Headers(
                HeaderOperations(set=(("x-a", "1"), ("x-b", "2"))),
                HeaderOperations(remove=("server",)),
            ),
        ),
    ],
    ids=[
        "redirect",
        "redirect-code",
        "direct-response-text",
        "direct-response-bytes",
        "direct-response-without-body",
        "cors-policy",
        "rewrite-uri",
        "rewrite-uri-regex",
        "timeout",
        "retries",
        "retries-backoff",
        "retries-on-any-host",
        "fault-delay-with-percentage",
        "fault-abort-with-percentage",
        "fault-delay-without-percentage-delays-nothing",
        "fault-abort-without-percentage-aborts-nothing",
        "mirror-with-percentage",
        "mirror-without-percentage-mirrors-everything",
        "mirrors-each-with-its-percentage",
        "mirror-percent-the-deprecated-whole-number-form",
        "mirror-percentage-wins-over-mirror-percent",
        "route-level-headers",
    ],
)
def test_route_actions(rule: Obj, attribute: str, expected: object) -> None:
    forwards = "redirect" not in rule and "directResponse" not in rule
    dests = (destination("reviews", "v2"),) if forwards else ()
    vs = virtual_service("reviews", ["reviews"], [http_route(*dests, **rule)])
    result = run(*versioned_service(), vs)
    assert not result.has_errors, result.diagnostics
    assert getattr(only_route(result), attribute) == expected


def test_per_destination_headers_are_kept() -> None:
    dest = destination("reviews", "v2") | {"headers": {"request": {"add": {"x-canary": "1"}}}}
    vs = virtual_service("reviews", ["reviews"], [http_route(dest)])
    (weighted,) = only_route(run(*versioned_service(), vs)).destinations
    assert weighted.headers == Headers(request=HeaderOperations(add=(("x-canary", "1"),)))


def test_the_oldest_virtual_service_for_a_host_wins_and_the_other_loses_that_host() -> None:
    older = virtual_service(
        "b-old",
        ["reviews"],
        [http_route(destination("reviews", "v1"))],
        created="2024-01-01T00:00:00Z",
    )
    newer = virtual_service(
        "a-new",
        ["extra.example.com", "reviews.default.svc.cluster.local"],
        [http_route(destination("reviews", "v2"))],
        created="2024-03-01T00:00:00Z",
    )
    result = run(*versioned_service(), newer, older)
    assert only_route(result).destinations == (WeightedCluster(V1, 100),)
    assert has(result.diagnostics, "VirtualService/a-new", "spec.hosts[1]", Severity.ERROR, "b-old")
    extra = vhost(result.model.mesh_hosts, "extra.example.com:80")
    assert extra.routes[0].destinations == (WeightedCluster(V2, 100),)


def test_virtual_services_of_the_same_age_are_ordered_by_namespace_then_name() -> None:
    first = virtual_service(
        "a",
        ["reviews.default"],
        [http_route(destination("reviews.default", "v1"))],
        namespace="alpha",
    )
    second = virtual_service("a", ["reviews"], [http_route(destination("reviews", "v2"))])
    result = run(*versioned_service(), second, first)
    assert only_route(result).destinations == (WeightedCluster(V1, 100),)


@pytest.mark.parametrize(
    ("gateways", "in_mesh", "on_gateway"),
    [
        (None, True, False),
        (["mesh"], True, False),
        (["splitplane-system/splitplane"], False, True),
        (["splitplane.splitplane-system.svc.cluster.local"], False, True),
        (["mesh", "splitplane-system/splitplane"], True, True),
        (["istio-system/ingressgateway"], False, False),
        (["splitplane"], False, False),  # a bare name is in the VirtualService's namespace
        (["mesh", "istio-system/ingressgateway"], True, False),
    ],
    ids=[
        "no-gateways-means-the-mesh",
        "mesh-means-the-mesh",
        "splitplanes-gateway-means-the-load-balancer-fleet-only",
        "the-long-form-names-the-same-gateway",
        "mesh-and-splitplanes-gateway-means-both",
        "another-owners-gateway-is-left-alone",
        "a-bare-name-is-in-the-virtual-services-namespace",
        "mesh-and-another-owners-gateway-means-the-mesh",
    ],
)
def test_gateways(gateways: list[str] | None, in_mesh: bool, on_gateway: bool) -> None:
    spec: dict[str, Any] = {"gateways": gateways} if gateways is not None else {}
    vs = virtual_service(
        "reviews",
        ["reviews", "shop.example.com"],
        [http_route(destination("reviews", "v2"))],
        **spec,
    )
    model = run(*versioned_service(), vs).model
    mesh_route = vhost(model.mesh_hosts, f"{REVIEWS}:80").routes[0]
    assert (mesh_route.destinations == (WeightedCluster(V2, 100),)) is in_mesh
    assert any(v.name == "shop.example.com:80" for v in model.mesh_hosts) is in_mesh
    gateway_hosts = sorted(h for v in model.gateway_hosts for h in v.hosts)
    assert gateway_hosts == (["reviews", "shop.example.com"] if on_gateway else [])


def test_a_virtual_service_bound_to_another_gateway_gets_one_info_and_no_check() -> None:
    # Istio's ingress routes, with what splitplane would call an error (weights summing to 0).
    istio_ingress = virtual_service(
        "shop",
        ["shop.example.com"],
        [http_route(destination("nowhere", "v1", weight=0))],
        gateways=["istio-system/ingressgateway"],
    )
    translation = run(*versioned_service(), istio_ingress)

    assert [(d.severity, d.field, d.message) for d in translation.diagnostics] == [
        (
            Severity.INFO,
            "spec.gateways[0]",
            "gateway istio-system/ingressgateway is not splitplane's "
            "(splitplane-system/splitplane); its routes are left to its owner",
        )
    ]
    assert translation.model.gateway_hosts == ()


def test_the_fleet_serves_the_gateway_names_it_is_given() -> None:
    vs = virtual_service(
        "shop",
        ["shop.example.com"],
        [http_route(destination("reviews", "v2"))],
        gateways=["edge/public"],
    )
    options = Options(gateway_names=frozenset({"edge/public", "edge/internal"}))
    translation = translate([*versioned_service(), vs], options=options)

    assert translation.diagnostics == ()
    assert [h for v in translation.model.gateway_hosts for h in v.hosts] == ["shop.example.com"]


def test_tcp_rules_are_resolved_per_service_port() -> None:
    svc = service(
        "db",
        ports=[service_port(3306, "tcp-mysql"), service_port(3307, "tcp-admin")],
        selector={"app": "db"},
    )
    rule = destination_rule(
        "db", "db", {"primary": {"role": "primary"}, "replica": {"role": "replica"}}
    )
    vs = virtual_service(
        "db",
        ["db"],
        tcp=[
            {
                "match": [{"port": 3306}],
                "route": [
                    destination("db", "primary", port=3306, weight=80),
                    destination("db", "replica", port=3306, weight=20),
                ],
            }
        ],
        gateways=["mesh", "splitplane-system/splitplane"],
    )
    host = "db.default.svc.cluster.local"
    expected = (
        WeightedCluster(f"outbound|3306|primary|{host}", 80),
        WeightedCluster(f"outbound|3306|replica|{host}", 20),
    )
    assert run(svc, rule, vs, pod("db-0", "10.1.0.1", {"app": "db"})).model.tcp_routes == (
        TcpRoute(host, 3306, expected, gateway=False),
        TcpRoute(host, 3306, expected, gateway=True),
    )


# ------------------------------------------------------------------------------------------------
# Destination problems


@pytest.mark.parametrize(
    ("dest", "field", "fragment"),
    [
        (destination("reviews", "v9"), "spec.http[0].route[0].destination.subset", "'v9'"),
        (
            destination("reviews", port=81),
            "spec.http[0].route[0].destination.port.number",
            "no port 81",
        ),
        (destination("multi"), "spec.http[0].route[0].destination.port", "2 ports"),
        (destination("reviews", "v1", weight=-5), "spec.http[0].route[0].weight", "negative"),
    ],
    ids=[
        "a-subset-missing-from-the-destination-rule-is-an-error",
        "an-unknown-destination-port-is-an-error",
        "a-multi-port-destination-needs-a-port",
        "a-negative-weight-is-an-error",
    ],
)
def test_destination_errors(dest: Obj, field: str, fragment: str) -> None:
    multi = service("multi", ports=[service_port(80, "http"), service_port(81, "http-b")])
    vs = virtual_service("vs", ["reviews"], [http_route(dest)])
    result = run(*versioned_service(), multi, vs)
    assert has(result.diagnostics, "VirtualService/vs", field, Severity.ERROR, fragment)
    assert only_route(result).destinations == (WeightedCluster(DEFAULT, 100),)


@pytest.mark.parametrize(
    "dests",
    [
        [destination("ratings")],
        [destination("reviews", "v1", weight=90), destination("ratings", weight=10)],
    ],
    ids=["alone", "in-a-split"],
)
def test_an_unknown_destination_host_fails_only_its_rule(dests: list[Obj]) -> None:
    # Istio accepts the VirtualService; requests on that rule get 503.
    broken = http_route(*dests, match=[{"uri": {"prefix": "/ratings"}}])
    working = http_route(destination("reviews", "v2"))
    result = run(*versioned_service(), virtual_service("vs", ["reviews"], [broken, working]))
    assert not result.has_errors, result.diagnostics
    field = f"spec.http[0].route[{len(dests) - 1}].destination.host"
    assert has(result.diagnostics, "VirtualService/vs", field, Severity.WARNING, "answers 503")
    first, second = vhost(result.model.mesh_hosts, f"{REVIEWS}:80").routes
    assert first.destinations == ()  # no destination: Envoy answers 503
    assert second.destinations == (WeightedCluster(V2, 100),)


def test_all_zero_weights_are_an_error_on_the_route() -> None:
    dests = [destination("reviews", "v1", weight=0), destination("reviews", "v2", weight=0)]
    result = run(*versioned_service(), virtual_service("vs", ["reviews"], [http_route(*dests)]))
    assert has(
        result.diagnostics, "VirtualService/vs", "spec.http[0].route", Severity.ERROR, "sum to 0"
    )


@pytest.mark.parametrize(
    ("obj", "where", "field", "fragment"),
    [
        (
            virtual_service(
                "reviews",
                ["reviews"],
                [
                    http_route(
                        destination("reviews"),
                        retries={"attempts": 2, "retryRemoteLocalities": True},
                    )
                ],
            ),
            "VirtualService/reviews",
            "spec.http[0].retries.retryRemoteLocalities",
            "locality",
        ),
        (
            destination_rule(
                "reviews",
                "reviews",
                trafficPolicy={"loadBalancer": {"simple": "PASSTHROUGH"}},
            ),
            "DestinationRule/reviews",
            "spec.trafficPolicy.loadBalancer.simple",
            "round robin",
        ),
        (
            virtual_service(
                "reviews",
                ["reviews"],
                [http_route(destination("reviews"), fault={"abort": {"httpStatus": 500}})],
            ),
            "VirtualService/reviews",
            "spec.http[0].fault.abort.percentage",
            "no request is aborted",
        ),
        (
            virtual_service(
                "reviews",
                ["reviews"],
                [http_route(destination("reviews"), fault={"delay": {"fixedDelay": "1s"}})],
            ),
            "VirtualService/reviews",
            "spec.http[0].fault.delay.percentage",
            "no request is delayed",
        ),
        (
            virtual_service(
                "reviews",
                ["reviews"],
                [
                    http_route(
                        destination("reviews"),
                        retries={"attempts": 2, "retryOn": "retriable-status-codes"},
                    )
                ],
            ),
            "VirtualService/reviews",
            "spec.http[0].retries.retryOn",
            "no status is retried",
        ),
    ],
    ids=[
        "retry-remote-localities",
        "passthrough-load-balancing",
        "fault-abort-without-percentage",
        "fault-delay-without-percentage",
        "retriable-status-codes-without-codes",
    ],
)
def test_accepted_settings_splitplane_cannot_honour_are_warnings(
    obj: Obj, where: str, field: str, fragment: str
) -> None:
    result = run(service("reviews"), obj)
    assert has(result.diagnostics, where, field, Severity.WARNING, fragment), result.diagnostics
    assert not result.has_errors


@pytest.mark.parametrize("export_to", [["*"], []], ids=["everywhere", "not-given"])
def test_exporting_to_every_namespace_needs_no_warning(export_to: list[str]) -> None:
    vs = virtual_service(
        "reviews", ["reviews"], [http_route(destination("reviews"))], exportTo=export_to
    )
    diagnostics = run(service("reviews"), vs).diagnostics
    assert [d for d in diagnostics if d.kind == "VirtualService"] == []


@pytest.mark.parametrize(
    ("weights", "one"),
    [((None,), True), ((100, 0), False), ((90, 10), False)],
    ids=["one-destination", "two-with-one-at-zero", "two"],
)
def test_a_rule_notes_whether_it_names_exactly_one_destination(
    weights: tuple[int | None, ...], one: bool
) -> None:
    dests = [destination("reviews", f"v{k + 1}", weight=w) for k, w in enumerate(weights)]
    result = run(
        *versioned_service(), virtual_service("reviews", ["reviews"], [http_route(*dests)])
    )
    assert not result.has_errors, result.diagnostics
    assert only_route(result).one_destination == one


@pytest.mark.parametrize(
    ("rule", "field", "fragment"),
    [
        ({"directResponse": {"status": 99}}, "spec.http[0].directResponse.status", "200 to 599"),
        (
            {"directResponse": {"status": 200, "body": {"string": "x" * 4097}}},
            "spec.http[0].directResponse.body",
            "4097 bytes",
        ),
        (
            {"route": [{"destination": {"host": "reviews"}}], "directResponse": {"status": 200}},
            "spec.http[0]",
            "has route and directResponse; use one",
        ),
    ],
    ids=["status-out-of-range", "body-too-large-for-envoy", "with-a-route-too"],
)
def test_direct_response_errors(rule: Obj, field: str, fragment: str) -> None:
    vs = virtual_service("reviews", ["reviews"], [rule])
    result = run(*versioned_service(), vs)
    assert has(result.diagnostics, "VirtualService/reviews", field, Severity.ERROR, fragment)


@pytest.mark.parametrize(
    ("rule", "field", "fragment"),
    [
        ({"redirect": {"redirectCode": 302}}, "spec.http[0].redirect", "redirects to itself"),
        ({"redirect": {}}, "spec.http[0].redirect", "redirects to itself"),
        (
            {
                "route": [{"destination": {"host": "reviews"}}],
                "rewrite": {"uri": "/v2", "uriRegexRewrite": {"match": "^/v1", "rewrite": "/v2"}},
            },
            "spec.http[0].rewrite",
            "one of uri or uriRegexRewrite",
        ),
    ],
    ids=["redirect-changing-nothing", "empty-redirect", "rewrite-uri-and-regex"],
)
def test_redirects_and_rewrites_istio_rejects_are_errors(
    rule: Obj, field: str, fragment: str
) -> None:
    vs = virtual_service("reviews", ["reviews"], [rule])
    result = run(*versioned_service(), vs)
    assert has(result.diagnostics, "VirtualService/reviews", field, Severity.ERROR, fragment)


@pytest.mark.parametrize(
    "redirect", [{"scheme": "https"}, {"port": 8443}], ids=["scheme-only", "port-only"]
)
def test_a_redirect_changing_only_scheme_or_port_is_accepted(redirect: Obj) -> None:
    vs = virtual_service("reviews", ["reviews"], [{"redirect": redirect}])
    result = run(*versioned_service(), vs)
    assert not result.has_errors, result.diagnostics


def test_a_retry_backoff_envoy_would_reject_is_an_error() -> None:
    rule = http_route(destination("reviews", "v1"), retries={"attempts": 2, "backoff": "1ms"})
    result = run(*versioned_service(), virtual_service("reviews", ["reviews"], [rule]))
    assert has(
        result.diagnostics,
        "VirtualService/reviews",
        "spec.http[0].retries.backoff",
        Severity.ERROR,
        "more than 1ms",
    )


def test_mirror_and_mirrors_together_are_an_error() -> None:
    rule = http_route(
        destination("reviews", "v1"),
        mirror={"host": "reviews", "subset": "v2"},
        mirrors=[{"destination": {"host": "reviews", "subset": "v2"}}],
    )
    result = run(*versioned_service(), virtual_service("reviews", ["reviews"], [rule]))
    assert has(
        result.diagnostics,
        "VirtualService/reviews",
        "spec.http[0].mirrors",
        Severity.ERROR,
        "use one",
    )
