"""Listeners: the sidecar's outbound HTTP listener, the gateway's HTTP and TCP listeners, and the
``api_listener``s proxyless gRPC clients look up by the target they dial."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from operator import attrgetter

from envoy.config.core.v3 import address_pb2
from envoy.config.listener.v3 import api_listener_pb2, listener_components_pb2, listener_pb2
from envoy.extensions.filters.http.cors.v3 import cors_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2
from google.protobuf import any_pb2
from google.protobuf.message import Message

from translators import names
from translators.build_clusters import ads_config_source
from translators.build_routes import CORS_FILTER, FAULT_FILTER, owned_bare_hosts
from translators.build_scoped_routes import scoped_routes, service_table_names
from translators.model import TcpListener, VirtualHost
from translators.resources import (
    Built,
    fields_around,
    length_delimited,
    serialize,
    string_field,
    type_url,
)

HTTP_CONNECTION_MANAGER = "envoy.filters.network.http_connection_manager"
TCP_PROXY = "envoy.filters.network.tcp_proxy"
ROUTER_FILTER = "envoy.filters.http.router"
LOOPBACK = "127.0.0.1"
ANY_ADDRESS = "0.0.0.0"


def _packed(message: Message) -> any_pb2.Any:
    out = any_pb2.Any()
    out.Pack(message)
    return out


def http_filter(name: str, config: Message) -> hcm_pb2.HttpFilter:
    return hcm_pb2.HttpFilter(name=name, typed_config=_packed(config))


def http_connection_manager(
    stat_prefix: str, route_table: str, with_fault: bool
) -> hcm_pb2.HttpConnectionManager:
    """An HCM that fetches ``route_table`` over ADS; for Envoy the CORS and fault filters (their
    settings are per route), then the router."""
    filters = (
        [
            http_filter(CORS_FILTER, cors_pb2.Cors()),
            http_filter(FAULT_FILTER, fault_pb2.HTTPFault()),
        ]
        if with_fault
        else []
    )
    filters.append(http_filter(ROUTER_FILTER, router_pb2.Router()))
    return hcm_pb2.HttpConnectionManager(
        stat_prefix=stat_prefix,
        rds=hcm_pb2.Rds(config_source=ads_config_source(), route_config_name=route_table),
        http_filters=filters,
    )


def _socket(address: str, port: int) -> address_pb2.Address:
    return address_pb2.Address(
        socket_address=address_pb2.SocketAddress(address=address, port_value=port)
    )


def _listener(address: str, port: int, name: str, config: Message) -> listener_pb2.Listener:
    return listener_pb2.Listener(
        name=names.listener_name(address, port),
        address=_socket(address, port),
        filter_chains=[
            listener_components_pb2.FilterChain(
                filters=[listener_components_pb2.Filter(name=name, typed_config=_packed(config))]
            )
        ],
    )


def http_listener(
    address: str, port: int, stat_prefix: str, scoped: bool = False
) -> listener_pb2.Listener:
    """An HTTP listener routing by the table named after its port, or with ``scoped`` by the
    scoped routes named after it (see ``build_scoped_routes``).

    It accepts absolute-form requests too, so an application can use it as its ``http_proxy``.
    """
    hcm = http_connection_manager(stat_prefix, names.route_table_name(port), with_fault=True)
    if scoped:
        hcm.scoped_routes.CopyFrom(scoped_routes(port))
    hcm.http_protocol_options.allow_absolute_url.value = True
    return _listener(address, port, HTTP_CONNECTION_MANAGER, hcm)


def sidecar_listeners(port: int, scoped: bool = False) -> Built[listener_pb2.Listener]:
    """The sidecar's outbound listener on loopback (routing by scoped routes with ``scoped``)."""
    listener = http_listener(LOOPBACK, port, f"outbound_{port}", scoped)
    tables = frozenset() if scoped else frozenset((names.route_table_name(port),))
    return Built.of(listener_pb2.Listener, [listener], tables)


def tcp_proxy(listener: TcpListener) -> tcp_proxy_pb2.TcpProxy:
    """Forward connections to one cluster, or split them by weight."""
    out = tcp_proxy_pb2.TcpProxy(stat_prefix=f"tcp_{listener.port}")
    destinations = [d for d in listener.destinations if d.weight > 0] or list(
        listener.destinations[:1]
    )
    if len(destinations) == 1:
        out.cluster = destinations[0].cluster
    else:
        for destination in destinations:
            out.weighted_clusters.clusters.add(name=destination.cluster, weight=destination.weight)
    return out


