"""A sidecar's scoped routes: one route configuration per service, chosen by host."""

from __future__ import annotations

from dataclasses import replace

import pytest
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from google.protobuf.message import Message

from translators import resources
from translators.build import ResourceBuilder, build_group
from translators.build_scoped_routes import bare_host
from translators.model import (
    Cluster,
    HttpRoute,
    MeshModel,
    NodeGroup,
    Role,
    VirtualHost,
    WeightedCluster,
)
from xds_server.xds.cache import Serializer, inconsistency, snapshot_from_messages

SIDECAR = NodeGroup(Role.SIDECAR, 15001)


def service(name: str, *ports: int, v2: int = 0) -> tuple[list[Cluster], list[VirtualHost]]:
    fqdn = f"{name}.default.svc.cluster.local"
    clusters, hosts = [], []
    for port in ports:
        v1_name, v2_name = f"outbound|{port}|v1|{fqdn}", f"outbound|{port}|v2|{fqdn}"
        clusters += [Cluster(v1_name, fqdn, port, "v1"), Cluster(v2_name, fqdn, port, "v2")]
        rule = HttpRoute(
            destinations=(WeightedCluster(v1_name, 100 - v2), WeightedCluster(v2_name, v2))
        )
        hosts.append(VirtualHost(f"{fqdn}:{port}", port, (name, f"{name}.default", fqdn), (rule,)))
    return clusters, hosts


def mesh(*services: tuple[list[Cluster], list[VirtualHost]]) -> MeshModel:
    return MeshModel(
        clusters=tuple(c for clusters, _ in services for c in clusters),
        endpoints=(),
        mesh_hosts=tuple(h for _, hosts in services for h in hosts),
    )


def by_name(messages: tuple[Message, ...]) -> dict[str, Message]:
    return {resources.resource_name(m): m for m in messages}


def hcm_of(built: dict[str, tuple[Message, ...]]) -> hcm_pb2.HttpConnectionManager:
    (listener,) = built[resources.LISTENER]
    hcm = hcm_pb2.HttpConnectionManager()
    assert listener.filter_chains[0].filters[0].typed_config.Unpack(hcm)  # type: ignore[attr-defined]
    return hcm


@pytest.mark.parametrize(
    ("domain", "host"),
    [
        ("reviews", "reviews"),
        ("reviews:80", "reviews"),
        ("10.0.0.1:8080", "10.0.0.1"),
        ("a:b", "a:b"),
    ],
)
def test_a_scope_key_is_the_host_without_its_port(domain: str, host: str) -> None:
    assert bare_host(domain) == host


def test_every_host_name_selects_the_route_configuration_of_its_service() -> None:
    built = build_group(mesh(service("reviews", 80, 9080), service("ratings", 80)), SIDECAR)

    scoped = hcm_of(built).scoped_routes
    assert scoped.name == "15001"
    extractor = scoped.scope_key_builder.fragments[0].header_value_extractor
    assert (extractor.name, extractor.element_separator, extractor.index) == (":authority", ":", 0)
    scopes = {
        s.key.fragments[0].string_key: s.route_configuration_name  # type: ignore[attr-defined]
        for s in built[resources.SCOPED_ROUTE]
    }
    reviews = "15001/reviews.default.svc.cluster.local"
    ratings = "15001/ratings.default.svc.cluster.local"
    assert scopes == {
        "reviews": reviews,
        "reviews.default": reviews,
        "reviews.default.svc.cluster.local": reviews,
        "ratings": ratings,
        "ratings.default": ratings,
        "ratings.default.svc.cluster.local": ratings,
    }
    tables = by_name(built[resources.ROUTE])
    assert list(tables) == [ratings, reviews]
    # one service's ports share its route configuration; virtual hosts keep Istio's names
    assert [v.name for v in tables[reviews].virtual_hosts] == [  # type: ignore[attr-defined]
        "reviews.default.svc.cluster.local:80",
        "reviews.default.svc.cluster.local:9080",
    ]
    assert "reviews:9080" in tables[reviews].virtual_hosts[1].domains  # type: ignore[attr-defined]
    assert inconsistency(snapshot_from_messages(built)) is None


