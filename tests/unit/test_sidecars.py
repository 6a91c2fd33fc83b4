"""Istio's Sidecar: which hosts the sidecars of a namespace receive (egress hosts)."""

from __future__ import annotations

from typing import Any, cast

import pytest
from envoy.config.cluster.v3.cluster_pb2 import Cluster
from envoy.config.endpoint.v3.endpoint_pb2 import ClusterLoadAssignment
from envoy.config.route.v3.route_pb2 import RouteConfiguration

from tests.unit.objects import (
    Obj,
    destination,
    endpoint_slice,
    http_route,
    service,
    sidecar,
    slice_endpoint,
    virtual_service,
)
from translators.build import ResourceBuilder
from translators.diagnostics import Diagnostic, Severity
from translators.incremental import Translator
from translators.model import NodeGroup, Role
from translators.resolve_routing import Source
from translators.resolve_sidecars import EgressHost, checked_sidecar
from translators.resources import CLUSTER, ENDPOINT, ROUTE
from translators.translate import Translation, translate


def problems(obj: Obj) -> list[tuple[str, Severity, str]]:
    meta = obj["metadata"]
    _, found = checked_sidecar(Source(meta.get("namespace", "default"), meta["name"]), obj)
    return [(d.field, d.severity, d.message) for d in found]


def errors(obj: Obj) -> list[str]:
    return [
        f"{field}: {message}" for field, severity, message in problems(obj) if severity == "error"
    ]


# ------------------------------------------------------------------------------------------------
# Checking a Sidecar as Istio does


@pytest.mark.parametrize(
    "host",
    [
        "./*",
        "*/*",
        "~/*",
        "istio-system/*",
        "prod/reviews.prod.svc.cluster.local",
        "*/*.example.com",
        "./api.example.com",
        "~prod/*",
        "~/foo.com",
        "~./secret.default.svc.cluster.local",
        "Prod-Ns/Reviews.Example.COM".lower(),
    ],
)
def test_egress_hosts_istio_accepts(host: str) -> None:
    assert errors(sidecar("s", hosts=[host])) == []


@pytest.mark.parametrize(
    ("host", "reason"),
    [
        ("reviews.prod.svc.cluster.local", "must be of the form namespace/dnsName"),
        ("*", "must be of the form namespace/dnsName"),
        ("/reviews.prod.svc.cluster.local", "cannot be empty"),
        ("/", "cannot be empty"),
        ("~Invalid_NS/*", "invalid namespace"),
        ("prod/", "cannot be empty"),
        ("Prod_NS/*", "invalid namespace"),
        ("prod/reviews", "short names are not allowed"),
        ("prod/*foo.example.com", "partial wildcard"),
        ("prod/foo.*.example.com", "not a valid hostname"),
        ("prod/a/b.example.com", "not a valid hostname"),
        ("prod/" + "a" * 64 + ".example.com", "not a valid hostname"),
    ],
)
def test_egress_hosts_istio_refuses(host: str, reason: str) -> None:
    found = errors(sidecar("s", hosts=[host]))

    assert found and all(f.startswith("spec.egress[0].hosts[0]: ") for f in found)
    assert any(reason in f for f in found), found


def test_an_egress_listener_without_hosts_is_an_error() -> None:
    obj = sidecar("s", hosts=None, egress=[{"hosts": []}])

    assert errors(obj) == ["spec.egress[0].hosts: an egress listener must have at least one host"]


def test_a_sidecar_with_nothing_in_it_is_an_error() -> None:
    assert errors(sidecar("s", hosts=None)) == [
        "spec: empty configuration: give egress hosts (namespace/dnsName)"
    ]


def test_listeners_without_a_port_must_be_one_and_last() -> None:
    two = sidecar("s", hosts=None, egress=[{"hosts": ["./*"]}, {"hosts": ["*/*"]}])
    first = sidecar(
        "s", hosts=None, egress=[{"hosts": ["./*"]}, {"port": {"number": 80}, "hosts": ["*/*"]}]
    )

    assert errors(two) == [
        "spec.egress[0]: the egress listener without a port must be the last one"
    ]
    assert "the egress listener without a port must be the last one" in errors(first)[0]


