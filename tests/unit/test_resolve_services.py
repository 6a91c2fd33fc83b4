"""Service + EndpointSlice + Pod → services with per-port ready endpoints, as Kubernetes does."""

from __future__ import annotations

from typing import Any

import pytest

from tests.unit.objects import (
    Obj,
    endpoint_slice,
    pod,
    service,
    service_port,
    slice_endpoint,
)
from translators.diagnostics import Diagnostic, Severity
from translators.model import Protocol, Service
from translators.resolve_services import Services, parse_service, port_protocol, resolve_services


def resolve(*objects: Obj) -> tuple[Services, list[Diagnostic]]:
    """Resolve like translate does: parse every Service, then add endpoints."""
    specs, diagnostics = [], []
    for obj in objects:
        if obj["kind"] == "Service":
            spec, found = parse_service(obj)
            diagnostics.extend(found)
            if spec is not None:
                specs.append(spec)
    slices = [o for o in objects if o["kind"] == "EndpointSlice"]
    pods = [o for o in objects if o["kind"] == "Pod"]
    return resolve_services(specs, slices, pods), diagnostics


def only_service(*objects: Obj) -> Service:
    resolved, _ = resolve(*objects)
    (found,) = resolved.services
    return found


def addresses(svc: Service, port: int = 80) -> list[tuple[str, int]]:
    found = svc.port(port)
    assert found is not None
    return [(e.address, e.port) for e in found.endpoints]


APP = {"app": "reviews"}


# ------------------------------------------------------------------------------------------------
# EndpointSlices


@pytest.mark.parametrize(
    ("endpoint", "included"),
    [
        (slice_endpoint("10.0.0.1"), True),
        (slice_endpoint("10.0.0.1", ready=True), True),
        (slice_endpoint("10.0.0.1", ready=False), False),
    ],
    ids=["ready-nil-means-ready", "ready-true-is-ready", "ready-false-is-left-out"],
)
def test_slice_endpoint_readiness(endpoint: Obj, included: bool) -> None:
    svc = only_service(service("reviews"), endpoint_slice("reviews-1", "reviews", [endpoint]))
    assert addresses(svc) == ([("10.0.0.1", 8080)] if included else [])


@pytest.mark.parametrize(
    ("address_type", "address", "included"),
    [("IPv4", "10.0.0.1", True), ("IPv6", "fd00::1", True), ("FQDN", "db.example.com", False)],
    ids=["ipv4-slices-count", "ipv6-slices-count", "fqdn-slices-are-ignored"],
)
def test_slice_address_types(address_type: str, address: str, included: bool) -> None:
    piece = endpoint_slice("s", "reviews", [slice_endpoint(address)], address_type=address_type)
    svc = only_service(service("reviews"), piece)
    assert addresses(svc) == ([(address, 8080)] if included else [])


def test_slices_belong_to_a_service_by_the_service_name_label() -> None:
    mine = endpoint_slice("a", "reviews", [slice_endpoint("10.0.0.1")])
    other = endpoint_slice("b", "ratings", [slice_endpoint("10.0.0.2")])
    other_namespace = endpoint_slice("c", "reviews", [slice_endpoint("10.0.0.3")], namespace="x")
    svc = only_service(service("reviews"), mine, other, other_namespace)
    assert addresses(svc) == [("10.0.0.1", 8080)]


def test_endpoints_of_all_slices_are_merged_sorted_and_deduplicated() -> None:
    first = endpoint_slice("a", "reviews", [slice_endpoint("10.0.0.2"), slice_endpoint("10.0.0.1")])
    second = endpoint_slice(
        "b", "reviews", [slice_endpoint("10.0.0.2"), slice_endpoint("10.0.0.3")]
    )
    svc = only_service(service("reviews"), first, second)
    assert addresses(svc) == [("10.0.0.1", 8080), ("10.0.0.2", 8080), ("10.0.0.3", 8080)]


