"""Cluster endpoints → ClusterLoadAssignment."""

from __future__ import annotations

from envoy.config.endpoint.v3 import endpoint_components_pb2

from translators.build_endpoints import build_load_assignment, build_load_assignments
from translators.model import ClusterEndpoints, Endpoint

NAME = "outbound|80|v1|reviews.default.svc.cluster.local"


def addresses(locality: endpoint_components_pb2.LocalityLbEndpoints) -> list[tuple[str, int]]:
    return [
        (e.endpoint.address.socket_address.address, e.endpoint.address.socket_address.port_value)
        for e in locality.lb_endpoints
    ]


def test_endpoints_are_grouped_by_zone_with_sorted_zones_and_endpoints() -> None:
    out = build_load_assignment(
        ClusterEndpoints(
            NAME,
            (
                Endpoint("10.0.0.3", 9080, zone="zone-b"),
                Endpoint("10.0.0.2", 9080, zone="zone-a"),
                Endpoint("10.0.0.1", 9080, zone="zone-a"),
            ),
        )
    )
    assert out.cluster_name == NAME
    assert [loc.locality.zone for loc in out.endpoints] == ["zone-a", "zone-b"]
    assert addresses(out.endpoints[0]) == [("10.0.0.1", 9080), ("10.0.0.2", 9080)]
    assert addresses(out.endpoints[1]) == [("10.0.0.3", 9080)]


def test_every_locality_is_weighted_by_its_endpoint_count() -> None:
    out = build_load_assignment(
        ClusterEndpoints(
            NAME,
            (
                Endpoint("10.0.0.1", 80, zone="a"),
                Endpoint("10.0.0.2", 80, zone="a"),
                Endpoint("10.0.0.3", 80),
            ),
        )
    )
    weights = {loc.locality.zone: loc.load_balancing_weight.value for loc in out.endpoints}
    assert weights == {"": 1, "a": 2}
    assert all(loc.HasField("load_balancing_weight") for loc in out.endpoints)


def test_endpoints_without_zone_have_an_empty_locality() -> None:
    # gRPC clients NACK a LocalityLbEndpoints without a locality ("field not present").
    out = build_load_assignment(ClusterEndpoints(NAME, (Endpoint("10.0.0.1", 80),)))
    assert out.endpoints[0].HasField("locality")
    assert out.endpoints[0].locality.zone == ""
    assert out.endpoints[0].load_balancing_weight.value == 1


def test_a_cluster_without_endpoints_gets_an_empty_assignment() -> None:
    out = build_load_assignment(ClusterEndpoints(NAME))
    assert out.cluster_name == NAME
    assert len(out.endpoints) == 0


def test_endpoint_order_does_not_change_the_bytes() -> None:
    endpoints = (Endpoint("10.0.0.2", 80, zone="a"), Endpoint("10.0.0.1", 80, zone="b"))
    forward = build_load_assignment(ClusterEndpoints(NAME, endpoints))
    backward = build_load_assignment(ClusterEndpoints(NAME, endpoints[::-1]))
    assert forward.SerializeToString(deterministic=True) == backward.SerializeToString(
        deterministic=True
    )


def test_assignments_are_sorted_by_cluster_name() -> None:
    out = build_load_assignments([ClusterEndpoints("b"), ClusterEndpoints("a")])
    assert [a.cluster_name for a in out] == ["a", "b"]
