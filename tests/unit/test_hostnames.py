"""Hostnames in VirtualService hosts, destinations and DestinationRule host, validated as Istio
validates them (its ValidateWildcardDomain): DNS-1123 labels, a leading wildcard, 255 characters."""

from __future__ import annotations

import pytest

from tests.unit.objects import (
    Obj,
    destination,
    destination_rule,
    http_route,
    versioned_service,
    virtual_service,
)
from translators.hostnames import hostname_problem
from translators.translate import translate

VALID = [
    "reviews",
    "reviews.default",
    "reviews.default.svc.cluster.local",
    "reviews.default.svc.cluster.local.",  # a final dot
    "Reviews.Default",  # Istio accepts upper case; matching ignores case
    "shop.example.com",
    "*",
    "*.example.com",
    "*example.com",
    "*-api.example.com",
    "a" * 63 + ".example.com",
    ".".join(["a" * 63] * 4),  # 255 characters
    "123",  # one label may be all digits
    "x-1.example.com",
]

INVALID = [
    ("reviews\x00", "label 'reviews\\x00' is not a DNS-1123 label or a leading wildcard"),
    ("reviews\u202e", "label 'reviews\\u202e' is not a DNS-1123 label or a leading wildcard"),
    ("re views", "label 're views' is not a DNS-1123 label"),
    (" reviews", "label ' reviews' is not a DNS-1123 label"),
    ("reviews ", "label 'reviews ' is not a DNS-1123 label"),
    ("../../etc", "an empty label is not a DNS-1123 label or a leading wildcard"),
    ("a/b", "label 'a/b' is not a DNS-1123 label"),
    ("r" * 100_000, "100000 characters, at most 255"),
    (".".join(["a" * 63] * 4) + "a", "256 characters, at most 255"),
    ("a" * 64 + ".example.com", "(64 characters, at most 63)"),
    ("shop.*.com", "label '*' is not a DNS-1123 label"),
    ("**.example.com", "label '**' is not a DNS-1123 label or a leading wildcard"),
    ("a..b", "an empty label is not a DNS-1123 label"),
    ("-reviews", "label '-reviews' is not a DNS-1123 label"),
    ("reviews-", "label 'reviews-' is not a DNS-1123 label"),
    ("re_views", "label 're_views' is not a DNS-1123 label"),
    ("rëviews", "label 'rëviews' is not a DNS-1123 label"),
    ("shop.example.123", "the top-level domain '123' is all digits"),
    ("10.0.0.1", "the top-level domain '1' is all digits"),
    ("", "must not be empty"),
]


@pytest.mark.parametrize("host", VALID)
def test_hostnames_istio_accepts(host: str) -> None:
    assert hostname_problem(host) == ""


@pytest.mark.parametrize(("host", "reason"), INVALID, ids=[h[:20] or "empty" for h, _ in INVALID])
def test_hostnames_istio_refuses(host: str, reason: str) -> None:
    assert reason in hostname_problem(host)


def test_a_long_hostname_is_shown_cut_short() -> None:
    problem = hostname_problem("r" * 100_000)
    assert len(problem) < 200
    assert problem.startswith("'" + "r" * 64 + "'… (100000 characters)")


@pytest.mark.parametrize("host", ["10.0.0.1", "::1", "fd00::1"])
def test_a_virtual_service_host_may_be_an_ip_address(host: str) -> None:
    assert hostname_problem(host, ip_address=True) == ""


BAD_HOSTS = ["reviews\x00", "reviews\u202e", "re views", "../../etc", "r" * 100_000]


def errors(objects: list[Obj]) -> list[tuple[str, str, str]]:
    return [(d.kind, d.field, d.message) for d in translate(objects).diagnostics if d.is_error]


@pytest.mark.parametrize("bad", BAD_HOSTS, ids=["nul", "u202e", "space", "path", "100k"])
def test_a_virtual_service_host_that_is_not_a_hostname_is_an_error_naming_it(bad: str) -> None:
    vs = virtual_service("reviews", ["reviews", bad], [http_route(destination("reviews", "v1"))])
    result = translate([*versioned_service(), vs])
    [(kind, field, message)] = errors([*versioned_service(), vs])
    assert (kind, field) == ("VirtualService", "spec.hosts[1]")
    assert message == hostname_problem(bad, ip_address=True)
    # Nothing of it reaches Envoy: the VirtualService is left out, its host with it.
    hosts = [h for v in result.model.mesh_hosts for h in v.hosts]
    assert hosts and all(hostname_problem(h) == "" for h in hosts)


@pytest.mark.parametrize("bad", BAD_HOSTS, ids=["nul", "u202e", "space", "path", "100k"])
def test_a_destination_host_that_is_not_a_hostname_is_an_error_naming_it(bad: str) -> None:
    vs = virtual_service("reviews", ["reviews"], [http_route(destination(bad))])
    [(kind, field, message)] = errors([*versioned_service(), vs])
    assert (kind, field) == ("VirtualService", "spec.http[0].route[0].destination.host")
    assert message == hostname_problem(bad)


@pytest.mark.parametrize("bad", BAD_HOSTS, ids=["nul", "u202e", "space", "path", "100k"])
def test_a_destination_rule_host_that_is_not_a_hostname_is_an_error_naming_it(bad: str) -> None:
    objects = [o for o in versioned_service() if o["kind"] != "DestinationRule"]
    rule = destination_rule("reviews", bad, {"v1": {"version": "v1"}})
    [(kind, field, message)] = errors([*objects, rule])
    assert (kind, field) == ("DestinationRule", "spec.host")
    assert message == hostname_problem(bad)


def test_upper_case_hosts_route_like_lower_case_ones() -> None:
    upper = virtual_service(
        "reviews", ["Reviews.Default"], [http_route(destination("REVIEWS", "v2"))]
    )
    lower = virtual_service(
        "reviews", ["reviews.default"], [http_route(destination("reviews", "v2"))]
    )
    assert translate([*versioned_service(), upper]).model == (
        translate([*versioned_service(), lower]).model
    )