def test_fields_splitplane_does_not_implement_are_warnings_naming_them() -> None:
    obj = sidecar(
        "s",
        hosts=None,
        egress=[
            {"port": {"number": 9080}, "bind": "127.0.0.1", "captureMode": "NONE", "hosts": ["./*"]}
        ],
        ingress=[{"port": {"number": 80}, "defaultEndpoint": "127.0.0.1:8080"}],
        outboundTrafficPolicy={"mode": "REGISTRY_ONLY"},
    )

    found = problems(obj)

    assert {field for field, severity, _ in found if severity == "warning"} == {
        "spec.ingress",
        "spec.outboundTrafficPolicy",
        "spec.egress[0].port",
        "spec.egress[0].bind",
        "spec.egress[0].captureMode",
    }
    assert not [f for f in found if f[1] == "error"]


def test_a_sidecar_with_only_ignored_fields_is_valid_and_sees_everything() -> None:
    obj = sidecar("s", hosts=None, outboundTrafficPolicy={"mode": "REGISTRY_ONLY"})
    scope, _ = checked_sidecar(Source("default", "s"), obj)

    assert scope is not None and scope.hosts == (EgressHost("*", "*"),)


def test_duplicated_hosts_and_everything_beside_others_are_warnings() -> None:
    found = problems(sidecar("s", hosts=["./*", "default/a.default.svc.cluster.local", "*/*"]))

    assert (
        "spec.egress[0].hosts[1]",
        "warning",
        "duplicated egress host: default/a.default.svc.cluster.local",
    ) in found
    assert (
        "spec.egress[0].hosts",
        "warning",
        "*/* selects every host; no other hosts can be added",
    ) in found


def test_a_workload_selector_is_reported_as_not_applied() -> None:
    obj = sidecar("s", workloadSelector={"labels": {"app": "web"}})
    scope, found = checked_sidecar(Source("default", "s"), obj)

    assert scope is not None and scope.selects_pods
    assert [(d.field, d.severity) for d in found] == [("spec.workloadSelector", "warning")]
    assert "not supported by splitplane yet; this Sidecar is not applied" in found[0].message


def test_a_workload_selector_without_labels_applies_to_the_namespace() -> None:
    scope, found = checked_sidecar(
        Source("default", "s"), sidecar("s", workloadSelector={"labels": {}})
    )

    assert scope is not None and not scope.selects_pods
    assert "applies to every sidecar of its namespace" in found[0].message


def test_a_workload_selector_with_a_wildcard_is_an_error() -> None:
    assert errors(sidecar("s", workloadSelector={"labels": {"app": "*"}})) == [
        "spec.workloadSelector.labels[app]: a wildcard is not supported in a selector: app=*"
    ]


# ------------------------------------------------------------------------------------------------
# What the sidecars of a namespace receive

MESH = [
    service("web", "shop"),
    service("cart", "shop"),
    service("reviews", "books"),
    service("ratings", "books"),
    service("db", "data"),
    service("mesh-api", "istio-system"),
]


def host(name: str, namespace: str) -> str:
    return f"{name}.{namespace}.svc.cluster.local"


def received(translation: Translation, namespace: str, role: Role = Role.SIDECAR) -> set[str]:
    """The hosts whose clusters a proxy of ``role`` in ``namespace`` receives."""
    port = 15001 if role is Role.SIDECAR else 8080 if role is Role.GATEWAY else 0
    built = ResourceBuilder().build_group(translation.model, NodeGroup(role, port, namespace))
    return {cast(Cluster, c).name.rpartition("|")[2] for c in built[CLUSTER]}


def virtual_hosts(translation: Translation, namespace: str) -> set[str]:
    built = ResourceBuilder().build_group(
        translation.model, NodeGroup(Role.SIDECAR, 15001, namespace)
    )
    tables = [cast(RouteConfiguration, table) for table in built[ROUTE]]
    return {v.name for table in tables for v in table.virtual_hosts}


EVERY = {
    host(n, ns)
    for n, ns in [
        ("web", "shop"),
        ("cart", "shop"),
        ("reviews", "books"),
        ("ratings", "books"),
        ("db", "data"),
        ("mesh-api", "istio-system"),
    ]
}


