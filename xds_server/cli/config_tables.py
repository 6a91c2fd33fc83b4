"""Envoy configuration as short tables, like `istioctl proxy-config`.

Works on a ``ConfigDump`` (Envoy's ``/config_dump`` shape): the one the debug endpoint gives for a
connected node (``/debug/config_dump?node=``) and the one `splitplane translate` builds offline.
Each table is a header and rows of strings; ``wide`` adds columns. ``render`` lines them up and,
on a terminal, colours the header.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, TextIO, TypeVar

from envoy.admin.v3 import config_dump_pb2, config_dump_shared_pb2
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import health_check_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2, scoped_route_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2  # noqa: F401
from envoy.extensions.filters.http.router.v3 import router_pb2  # noqa: F401
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2
from envoy.extensions.retry.host.previous_hosts.v3 import previous_hosts_pb2  # noqa: F401
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2  # noqa: F401
from google.protobuf import json_format
from google.protobuf.message import Message

from translators.resources import CLUSTER, ENDPOINT, LISTENER, ROUTE, SCOPED_ROUTE

Row = list[str]
Table = tuple[Row, list[Row]]  # header, rows
M = TypeVar("M", bound=Message)

KINDS = ("clusters", "endpoints", "listeners", "scopes", "routes")
_DUMP_TYPES = {
    "ClustersConfigDump": config_dump_shared_pb2.ClustersConfigDump,
    "EndpointsConfigDump": config_dump_shared_pb2.EndpointsConfigDump,
    "ListenersConfigDump": config_dump_shared_pb2.ListenersConfigDump,
    "ScopedRoutesConfigDump": config_dump_shared_pb2.ScopedRoutesConfigDump,
    "RoutesConfigDump": config_dump_shared_pb2.RoutesConfigDump,
}


# -- building and reading config dumps ------------------------------------------------------------


def config_dump(resources: Mapping[str, Sequence[Message]]) -> config_dump_pb2.ConfigDump:
    """A config dump holding ``resources`` (type URL → resources), as a proxy would be sent them."""
    clusters = config_dump_shared_pb2.ClustersConfigDump()
    for cluster in resources.get(CLUSTER, ()):
        clusters.dynamic_active_clusters.add().cluster.Pack(cluster)
    endpoints = config_dump_shared_pb2.EndpointsConfigDump()
    for assignment in resources.get(ENDPOINT, ()):
        endpoints.dynamic_endpoint_configs.add().endpoint_config.Pack(assignment)
    listeners = config_dump_shared_pb2.ListenersConfigDump()
    for listener in resources.get(LISTENER, ()):
        entry = listeners.dynamic_listeners.add(name=_name(listener))
        entry.active_state.listener.Pack(listener)
    scopes = scoped_routes_dump(resources.get(SCOPED_ROUTE, ()))
    routes = config_dump_shared_pb2.RoutesConfigDump()
    for table in resources.get(ROUTE, ()):
        routes.dynamic_route_configs.add().route_config.Pack(table)
    whole = config_dump_pb2.ConfigDump()
    # scoped routes only where a listener routes by them, as a proxy's own dump shows them
    parts = (clusters, endpoints, listeners, scopes, routes)
    for part in parts if scopes.dynamic_scoped_route_configs else parts[:3] + parts[4:]:
        whole.configs.add().Pack(part)
    return whole


def scoped_routes_dump(
    scopes: Sequence[Message], version: str = ""
) -> config_dump_shared_pb2.ScopedRoutesConfigDump:
    """Scopes as Envoy dumps them: per scoped routes name (the part of a scope's name before
    ``/``: the listener's port), its scopes."""
    out = config_dump_shared_pb2.ScopedRoutesConfigDump()
    by_name: dict[str, Any] = {}
    for scope in scopes:
        owner = _name(scope).partition("/")[0]
        entry = by_name.get(owner)
        if entry is None:
            entry = by_name[owner] = out.dynamic_scoped_route_configs.add(
                name=owner, version_info=version
            )
        entry.scoped_route_configs.add().Pack(scope)
    return out


_SECTIONS = {
    "clusters": "ClustersConfigDump",
    "endpoints": "EndpointsConfigDump",
    "listeners": "ListenersConfigDump",
    "scopes": "ScopedRoutesConfigDump",
    "routes": "RoutesConfigDump",
}


def narrow(dump: config_dump_pb2.ConfigDump, kinds: Sequence[str]) -> config_dump_pb2.ConfigDump:
    """Only the sections of ``kinds`` (clusters, endpoints, listeners, routes)."""
    wanted = tuple("." + _SECTIONS[kind] for kind in kinds)
    out = config_dump_pb2.ConfigDump()
    out.configs.extend(c for c in dump.configs if c.type_url.endswith(wanted))
    return out


def _name(message: Message) -> str:
    return str(getattr(message, "name", ""))


def parse_config_dump(data: Mapping[str, Any]) -> config_dump_pb2.ConfigDump:
    """The ``ConfigDump`` in a JSON document (extra keys, like the debug endpoint's ``node``, are
    ignored)."""
    out = config_dump_pb2.ConfigDump()
    json_format.ParseDict({"configs": data.get("configs", [])}, out, ignore_unknown_fields=True)
    return out


def as_data(dump: config_dump_pb2.ConfigDump) -> dict[str, Any]:
    """``dump`` as Envoy's own JSON spells it."""
    data: dict[str, Any] = json_format.MessageToDict(dump, preserving_proto_field_name=True)
    return data


def _section(dump: config_dump_pb2.ConfigDump, name: str) -> Any:
    for packed in dump.configs:
        if packed.type_url.endswith("." + name):
            section = _DUMP_TYPES[name]()
            packed.Unpack(section)
            return section
    return _DUMP_TYPES[name]()


def _unpacked(packed: Any, message_type: type[M]) -> M:
    out = message_type()
    packed.Unpack(out)
    return out


def clusters_of(dump: config_dump_pb2.ConfigDump) -> list[cluster_pb2.Cluster]:
    section = _section(dump, "ClustersConfigDump")
    found = [_unpacked(c.cluster, cluster_pb2.Cluster) for c in section.static_clusters]
    found += [_unpacked(c.cluster, cluster_pb2.Cluster) for c in section.dynamic_active_clusters]
    return sorted(found, key=_name)


def endpoints_of(dump: config_dump_pb2.ConfigDump) -> list[endpoint_pb2.ClusterLoadAssignment]:
    section = _section(dump, "EndpointsConfigDump")
    configs = [*section.static_endpoint_configs, *section.dynamic_endpoint_configs]
    found = [_unpacked(c.endpoint_config, endpoint_pb2.ClusterLoadAssignment) for c in configs]
    return sorted(found, key=lambda a: a.cluster_name)


def listeners_of(dump: config_dump_pb2.ConfigDump) -> list[listener_pb2.Listener]:
    section = _section(dump, "ListenersConfigDump")
    found = [_unpacked(s.listener, listener_pb2.Listener) for s in section.static_listeners]
    found += [
        _unpacked(d.active_state.listener, listener_pb2.Listener)
        for d in section.dynamic_listeners
        if d.HasField("active_state")
    ]
    return sorted(found, key=_name)


def scopes_of(
    dump: config_dump_pb2.ConfigDump,
) -> list[scoped_route_pb2.ScopedRouteConfiguration]:
    section = _section(dump, "ScopedRoutesConfigDump")
    configs = [*section.inline_scoped_route_configs, *section.dynamic_scoped_route_configs]
    found = [
        _unpacked(scope, scoped_route_pb2.ScopedRouteConfiguration)
        for config in configs
        for scope in config.scoped_route_configs
    ]
    return sorted(found, key=_name)


def routes_of(dump: config_dump_pb2.ConfigDump) -> list[route_pb2.RouteConfiguration]:
    section = _section(dump, "RoutesConfigDump")
    configs = [*section.static_route_configs, *section.dynamic_route_configs]
    found = [_unpacked(c.route_config, route_pb2.RouteConfiguration) for c in configs]
    return sorted(found, key=_name)


# -- tables ---------------------------------------------------------------------------------------


def _cluster_name_parts(name: str) -> tuple[str, str, str, str]:
    """FQDN, port, subset, direction of an Istio-style cluster name (``outbound|80|v1|host``)."""
    parts = name.split("|")
    if len(parts) == 4:  # direction|port|subset|host
        return parts[3], parts[1], parts[2] or "-", parts[0]
    return name, "-", "-", "-"


def cluster_table(dump: config_dump_pb2.ConfigDump, *, wide: bool = False) -> Table:
    header = ["SERVICE FQDN", "PORT", "SUBSET", "DIRECTION", "TYPE"]
    if wide:
        header += ["LB POLICY", "CLUSTER"]
    rows = []
    for cluster in clusters_of(dump):
        fqdn, port, subset, direction = _cluster_name_parts(cluster.name)
        kind = cluster_pb2.Cluster.DiscoveryType.Name(cluster.type)
        row = [fqdn, port, subset, direction, kind]
        if wide:
            row += [cluster_pb2.Cluster.LbPolicy.Name(cluster.lb_policy), cluster.name]
        rows.append(row)
    return header, rows


def _socket(address: Any) -> tuple[str, str]:
    socket = address.socket_address
    return socket.address, str(socket.port_value)


def endpoint_table(dump: config_dump_pb2.ConfigDump, *, wide: bool = False) -> Table:
    header = ["ENDPOINT", "STATUS", "CLUSTER"]
    if wide:
        header += ["LOCALITY", "WEIGHT"]
    rows = []
    for assignment in endpoints_of(dump):
        for group in assignment.endpoints:
            for lb_endpoint in group.lb_endpoints:
                ip, port = _socket(lb_endpoint.endpoint.address)
                status = lb_endpoint.health_status
                row = [
                    f"{ip}:{port}",
                    "HEALTHY" if status == 0 else _health_name(status),
                    assignment.cluster_name,
                ]
                if wide:
                    where = [group.locality.region, group.locality.zone, group.locality.sub_zone]
                    weight = lb_endpoint.load_balancing_weight.value
                    row += ["/".join(p for p in where if p) or "-", str(weight or 1)]
                rows.append(row)
    return header, rows


def _health_name(status: int) -> str:
    return str(health_check_pb2.HealthStatus.Name(status))


def _filters(listener: listener_pb2.Listener) -> Iterator[tuple[str, Any]]:
    for chain in listener.filter_chains:
        for network_filter in chain.filters:
            yield network_filter.name, network_filter.typed_config


def _listener_destination(listener: listener_pb2.Listener) -> str:
    if listener.HasField("api_listener"):
        hcm = _unpacked(listener.api_listener.api_listener, hcm_pb2.HttpConnectionManager)
        return _hcm_destination(hcm)
    found = []
    for _, typed in _filters(listener):
        if typed.Is(hcm_pb2.HttpConnectionManager.DESCRIPTOR):
            found.append(_hcm_destination(_unpacked(typed, hcm_pb2.HttpConnectionManager)))
        elif typed.Is(tcp_proxy_pb2.TcpProxy.DESCRIPTOR):
            proxy = _unpacked(typed, tcp_proxy_pb2.TcpProxy)
            if proxy.cluster:
                found.append(f"Cluster: {proxy.cluster}")
            else:
                found.append(
                    "Clusters: "
                    + ", ".join(f"{c.name} {c.weight}" for c in proxy.weighted_clusters.clusters)
                )
    return "; ".join(found) or "-"


def _hcm_destination(hcm: hcm_pb2.HttpConnectionManager) -> str:
    if hcm.HasField("rds"):
        return f"Route: {hcm.rds.route_config_name}"
    if hcm.HasField("scoped_routes"):
        return f"Scoped routes: {hcm.scoped_routes.name} (by :authority host)"
    if hcm.HasField("route_config"):
        return f"Inline route: {hcm.route_config.name}"
    return "-"


def listener_table(dump: config_dump_pb2.ConfigDump, *, wide: bool = False) -> Table:
    header = ["ADDRESSES", "PORT", "DESTINATION"]
    if wide:
        header += ["NAME"]
    rows = []
    for listener in listeners_of(dump):
        if listener.HasField("address"):
            address, port = _socket(listener.address)
        else:
            address, port = listener.name, "-"  # an api_listener: the target a client dials
        row = [address, port, _listener_destination(listener)]
        if wide:
            row.append(listener.name)
        rows.append(row)
    return header, rows


def _match(route: route_components_pb2.Route) -> str:
    match = route.match
    which = match.WhichOneof("path_specifier")
    if which == "prefix":
        text = f"{match.prefix}*"
    elif which == "path":
        text = match.path
    elif which == "safe_regex":
        text = f"~{match.safe_regex.regex}"
    elif which == "path_separated_prefix":
        text = f"{match.path_separated_prefix}/*"
    else:
        text = "*"
    extra = len(match.headers) + len(match.query_parameters)
    return text + (f" (+{extra} conditions)" if extra else "")


def _action(route: route_components_pb2.Route) -> str:
    which = route.WhichOneof("action")
    if which == "route":
        action = route.route
        if action.cluster:
            return str(action.cluster)
        if action.HasField("weighted_clusters"):
            clusters = action.weighted_clusters.clusters
            total = sum(c.weight.value for c in clusters) or 1
            return ", ".join(f"{c.name} {100 * c.weight.value / total:.0f}%" for c in clusters)
        return "-"
    if which == "redirect":
        return "redirect"
    if which == "direct_response":
        return f"direct response {route.direct_response.status}"
    return str(which or "-")


def _domains(domains: Sequence[str], wide: bool) -> str:
    if wide or len(domains) <= 1:
        return ", ".join(domains)
    return f"{domains[0]} +{len(domains) - 1} more"


def route_table(dump: config_dump_pb2.ConfigDump, *, wide: bool = False) -> Table:
    header = ["NAME", "VHOST NAME", "DOMAINS", "MATCH", "DESTINATION"]
    rows = []
    for table in routes_of(dump):
        for host in table.virtual_hosts:
            for route in host.routes:
                rows.append(
                    [
                        table.name,
                        host.name,
                        _domains(host.domains, wide),
                        _match(route),
                        _action(route),
                    ]
                )
    return header, rows


def scope_table(dump: config_dump_pb2.ConfigDump, *, wide: bool = False) -> Table:
    """Scoped routes: which route configuration each host (``:authority`` without its port)
    selects."""
    header = ["NAME", "HOST", "ROUTE"]
    rows = [
        [
            scope.name,
            ",".join(f.string_key for f in scope.key.fragments),
            scope.route_configuration_name,
        ]
        for scope in scopes_of(dump)
    ]
    return header, rows


TABLES: Mapping[str, Callable[..., Table]] = {
    "clusters": cluster_table,
    "endpoints": endpoint_table,
    "listeners": listener_table,
    "scopes": scope_table,
    "routes": route_table,
}


# -- output ---------------------------------------------------------------------------------------

_BOLD = "\x1b[1m"
_RESET = "\x1b[0m"
STATE_COLOURS = {"SYNCED": "\x1b[32m", "STALE": "\x1b[33m", "NACKED": "\x1b[31m"}


def use_colour(stream: TextIO) -> bool:
    """Colour only on a terminal, and not when ``NO_COLOR`` is set (https://no-color.org)."""
    if os.environ.get("NO_COLOR"):
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def _paint(text: str, colour: bool) -> str:
    if not colour:
        return text
    for state, code in STATE_COLOURS.items():
        if text.startswith(state):
            return f"{code}{text}{_RESET}"
    return text


def render(table: Table, *, colour: bool = False) -> str:
    """The table with its columns lined up; ``colour`` makes the header bold and sync states
    green, yellow or red."""
    header, rows = table
    widths = [max([len(header[i]), *(len(row[i]) for row in rows)]) for i in range(len(header))]
    lines = []
    for index, row in enumerate([header, *rows]):
        cells = []
        for value, width in zip(row, widths, strict=True):
            if colour and index == 0:
                shown = f"{_BOLD}{value}{_RESET}"
            else:
                shown = _paint(value, colour) if index else value
            cells.append(shown + " " * (width - len(value)))
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)
