"""VirtualService delegation as Istio implements it: a root rule's ``delegate`` brings in the
rules of a VirtualService without hosts, under the root rule's match."""

from __future__ import annotations

from tests.unit.objects import (
    Obj,
    destination,
    destination_rule,
    http_route,
    service,
    virtual_service,
)
from translators.diagnostics import Severity
from translators.model import HttpRoute, MatchKind, StringMatch, WeightedCluster
from translators.translate import Translation, translate

REVIEWS = "reviews.default.svc.cluster.local"
V1 = f"outbound|80|v1|{REVIEWS}"
V2 = f"outbound|80|v2|{REVIEWS}"
RATINGS = "ratings.team.svc.cluster.local"


def mesh() -> list[Obj]:
    return [
        service("reviews"),
        service("ratings", namespace="team"),
        destination_rule("reviews", "reviews", {"v1": {"version": "v1"}, "v2": {"version": "v2"}}),
    ]


def root(*rules: Obj) -> Obj:
    return virtual_service("root", ["reviews"], list(rules))


def delegate(name: str, *rules: Obj, namespace: str = "default") -> Obj:
    obj = virtual_service(name, [], list(rules), namespace=namespace)
    del obj["spec"]["hosts"]
    return obj


def routes(result: Translation) -> tuple[HttpRoute, ...]:
    (vhost,) = [v for v in result.model.mesh_hosts if v.name == f"{REVIEWS}:80"]
    return vhost.routes


def prefix(value: str) -> StringMatch:
    return StringMatch(MatchKind.PREFIX, value)


def test_delegate_rules_are_merged_under_the_root_rules_match() -> None:
    rules = (
        {
            "name": "api",
            "match": [{"uri": {"prefix": "/api"}}],
            "delegate": {"name": "reviews-api"},
            "timeout": "3s",
        },
        http_route(destination("reviews", "v1")),
    )
    leaf = delegate(
        "reviews-api",
        http_route(destination("reviews", "v2"), name="v2", match=[{"uri": {"prefix": "/api/v2"}}]),
        http_route(destination("reviews", "v1"), name="rest"),
    )
    result = translate([*mesh(), root(*rules), leaf])

    assert not result.has_errors, result.diagnostics
    v2, rest, default = routes(result)
    assert (v2.name, v2.matches[0].uri, v2.destinations) == (
        "api-v2",
        prefix("/api/v2"),
        (WeightedCluster(V2, 100),),
    )
    assert (rest.name, rest.matches[0].uri, rest.destinations) == (
        "api-rest",
        prefix("/api"),
        (WeightedCluster(V1, 100),),
    )
    assert v2.timeout_ms == rest.timeout_ms == 3000  # the root rule's, unset in the delegate
    assert default.destinations == (WeightedCluster(V1, 100),)
    # The delegate has no hosts of its own and raises nothing about them.
    assert not [d for d in result.diagnostics if d.name == "reviews-api"]


def test_a_delegate_rule_outside_the_root_match_is_left_out() -> None:
    rules = ({"match": [{"uri": {"prefix": "/api"}}], "delegate": {"name": "leaf"}},)
    leaf = delegate(
        "leaf",
        http_route(destination("reviews", "v2"), match=[{"uri": {"prefix": "/admin"}}]),
        http_route(destination("reviews", "v1"), match=[{"uri": {"exact": "/api/x"}}]),
    )
    result = translate([*mesh(), root(*rules), leaf])
    (only,) = routes(result)
    assert only.matches[0].uri == StringMatch(MatchKind.EXACT, "/api/x")


def test_a_delegate_in_another_namespace_resolves_short_hosts_in_its_own() -> None:
    rules = ({"delegate": {"name": "leaf", "namespace": "team"}},)
    leaf = delegate("leaf", http_route(destination("ratings")), namespace="team")
    result = translate([*mesh(), root(*rules), leaf])
    assert not result.has_errors, result.diagnostics
    (only,) = routes(result)
    assert only.destinations == (WeightedCluster(f"outbound|80||{RATINGS}", 100),)


def test_a_missing_delegate_leaves_its_rule_out_with_a_warning() -> None:
    rules = ({"delegate": {"name": "nowhere"}}, http_route(destination("reviews", "v1")))
    result = translate([*mesh(), root(*rules)])
    assert not result.has_errors, result.diagnostics
    assert [r.destinations for r in routes(result)] == [(WeightedCluster(V1, 100),)]
    (warning,) = [d for d in result.diagnostics if d.name == "root"]
    assert (warning.field, warning.severity) == ("spec.http[0].delegate", Severity.WARNING)


def test_a_delegate_may_not_delegate_again_nor_a_root_rule_route_too() -> None:
    rules = ({"delegate": {"name": "leaf"}, "route": [destination("reviews", "v1")]},)
    leaf = delegate("leaf", {"delegate": {"name": "other"}}, http_route(destination("reviews")))
    result = translate([*mesh(), root(*rules), leaf])
    errors = {(d.name, d.field) for d in result.diagnostics if d.is_error}
    assert errors == {("root", "spec.http[0].route"), ("leaf", "spec.http[0].delegate")}


def test_a_virtual_service_without_hosts_that_no_root_uses_is_only_a_warning() -> None:
    result = translate([*mesh(), delegate("leaf", http_route(destination("reviews")))])
    assert not result.has_errors, result.diagnostics
    (warning,) = [d for d in result.diagnostics if d.name == "leaf"]
    assert warning.severity is Severity.WARNING and "delegate" in warning.message
