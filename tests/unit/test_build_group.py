"""A node group's resources: roles, consistency between resources, determinism."""

from __future__ import annotations

from dataclasses import replace

import pytest
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from google.protobuf.message import Message

from translators import resources
from translators.build import ResourceBuilder, build_group
from translators.model import (
    Cluster,
    ClusterEndpoints,
    Endpoint,
    HttpRoute,
    MeshModel,
    NodeGroup,
    Role,
    TcpListener,
    VirtualHost,
    WeightedCluster,
)

FQDN = "reviews.default.svc.cluster.local"
V1 = f"outbound|80|v1|{FQDN}"
V2 = f"outbound|80|v2|{FQDN}"
GROUPS = [NodeGroup(Role.SIDECAR, 15001), NodeGroup(Role.GATEWAY, 8080), NodeGroup(Role.PROXYLESS)]


def model() -> MeshModel:
    rule = HttpRoute(destinations=(WeightedCluster(V1, 90), WeightedCluster(V2, 10)))
    return MeshModel(
        clusters=(Cluster(V2, FQDN, 80, "v2"), Cluster(V1, FQDN, 80, "v1")),
        endpoints=(ClusterEndpoints(V1, (Endpoint("10.0.0.1", 9080),)),),
        mesh_hosts=(VirtualHost(f"{FQDN}:80", 80, ("reviews", FQDN), (rule,)),),
        gateway_hosts=(VirtualHost("shop", 8080, ("shop.example.com",), (rule,)),),
        gateway_tcp=(TcpListener("default/db:5432", 5432, (WeightedCluster(V1, 1),)),),
    )


def rds_names(listeners: tuple[Message, ...]) -> set[str]:
    found = set()
    for listener in listeners:
        hcm = hcm_pb2.HttpConnectionManager()
        if listener.HasField("api_listener"):
            listener.api_listener.api_listener.Unpack(hcm)  # type: ignore[attr-defined]
            found.add(hcm.rds.route_config_name)
            continue
        for chain in listener.filter_chains:  # type: ignore[attr-defined]
            for flt in chain.filters:
                if flt.typed_config.Unpack(hcm) and hcm.HasField("rds"):
                    found.add(hcm.rds.route_config_name)
    return found


@pytest.mark.parametrize("group", GROUPS, ids=lambda g: g.key)
def test_group_resources_are_keyed_by_type_url_and_sorted_by_name(group: NodeGroup) -> None:
    out = build_group(model(), group)
    assert list(out) == [t for t in resources.PUSH_ORDER if t in out]
    assert {resources.CLUSTER, resources.ENDPOINT, resources.LISTENER, resources.ROUTE} <= set(out)
    for items in out.values():
        item_names = [resources.resource_name(m) for m in items]
        assert item_names == sorted(item_names)
        assert len(set(item_names)) == len(item_names)


@pytest.mark.parametrize("group", GROUPS, ids=lambda g: g.key)
def test_every_eds_name_has_a_load_assignment(group: NodeGroup) -> None:
    out = build_group(model(), group)
    eds = {c.eds_cluster_config.service_name for c in out[resources.CLUSTER]}  # type: ignore[attr-defined]
    assigned = {a.cluster_name for a in out[resources.ENDPOINT]}  # type: ignore[attr-defined]
    assert eds == assigned == {V1, V2}


@pytest.mark.parametrize("group", GROUPS, ids=lambda g: g.key)
def test_every_route_table_a_listener_or_scope_names_exists(group: NodeGroup) -> None:
    out = build_group(model(), group)
    tables = {r.name for r in out[resources.ROUTE]}  # type: ignore[attr-defined]
    scoped = {s.route_configuration_name for s in out.get(resources.SCOPED_ROUTE, ())}  # type: ignore[attr-defined]
    assert rds_names(out[resources.LISTENER]) | scoped <= tables
    assert rds_names(out[resources.LISTENER]) | scoped


@pytest.mark.parametrize(
    ("group", "listeners", "routes"),
    [
        (NodeGroup(Role.SIDECAR, 15001), ["127.0.0.1_15001"], [f"15001/{FQDN}"]),
        (NodeGroup(Role.SIDECAR, 15002), ["127.0.0.1_15002"], [f"15002/{FQDN}"]),
        (NodeGroup(Role.GATEWAY, 8080), ["0.0.0.0_5432", "0.0.0.0_8080"], ["8080"]),
        (NodeGroup(Role.PROXYLESS), ["reviews", "reviews:80", FQDN, f"{FQDN}:80"], [f"{FQDN}:80"]),
    ],
    ids=lambda v: v.key if isinstance(v, NodeGroup) else "",
)
def test_listeners_and_route_tables_per_role(
    group: NodeGroup, listeners: list[str], routes: list[str]
) -> None:
    out = build_group(model(), group)
    assert [resources.resource_name(m) for m in out[resources.LISTENER]] == sorted(listeners)
    assert [resources.resource_name(m) for m in out[resources.ROUTE]] == routes