def test_service_ports_map_to_slice_ports_by_name() -> None:
    svc_obj = service(
        "reviews", ports=[service_port(80, "http", "web"), service_port(9090, "grpc-api", 9000)]
    )
    piece = endpoint_slice(
        "a", "reviews", [slice_endpoint("10.0.0.1")], ports={"grpc-api": 9001, "http": 8081}
    )
    svc = only_service(svc_obj, piece)
    assert addresses(svc, 80) == [("10.0.0.1", 8081)]
    assert addresses(svc, 9090) == [("10.0.0.1", 9001)]


def test_a_single_unnamed_port_matches_the_unnamed_slice_port() -> None:
    svc_obj = service("reviews", ports=[{"port": 80, "targetPort": 8080}])
    piece = endpoint_slice("a", "reviews", [slice_endpoint("10.0.0.1")], ports={"": 8080})
    assert addresses(only_service(svc_obj, piece)) == [("10.0.0.1", 8080)]


def test_endpoint_labels_come_from_the_pod_named_by_target_ref_and_zone_from_the_slice() -> None:
    piece = endpoint_slice("a", "reviews", [slice_endpoint("10.0.0.1", pod="r-1", zone="z1")])
    labels = {"app": "reviews", "version": "v1"}
    svc = only_service(service("reviews"), piece, pod("r-1", "10.0.0.1", labels))
    port = svc.port(80)
    assert port is not None
    (endpoint,) = port.endpoints
    assert endpoint.labels == (("app", "reviews"), ("version", "v1"))
    assert endpoint.zone == "z1"
    assert endpoint.pod == "default/r-1"


def test_slices_win_over_pods_when_a_service_has_any() -> None:
    piece = endpoint_slice("a", "reviews", [slice_endpoint("10.0.0.9")])
    svc = only_service(service("reviews"), piece, pod("r-1", "10.0.0.1", APP))
    assert addresses(svc) == [("10.0.0.9", 8080)]


# ------------------------------------------------------------------------------------------------
# Pods, where a service has no EndpointSlice


@pytest.mark.parametrize(
    ("pod_kwargs", "included"),
    [
        ({}, True),
        ({"ready": False}, False),
        ({"phase": "Pending"}, False),
        ({"deleting": True}, False),
        ({"ip": ""}, False),
        ({"labels": {"app": "ratings"}}, False),
        ({"namespace": "other"}, False),
    ],
    ids=[
        "running-ready-pod-is-an-endpoint",
        "not-ready-pod-is-left-out",
        "pending-pod-is-left-out",
        "terminating-pod-is-left-out",
        "pod-without-ip-is-left-out",
        "pod-not-matching-the-selector-is-left-out",
        "pod-in-another-namespace-is-left-out",
    ],
)
def test_pod_fallback_readiness(pod_kwargs: dict[str, Any], included: bool) -> None:
    args: dict[str, Any] = {"ip": "10.0.0.1", "labels": APP} | pod_kwargs
    svc = only_service(service("reviews"), pod("r-1", **args))
    assert addresses(svc) == ([("10.0.0.1", 8080)] if included else [])


def test_publish_not_ready_addresses_includes_pods_that_are_not_ready() -> None:
    svc_obj = service("reviews", publishNotReadyAddresses=True)
    svc = only_service(svc_obj, pod("r-1", "10.0.0.1", APP, ready=False, phase="Pending"))
    assert addresses(svc) == [("10.0.0.1", 8080)]


@pytest.mark.parametrize(
    ("port", "container_ports", "expected"),
    [
        (service_port(80, "http", 8080), {}, 8080),
        (service_port(80, "http", "web"), {"web": 9000}, 9000),
        (service_port(80, "http"), {}, 80),
    ],
    ids=[
        "target-port-by-number",
        "target-port-by-container-port-name",
        "target-port-defaults-to-port",
    ],
)
def test_pod_fallback_target_port(
    port: Obj, container_ports: dict[str, int], expected: int
) -> None:
    svc = only_service(
        service("reviews", ports=[port]),
        pod("r-1", "10.0.0.1", APP, container_ports=container_ports),
    )
    assert addresses(svc) == [("10.0.0.1", expected)]


