"""Listeners for sidecars, gateways and proxyless gRPC clients."""

from __future__ import annotations

import pytest
from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2

from translators import resources
from translators.build_listeners import (
    api_listener_names,
    api_listeners,
    gateway_listeners,
    sidecar_listeners,
)
from translators.model import HttpRoute, TcpListener, VirtualHost, WeightedCluster


def hcm_of(listener: listener_pb2.Listener) -> hcm_pb2.HttpConnectionManager:
    out = hcm_pb2.HttpConnectionManager()
    if listener.HasField("api_listener"):
        assert listener.api_listener.api_listener.Unpack(out)
    else:
        assert listener.filter_chains[0].filters[0].typed_config.Unpack(out)
    return out


def vhost(name: str, port: int) -> VirtualHost:
    fqdn = f"{name}.default.svc.cluster.local"
    return VirtualHost(f"{fqdn}:{port}", port, (name, fqdn), (HttpRoute(),))


def test_sidecar_listens_on_loopback_outbound_port_and_routes_by_its_table() -> None:
    (listener,) = sidecar_listeners(15001)
    assert listener.name == "127.0.0.1_15001"
    address = listener.address.socket_address
    assert (address.address, address.port_value) == ("127.0.0.1", 15001)
    hcm = hcm_of(listener)
    assert hcm.stat_prefix
    assert hcm.rds.route_config_name == "15001"
    assert hcm.rds.config_source.HasField("ads")
    assert hcm.http_protocol_options.allow_absolute_url.value


def test_http_filters_are_cors_fault_then_router_with_typed_configs() -> None:
    hcm = hcm_of(sidecar_listeners(15001)[0])
    assert [f.name for f in hcm.http_filters] == [
        "envoy.filters.http.cors",
        "envoy.filters.http.fault",
        "envoy.filters.http.router",
    ]
    assert all(f.HasField("typed_config") for f in hcm.http_filters)


def test_gateway_http_listener_listens_on_all_addresses() -> None:
    (listener,) = gateway_listeners(8080)
    assert listener.name == "0.0.0.0_8080"
    assert listener.address.socket_address.address == "0.0.0.0"
    assert hcm_of(listener).rds.route_config_name == "8080"


def test_gateway_tcp_listener_to_one_cluster_or_weighted() -> None:
    tcp = [
        TcpListener("default/db:5432", 5432, (WeightedCluster("db", 1),)),
        TcpListener("default/mq:5672", 5672, (WeightedCluster("a", 80), WeightedCluster("b", 20))),
    ]
    listeners = {lst.name: lst for lst in gateway_listeners(8080, tcp)}
    assert sorted(listeners) == ["0.0.0.0_5432", "0.0.0.0_5672", "0.0.0.0_8080"]
    single = tcp_proxy_pb2.TcpProxy()
    assert listeners["0.0.0.0_5432"].filter_chains[0].filters[0].typed_config.Unpack(single)
    assert single.cluster == "db"
    weighted = tcp_proxy_pb2.TcpProxy()
    assert listeners["0.0.0.0_5672"].filter_chains[0].filters[0].typed_config.Unpack(weighted)
    assert [(c.name, c.weight) for c in weighted.weighted_clusters.clusters] == [
        ("a", 80),
        ("b", 20),
    ]


def test_gateway_tcp_listener_on_a_taken_port_is_left_out() -> None:
    tcp = [
        TcpListener("default/a:8080", 8080, (WeightedCluster("a", 1),)),
        TcpListener("default/b:9000", 9000, (WeightedCluster("b", 1),)),
        TcpListener("default/c:9000", 9000, (WeightedCluster("c", 1),)),
    ]
    names = [lst.name for lst in gateway_listeners(8080, tcp)]
    assert names == ["0.0.0.0_8080", "0.0.0.0_9000"]


def test_api_listener_names_cover_host_port_and_unambiguous_bare_hosts() -> None:
    hosts = [vhost("reviews", 9080), vhost("reviews", 80), vhost("ratings", 9090)]
    found = dict(api_listener_names(hosts))
    assert found["reviews"] == 80
    assert found["reviews:80"] == 80
    assert found["reviews:9080"] == 9080
    assert found["reviews.default.svc.cluster.local"] == 80
    assert found["ratings"] == 9090
    assert found["ratings:9090"] == 9090


@pytest.mark.parametrize(
    "wanted",
    [
        {"reviews"},
        {"reviews:9080", "ratings"},
        {"reviews.default.svc.cluster.local", "ratings:9090", "nothing:80", "reviews:9090"},
        set(),
    ],
)
def test_api_listeners_asked_for_are_the_targets_among_them_with_the_same_ports(
    wanted: set[str],
) -> None:
    hosts = [vhost("reviews", 9080), vhost("reviews", 80), vhost("ratings", 9090)]
    every = api_listener_names(hosts)

    assert api_listener_names(hosts, wanted) == [(n, p) for n, p in every if n in wanted]
    assert [lst.name for lst in api_listeners(hosts, wanted)] == sorted(wanted & dict(every).keys())


def test_api_listeners_use_rds_over_ads_to_their_services_table_with_only_the_router() -> None:
    built = api_listeners([vhost("reviews", 9080)])
    listeners = {lst.name: lst for lst in built}
    assert sorted(listeners) == [
        "reviews",
        "reviews.default.svc.cluster.local",
        "reviews.default.svc.cluster.local:9080",
        "reviews:9080",
    ]
    for listener in listeners.values():  # every name of the service: its one table
        hcm = hcm_of(listener)
        assert hcm.rds.route_config_name == "reviews.default.svc.cluster.local:9080"
    assert built.references == {"reviews.default.svc.cluster.local:9080"}
    # written field by field, they are the bytes protobuf writes
    assert list(built.bodies) == [resources.serialize(lst) for lst in built]
    hcm = hcm_of(listeners["reviews:9080"])
    assert hcm.rds.config_source.HasField("ads")
    assert [f.name for f in hcm.http_filters] == ["envoy.filters.http.router"]
    assert not listeners["reviews"].HasField("address")
