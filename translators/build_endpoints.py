"""Endpoints: one ClusterLoadAssignment per cluster, endpoints grouped by zone.

There is one load assignment per cluster, so they are written as bytes (see ``resources``):

    ClusterLoadAssignment  1 cluster_name, 2 endpoints (LocalityLbEndpoints)
    LocalityLbEndpoints    1 locality (2 zone), 2 lb_endpoints, 3 load_balancing_weight (1 value)
    LbEndpoint             1 endpoint → Endpoint 1 address → Address 1 socket_address
    SocketAddress          2 address, 3 port_value
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from operator import attrgetter

from envoy.config.endpoint.v3 import endpoint_pb2

from translators.model import ClusterEndpoints, Endpoint
from translators.resources import (
    Built,
    LengthPrefixes,
    length_delimited,
    parse_all,
    string_field,
    varint_field,
)


class _Entries(dict[tuple[str, int], bytes]):
    """The ``lb_endpoints`` entry of each address and port, written once: a subset's cluster
    holds endpoints of its service's cluster."""

    def __missing__(self, key: tuple[str, int]) -> bytes:
        socket_address = string_field(2, key[0]) + _port_value(key[1])
        size = len(socket_address)
        if size + 6 < 0x80:  # every length fits in one byte: the usual case, written at once
            prefix = bytes((0x12, size + 6, 0x0A, size + 4, 0x0A, size + 2, 0x0A, size))
            entry = prefix + socket_address
        else:
            address = length_delimited(1, socket_address)
            entry = length_delimited(2, length_delimited(1, length_delimited(1, address)))
        self[key] = entry
        return entry


_CLUSTER_NAMES = LengthPrefixes(1)  # ClusterLoadAssignment.cluster_name
_LOCALITIES = LengthPrefixes(2)  # ClusterLoadAssignment.endpoints


@functools.lru_cache(maxsize=1024)
def _port_value(port: int) -> bytes:
    return varint_field(3, port)


class _Localities(dict[str, bytes]):
    """The ``locality`` field of each zone; present, and empty, for endpoints without a zone:
    gRPC clients reject a ``LocalityLbEndpoints`` without one."""

    def __missing__(self, zone: str) -> bytes:
        locality = length_delimited(1, string_field(2, zone) if zone else b"")
        self[zone] = locality
        return locality


class _Weights(dict[int, bytes]):
    """The ``load_balancing_weight`` field of each endpoint count."""

    def __missing__(self, count: int) -> bytes:
        weight = length_delimited(3, varint_field(1, count))
        self[count] = weight
        return weight


class LoadAssignmentWriter:
    """Encodes load assignments, each endpoint, zone and weight written once for all of them."""

    def __init__(self) -> None:
        self._entries = _Entries()
        self._localities = _Localities()
        self._weights = _Weights()

    def encode(self, assignment: ClusterEndpoints) -> bytes:
        """The load assignment of one cluster.

        One locality per zone (sorted; endpoints without a zone share the empty zone), each
        weighted by its number of endpoints so that traffic still spreads evenly over all
        endpoints: gRPC clients drop a locality that has no ``load_balancing_weight``.
        """
        name = assignment.cluster.encode()
        parts = [_CLUSTER_NAMES[len(name)], name] if name else []
        if not assignment.endpoints:
            return b"".join(parts)
        by_zone: dict[str, list[tuple[str, int]]] = {}
        for endpoint in assignment.endpoints:
            by_zone.setdefault(endpoint.zone, []).append((endpoint.address, endpoint.port))
        entries = self._entries
        localities = self._localities
        weights = self._weights
        for zone in sorted(by_zone):
            members = by_zone[zone]
            if len(members) > 1:
                members = sorted(set(members))
            locality = [localities[zone], *[entries[m] for m in members], weights[len(members)]]
            data = b"".join(locality)
            parts += (_LOCALITIES[len(data)], data)
        return b"".join(parts)


def build_load_assignment(assignment: ClusterEndpoints) -> endpoint_pb2.ClusterLoadAssignment:
    """The load assignment of one cluster (see ``LoadAssignmentWriter.encode``)."""
    body = LoadAssignmentWriter().encode(assignment)
    return endpoint_pb2.ClusterLoadAssignment.FromString(body)


def build_load_assignments(
    assignments: Iterable[ClusterEndpoints],
) -> Built[endpoint_pb2.ClusterLoadAssignment]:
    """Every load assignment, sorted by cluster name."""
    return LoadAssignments().build(assignments)


class LoadAssignments:
    """Builds the load assignments of successive models: an assignment with the same endpoints
    as in the previous build keeps its bytes and its message (an endpoint change rewrites only
    the assignments it touched). Holds the previous build only."""

    def __init__(self) -> None:
        self._endpoints: dict[str, tuple[Endpoint, ...]] = {}
        self._built: Built[endpoint_pb2.ClusterLoadAssignment] | None = None

    def build(
        self, assignments: Iterable[ClusterEndpoints]
    ) -> Built[endpoint_pb2.ClusterLoadAssignment]:
        """Every load assignment, sorted by cluster name."""
        ordered = sorted(assignments, key=attrgetter("cluster"))
        names = [a.cluster for a in ordered]
        earlier = self._built
        if earlier is None:
            encode = LoadAssignmentWriter().encode
            bodies = [encode(a) for a in ordered]
        else:
            bodies = self._bodies(ordered, dict(zip(earlier.names, earlier.bodies, strict=True)))
        built = Built(endpoint_pb2.ClusterLoadAssignment, names, bodies, earlier=earlier)
        self._endpoints = {a.cluster: a.endpoints for a in ordered}
        self._built = built
        return built

    def spliced(
        self,
        built: Built[endpoint_pb2.ClusterLoadAssignment],
        changed: Mapping[int, ClusterEndpoints],
    ) -> Built[endpoint_pb2.ClusterLoadAssignment] | None:
        """``built`` (the last build) with the assignment at each index of ``changed`` written
        again: the names, and every other assignment's bytes and message, are the very same.
        None when ``built`` is not the last build or an index holds another cluster."""
        if built is not self._built:
            return None
        names = built.names
        if any(names[at] != assignment.cluster for at, assignment in changed.items()):
            return None
        encode = LoadAssignmentWriter().encode
        bodies = list(built.bodies)
        messages = list(built)
        fresh = {at: encode(assignment) for at, assignment in changed.items()}
        for at, message in zip(
            fresh, parse_all(built.message_type, list(fresh.values())), strict=True
        ):
            bodies[at] = fresh[at]
            messages[at] = message
        for assignment in changed.values():
            self._endpoints[assignment.cluster] = assignment.endpoints
        out = Built.assembled(built.message_type, names, bodies, messages, built.references)
        out.spliced_from = (built, tuple(sorted(changed)))
        built.spliced_from = None  # one step back at most: no chain of earlier builds
        self._built = out
        return out

    def _bodies(self, ordered: list[ClusterEndpoints], earlier: dict[str, bytes]) -> list[bytes]:
        writer = LoadAssignmentWriter()
        bodies = []
        for assignment in ordered:
            endpoints = self._endpoints.get(assignment.cluster)
            body = earlier.get(assignment.cluster)
            if body is None or endpoints is None or endpoints != assignment.endpoints:
                body = writer.encode(assignment)
            bodies.append(body)
        return bodies