def test_a_service_without_selector_gets_no_endpoints_from_pods() -> None:
    svc_obj = service("reviews", selector={})
    svc = only_service(svc_obj, pod("r-1", "10.0.0.1", APP))
    assert addresses(svc) == []


def test_endpoints_carry_the_pod_labels() -> None:
    svc = only_service(service("reviews"), pod("r-1", "10.0.0.1", APP | {"version": "v2"}))
    port = svc.port(80)
    assert port is not None
    assert port.endpoints[0].labels == (("app", "reviews"), ("version", "v2"))


# ------------------------------------------------------------------------------------------------
# Protocols


@pytest.mark.parametrize(
    ("name", "app_protocol", "expected"),
    [
        ("web", "http", Protocol.HTTP),
        ("web", "http2", Protocol.HTTP2),
        ("web", "grpc", Protocol.GRPC),
        ("web", "kubernetes.io/h2c", Protocol.HTTP2),
        ("http", "tcp", Protocol.TCP),
        ("http", "", Protocol.HTTP),
        ("http-web", "", Protocol.HTTP),
        ("http2-api", "", Protocol.HTTP2),
        ("grpc-api", "", Protocol.GRPC),
        ("grpc-web", "", Protocol.HTTP),
        ("tcp-db", "", Protocol.TCP),
        ("tls", "", Protocol.TCP),
        ("mongo", "", Protocol.TCP),
        ("metrics", "", Protocol.HTTP),
        ("", "", Protocol.HTTP),
        ("tcp-db", "unknown.example/proto", Protocol.TCP),
    ],
    ids=[
        "app-protocol-http",
        "app-protocol-http2",
        "app-protocol-grpc",
        "app-protocol-h2c-is-http2",
        "app-protocol-wins-over-the-name",
        "name-http",
        "name-http-prefix",
        "name-http2-prefix",
        "name-grpc-prefix",
        "name-grpc-web-is-http",
        "name-tcp-prefix",
        "name-tls-is-tcp",
        "name-mongo-is-tcp",
        "unknown-name-defaults-to-http",
        "no-name-defaults-to-http",
        "unknown-app-protocol-falls-back-to-the-name",
    ],
)
def test_port_protocol(name: str, app_protocol: str, expected: Protocol) -> None:
    assert port_protocol(name, app_protocol) is expected


def test_service_fields_are_carried_into_the_model() -> None:
    svc_obj = service(
        "edge",
        namespace="net",
        ports=[service_port(443, "tcp-tls", 8443)],
        type="LoadBalancer",
        loadBalancerClass="splitplane",
    )
    svc = only_service(svc_obj)
    assert (svc.hostname, svc.type, svc.load_balancer_class) == (
        "edge.net.svc.cluster.local",
        "LoadBalancer",
        "splitplane",
    )
    assert [(p.port, p.name, p.protocol, p.target_port) for p in svc.ports] == [
        (443, "tcp-tls", Protocol.TCP, 8443)
    ]


def test_headless_services_are_marked() -> None:
    assert only_service(service("db", clusterIP="None")).headless


# ------------------------------------------------------------------------------------------------
# Diagnostics


def _service_with_port(**port: Any) -> Obj:
    return service("reviews", ports=[port])


