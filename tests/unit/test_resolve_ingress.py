"""Ingress + IngressClass → the load-balancer fleet's virtual hosts, through `translate`."""

from __future__ import annotations

from typing import Any

import pytest

from tests.unit.objects import (
    Obj,
    destination,
    http_route,
    metadata,
    service,
    service_port,
    versioned_service,
    virtual_service,
)
from translators.diagnostics import Diagnostic, Severity
from translators.model import (
    HttpRoute,
    KeyMatch,
    MatchKind,
    RouteMatch,
    StringMatch,
    VirtualHost,
    WeightedCluster,
)
from translators.translate import Translation, translate

WEB = "outbound|80||web.default.svc.cluster.local"
API = "outbound|80||api.default.svc.cluster.local"
REVIEWS = "reviews.default.svc.cluster.local"


def backend(name: str = "web", port: int | str = 80) -> Obj:
    key = "number" if isinstance(port, int) else "name"
    return {"service": {"name": name, "port": {key: port}}}


def path(value: str, kind: str | None = "Prefix", to: Obj | None = None) -> Obj:
    out: Obj = {"path": value, "backend": to or backend()}
    if kind is not None:
        out["pathType"] = kind
    return out


def rule(host: str | None, *paths: Obj) -> Obj:
    out: Obj = {"http": {"paths": list(paths)}}
    if host is not None:
        out["host"] = host
    return out


def ingress(
    name: str,
    *rules: Obj,
    class_name: str | None = "splitplane",
    created: str | None = None,
    annotations: dict[str, str] | None = None,
    **spec: Any,
) -> Obj:
    body: Obj = {"rules": list(rules), **spec}
    if class_name is not None:
        body["ingressClassName"] = class_name
    meta = metadata(name, "default", created=created)
    if annotations:
        meta["annotations"] = annotations
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": meta,
        "spec": body,
    }


def ingress_class(name: str, controller: str, default: bool = False) -> Obj:
    meta: Obj = {"name": name}
    if default:
        meta["annotations"] = {"ingressclass.kubernetes.io/is-default-class": "true"}
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "IngressClass",
        "metadata": meta,
        "spec": {"controller": controller},
    }


def services() -> list[Obj]:
    return [service("web"), service("api")]


def edge(*objects: Obj) -> Translation:
    return translate([*services(), *objects])


def hosts(translation: Translation) -> dict[str, VirtualHost]:
    return {h: v for v in translation.model.gateway_hosts for h in v.hosts}


def uri_routes(vhost: VirtualHost) -> list[tuple[str, str, str]]:
    """(match kind, path, cluster) per route, in order."""
    out = []
    for route in vhost.routes:
        uri = route.matches[0].uri if route.matches else None
        out.append(
            (
                uri.kind.value if uri else "any",
                uri.value if uri else "",
                route.destinations[0].cluster,
            )
        )
    return out


def errors_and_warnings(translation: Translation) -> list[tuple[Severity, str, str]]:
    return [
        (d.severity, d.field, d.message)
        for d in translation.diagnostics
        if d.kind == "Ingress" and d.severity is not Severity.INFO
    ]


# ------------------------------------------------------------------------------------------------
# Classes


