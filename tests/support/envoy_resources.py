"""Hand-built Envoy resources for tests of the xDS server (the translators build the real ones)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from envoy.config.cluster.v3.cluster_pb2 import Cluster
from envoy.config.core.v3.address_pb2 import Address, SocketAddress
from envoy.config.core.v3.base_pb2 import Locality
from envoy.config.core.v3.config_source_pb2 import (
    AggregatedConfigSource,
    ApiVersion,
    ConfigSource,
)
from envoy.config.endpoint.v3.endpoint_components_pb2 import (
    Endpoint,
    LbEndpoint,
    LocalityLbEndpoints,
)
from envoy.config.endpoint.v3.endpoint_pb2 import ClusterLoadAssignment
from envoy.config.listener.v3.api_listener_pb2 import ApiListener
from envoy.config.listener.v3.listener_components_pb2 import Filter, FilterChain
from envoy.config.listener.v3.listener_pb2 import Listener
from envoy.config.route.v3.route_components_pb2 import (
    Route,
    RouteAction,
    RouteMatch,
    VirtualHost,
    WeightedCluster,
)
from envoy.config.route.v3.route_pb2 import RouteConfiguration
from envoy.extensions.filters.http.router.v3.router_pb2 import Router
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from google.protobuf.any_pb2 import Any
from google.protobuf.duration_pb2 import Duration
from google.protobuf.message import Message
from google.protobuf.wrappers_pb2 import UInt32Value

from xds_server.xds.cache import CLUSTER, ENDPOINT, LISTENER, ROUTE


def _ads() -> ConfigSource:
    return ConfigSource(ads=AggregatedConfigSource(), resource_api_version=ApiVersion.V3)


def _packed(message: Message) -> Any:
    packed = Any()
    packed.Pack(message, deterministic=True)
    return packed


def eds_cluster(name: str, connect_timeout_s: int = 1) -> Cluster:
    """A round-robin cluster whose endpoints come over ADS under its own name."""
    return Cluster(
        name=name,
        type=Cluster.EDS,
        eds_cluster_config=Cluster.EdsClusterConfig(eds_config=_ads(), service_name=name),
        connect_timeout=Duration(seconds=connect_timeout_s),
        lb_policy=Cluster.ROUND_ROBIN,
    )


def load_assignment(name: str, endpoints: Sequence[tuple[str, int]]) -> ClusterLoadAssignment:
    """One weighted locality holding ``endpoints`` (gRPC requires the locality weight)."""
    return ClusterLoadAssignment(
        cluster_name=name,
        endpoints=[
            LocalityLbEndpoints(
                locality=Locality(region="local"),
                load_balancing_weight=UInt32Value(value=1),
                lb_endpoints=[
                    LbEndpoint(
                        endpoint=Endpoint(
                            address=Address(
                                socket_address=SocketAddress(address=host, port_value=port)
                            )
                        )
                    )
                    for host, port in endpoints
                ],
            )
        ],
    )


def _hcm(route_name: str, stat_prefix: str) -> hcm_pb2.HttpConnectionManager:
    return hcm_pb2.HttpConnectionManager(
        stat_prefix=stat_prefix,
        rds=hcm_pb2.Rds(config_source=_ads(), route_config_name=route_name),
        http_filters=[
            hcm_pb2.HttpFilter(name="envoy.filters.http.router", typed_config=_packed(Router()))
        ],
    )


def http_listener(name: str, port: int, route_name: str) -> Listener:
    """A loopback HTTP listener whose routes come over ADS as ``route_name``."""
    return Listener(
        name=name,
        address=Address(socket_address=SocketAddress(address="127.0.0.1", port_value=port)),
        filter_chains=[
            FilterChain(
                filters=[
                    Filter(
                        name="envoy.filters.network.http_connection_manager",
                        typed_config=_packed(_hcm(route_name, name)),
                    )
                ]
            )
        ],
    )


def api_listener(name: str, route_name: str) -> Listener:
    """The listener a proxyless gRPC client asks for when it dials ``xds:///name``."""
    return Listener(
        name=name, api_listener=ApiListener(api_listener=_packed(_hcm(route_name, name)))
    )


def weighted_routes(
    name: str, domains: Sequence[str], weights: Mapping[str, int]
) -> RouteConfiguration:
    """One virtual host for ``domains`` sending everything to ``weights`` (cluster → weight)."""
    positive = {c: w for c, w in weights.items() if w > 0}
    if len(positive) == 1:
        action = RouteAction(cluster=next(iter(positive)))
    else:
        action = RouteAction(
            weighted_clusters=WeightedCluster(
                clusters=[
                    WeightedCluster.ClusterWeight(name=c, weight=UInt32Value(value=w))
                    for c, w in positive.items()
                ]
            )
        )
    return RouteConfiguration(
        name=name,
        virtual_hosts=[
            VirtualHost(
                name=name,
                domains=list(domains),
                routes=[Route(match=RouteMatch(prefix=""), route=action)],
            )
        ],
    )


def split_mesh(
    listener: Listener,
    route_name: str,
    domains: Sequence[str],
    backends: Mapping[str, tuple[str, int]],
    weights: Mapping[str, int],
) -> dict[str, list[Message]]:
    """Snapshot input: one cluster per backend, its endpoint, ``listener`` and a weighted route."""
    return {
        CLUSTER: [eds_cluster(name) for name in backends],
        ENDPOINT: [load_assignment(name, [address]) for name, address in backends.items()],
        LISTENER: [listener],
        ROUTE: [weighted_routes(route_name, domains, weights)],
    }