def gateway_listeners(port: int, tcp: Sequence[TcpListener] = ()) -> Built[listener_pb2.Listener]:
    """The gateway's HTTP listener and one TCP listener per port no other listener holds."""
    out = [http_listener(ANY_ADDRESS, port, f"gateway_{port}")]
    taken = {port}
    for listener in sorted(tcp, key=lambda t: (t.port, t.name)):
        if listener.port in taken or not listener.destinations:
            continue
        taken.add(listener.port)
        out.append(_listener(ANY_ADDRESS, listener.port, TCP_PROXY, tcp_proxy(listener)))
    out.sort(key=attrgetter("name"))
    return Built.of(listener_pb2.Listener, out, frozenset((names.route_table_name(port),)))


def _bare_owners(hosts: Sequence[VirtualHost], wanted: Collection[str] | None) -> dict[str, int]:
    """The virtual host (by index) owning each bare host name (of ``wanted`` only, when given):
    the first that has it, port 80 first, then ascending."""
    if wanted is None:
        return {host: i for i, owned in enumerate(owned_bare_hosts(hosts)) for host in owned}
    best: dict[str, tuple[bool, int, int]] = {}
    for index, vhost in enumerate(hosts):
        rank = (vhost.port != 80, vhost.port, index)
        for host in vhost.hosts:
            if host in wanted and (host not in best or rank < best[host]):
                best[host] = rank
    return {host: rank[2] for host, rank in best.items()}


def api_listener_targets(
    hosts: Sequence[VirtualHost], wanted: Collection[str] | None = None
) -> list[tuple[str, int]]:
    """Every target a gRPC client may dial (``host:port``, and bare hosts where unambiguous),
    or only those of them in ``wanted``, with the virtual host (by index) that serves it in the
    table of its port; sorted by name."""
    owners = _bare_owners(hosts, wanted)
    found: dict[str, int] = {}
    for index, vhost in enumerate(hosts):
        suffix = f":{vhost.port}"
        for host in vhost.hosts:
            if host == "*":
                continue
            target = host + suffix
            if wanted is None or target in wanted:
                found.setdefault(target, index)
            if owners.get(host) == index:
                found.setdefault(host, index)
    return sorted(found.items())


def api_listener_names(
    hosts: Sequence[VirtualHost], wanted: Collection[str] | None = None
) -> list[tuple[str, int]]:
    """``api_listener_targets`` with the port of each target's virtual host."""
    return [(name, hosts[index].port) for name, index in api_listener_targets(hosts, wanted)]


def api_listeners(
    hosts: Iterable[VirtualHost], wanted: Collection[str] | None = None
) -> Built[listener_pb2.Listener]:
    """One ``api_listener`` per dialable target (only those in ``wanted``, when given), routed by
    the route configuration of the virtual host that serves it (``service_table_names``; router
    only)."""
    held = list(hosts)
    tables = service_table_names(held)
    managers: dict[int, tuple[bytes, bytes]] = {}  # by port: the manager around its RDS field
    templates: dict[int, bytes] = {}  # by virtual host: the listener after its name
    targets = api_listener_targets(held, wanted)
    bodies = []
    for name, index in targets:
        template = templates.get(index)
        if template is None:
            port = held[index].port
            around = managers.get(port)
            if around is None:
                hcm = http_connection_manager(f"grpc_{port}", "", with_fault=False)
                around = managers[port] = fields_around(hcm, _RDS)
            template = templates[index] = _api_listener_field(around, tables[index])
        bodies.append(string_field(_NAME, name) + template)
    named = frozenset(tables[index] for index in templates)
    return Built(listener_pb2.Listener, [name for name, _ in targets], bodies, named)


_NAME = listener_pb2.Listener.NAME_FIELD_NUMBER
_API_LISTENER = listener_pb2.Listener.API_LISTENER_FIELD_NUMBER
_RDS = hcm_pb2.HttpConnectionManager.RDS_FIELD_NUMBER
_ADS_RDS = serialize(hcm_pb2.Rds(config_source=ads_config_source()))  # without a name
_HCM_TYPE_URL = type_url(hcm_pb2.HttpConnectionManager)


def _api_listener_field(manager: tuple[bytes, bytes], table: str) -> bytes:
    """A listener's ``api_listener`` field (its only one but the name, which comes first): the
    connection manager whose fields around ``rds`` are ``manager``, fetching ``table`` over
    ADS."""
    rds = _ADS_RDS + string_field(hcm_pb2.Rds.ROUTE_CONFIG_NAME_FIELD_NUMBER, table)
    hcm = manager[0] + length_delimited(_RDS, rds) + manager[1]
    packed = string_field(any_pb2.Any.TYPE_URL_FIELD_NUMBER, _HCM_TYPE_URL) + length_delimited(
        any_pb2.Any.VALUE_FIELD_NUMBER, hcm
    )
    api = length_delimited(api_listener_pb2.ApiListener.API_LISTENER_FIELD_NUMBER, packed)
    return length_delimited(_API_LISTENER, api)