@pytest.mark.parametrize(
    ("obj", "field", "severity", "fragment", "kept"),
    [
        (
            _service_with_port(name="http", port="80"),
            "spec.ports[0].port",
            Severity.ERROR,
            "integer",
            False,
        ),
        (
            _service_with_port(name="http", port=True),
            "spec.ports[0].port",
            Severity.ERROR,
            "integer",
            False,
        ),
        (
            _service_with_port(name="http", port=70000),
            "spec.ports[0].port",
            Severity.ERROR,
            "65535",
            False,
        ),
        (
            service("reviews", ports=[{"port": 80}, {"port": 81, "name": "b"}]),
            "spec.ports[0].name",
            Severity.ERROR,
            "several ports",
            False,
        ),
        (
            service("reviews", ports=[service_port(80, "a"), service_port(81, "a")]),
            "spec.ports[1].name",
            Severity.ERROR,
            "duplicate",
            False,
        ),
        (
            _service_with_port(name="http", port=80, targetPort=-1),
            "spec.ports[0].targetPort",
            Severity.ERROR,
            "port",
            False,
        ),
        (
            _service_with_port(name="http", port=80, targetPort="80"),
            "spec.ports[0].targetPort",
            Severity.ERROR,
            "port name",
            False,
        ),
        (
            {**service("reviews"), "spec": {"ports": "80"}},
            "spec.ports",
            Severity.ERROR,
            "list",
            False,
        ),
        (service("reviews", type="Cluster"), "spec.type", Severity.ERROR, "unknown", False),
        (
            {**service("reviews"), "spec": {"selector": {"app": 1}}},
            "spec.selector",
            Severity.ERROR,
            "mapping",
            False,
        ),
        (
            service(
                "reviews", ports=[service_port(53, "dns", protocol="UDP"), service_port(80, "http")]
            ),
            "spec.ports[0].protocol",
            Severity.WARNING,
            "UDP",
            True,
        ),
        (
            service("reviews", ports=[service_port(80, "sctp", protocol="SCTP")]),
            "spec.ports[0].protocol",
            Severity.WARNING,
            "SCTP",
            True,
        ),
        (
            service("db", type="ExternalName"),
            "spec.externalName",
            Severity.ERROR,
            "is required",
            False,
        ),
        (
            service("db", type="ExternalName", externalName=""),
            "spec.externalName",
            Severity.ERROR,
            "is required",
            False,
        ),
        (
            service("db", type="ExternalName", externalName="DB.Example.com"),
            "spec.externalName",
            Severity.ERROR,
            "is not a DNS name",
            False,
        ),
        (
            service("db", type="ExternalName", externalName="db..example.com"),
            "spec.externalName",
            Severity.ERROR,
            "is not a DNS name",
            False,
        ),
        (
            service("db", type="ExternalName", externalName="http://db.example.com"),
            "spec.externalName",
            Severity.ERROR,
            "is not a DNS name",
            False,
        ),
        (
            service("db", type="ExternalName", externalName=["db.example.com"]),
            "spec.externalName",
            Severity.ERROR,
            "must be a string",
            False,
        ),
    ],
    ids=[
        "port-as-string-is-an-error",
        "port-as-boolean-is-an-error",
        "port-out-of-range-is-an-error",
        "missing-name-with-several-ports-is-an-error",
        "duplicate-port-name-is-an-error",
        "negative-target-port-is-an-error",
        "numeric-string-target-port-is-an-error",
        "ports-not-a-list-is-an-error",
        "unknown-type-is-an-error",
        "non-string-selector-value-is-an-error",
        "udp-port-is-left-out-with-a-warning",
        "sctp-port-is-left-out-with-a-warning",
        "external-name-missing-is-an-error",
        "external-name-empty-is-an-error",
        "external-name-with-capitals-is-an-error",
        "external-name-with-an-empty-label-is-an-error",
        "external-name-as-a-url-is-an-error",
        "external-name-not-a-string-is-an-error",
    ],
)
def test_service_diagnostics(
    obj: Obj, field: str, severity: Severity, fragment: str, kept: bool
) -> None:
    spec, found = parse_service(obj)
    name = obj["metadata"]["name"]
    assert any(
        (d.kind, d.namespace, d.name, d.field, d.severity)
        == ("Service", "default", name, field, severity)
        and fragment in d.message
        for d in found
    ), found
    assert (spec is not None) is kept