def test_clusters_and_endpoints_are_shared_between_groups_of_one_model() -> None:
    mesh = model()
    builder = ResourceBuilder()
    sidecar = builder.build_group(mesh, GROUPS[0])
    gateway = builder.build_group(mesh, GROUPS[1])
    assert sidecar[resources.CLUSTER] is gateway[resources.CLUSTER]
    assert sidecar[resources.ENDPOINT] is gateway[resources.ENDPOINT]
    assert builder.builds["clusters"] == builder.builds["endpoints"] == 1


def test_an_endpoint_only_change_rebuilds_load_assignments_and_nothing_else() -> None:
    builder = ResourceBuilder()
    before = model()
    first = {group.key: builder.build_group(before, group) for group in GROUPS}
    moved = (ClusterEndpoints(V1, (Endpoint("10.0.0.9", 9080),)),)
    after = replace(before, endpoints=moved)  # what translate_endpoints hands over

    second = {group.key: builder.build_group(after, group) for group in GROUPS}

    assert builder.builds["endpoints"] == 2
    assert all(count == 1 for part, count in builder.builds.items() if part != "endpoints")
    for key, resources_of_group in second.items():
        for type_url in (resources.CLUSTER, resources.LISTENER, resources.ROUTE):
            assert resources_of_group[type_url] is first[key][type_url]
    [assignment] = [
        a for a in second["sidecar:15001"][resources.ENDPOINT] if resources.resource_name(a) == V1
    ]
    assert "10.0.0.9" in str(assignment)


def test_a_routing_change_rebuilds_routes() -> None:
    builder = ResourceBuilder()
    before = model()
    builder.build_group(before, GROUPS[0])
    rule = HttpRoute(destinations=(WeightedCluster(V2, 1),))
    after = replace(before, mesh_hosts=(VirtualHost(f"{FQDN}:80", 80, ("reviews",), (rule,)),))

    tables = builder.build_group(after, GROUPS[0])[resources.ROUTE]

    assert builder.builds["sidecar:15001/routes"] == 2
    assert V2 in str(tables[0]) and V1 not in str(tables[0])


@pytest.mark.parametrize("group", GROUPS, ids=lambda g: g.key)
def test_same_model_gives_byte_identical_resources_and_versions(group: NodeGroup) -> None:
    first = build_group(model(), group)
    second = build_group(model(), group)
    assert list(first) == list(second)
    for type_url in first:
        a = [resources.serialize(m) for m in first[type_url]]
        b = [resources.serialize(m) for m in second[type_url]]
        assert a == b
        assert [resources.content_version(x) for x in a] == [
            resources.content_version(x) for x in b
        ]


def test_content_version_is_a_short_hash_that_changes_with_the_bytes() -> None:
    assert resources.content_version(b"a") == resources.content_version(b"a")
    assert resources.content_version(b"a") != resources.content_version(b"b")
    assert len(resources.content_version(b"a")) == 16


def test_a_routing_change_keeps_each_table_layout_and_builds_what_a_fresh_build_would() -> None:
    builder = ResourceBuilder()
    before = model()
    for group in GROUPS:
        builder.build_group(before, group)
    rule = HttpRoute(destinations=(WeightedCluster(V2, 1),))
    rerouted = replace(
        before,
        mesh_hosts=tuple(replace(v, routes=(rule,)) for v in before.mesh_hosts),
        gateway_hosts=tuple(replace(v, routes=(rule,)) for v in before.gateway_hosts),
    )
    renamed = replace(
        rerouted, mesh_hosts=tuple(replace(v, hosts=("ratings",)) for v in rerouted.mesh_hosts)
    )

    for after, layouts in ((rerouted, 1), (renamed, 2)):
        for group in GROUPS:
            tables = builder.build_group(after, group)[resources.ROUTE]
            fresh = build_group(after, group)[resources.ROUTE]
            assert [resources.serialize(t) for t in tables] == [
                resources.serialize(t) for t in fresh
            ]
        assert builder.builds["sidecar:15001/layout"] == builder.builds["port-layout"] == layouts
    assert builder.builds["gateway:8080/layout"] == 1
    assert builder.builds["sidecar:15001/routes"] == builder.builds["service-routes"] == 3
