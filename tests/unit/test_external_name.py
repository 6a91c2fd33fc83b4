"""ExternalName Services are routed as Istio routes them: each port goes to a DNS cluster whose
one endpoint is ``spec.externalName`` on that port, under the usual names and aliases."""

from __future__ import annotations

import pytest
from envoy.config.cluster.v3 import cluster_pb2

from tests.unit.objects import (
    Obj,
    destination,
    destination_rule,
    http_route,
    service,
    service_port,
    versioned_service,
    virtual_service,
)
from translators import resources
from translators.build import build_group
from translators.diagnostics import Severity
from translators.model import Cluster, NodeGroup, Role, WeightedCluster
from translators.translate import Translation, translate
from xds_server.xds.cache import inconsistency, snapshot_from_messages

DB = "db.default.svc.cluster.local"
REVIEWS = "reviews.default.svc.cluster.local"
GROUPS = (NodeGroup(Role.SIDECAR, 15001), NodeGroup(Role.GATEWAY, 8080), NodeGroup(Role.PROXYLESS))


def external(
    name: str = "db", external_name: str = "db.example.com", ports: list[Obj] | None = None
) -> Obj:
    return service(
        name,
        ports=ports or [service_port(80, "http", 8080)],
        type="ExternalName",
        externalName=external_name,
    )


def cluster_named(translation: Translation, name: str) -> Cluster:
    return next(c for c in translation.model.clusters if c.name == name)


def built_cluster(translation: Translation, group: NodeGroup, name: str) -> cluster_pb2.Cluster:
    clusters = build_group(translation.model, group)[resources.CLUSTER]
    return next(c for c in clusters if isinstance(c, cluster_pb2.Cluster) and c.name == name)


def test_each_port_gets_the_default_cluster_resolving_the_external_name() -> None:
    ports = [service_port(80, "http", 8080), service_port(5432, "tcp-pg", 6432)]
    translation = translate([external(ports=ports)])
    assert [(c.name, c.port, c.dns_name) for c in translation.model.clusters] == [
        (f"outbound|5432||{DB}", 5432, "db.example.com"),
        (f"outbound|80||{DB}", 80, "db.example.com"),
    ]
    assert translation.model.endpoints == ()  # nothing for EDS


def test_the_envoy_cluster_is_strict_dns_with_the_name_on_the_service_port_inline() -> None:
    translation = translate([external()])
    out = built_cluster(translation, GROUPS[0], f"outbound|80||{DB}")
    assert out.type == cluster_pb2.Cluster.STRICT_DNS
    assert not out.HasField("eds_cluster_config")
    assert out.dns_lookup_family == cluster_pb2.Cluster.V4_ONLY
    assert out.dns_refresh_rate.seconds == 60
    assert out.respect_dns_ttl
    assignment = out.load_assignment
    assert assignment.cluster_name == f"outbound|80||{DB}"
    (locality,) = assignment.endpoints
    (entry,) = locality.lb_endpoints
    socket = entry.endpoint.address.socket_address
    # the service port, not the target port: the name is the service's address
    assert (socket.address, socket.port_value) == ("db.example.com", 80)
    assert locality.load_balancing_weight.value == 1


def test_proxyless_grpc_clients_get_a_logical_dns_cluster() -> None:
    translation = translate([external()])
    out = built_cluster(translation, NodeGroup(Role.PROXYLESS), f"outbound|80||{DB}")
    assert out.type == cluster_pb2.Cluster.LOGICAL_DNS
    # gRFC A37: exactly one locality with exactly one endpoint
    (locality,) = out.load_assignment.endpoints
    (entry,) = locality.lb_endpoints
    assert entry.endpoint.address.socket_address.address == "db.example.com"


