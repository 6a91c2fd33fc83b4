"""Resources the builders write as bytes: the same bytes the protobuf library writes, and a
serializer that takes them as they are gives the same snapshot as one that serializes."""

from __future__ import annotations

import copy
import pickle
from pathlib import Path

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from google.protobuf import wrappers_pb2

from tests.golden.test_golden import CASES, run_case
from tests.support.envoy_resources import eds_cluster, load_assignment
from translators import resources
from translators.build_clusters import build_cluster, build_clusters, cluster_template
from translators.build_endpoints import (
    LoadAssignments,
    build_load_assignment,
    build_load_assignments,
)
from translators.build_routes import encode_routes
from translators.model import (
    Cluster,
    ClusterEndpoints,
    ConnectionPool,
    ConsistentHash,
    Endpoint,
    Fault,
    HeaderOperations,
    Headers,
    HttpRoute,
    KeyMatch,
    MatchKind,
    Mirror,
    OutlierDetection,
    Protocol,
    Redirect,
    RetryPolicy,
    Rewrite,
    RouteMatch,
    StringMatch,
    TrafficPolicy,
    WeightedCluster,
)
from xds_server.xds.cache import Serializer, Snapshot, snapshot_from_messages

LONG = "x" * 200  # long enough that every enclosing length takes two bytes


def test_wire_helpers_write_what_the_protobuf_library_writes() -> None:
    for text in ("", "a", LONG, "é" * 100, "y" * 20_000):
        value = wrappers_pb2.StringValue(value=text)
        assert resources.string_field(1, text) == resources.serialize(value)
    for number in (0, 1, 127, 128, 300, 2**32 - 1):
        value32 = wrappers_pb2.UInt32Value(value=number)
        assert resources.varint_field(1, number) == resources.serialize(value32)
    domains = ["a", "", LONG]
    names = cluster_pb2.Cluster.EdsClusterConfig(service_name="s")
    assert resources.repeated_string_field(2, ["s"]) == resources.serialize(names)
    assert resources.repeated_string_field(1, domains) == b"".join(
        resources.length_delimited(1, d.encode()) for d in domains
    )
    # field 20 of a cluster (a map of messages) needs a two-byte tag
    cluster = cluster_pb2.Cluster()
    cluster.typed_extension_protocol_options["k"].type_url = LONG
    entry = resources.serialize(cluster)
    inner = cluster.typed_extension_protocol_options["k"]
    payload = resources.string_field(1, "k") + resources.length_delimited(
        2, resources.serialize(inner)
    )
    number = cluster_pb2.Cluster.TYPED_EXTENSION_PROTOCOL_OPTIONS_FIELD_NUMBER
    assert resources.length_delimited(number, payload) == entry


def test_the_fields_around_one_field_rebuild_the_message() -> None:
    cluster = eds_cluster("n")
    cluster.connect_timeout.seconds = 3
    number = cluster_pb2.Cluster.EDS_CLUSTER_CONFIG_FIELD_NUMBER
    before, after = resources.fields_around(cluster, number)
    own = resources.length_delimited(number, resources.serialize(cluster.eds_cluster_config))
    assert before + own + after == resources.serialize(cluster)
    assert before.startswith(resources.string_field(1, "n"))
    assert after


def assignments() -> list[endpoint_pb2.ClusterLoadAssignment]:
    return [load_assignment(name, [("10.0.0.1", 80)]) for name in ("a", "b", "c", LONG)]


def test_built_messages_are_parsed_from_their_bytes() -> None:
    messages = assignments()
    built = resources.Built.of(endpoint_pb2.ClusterLoadAssignment, messages)
    assert list(built) == messages
    assert built.names == ("a", "b", "c", LONG)
    assert built.bodies == tuple(resources.serialize(m) for m in messages)
    assert built.type_url == resources.ENDPOINT
    for other in (copy.copy(built), copy.deepcopy(built), pickle.loads(pickle.dumps(built))):
        assert other == built
        assert (other.names, other.bodies) == (built.names, built.bodies)


