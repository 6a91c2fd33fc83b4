"""The preflight check: Envoy's own rules, from its protos and its code, before anything is sent.

Rules come from the ``validate.rules`` options the xds-protos descriptors carry, so these tests
name the field Envoy would complain about, not a rule written down here. A VirtualService or
DestinationRule that would make Envoy reject what it contributes is invalid: its last accepted
version keeps serving, and nobody else's routes are held back by it.
"""

from __future__ import annotations

from typing import Any

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.http.cors.v3 import cors_pb2

from tests.unit.objects import (
    destination,
    destination_rule,
    http_route,
    versioned_service,
    virtual_service,
)
from translators.build import build_group
from translators.diagnostics import STILL_SERVING, Severity
from translators.envoy_rules import header_value_problem, is_prime
from translators.model import MatchKind, NodeGroup, Role
from translators.preflight import ingress_problems, violations
from translators.resolve_ingress import IngressBackend, IngressPath, IngressRules
from translators.resolve_routing import Source
from translators.translate import translate


def paths(message: Any) -> list[str]:
    return [path for path, _ in violations(message)]


# ------------------------------------------------------------------------------------------------
# Rules from the protos


def test_a_valid_route_breaks_no_rule() -> None:
    route = rc.Route(match=rc.RouteMatch(prefix="/"), route=rc.RouteAction(cluster="c"))
    assert violations(route) == []


def test_an_empty_header_name_in_a_match_breaks_min_len() -> None:
    route = rc.Route(match=rc.RouteMatch(prefix="/"), route=rc.RouteAction(cluster="c"))
    route.match.headers.add(name="", present_match=True)
    assert paths(route) == ["match.headers[0].name"]


def test_a_route_without_an_action_breaks_a_required_oneof() -> None:
    route = rc.Route(match=rc.RouteMatch(prefix="/"))
    assert paths(route) == ["action"]


def test_rules_of_a_oneof_member_apply_only_when_it_is_chosen() -> None:
    # RouteAction.cluster has min_len 1; a weighted route does not set it
    action = rc.RouteAction()
    action.weighted_clusters.clusters.add(name="a").weight.value = 1
    route = rc.Route(match=rc.RouteMatch(prefix="/"), route=action)
    assert violations(route) == []


def test_wrapped_values_are_checked_by_the_rules_of_their_field() -> None:
    cluster = cluster_pb2.Cluster(name="c")
    cluster.outlier_detection.max_ejection_percent.value = 101
    assert ("outlier_detection.max_ejection_percent", "must be at most 100, got 101") in (
        violations(cluster)
    )


def test_a_percentage_above_100_breaks_the_percent_rule() -> None:
    cluster = cluster_pb2.Cluster(name="c")
    cluster.common_lb_config.healthy_panic_threshold.value = 150.0
    assert paths(cluster) == ["common_lb_config.healthy_panic_threshold.value"]


def test_durations_are_checked_against_their_bounds() -> None:
    cluster = cluster_pb2.Cluster(name="c")
    cluster.outlier_detection.interval.SetInParent()  # 0s; Envoy wants more than 0
    assert paths(cluster) == ["outlier_detection.interval"]


def test_a_typed_config_is_checked_as_the_message_it_holds() -> None:
    policy = cors_pb2.CorsPolicy()
    policy.allow_origin_string_match.add(prefix="")
    route = rc.Route(match=rc.RouteMatch(prefix="/"), route=rc.RouteAction(cluster="c"))
    route.typed_per_filter_config["envoy.filters.http.cors"].Pack(policy)
    assert paths(route) == [
        "typed_per_filter_config['envoy.filters.http.cors'].allow_origin_string_match[0].prefix"
    ]


def test_violations_in_a_route_table_name_the_virtual_host_and_route() -> None:
    table = route_pb2.RouteConfiguration(name="80")
    vhost = table.virtual_hosts.add(name="a", domains=["a"])
    vhost.routes.add(match=rc.RouteMatch(prefix="/"), route=rc.RouteAction(cluster="c"))
    bad = vhost.routes.add(match=rc.RouteMatch(prefix="/"), route=rc.RouteAction(cluster="c"))
    bad.match.headers.add(name="x", string_match={"prefix": ""})
    assert paths(table) == ["virtual_hosts[0].routes[1].match.headers[0].string_match.prefix"]


# ------------------------------------------------------------------------------------------------
# Rules Envoy enforces in code


@pytest.mark.parametrize(
    ("pattern", "rejected"),
    [("^/api/.*$", False), ("(?=lookahead)", True), ("a" * 200, True), ("[", True)],
)
def test_regexes_are_compiled_as_envoy_compiles_them(pattern: str, rejected: bool) -> None:
    route = rc.Route(match=rc.RouteMatch(), route=rc.RouteAction(cluster="c"))
    route.match.safe_regex.regex = pattern
    assert (paths(route) == ["match.safe_regex.regex"]) is rejected