def test_dns_clusters_are_not_fetched_over_eds_and_every_group_is_consistent() -> None:
    translation = translate([external(), *versioned_service("reviews")])
    for group in GROUPS:
        built = build_group(translation.model, group)
        clusters = [resources.resource_name(c) for c in built[resources.CLUSTER]]
        assert f"outbound|80||{DB}" in clusters
        assignments = [resources.resource_name(a) for a in built[resources.ENDPOINT]]
        assert all(DB not in name for name in assignments), assignments
        assert f"outbound|80||{REVIEWS}" in assignments
        assert inconsistency(snapshot_from_messages(built)) is None


def test_the_service_gets_the_mesh_virtual_host_and_aliases_of_a_cluster_ip_service() -> None:
    translation = translate([external()])
    (host,) = translation.model.mesh_hosts
    assert (host.name, host.port) == (f"{DB}:80", 80)
    assert host.hosts == ("db", "db.default", "db.default.svc", DB)
    (route,) = host.routes
    assert route.destinations == (WeightedCluster(f"outbound|80||{DB}", 100),)


def test_a_virtual_service_splits_90_10_between_an_external_name_and_a_normal_service() -> None:
    split = virtual_service(
        "reviews",
        ["reviews"],
        [http_route(destination("reviews", "v1", weight=90), destination("db", weight=10))],
    )
    translation = translate([*versioned_service("reviews"), external(), split])
    assert not translation.has_errors, translation.diagnostics
    host = next(v for v in translation.model.mesh_hosts if v.name == f"{REVIEWS}:80")
    assert host.routes[0].destinations == (
        WeightedCluster(f"outbound|80|v1|{REVIEWS}", 90),
        WeightedCluster(f"outbound|80||{DB}", 10),
    )
    assert cluster_named(translation, f"outbound|80||{DB}").dns_name == "db.example.com"


def test_a_destination_rule_applies_its_policy_and_its_subsets_get_a_warning() -> None:
    rule = destination_rule(
        "db",
        "db",
        {"v1": {"version": "v1"}},
        trafficPolicy={"loadBalancer": {"simple": "ROUND_ROBIN"}},
    )
    translation = translate([external(), rule])
    assert [c.name for c in translation.model.clusters] == [f"outbound|80||{DB}"]
    assert cluster_named(translation, f"outbound|80||{DB}").policy.load_balancer == "ROUND_ROBIN"
    (warning,) = [d for d in translation.diagnostics if d.kind == "DestinationRule"]
    assert (warning.name, warning.field, warning.severity) == (
        "db",
        "spec.subsets",
        Severity.WARNING,
    )
    assert "ExternalName" in warning.message


def test_a_virtual_service_naming_a_subset_of_an_external_name_service_is_an_error() -> None:
    rule = destination_rule("db", "db", {"v1": {"version": "v1"}})
    routed = virtual_service("db", ["db"], [http_route(destination("db", "v1"))])
    translation = translate([external(), rule, routed])
    (error,) = [d for d in translation.diagnostics if d.kind == "VirtualService"]
    assert (error.field, error.severity) == (
        "spec.http[0].route[0].destination.subset",
        Severity.ERROR,
    )
    assert "ExternalName" in error.message


@pytest.mark.parametrize("external_name", ["", "Not A Name"])
def test_an_invalid_external_name_leaves_the_service_out(external_name: str) -> None:
    translation = translate([external(external_name=external_name), *versioned_service("reviews")])
    assert all(DB not in c.name for c in translation.model.clusters)
    (error,) = [d for d in translation.diagnostics if d.name == "db"]
    assert (error.kind, error.namespace, error.field, error.severity) == (
        "Service",
        "default",
        "spec.externalName",
        Severity.ERROR,
    )
    assert f"outbound|80||{REVIEWS}" in [c.name for c in translation.model.clusters]


def test_a_service_turned_external_keeps_no_endpoints_from_before() -> None:
    before = translate(versioned_service("db"))
    after = translate([external(), *versioned_service("db")[1:]], previous=before)
    assert [c.name for c in after.model.clusters] == [f"outbound|80||{DB}"]
    assert after.model.endpoints == ()