def test_an_external_name_service_carries_its_dns_name_and_ports_without_endpoints() -> None:
    objects = (
        service(
            "db",
            ports=[service_port(5432, "tcp-pg", 6432), service_port(80, "http")],
            type="ExternalName",
            externalName="db.example.com.",
        ),
        # Kubernetes ignores the selector of an ExternalName service; so are slices for it.
        pod("db-0", "10.0.0.9", {"app": "db"}),
        endpoint_slice("db-abc", "db", [slice_endpoint("10.0.0.8")], ports={"http": 80}),
    )
    resolved, diagnostics = resolve(*objects)
    (svc,) = resolved.services
    assert diagnostics == []
    assert resolved.diagnostics == ()  # no "no ready endpoints" warning: it needs none
    assert (svc.type, svc.external_name, svc.hostname) == (
        "ExternalName",
        "db.example.com",
        "db.default.svc.cluster.local",
    )
    assert [(p.port, p.protocol, p.endpoints) for p in svc.ports] == [
        (80, Protocol.HTTP, ()),
        (5432, Protocol.TCP, ()),
    ]


def test_an_external_name_service_without_ports_routes_nothing_with_a_warning() -> None:
    spec, found = parse_service(
        service("db", ports=[], type="ExternalName", externalName="db.example.com")
    )
    assert spec is not None and spec.ports == ()
    assert [(d.field, d.severity) for d in found] == [("spec.ports", Severity.WARNING)]


def test_udp_ports_are_left_out_of_the_model() -> None:
    svc_obj = service(
        "dns", ports=[service_port(53, "dns", protocol="UDP"), service_port(80, "http")]
    )
    assert [p.port for p in only_service(svc_obj).ports] == [80]


def test_a_service_without_ready_endpoints_is_kept_with_an_info() -> None:
    resolved, _ = resolve(service("reviews"))
    assert [s.name for s in resolved.services] == ["reviews"]
    (warning,) = resolved.diagnostics
    assert (warning.kind, warning.name, warning.severity) == (
        "Service",
        "reviews",
        Severity.INFO,  # scaled to zero or starting: a state, not a mistake
    )
    assert "no ready endpoints" in warning.message


def test_an_unknown_target_port_name_is_reported_on_the_target_port() -> None:
    svc_obj = service("reviews", ports=[service_port(80, "http", "web")])
    resolved, _ = resolve(svc_obj, pod("r-1", "10.0.0.1", APP, container_ports={"api": 9000}))
    assert any(
        d.field == "spec.ports[0].targetPort" and "'web'" in d.message for d in resolved.diagnostics
    )
    assert addresses(resolved.services[0]) == []


@pytest.mark.parametrize(
    ("piece", "field"),
    [
        ({**endpoint_slice("s", "reviews", []), "addressType": "IP"}, "addressType"),
        (
            {**endpoint_slice("s", "reviews", []), "endpoints": [{"addresses": []}]},
            "endpoints[0].addresses",
        ),
        (
            {**endpoint_slice("s", "reviews", []), "ports": [{"name": "http", "port": "x"}]},
            "ports[0].port",
        ),
        ({**endpoint_slice("s", "reviews", []), "endpoints": "10.0.0.1"}, "endpoints"),
    ],
    ids=[
        "unknown-address-type-is-an-error",
        "endpoint-without-addresses-is-an-error",
        "non-integer-slice-port-is-an-error",
        "endpoints-not-a-list-is-an-error",
    ],
)
def test_malformed_slices_are_left_out_with_an_error(piece: Obj, field: str) -> None:
    resolved, _ = resolve(service("reviews"), piece)
    errors = [d for d in resolved.diagnostics if d.is_error]
    assert [(d.kind, d.name, d.field) for d in errors] == [("EndpointSlice", "s", field)]
