"""A DestinationRule that turns out invalid never takes its subsets with it.

Its last accepted version serves when there is one; when there is none (a new rule, or a server
that just started), its host and subsets are still used, without any traffic policy, so that a
VirtualService routing to its subsets is not rejected along with it.
"""

from __future__ import annotations

from typing import Any

from tests.unit.objects import destination, destination_rule, http_route, service, virtual_service
from translators.diagnostics import Severity
from translators.translate import DEGRADED, translate


def objects(policy: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        service("reviews"),
        destination_rule(
            "reviews", "reviews", {"v1": {"version": "v1"}, "v2": {"version": "v2"}}, **policy
        ),
        virtual_service(
            "reviews",
            ["reviews"],
            [
                http_route(
                    destination("reviews", "v1", weight=90), destination("reviews", "v2", weight=10)
                )
            ],
        ),
    ]


def test_an_invalid_new_rule_keeps_its_subsets_without_its_policy() -> None:
    result = translate(
        objects({"trafficPolicy": {"outlierDetection": {"maxEjectionPercent": 500}}})
    )
    found = {(d.kind, d.field, d.severity, d.message) for d in result.diagnostics}
    assert ("DestinationRule", "", Severity.WARNING, DEGRADED) in found
    assert [d.kind for d in result.diagnostics if d.is_error] == ["DestinationRule"]
    clusters = {c.name: c for c in result.model.clusters}
    assert (
        clusters["outbound|80|v1|reviews.default.svc.cluster.local"].policy.outlier_detection
        is None
    )
    routes = result.model.mesh_hosts[0].routes[0].destinations
    assert [d.cluster for d in routes] == [
        "outbound|80|v1|reviews.default.svc.cluster.local",
        "outbound|80|v2|reviews.default.svc.cluster.local",
    ]


def test_an_unknown_field_in_the_policy_does_not_lose_the_subsets() -> None:
    result = translate(objects({"trafficPolicy": {"loadBalancer": {"simpel": "RANDOM"}}}))
    assert [d.kind for d in result.diagnostics if d.is_error] == ["DestinationRule"]
    assert not any(d.kind == "VirtualService" for d in result.diagnostics)


def test_the_last_accepted_version_wins_over_the_subsets_alone() -> None:
    first = translate(objects({"trafficPolicy": {"loadBalancer": {"simple": "RANDOM"}}}))
    second = translate(objects({"trafficPolicy": {"bogus": 1}}), previous=first)
    assert not any(d.message == DEGRADED for d in second.diagnostics)
    cluster = second.model.clusters[0]
    assert cluster.policy.load_balancer.value == "RANDOM"
