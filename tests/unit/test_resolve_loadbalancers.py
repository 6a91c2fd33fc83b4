"""LoadBalancer Services → the fleet's TCP listeners."""

from __future__ import annotations

import pytest

from tests.unit.objects import (
    Obj,
    destination,
    endpoint_slice,
    metadata,
    service,
    service_port,
    slice_endpoint,
    versioned_service,
    virtual_service,
)
from translators.diagnostics import Severity
from translators.incremental import Translator
from translators.model import Service, ServicePort, TcpListener, TcpRoute, WeightedCluster
from translators.resolve_loadbalancers import resolve_load_balancers, serves_load_balancer
from translators.translate import Options, translate

HOST = "edge.default.svc.cluster.local"


def lb(name: str = "edge", created: str | None = None, port: int = 80, lb_class: str = "") -> Obj:
    obj = service(name, ports=[service_port(port, "http", 8080)], type="LoadBalancer")
    if lb_class:
        obj["spec"]["loadBalancerClass"] = lb_class
    obj["metadata"] = metadata(name, "default", created=created)
    return obj


@pytest.mark.parametrize(
    ("service_type", "lb_class", "only_lb_class", "served"),
    [
        ("LoadBalancer", "", False, True),
        ("LoadBalancer", "splitplane.io/envoy", False, True),
        ("LoadBalancer", "example.com/cloud", False, False),
        ("LoadBalancer", "", True, False),
        ("LoadBalancer", "splitplane.io/envoy", True, True),
        ("ClusterIP", "", False, False),
        ("NodePort", "", False, False),
    ],
)
def test_which_services_the_fleet_serves(
    service_type: str, lb_class: str, only_lb_class: bool, served: bool
) -> None:
    assert serves_load_balancer(service_type, lb_class, only_lb_class) is served


def test_each_port_becomes_a_listener_to_its_cluster() -> None:
    edge = service(
        "edge",
        ports=[service_port(80, "http", 8080), service_port(5432, "tcp-db")],
        type="LoadBalancer",
    )
    assert translate([edge]).model.gateway_tcp == (
        TcpListener("default/edge:80", 80, (WeightedCluster(f"outbound|80||{HOST}", 100),)),
        TcpListener("default/edge:5432", 5432, (WeightedCluster(f"outbound|5432||{HOST}", 100),)),
    )


def test_the_option_limits_the_fleet_to_its_load_balancer_class() -> None:
    objects = [lb("plain", port=80), lb("classy", port=81, lb_class="splitplane.io/envoy")]
    everything = translate(objects).model.gateway_tcp
    only = translate(objects, options=Options(only_lb_class=True)).model.gateway_tcp
    assert [t.name for t in everything] == ["default/plain:80", "default/classy:81"]
    assert [t.name for t in only] == ["default/classy:81"]


def test_the_older_service_keeps_a_port_two_want_and_the_other_gets_a_warning() -> None:
    translation = translate(
        [lb("young", created="2024-06-01T00:00:00Z"), lb("old", created="2024-01-01T00:00:00Z")]
    )
    assert [t.name for t in translation.model.gateway_tcp] == ["default/old:80"]
    (warning,) = [d for d in translation.diagnostics if d.field == "spec.ports"]
    assert warning.name == "young"
    assert warning.severity is Severity.WARNING
    assert "default/old" in warning.message


def test_tcp_rules_of_a_virtual_service_split_the_listener_by_weight() -> None:
    objects = [
        *versioned_service("edge"),
        virtual_service(
            "edge",
            ["edge"],
            tcp=[
                {
                    "route": [
                        destination("edge", "v1", weight=75),
                        destination("edge", "v2", weight=25),
                    ]
                }
            ],
        ),
    ]
    objects[0]["spec"]["type"] = "LoadBalancer"
    (listener,) = translate(objects).model.gateway_tcp
    assert listener.destinations == (
        WeightedCluster(f"outbound|80|v1|{HOST}", 75),
        WeightedCluster(f"outbound|80|v2|{HOST}", 25),
    )


def _service(*ports: int) -> Service:
    return Service("edge", "default", HOST, tuple(ServicePort(p) for p in ports), "LoadBalancer")


def test_a_rule_bound_to_the_fleet_wins_over_a_mesh_rule() -> None:
    mesh = TcpRoute(HOST, 80, (WeightedCluster("mesh", 100),), gateway=False)
    fleet = TcpRoute(HOST, 80, (WeightedCluster("fleet", 100),), gateway=True)
    for routes in ([mesh, fleet], [fleet, mesh]):
        (listener,) = resolve_load_balancers([_service(80)], routes).listeners
        assert listener.destinations == (WeightedCluster("fleet", 100),)


def test_a_rule_for_another_port_leaves_a_port_on_its_own_cluster() -> None:
    other = TcpRoute(HOST, 443, (WeightedCluster("tls", 100),))
    listeners = resolve_load_balancers([_service(80, 443)], [other]).listeners
    assert [(t.port, t.destinations[0].cluster) for t in listeners] == [
        (80, f"outbound|80||{HOST}"),
        (443, "tls"),
    ]


def test_listeners_do_not_depend_on_endpoints() -> None:
    translator = Translator()
    first = translator.reset({("Service", "default", "edge"): lb("edge")})
    assert first.model.gateway_tcp
    moved = endpoint_slice("edge-a", "edge", [slice_endpoint("10.0.0.9")])
    changed = translator.apply({("EndpointSlice", "default", "edge-a"): moved})
    assert translator.paths["endpoints"] == 1
    assert changed.model.gateway_tcp == first.model.gateway_tcp