def test_built_names_and_bytes_must_pair_up() -> None:
    with pytest.raises(ValueError, match="2 names for 1 resources"):
        resources.Built(endpoint_pb2.ClusterLoadAssignment, ["a", "b"], [b""])


def snapshot_data(snapshot: Snapshot) -> object:
    return (
        {
            url: [(r.name, r.version, r.body) for r in types.resources]
            for url, types in snapshot.types.items()
        },
        {url: types.version for url, types in snapshot.types.items()},
        snapshot.eds_references,
        snapshot.rds_references,
    )


def test_a_serializer_takes_built_resources_as_they_are() -> None:
    clusters = [eds_cluster(name) for name in ("b", "a", LONG)]
    built = {
        resources.CLUSTER: resources.Built.of(
            cluster_pb2.Cluster, clusters, frozenset(("a", "b", LONG))
        ),
        resources.ENDPOINT: resources.Built.of(endpoint_pb2.ClusterLoadAssignment, assignments()),
    }
    serializer = Serializer()
    snapshot = snapshot_from_messages(built, serializer)
    assert serializer.serialized == 7
    expected = snapshot_from_messages({url: list(m) for url, m in built.items()})
    assert snapshot_data(snapshot) == snapshot_data(expected)
    # handed in again, the same tuple is not looked at again
    again = snapshot_from_messages(built, serializer)
    assert serializer.serialized == 7
    assert again.of_type(resources.CLUSTER) is snapshot.of_type(resources.CLUSTER)


def test_a_serializer_refuses_built_resources_under_another_type_or_named_twice() -> None:
    clusters = resources.Built.of(cluster_pb2.Cluster, [eds_cluster("a")])
    with pytest.raises(ValueError, match="Cluster resources listed under"):
        snapshot_from_messages({resources.ENDPOINT: clusters})
    twice = resources.Built.of(cluster_pb2.Cluster, [eds_cluster("a"), eds_cluster("a")])
    with pytest.raises(ValueError, match="named 'a'"):
        snapshot_from_messages({resources.CLUSTER: twice})


def load_assignment_by_fields(
    assignment: ClusterEndpoints,
) -> endpoint_pb2.ClusterLoadAssignment:
    """The load assignment the builder documents, made with the protobuf library."""
    out = endpoint_pb2.ClusterLoadAssignment(cluster_name=assignment.cluster)
    zones = sorted({e.zone for e in assignment.endpoints})
    for zone in zones:
        members = sorted({(e.address, e.port) for e in assignment.endpoints if e.zone == zone})
        locality = out.endpoints.add()
        locality.locality.SetInParent()  # present even without a zone: gRPC requires it
        locality.locality.zone = zone
        locality.load_balancing_weight.value = len(members)
        for address, port in members:
            socket = locality.lb_endpoints.add().endpoint.address.socket_address
            socket.address = address
            socket.port_value = port
    return out


@pytest.mark.parametrize(
    "assignment",
    [
        ClusterEndpoints("a"),
        ClusterEndpoints("a", (Endpoint("10.0.0.1", 80),)),
        ClusterEndpoints(
            "outbound|80|v1|reviews.default.svc.cluster.local",
            (
                Endpoint("10.0.0.2", 9080, zone="b"),
                Endpoint("10.0.0.1", 9080, zone="b"),
                Endpoint("10.0.0.1", 9080, zone="b"),  # the same address twice: once
                Endpoint("10.0.0.3", 65535),
                Endpoint("fd00::1", 1, zone="a"),
            ),
        ),
        ClusterEndpoints(LONG, (Endpoint(LONG, 300, zone=LONG),)),
        ClusterEndpoints("many", tuple(Endpoint(f"10.0.{i}.1", 8000 + i) for i in range(300))),
    ],
    ids=["empty", "one", "zones", "long-names", "many"],
)
def test_load_assignments_are_the_bytes_the_protobuf_library_writes(
    assignment: ClusterEndpoints,
) -> None:
    expected = resources.serialize(load_assignment_by_fields(assignment))
    assert resources.serialize(build_load_assignment(assignment)) == expected
    built = build_load_assignments([assignment, ClusterEndpoints("0")])
    assert built.bodies[1] == expected
    assert built.names == ("0", assignment.cluster)