def test_a_weight_change_rebuilds_only_that_services_route_configuration() -> None:
    builder = ResourceBuilder()
    before = builder.build_group(mesh(service("reviews", 80), service("ratings", 80)), SIDECAR)
    after = builder.build_group(
        mesh(service("reviews", 80, v2=100), service("ratings", 80)), SIDECAR
    )

    old, new = by_name(before[resources.ROUTE]), by_name(after[resources.ROUTE])
    ratings = "15001/ratings.default.svc.cluster.local"
    reviews = "15001/reviews.default.svc.cluster.local"
    assert new[ratings] is old[ratings]  # the very message (and bytes) as before
    assert new[reviews] != old[reviews]
    assert after[resources.SCOPED_ROUTE] is before[resources.SCOPED_ROUTE]
    assert after[resources.LISTENER] is before[resources.LISTENER]


def test_a_weight_change_sends_a_proxyless_client_only_that_services_route_configuration() -> None:
    builder, serializer = ResourceBuilder(), Serializer()
    proxyless = NodeGroup(Role.PROXYLESS)
    first = mesh(service("reviews", 80), service("ratings", 80))
    before = builder.build_group(first, proxyless)
    held = snapshot_from_messages(before, serializer)
    serializer.end_round()
    # the very same virtual host objects but one, as the translator hands them over
    changed = service("reviews", 80, v2=100)[1][0]
    hosts = tuple(changed if h.name == changed.name else h for h in first.mesh_hosts)
    second = replace(first, mesh_hosts=hosts)

    hashed = serializer.serialized
    after = builder.build_group(second, proxyless)
    now = snapshot_from_messages(after, serializer)

    assert serializer.serialized - hashed == 1  # the one route configuration
    old, new = by_name(before[resources.ROUTE]), by_name(after[resources.ROUTE])
    ratings, reviews = (
        "ratings.default.svc.cluster.local:80",
        "reviews.default.svc.cluster.local:80",
    )
    assert new[ratings] is old[ratings]
    assert new[reviews] != old[reviews]
    assert after[resources.LISTENER] is before[resources.LISTENER]
    fresh = snapshot_from_messages(build_group(second, proxyless))
    assert now.versions == fresh.versions
    sent = held.of_type(resources.ROUTE).select(None)
    changes = now.of_type(resources.ROUTE).select(None).changed_since(sent)
    assert [r.name for r in changes.resources] == [reviews]  # all a client is sent again


def test_hosts_that_share_a_name_share_a_route_configuration() -> None:
    clusters, hosts = service("reviews", 80)
    # another port's virtual host also answers to ``reviews`` (as ``reviews:8080``)
    extra = VirtualHost("reviews.example.com:8080", 8080, ("reviews.example.com", "reviews"), ())
    built = build_group(mesh((clusters, [*hosts, extra])), SIDECAR)

    (table,) = built[resources.ROUTE]
    assert table.name == "15001/reviews.default.svc.cluster.local"  # type: ignore[attr-defined]
    assert len(table.virtual_hosts) == 2  # type: ignore[attr-defined]


def test_a_wildcard_host_keeps_the_single_table_as_scope_keys_match_exactly() -> None:
    clusters, hosts = service("reviews", 80)
    wildcard = replace(hosts[0], name="*.example.com:80", hosts=("*.example.com",))
    built = build_group(mesh((clusters, [*hosts, wildcard])), SIDECAR)

    assert resources.SCOPED_ROUTE not in built
    assert hcm_of(built).rds.route_config_name == "15001"
    (table,) = built[resources.ROUTE]
    assert table.name == "15001"  # type: ignore[attr-defined]
    assert [v.name for v in table.virtual_hosts] == [  # type: ignore[attr-defined]
        "reviews.default.svc.cluster.local:80",
        "*.example.com:80",
    ]


def test_gateways_keep_a_route_table_per_listener_and_proxyless_clients_one_per_service() -> None:
    model = mesh(service("reviews", 80), service("ratings", 80))
    gateway = build_group(model, NodeGroup(Role.GATEWAY, 8080))
    assert resources.SCOPED_ROUTE not in gateway
    assert [resources.resource_name(t) for t in gateway[resources.ROUTE]] == ["8080"]
    proxyless = build_group(model, NodeGroup(Role.PROXYLESS))
    assert resources.SCOPED_ROUTE not in proxyless
    assert [resources.resource_name(t) for t in proxyless[resources.ROUTE]] == [
        "ratings.default.svc.cluster.local:80",
        "reviews.default.svc.cluster.local:80",
    ]
