"""Endpoints: one ClusterLoadAssignment per cluster, endpoints grouped by zone."""

from __future__ import annotations

from collections.abc import Iterable

from envoy.config.endpoint.v3 import endpoint_pb2

from translators.model import ClusterEndpoints, Endpoint


def build_load_assignment(assignment: ClusterEndpoints) -> endpoint_pb2.ClusterLoadAssignment:
    """The load assignment of one cluster.

    One locality per zone (sorted; endpoints without a zone share the empty zone), each weighted
    by its number of endpoints so that traffic still spreads evenly over all endpoints: gRPC
    clients drop a locality that has no ``load_balancing_weight``.
    """
    by_zone: dict[str, list[Endpoint]] = {}
    for endpoint in assignment.endpoints:
        by_zone.setdefault(endpoint.zone, []).append(endpoint)
    out = endpoint_pb2.ClusterLoadAssignment(cluster_name=assignment.cluster)
    for zone in sorted(by_zone):
        members = sorted({(e.address, e.port) for e in by_zone[zone]})
        locality = out.endpoints.add()
        if zone:
            locality.locality.zone = zone
        locality.load_balancing_weight.value = len(members)
        for address, port in members:
            socket = locality.lb_endpoints.add().endpoint.address.socket_address
            socket.address = address
            socket.port_value = port
    return out


def build_load_assignments(
    assignments: Iterable[ClusterEndpoints],
) -> tuple[endpoint_pb2.ClusterLoadAssignment, ...]:
    """Every load assignment, sorted by cluster name."""
    return tuple(build_load_assignment(a) for a in sorted(assignments, key=lambda a: a.cluster))