@pytest.mark.parametrize(
    ("objects", "served"),
    [
        ([ingress("a", rule("a.example", path("/")))], True),
        ([ingress("a", rule("a.example", path("/")), class_name="nginx")], False),
        ([ingress("a", rule("a.example", path("/")), class_name=None)], False),
        (
            [
                ingress_class("edge", "splitplane.io/ingress-controller", default=True),
                ingress("a", rule("a.example", path("/")), class_name=None),
            ],
            True,
        ),
        (
            [
                ingress_class("nginx", "k8s.io/ingress-nginx", default=True),
                ingress("a", rule("a.example", path("/")), class_name=None),
            ],
            False,
        ),
        (
            [
                ingress_class("public", "splitplane.io/ingress-controller"),
                ingress("a", rule("a.example", path("/")), class_name="public"),
            ],
            True,
        ),
        (
            [
                ingress(
                    "a",
                    rule("a.example", path("/")),
                    class_name=None,
                    annotations={"kubernetes.io/ingress.class": "splitplane"},
                )
            ],
            True,
        ),
        (
            [
                ingress(
                    "a",
                    rule("a.example", path("/")),
                    class_name=None,
                    annotations={"kubernetes.io/ingress.class": "nginx"},
                )
            ],
            False,
        ),
    ],
    ids=[
        "class-splitplane",
        "other-class",
        "no-class-no-default",
        "no-class-our-default",
        "no-class-other-default",
        "class-of-our-controller",
        "legacy-annotation",
        "legacy-annotation-other",
    ],
)
def test_which_ingresses_splitplane_serves(objects: list[Obj], served: bool) -> None:
    translation = edge(*objects)
    assert ("a.example" in hosts(translation)) is served
    assert errors_and_warnings(translation) == []
    # One left alone is not silent: an info says why (validate shows it).
    infos = [
        d.field
        for d in translation.diagnostics
        if d.kind == "Ingress" and d.severity is Severity.INFO
    ]
    assert len(infos) == (0 if served else 1)


# ------------------------------------------------------------------------------------------------
# Paths


@pytest.mark.parametrize(
    ("paths", "expected"),
    [
        ([path("/foo")], [("path_prefix", "/foo", WEB)]),
        ([path("/foo/")], [("path_prefix", "/foo/", WEB)]),
        ([path("/foo", "Exact")], [("exact", "/foo", WEB)]),
        ([path("/foo", "ImplementationSpecific")], [("path_prefix", "/foo", WEB)]),
        (
            [path("/", to=backend("api")), path("/a/b"), path("/a")],
            [("path_prefix", "/a/b", WEB), ("path_prefix", "/a", WEB), ("path_prefix", "/", API)],
        ),
        (
            [path("/foo", "Prefix", backend("api")), path("/foo", "Exact")],
            [("exact", "/foo", WEB), ("path_prefix", "/foo", API)],
        ),
    ],
    ids=[
        "prefix",
        "prefix-trailing-slash",
        "exact",
        "implementation-specific-is-prefix",
        "longest-first",
        "exact-before-prefix",
    ],
)
def test_paths_follow_kubernetes_semantics_and_precedence(
    paths: list[Obj], expected: list[tuple[str, str, str]]
) -> None:
    translation = edge(ingress("shop", rule("shop.example", *paths)))
    assert uri_routes(hosts(translation)["shop.example"]) == expected
    assert errors_and_warnings(translation) == []


def test_ingresses_sharing_a_host_merge_and_the_older_keeps_a_shared_path() -> None:
    old = ingress("old", rule("shop.example", path("/a")), created="2024-01-01T00:00:00Z")
    young = ingress(
        "young",
        rule("shop.example", path("/a/", to=backend("api")), path("/b", to=backend("api"))),
        created="2024-02-01T00:00:00Z",
    )
    translation = edge(young, old)
    assert uri_routes(hosts(translation)["shop.example"]) == [
        ("path_prefix", "/a", WEB),
        ("path_prefix", "/b", API),
    ]
    (warning,) = [d for d in translation.diagnostics if d.name == "young"]
    assert warning.severity is Severity.WARNING
    assert warning.field == "spec.rules[0].http.paths[0]"
    assert "default/old" in warning.message