@pytest.mark.parametrize(
    ("hosts", "namespace", "seen"),
    [
        (["./*"], "shop", {host("web", "shop"), host("cart", "shop")}),
        (["*/*"], "shop", EVERY),
        (["~/*"], "shop", set()),
        (["books/*"], "shop", {host("reviews", "books"), host("ratings", "books")}),
        (["books/reviews.books.svc.cluster.local"], "shop", {host("reviews", "books")}),
        (["*/reviews.books.svc.cluster.local"], "shop", {host("reviews", "books")}),
        (
            ["*/*.books.svc.cluster.local"],
            "shop",
            {host("reviews", "books"), host("ratings", "books")},
        ),
        (
            ["*/r*.books.svc.cluster.local".replace("r*", "*")],
            "shop",
            {host("reviews", "books"), host("ratings", "books")},
        ),
        (
            ["data/*", "./cart.shop.svc.cluster.local"],
            "shop",
            {host("db", "data"), host("cart", "shop")},
        ),
        (["*/*", "~books/*"], "shop", EVERY - {host("reviews", "books"), host("ratings", "books")}),
        (["./*", "~./cart.shop.svc.cluster.local"], "shop", {host("web", "shop")}),
        (["books/*.shop.svc.cluster.local"], "shop", set()),
        (["nowhere/*"], "shop", set()),
    ],
)
def test_a_namespace_sidecar_receives_the_hosts_its_egress_takes(
    hosts: list[str], namespace: str, seen: set[str]
) -> None:
    result = translate([*MESH, sidecar("scope", namespace, hosts)])

    assert not result.has_errors, result.diagnostics
    assert received(result, namespace) == seen
    assert {v.rpartition(":")[0] for v in virtual_hosts(result, namespace)} == seen


def test_without_a_sidecar_nothing_changes() -> None:
    result = translate(MESH)

    assert received(result, "shop") == EVERY
    assert result.model.sidecar_views == () and result.model.sidecar_default is None


def test_other_namespaces_and_the_load_balancer_fleet_are_not_scoped() -> None:
    result = translate([*MESH, sidecar("scope", "shop", ["./*"])])

    assert received(result, "books") == EVERY
    assert received(result, "") == EVERY
    assert received(result, "shop", Role.GATEWAY) == EVERY


def test_proxyless_clients_are_scoped_like_sidecars() -> None:
    result = translate([*MESH, sidecar("scope", "shop", ["./*"])])

    assert received(result, "shop", Role.PROXYLESS) == {host("web", "shop"), host("cart", "shop")}


def test_the_root_namespace_sidecar_is_the_mesh_default() -> None:
    result = translate([*MESH, sidecar("default", "istio-system", ["./*", "istio-system/*"])])

    mine = {host("mesh-api", "istio-system")}
    assert received(result, "shop") == {host("web", "shop"), host("cart", "shop")} | mine
    assert received(result, "books") == {host("reviews", "books"), host("ratings", "books")} | mine
    # a namespace with nothing of its own, and a proxy with no namespace
    assert received(result, "empty") == mine
    assert received(result, "") == mine


def test_a_namespace_sidecar_wins_over_the_mesh_default() -> None:
    result = translate(
        [*MESH, sidecar("default", "istio-system", ["./*"]), sidecar("all", "shop", ["*/*"])]
    )

    assert received(result, "shop") == EVERY
    assert received(result, "books") == {host("reviews", "books"), host("ratings", "books")}


def test_of_two_sidecars_without_selector_the_oldest_applies() -> None:
    older = sidecar("older", "shop", ["data/*"], created="2024-01-01T00:00:00Z")
    younger = sidecar("younger", "shop", ["books/*"], created="2024-02-01T00:00:00Z")

    result = translate([*MESH, younger, older])

    assert received(result, "shop") == {host("db", "data")}
    assert [(d.name, d.severity) for d in result.diagnostics if d.kind == "Sidecar"] == [
        ("younger", "warning")
    ]
    assert "the oldest, older, is applied" in next(
        d.message for d in result.diagnostics if d.kind == "Sidecar"
    )


def test_a_sidecar_with_a_workload_selector_is_not_applied() -> None:
    selected = sidecar("web-only", "shop", ["~/*"], workloadSelector={"labels": {"app": "web"}})

    result = translate([*MESH, selected])

    assert received(result, "shop") == EVERY
    assert any(d.field == "spec.workloadSelector" for d in result.diagnostics)


def test_what_export_to_hides_stays_hidden() -> None:
    private = service("db", "data")
    private["metadata"]["annotations"] = {"networking.istio.io/exportTo": "."}
    mesh = [m for m in MESH if m["metadata"]["name"] != "db"] + [private]

    result = translate([*mesh, sidecar("scope", "shop", ["*/*"]), sidecar("s", "data", ["./*"])])

    assert host("db", "data") not in received(result, "shop")
    assert received(result, "data") == {host("db", "data")}


def test_the_services_a_received_virtual_service_routes_to_are_received() -> None:
    # shop's route for web sends to books' reviews, which its egress does not name
    route = virtual_service(
        "web", ["web"], [http_route(destination(host("reviews", "books")))], namespace="shop"
    )

    result = translate([*MESH, route, sidecar("scope", "shop", ["./web.shop.svc.cluster.local"])])

    assert received(result, "shop") == {host("web", "shop"), host("reviews", "books")}


