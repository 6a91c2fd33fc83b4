"""YAML that Istio rejects because Envoy would: an error naming kind/namespace/name and the field.

Each of these was accepted and made Envoy NACK the route table (or cluster list) it landed in.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.unit.objects import (
    destination,
    destination_rule,
    http_route,
    versioned_service,
    virtual_service,
)
from translators.translate import translate


def routes(**rule: Any) -> dict[str, Any]:
    return virtual_service(
        "reviews", ["reviews"], [http_route(destination("reviews", "v1"), **rule)]
    )


def policy(**traffic_policy: Any) -> dict[str, Any]:
    return destination_rule(
        "reviews", "reviews", {"v1": {"version": "v1"}}, trafficPolicy=traffic_policy
    )


CASES = [
    (routes(match=[{"headers": {"": {"exact": "a"}}}]), "spec.http[0].match[0].headers[]"),
    (
        routes(match=[{"withoutHeaders": {"": {"exact": "a"}}}]),
        "spec.http[0].match[0].withoutHeaders[]",
    ),
    (
        routes(headers={"request": {"set": {"": "a"}}}),
        "spec.http[0].headers.request.set[]",
    ),
    (
        routes(headers={"response": {"add": {"x-a": "50%"}}}),
        "spec.http[0].headers.response.add[x-a]",
    ),
    (
        virtual_service(
            "reviews",
            ["reviews"],
            [
                {
                    "route": [
                        {
                            **destination("reviews", "v1"),
                            "headers": {"request": {"set": {"x": "5%"}}},
                        }
                    ]
                }
            ],
        ),
        "spec.http[0].route[0].headers.request.set[x]",
    ),
    (routes(match=[{"uri": {"regex": ""}}]), "spec.http[0].match[0].uri.regex"),
    (routes(match=[{"method": {"prefix": ""}}]), "spec.http[0].match[0].method.prefix"),
    (routes(match=[{"method": {"regex": ""}}]), "spec.http[0].match[0].method.regex"),
    (routes(match=[{"scheme": {"prefix": ""}}]), "spec.http[0].match[0].scheme.prefix"),
    (
        routes(match=[{"queryParams": {"q": {"prefix": ""}}}]),
        "spec.http[0].match[0].queryParams[q].prefix",
    ),
    (
        routes(match=[{"headers": {"x-a": {"regex": ""}}}]),
        "spec.http[0].match[0].headers[x-a].regex",
    ),
    (
        routes(corsPolicy={"allowOrigins": [{"prefix": ""}]}),
        "spec.http[0].corsPolicy.allowOrigins[0].prefix",
    ),
    (
        policy(outlierDetection={"maxEjectionPercent": 101}),
        "spec.trafficPolicy.outlierDetection.maxEjectionPercent",
    ),
    (
        policy(outlierDetection={"minHealthPercent": -1}),
        "spec.trafficPolicy.outlierDetection.minHealthPercent",
    ),
    (
        policy(
            loadBalancer={"consistentHash": {"useSourceIp": True, "maglev": {"tableSize": 1000}}}
        ),
        "spec.trafficPolicy.loadBalancer.consistentHash.maglev.tableSize",
    ),
]


@pytest.mark.parametrize(("obj", "field"), CASES, ids=[field for _, field in CASES])
def test_the_error_names_the_object_and_the_field(obj: dict[str, Any], field: str) -> None:
    base = [o for o in versioned_service("reviews") if o["kind"] != obj["kind"]]
    result = translate([*base, obj])
    errors = [(d.kind, d.namespace, d.name, d.field) for d in result.diagnostics if d.is_error]
    assert errors == [(obj["kind"], "default", "reviews", field)]