@pytest.mark.parametrize(
    ("bad_path", "field"),
    [
        (path("foo"), "spec.rules[0].http.paths[0].path"),
        (path("/a//b"), "spec.rules[0].http.paths[0].path"),
        (path("/a?b=1"), "spec.rules[0].http.paths[0].path"),
        (path("/a", "Regex"), "spec.rules[0].http.paths[0].pathType"),
        (path("/a", to=backend("nope")), "spec.rules[0].http.paths[0].backend.service.name"),
        (
            path("/a", to=backend("web", 81)),
            "spec.rules[0].http.paths[0].backend.service.port.number",
        ),
        (
            path("/a", to=backend("web", "grpc")),
            "spec.rules[0].http.paths[0].backend.service.port.name",
        ),
        (
            path("/a", to={"service": {"name": "web"}}),
            "spec.rules[0].http.paths[0].backend.service.port",
        ),
    ],
    ids=[
        "relative",
        "double-slash",
        "query",
        "unknown-path-type",
        "unknown-service",
        "unknown-port-number",
        "unknown-port-name",
        "no-port",
    ],
)
def test_a_bad_path_is_an_error_and_only_that_path_is_left_out(bad_path: Obj, field: str) -> None:
    translation = edge(ingress("shop", rule("shop.example", bad_path, path("/ok"))))
    assert uri_routes(hosts(translation)["shop.example"]) == [("path_prefix", "/ok", WEB)]
    ((severity, where, _),) = errors_and_warnings(translation)
    assert (severity, where) == (Severity.ERROR, field)


def test_a_port_by_name_is_the_service_port_of_that_name() -> None:
    shop = service("shop", ports=[service_port(80, "web", 8080), service_port(9000, "api")])
    translation = translate(
        [shop, ingress("shop", rule("shop.example", path("/", to=backend("shop", "api"))))]
    )
    assert uri_routes(hosts(translation)["shop.example"]) == [
        ("path_prefix", "/", "outbound|9000||shop.default.svc.cluster.local")
    ]


# ------------------------------------------------------------------------------------------------
# Hosts and default backends


def test_a_wildcard_host_matches_one_dns_label_and_no_host_means_any() -> None:
    translation = edge(ingress("t", rule("*.example.com", path("/")), rule(None, path("/h"))))
    wildcard = hosts(translation)["*.example.com"]
    (route,) = wildcard.routes
    assert route.matches == (
        RouteMatch(
            uri=StringMatch(MatchKind.PATH_PREFIX, "/"),
            headers=(
                KeyMatch(
                    ":authority",
                    StringMatch(MatchKind.REGEX, r"(?i)[^.:]+\.example\.com(:[0-9]+)?"),
                ),
            ),
        ),
    )
    assert uri_routes(hosts(translation)["*"]) == [("path_prefix", "/h", WEB)]


@pytest.mark.parametrize("host", ["Under_Score.example", "a.*.example", "*", "-a.example"])
def test_a_host_that_is_not_a_dns_name_leaves_its_rule_out(host: str) -> None:
    translation = edge(ingress("t", rule(host, path("/")), rule("ok.example", path("/"))))
    assert set(hosts(translation)) == {"ok.example"}
    ((severity, where, _),) = errors_and_warnings(translation)
    assert (severity, where) == (Severity.ERROR, "spec.rules[0].host")


def test_the_default_backend_takes_what_no_path_matches_on_its_hosts_and_any_other() -> None:
    translation = edge(
        ingress("site", rule("www.example", path("/app")), defaultBackend=backend("api"))
    )
    found = hosts(translation)
    assert uri_routes(found["www.example"]) == [("path_prefix", "/app", WEB), ("any", "", API)]
    assert uri_routes(found["*"]) == [("any", "", API)]


def test_an_ingress_with_only_a_default_backend_serves_every_host() -> None:
    translation = edge(ingress("all", defaultBackend=backend("web")))
    assert list(hosts(translation)) == ["*"]
    assert uri_routes(hosts(translation)["*"]) == [("any", "", WEB)]


# ------------------------------------------------------------------------------------------------
# Warnings: legacy form, TLS, missing pathType