@pytest.mark.parametrize(
    ("name", "protocol", "policy"),
    [
        ("outbound|80||reviews.default.svc.cluster.local", Protocol.HTTP, TrafficPolicy()),
        ("b", Protocol.GRPC, TrafficPolicy(connection_pool=ConnectionPool(max_connections=5))),
        (LONG, Protocol.TCP, TrafficPolicy(outlier_detection=OutlierDetection(interval_ms=10))),
        ("", Protocol.HTTP, TrafficPolicy()),
    ],
)
def test_clusters_are_their_template_with_their_names(
    name: str, protocol: Protocol, policy: TrafficPolicy
) -> None:
    expected = cluster_template(protocol, policy)
    expected.name = name
    expected.eds_cluster_config.service_name = name
    cluster = Cluster(name, "svc", 80, protocol=protocol, policy=policy)
    assert resources.serialize(build_cluster(cluster)) == resources.serialize(expected)
    built = build_clusters([cluster, Cluster("0", "svc", 80)])
    assert built.bodies[built.names.index(name)] == resources.serialize(expected)
    assert built.references == {"0", name}


@pytest.mark.parametrize("case", CASES, ids=lambda p: p.name)
def test_every_group_is_built_with_its_own_names_bytes_and_references(case: Path) -> None:
    for key, built in run_case(case).groups.items():
        for messages in built.values():
            assert isinstance(messages, resources.Built)
            assert list(messages.names) == [resources.resource_name(m) for m in messages]
            assert list(messages.bodies) == [resources.serialize(m) for m in messages]
        serialized_here = {url: list(messages) for url, messages in built.items()}
        expected = snapshot_data(snapshot_from_messages(serialized_here))
        assert snapshot_data(snapshot_from_messages(built)) == expected, key


HEADERS = Headers(
    request=HeaderOperations(set=(("x-a", "1"),), add=(("x-b", "2"),), remove=("x-c",)),
    response=HeaderOperations(set=(("x-d", "3"),), remove=("x-e",)),
)
HASHED = Cluster("hashed", "svc", 80, policy=TrafficPolicy(consistent_hash=ConsistentHash("h")))
SPLIT = (WeightedCluster("a", 3, HEADERS), WeightedCluster(LONG, 1), WeightedCluster("z", 0))
PREFIX = StringMatch(MatchKind.PREFIX, "/api")


@pytest.mark.parametrize(
    "route",
    [
        HttpRoute(destinations=(WeightedCluster("a", 1),)),
        HttpRoute(name="all", destinations=SPLIT, headers=HEADERS, timeout_ms=1500),
        HttpRoute(destinations=(WeightedCluster("a", 1, HEADERS),), headers=HEADERS),
        HttpRoute(destinations=(WeightedCluster("a", 0), WeightedCluster("hashed", 0))),
        HttpRoute(
            matches=(
                RouteMatch(uri=PREFIX, port=80),
                RouteMatch(
                    uri=StringMatch(MatchKind.EXACT, "/x"),
                    method=StringMatch(MatchKind.EXACT, "GET"),
                    headers=(KeyMatch("h", StringMatch(MatchKind.REGEX, "v.*"), invert=True),),
                    query_params=(KeyMatch("q"),),
                    ignore_uri_case=True,
                ),
                RouteMatch(uri=PREFIX, port=81),
            ),
            destinations=(WeightedCluster("hashed", 1), WeightedCluster("b", 1)),
            rewrite=Rewrite(uri="/v2", authority="new.example.com"),
            retries=RetryPolicy(3, per_try_timeout_ms=250, retry_on="503,gateway-error"),
            fault=Fault(delay_ms=5, delay_percent=12.5, abort_grpc_status="UNAVAILABLE"),
            mirror=Mirror("shadow", 10.0),
        ),
        HttpRoute(
            destinations=(WeightedCluster("a", 1),),
            rewrite=Rewrite(regex="^/old/(.*)$", regex_substitution="/new/\\1"),
            retries=RetryPolicy(0),
        ),
        HttpRoute(redirect=Redirect(uri="/moved", port=8443, scheme="https", code=308)),
        HttpRoute(matches=(RouteMatch(uri=PREFIX),), headers=HEADERS),
    ],
    ids=["plain", "split", "lifted", "all-zero", "everything", "regex", "redirect", "none"],
)
def test_routes_are_written_as_the_protobuf_library_writes_them(route: HttpRoute) -> None:
    clusters = {HASHED.name: HASHED}
    encoded = encode_routes(route, clusters, port=80)
    assert encoded
    for data in encoded:
        assert resources.serialize(rc.Route.FromString(data)) == data