def test_a_host_that_is_no_service_is_in_its_virtual_services_namespace() -> None:
    api = virtual_service(
        "api", ["api.example.com"], [http_route(destination(host("db", "data")))], namespace="data"
    )

    result = translate([*MESH, api, sidecar("scope", "shop", ["data/api.example.com"])])

    assert virtual_hosts(result, "shop") == {"api.example.com:80", f"{host('db', 'data')}:80"}
    other = translate([*MESH, api, sidecar("scope", "shop", ["shop/api.example.com"])])
    assert virtual_hosts(other, "shop") == set()


def test_an_invalid_edit_keeps_the_last_accepted_sidecar() -> None:
    before = translate([*MESH, sidecar("scope", "shop", ["./*"])])

    after = translate([*MESH, sidecar("scope", "shop", ["shop"])], previous=before)

    assert received(after, "shop") == {host("web", "shop"), host("cart", "shop")}
    found = [d for d in after.diagnostics if d.kind == "Sidecar"]
    assert [(d.namespace, d.name, d.field, d.severity) for d in found] == [
        ("shop", "scope", "", "warning"),
        ("shop", "scope", "spec.egress[0].hosts[0]", "error"),
    ]


def test_a_new_invalid_sidecar_is_left_out() -> None:
    result = translate([*MESH, sidecar("scope", "shop", ["shop"])])

    assert received(result, "shop") == EVERY
    assert result.has_errors


def key_of(obj: Obj) -> tuple[str, str, str]:
    return (obj["kind"], obj["metadata"].get("namespace", "default"), obj["metadata"]["name"])


def test_endpoint_changes_reach_the_scoped_sidecars() -> None:
    private = service("db", "data")
    private["metadata"]["annotations"] = {"networking.istio.io/exportTo": "."}
    objects: list[Any] = [private, sidecar("scope", "data", ["./*"])]
    translator = Translator()
    translator.reset({key_of(obj): obj for obj in objects})
    slice_ = endpoint_slice("db-1", "db", [slice_endpoint("10.0.0.7")], namespace="data")

    after = translator.apply({key_of(slice_): slice_})

    assert translator.paths["endpoints"] == 1
    built = ResourceBuilder().build_group(after.model, NodeGroup(Role.SIDECAR, 15001, "data"))
    addresses = [
        e.endpoint.address.socket_address.address
        for assignment in built[ENDPOINT]
        for locality in cast(ClusterLoadAssignment, assignment).endpoints
        for e in locality.lb_endpoints
    ]
    assert addresses == ["10.0.0.7"]
    assert after.model == translate([*objects, slice_]).model


def route_to(*hosts: str) -> Obj:
    """shop's VirtualService for web, split evenly across ``hosts``."""
    return virtual_service(
        "web",
        ["web"],
        [http_route(*(destination(h, weight=100 // len(hosts)) for h in hosts))],
        namespace="shop",
    )


def test_a_route_change_to_the_same_services_is_translated_alone() -> None:
    both = (host("web", "shop"), host("cart", "shop"))
    objects = [*MESH, route_to(*both), sidecar("scope", "shop", ["./*"])]
    translator = Translator()
    translator.reset({key_of(obj): obj for obj in objects})
    changed = route_to(*reversed(both))

    after = translator.apply({key_of(changed): changed})

    assert translator.paths["routes"] == 1
    assert after.model == translate([*objects[:-2], changed, objects[-1]]).model


def test_a_route_to_a_service_the_egress_does_not_name_brings_it_in() -> None:
    scope = sidecar("scope", "shop", ["./web.shop.svc.cluster.local"])
    objects = [*MESH, route_to(host("web", "shop")), scope]
    translator = Translator()
    before = translator.reset({key_of(obj): obj for obj in objects})
    changed = route_to(host("web", "shop"), host("db", "data"))

    after = translator.apply({key_of(changed): changed})

    assert received(before, "shop") == {host("web", "shop")}
    assert received(after, "shop") == {host("web", "shop"), host("db", "data")}
    assert after.model == translate([*MESH, changed, scope]).model


def test_diagnostics_name_the_sidecar() -> None:
    result = translate([*MESH, sidecar("scope", "shop", ["shop/reviews"])])

    found: list[Diagnostic] = [d for d in result.diagnostics if d.kind == "Sidecar"]
    assert [(d.namespace, d.name, d.field) for d in found] == [
        ("shop", "scope", "spec.egress[0].hosts[0]")
    ]
    assert found[0].code == "SP-Sidecar-spec.egress.hosts"