@pytest.mark.parametrize(
    ("ingress_obj", "field", "words"),
    [
        (
            ingress(
                "s", rule("s.example", path("/", to={"serviceName": "web", "servicePort": 80}))
            ),
            "spec.rules[0].http.paths[0].backend",
            "service: {name: web, port: {number: 80}}",
        ),
        (
            ingress(
                "s", rule("s.example", path("/", to={"serviceName": "web", "servicePort": "http"}))
            ),
            "spec.rules[0].http.paths[0].backend",
            "service: {name: web, port: {name: http}}",
        ),
        (
            ingress("s", rule("s.example", path("/")), tls=[{"hosts": ["s.example"]}]),
            "spec.tls",
            "plain HTTP",
        ),
        (
            ingress("s", rule("s.example", path("/", None))),
            "spec.rules[0].http.paths[0].pathType",
            "ImplementationSpecific",
        ),
    ],
    ids=["legacy-port-number", "legacy-port-name", "tls", "no-path-type"],
)
def test_accepted_with_a_warning(ingress_obj: Obj, field: str, words: str) -> None:
    translation = edge(ingress_obj)
    assert uri_routes(hosts(translation)["s.example"]) == [("path_prefix", "/", WEB)]
    ((severity, where, message),) = errors_and_warnings(translation)
    assert (severity, where) == (Severity.WARNING, field)
    assert words in message


def test_a_malformed_ingress_keeps_serving_its_last_accepted_version() -> None:
    good = ingress("s", rule("s.example", path("/")))
    first = edge(good)
    broken = {**good, "spec": {"ingressClassName": "splitplane", "rules": "not a list"}}
    second = translate([*services(), broken], previous=first)
    assert hosts(second)["s.example"] == hosts(first)["s.example"]
    assert any(d.field == "spec.rules" and d.is_error for d in second.diagnostics)


# ------------------------------------------------------------------------------------------------
# VirtualServices at the edge


def reviews_edge(*vs_rules: Obj, ingress_path: Obj | None = None) -> VirtualHost:
    objects = [
        *versioned_service("reviews"),
        virtual_service("reviews", ["reviews"], list(vs_rules)),
        ingress(
            "r",
            rule("r.example", ingress_path or path("/api", to=backend("reviews"))),
        ),
    ]
    translation = translate(objects)
    assert not translation.has_errors, translation.diagnostics
    return hosts(translation)["r.example"]


def cluster(subset: str) -> str:
    return f"outbound|80|{subset}|{REVIEWS}"


def test_a_backend_with_a_virtual_service_gets_its_weights_at_the_edge() -> None:
    vhost = reviews_edge(
        http_route(destination("reviews", "v1", weight=90), destination("reviews", "v2", weight=10))
    )
    assert vhost.routes == (
        HttpRoute(
            matches=(RouteMatch(uri=StringMatch(MatchKind.PATH_PREFIX, "/api")),),
            destinations=(WeightedCluster(cluster("v1"), 90), WeightedCluster(cluster("v2"), 10)),
        ),
    )


@pytest.mark.parametrize(
    ("vs_uri", "ingress_kind", "ingress_path", "combined"),
    [
        ({"prefix": "/api/v2"}, "Prefix", "/api", StringMatch(MatchKind.PREFIX, "/api/v2")),
        ({"prefix": "/a"}, "Prefix", "/api", StringMatch(MatchKind.PATH_PREFIX, "/api")),
        ({"prefix": "/api"}, "Prefix", "/api", StringMatch(MatchKind.PATH_PREFIX, "/api")),
        ({"prefix": "/other"}, "Prefix", "/api", None),
        ({"exact": "/api/x"}, "Prefix", "/api", StringMatch(MatchKind.EXACT, "/api/x")),
        ({"exact": "/apix"}, "Prefix", "/api", None),
        ({"prefix": "/ap"}, "Exact", "/api", StringMatch(MatchKind.EXACT, "/api")),
        ({"exact": "/other"}, "Exact", "/api", None),
    ],
    ids=[
        "vs-prefix-narrower",
        "vs-prefix-wider",
        "vs-prefix-same",
        "disjoint-prefix",
        "vs-exact-inside",
        "vs-exact-outside-element",
        "ingress-exact-inside-vs-prefix",
        "disjoint-exact",
    ],
)
def test_virtual_service_uri_matches_are_intersected_with_the_ingress_path(
    vs_uri: Obj, ingress_kind: str, ingress_path: str, combined: StringMatch | None
) -> None:
    vhost = reviews_edge(
        http_route(destination("reviews", "v2"), match=[{"uri": vs_uri}]),
        http_route(destination("reviews", "v1")),
        ingress_path=path(ingress_path, ingress_kind, backend("reviews")),
    )
    edge_uri = StringMatch(_KINDS[ingress_kind], ingress_path)
    expected: list[tuple[StringMatch | None, str]] = []
    if combined is not None:
        expected.append((combined, cluster("v2")))
    expected.append((edge_uri, cluster("v1")))
    assert [(r.matches[0].uri, r.destinations[0].cluster) for r in vhost.routes] == expected