@pytest.mark.parametrize(
    ("value", "accepted"),
    [
        ("plain", True),
        ("100%%", True),
        ("%HOSTNAME%", True),
        ("prefix %DOWNSTREAM_REMOTE_ADDRESS% suffix", True),
        ("%REQ(x-request-id)%", True),
        ("%START_TIME(%s)%", True),
        ("50%", False),
        ("abc%123", False),
        ("%START_TIME%%", False),
        ("%NOT_A_COMMAND%", False),
    ],
)
def test_header_values_are_read_as_envoys_formatter_reads_them(value: str, accepted: bool) -> None:
    assert (header_value_problem(value) is None) is accepted


def test_maglev_table_sizes_must_be_prime() -> None:
    assert [n for n in (2, 3, 4, 9, 65537, 65536, 5000011) if is_prime(n)] == [2, 3, 65537, 5000011]
    cluster = cluster_pb2.Cluster(name="c", lb_policy=cluster_pb2.Cluster.MAGLEV)
    cluster.maglev_lb_config.table_size.value = 1000
    assert paths(cluster) == ["maglev_lb_config.table_size"]


def test_a_route_that_rewrites_its_path_two_ways_is_rejected() -> None:
    action = rc.RouteAction(cluster="c", prefix_rewrite="/v2")
    action.regex_rewrite.pattern.regex = "^/v1"
    route = rc.Route(match=rc.RouteMatch(prefix="/"), route=action)
    assert paths(route) == ["route"]


# ------------------------------------------------------------------------------------------------
# Objects: what Envoy would reject is left out, and only that


def mesh(*extra: dict[str, Any]) -> list[dict[str, Any]]:
    objects = versioned_service("reviews") + versioned_service("ratings", base_ip="10.0.1")
    return [
        *objects,
        virtual_service(
            "ratings", ["ratings"], [http_route(destination("ratings", "v1", weight=100))]
        ),
        *extra,
    ]


def reviews_routes(**rule: Any) -> dict[str, Any]:
    return virtual_service(
        "reviews", ["reviews"], [http_route(destination("reviews", "v2"), **rule)]
    )


# A header name with a line feed: valid YAML, which no Istio-style check here looks at, and which
# Envoy rejects (its header names must not hold NUL, CR or LF).
ENVOY_ONLY = {"headers": {"request": {"set": {"x-bad\nname": "1"}}}}


def test_a_rule_envoy_would_reject_is_an_error_on_that_rule() -> None:
    result = translate(mesh(reviews_routes(**ENVOY_ONLY)))
    errors = [d for d in result.diagnostics if d.is_error]
    assert [(d.kind, d.name, d.field) for d in errors] == [
        ("VirtualService", "reviews", "spec.http[0]")
    ]
    assert "request_headers_to_add[0].header.key" in errors[0].message


def test_its_last_accepted_version_keeps_serving_and_others_still_update() -> None:
    first = translate(mesh(reviews_routes()))
    flipped = [
        *versioned_service("reviews"),
        *versioned_service("ratings", base_ip="10.0.1"),
        virtual_service(
            "ratings", ["ratings"], [http_route(destination("ratings", "v2", weight=100))]
        ),
        reviews_routes(**ENVOY_ONLY),
    ]
    second = translate(flipped, previous=first)
    assert ("VirtualService", "reviews", Severity.WARNING, STILL_SERVING) in [
        (d.kind, d.name, d.severity, d.message) for d in second.diagnostics
    ]
    table = build_group(second.model, NodeGroup(Role.SIDECAR, 15001))
    routes = {
        vhost.name: vhost.routes[0].route.cluster
        for config in table["type.googleapis.com/envoy.config.route.v3.RouteConfiguration"]
        for vhost in config.virtual_hosts  # type: ignore[attr-defined]
    }
    assert routes["ratings.default.svc.cluster.local:80"] == (
        "outbound|80|v2|ratings.default.svc.cluster.local"
    )
    assert routes["reviews.default.svc.cluster.local:80"] == (
        "outbound|80|v2|reviews.default.svc.cluster.local"
    )
    for resources in build_group(second.model, NodeGroup(Role.SIDECAR, 15001)).values():
        for resource in resources:
            assert violations(resource) == []


def test_a_destination_rule_envoy_would_reject_names_its_policy() -> None:
    rule = destination_rule(
        "reviews",
        "reviews",
        {"v1": {"version": "v1"}},
        trafficPolicy={"outlierDetection": {"interval": "0s"}},
    )
    result = translate([*versioned_service("reviews")[:-1], rule])
    errors = [d for d in result.diagnostics if d.is_error]
    assert [(d.kind, d.field) for d in errors] == [("DestinationRule", "spec.trafficPolicy")]
    assert "cluster.outlier_detection.interval" in errors[0].message


def test_an_ingress_path_envoy_would_reject_is_an_error_on_that_path() -> None:
    backend = IngressBackend("web", 80)
    rules = IngressRules(
        Source("default", "web"),
        ("web.example.com",),
        (
            IngressPath("web.example.com", MatchKind.PATH_PREFIX, "/ok", backend, "p0"),
            IngressPath("web.example.com", MatchKind.PATH_PREFIX, "/a?b", backend, "p1"),
        ),
        None,
    )
    found = ingress_problems(rules)
    assert [(d.kind, d.field) for d in found] == [("Ingress", "p1")]
    assert "path_separated_prefix" in found[0].message