def test_an_endpoint_change_rewrites_only_the_assignments_it_touched() -> None:
    before = [
        ClusterEndpoints(name, (Endpoint("10.0.0.1", 80, zone="a"), Endpoint("10.0.0.2", 80)))
        for name in ("a", "b", "c")
    ]
    moved = ClusterEndpoints("b", (Endpoint("10.0.0.9", 80),))
    after = [before[0], moved, ClusterEndpoints("c", tuple(before[2].endpoints))]
    builder = LoadAssignments()
    first = builder.build(before)

    second = builder.build(after)

    fresh = build_load_assignments(after)
    assert second.bodies == fresh.bodies
    assert list(second) == list(fresh)
    assert second.bodies[0] is first.bodies[0] and second[0] is first[0]
    assert second.bodies[2] is first.bodies[2] and second[2] is first[2]  # equal endpoints
    assert second.bodies[1] is not first.bodies[1]


def test_a_spliced_build_tells_the_serializer_which_resources_it_wrote_again() -> None:
    builder = LoadAssignments()
    before = [ClusterEndpoints(name, (Endpoint("10.0.0.1", 80),)) for name in "abcd"]
    first = builder.build(before)
    serializer = Serializer()
    old = snapshot_from_messages({resources.ENDPOINT: first}, serializer)
    serializer.end_round()
    moved = {2: ClusterEndpoints("c", (Endpoint("10.0.0.9", 80),))}

    second = builder.spliced(first, moved)

    assert second is not None and second.spliced_from == (first, (2,))
    hashed = serializer.serialized
    new = snapshot_from_messages({resources.ENDPOINT: second}, serializer)
    assert serializer.serialized - hashed == 1  # "c" alone
    fresh = snapshot_from_messages(
        {resources.ENDPOINT: build_load_assignments([*before[:2], moved[2], before[3]])}
    )
    assert new.versions == fresh.versions
    kept = new.of_type(resources.ENDPOINT).by_name
    held = old.of_type(resources.ENDPOINT).by_name
    assert [name for name in "abcd" if kept[name] is held[name]] == ["a", "b", "d"]
    assert kept["c"].body == fresh.of_type(resources.ENDPOINT).by_name["c"].body
    # One step back at most: the earlier build lets go of its own earlier one.
    third = builder.spliced(second, {0: ClusterEndpoints("a", (Endpoint("10.0.0.8", 80),))})
    assert third is not None and third.spliced_from == (second, (0,))
    assert second.spliced_from is None


def test_a_serializer_keeps_the_resources_whose_bytes_it_is_handed_again() -> None:
    builder = LoadAssignments()
    serializer = Serializer()
    before = [ClusterEndpoints(name, (Endpoint("10.0.0.1", 80),)) for name in ("a", "b")]
    first = snapshot_from_messages({resources.ENDPOINT: builder.build(before)}, serializer)
    serializer.end_round()
    after = [before[0], ClusterEndpoints("b", (Endpoint("10.0.0.2", 80),))]

    second = snapshot_from_messages({resources.ENDPOINT: builder.build(after)}, serializer)

    assert serializer.serialized == 3
    old, new = first.of_type(resources.ENDPOINT), second.of_type(resources.ENDPOINT)
    assert new.by_name["a"] is old.by_name["a"]
    assert new.by_name["b"] != old.by_name["b"]
    fresh = snapshot_from_messages({resources.ENDPOINT: build_load_assignments(after)})
    assert snapshot_data(second) == snapshot_data(fresh)