_KINDS = {"Prefix": MatchKind.PATH_PREFIX, "Exact": MatchKind.EXACT}


def test_header_matches_of_the_virtual_service_are_kept_at_the_edge() -> None:
    vhost = reviews_edge(
        http_route(
            destination("reviews", "v2"),
            match=[{"headers": {"x-tester": {"exact": "yes"}}}],
        ),
        http_route(destination("reviews", "v1")),
    )
    first = vhost.routes[0].matches[0]
    assert first.uri == StringMatch(MatchKind.PATH_PREFIX, "/api")
    assert first.headers == (KeyMatch("x-tester", StringMatch(MatchKind.EXACT, "yes")),)


def test_a_regex_uri_match_cannot_be_combined_and_is_left_out_with_a_warning() -> None:
    objects = [
        *versioned_service("reviews"),
        virtual_service(
            "reviews",
            ["reviews"],
            [
                http_route(destination("reviews", "v2"), match=[{"uri": {"regex": "/api/.*"}}]),
                http_route(destination("reviews", "v1")),
            ],
        ),
        ingress("r", rule("r.example", path("/api", to=backend("reviews")))),
    ]
    translation = translate(objects)
    assert [r.destinations[0].cluster for r in hosts(translation)["r.example"].routes] == [
        cluster("v1")
    ]
    warnings = [d for d in translation.diagnostics if d.kind == "Ingress"]
    assert [d.severity for d in warnings] == [Severity.WARNING]
    assert "regex" in warnings[0].message


def test_a_host_a_gateway_virtual_service_routes_is_not_taken_by_an_ingress() -> None:
    objects = [
        *versioned_service("reviews"),
        virtual_service(
            "bound",
            ["r.example"],
            [http_route(destination("reviews", "v2"))],
            gateways=["splitplane-system/splitplane"],
        ),
        ingress("r", rule("r.example", path("/", to=backend("reviews")))),
    ]
    translation = translate(objects)
    (vhost,) = translation.model.gateway_hosts
    assert vhost.routes[0].destinations == (WeightedCluster(cluster("v2"), 100),)
    assert [(d.severity, d.kind) for d in translation.diagnostics] == [
        (Severity.WARNING, "Ingress")
    ]


def test_every_cluster_a_gateway_route_names_exists_with_a_load_assignment() -> None:
    objects = [
        *versioned_service("reviews"),
        *services(),
        virtual_service(
            "reviews",
            ["reviews"],
            [
                http_route(
                    destination("reviews", "v1", weight=50), destination("reviews", "v2", weight=50)
                )
            ],
        ),
        ingress(
            "r",
            rule("r.example", path("/", to=backend("reviews")), path("/web")),
            defaultBackend=backend("api"),
        ),
    ]
    model = translate(objects).model
    named = {d.cluster for v in model.gateway_hosts for r in v.routes for d in r.destinations}
    assert named == {cluster("v1"), cluster("v2"), WEB, API}
    assert named <= {c.name for c in model.clusters}
    assert named <= {e.cluster for e in model.endpoints}


def test_ingress_diagnostics_name_the_object() -> None:
    translation = edge(ingress("shop", rule("shop.example", path("/", to=backend("nope")))))
    assert tuple(d for d in translation.diagnostics if d.kind == "Ingress") == (
        Diagnostic(
            "Ingress",
            "default",
            "shop",
            "spec.rules[0].http.paths[0].backend.service.name",
            "service 'nope' not found in namespace default; the rule is left out",
        ),
    )
