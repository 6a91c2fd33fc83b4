"""Scoped routes (SRDS) for the sidecar's outbound listener: a small route configuration per
service instead of one table holding every service.

The listener's connection manager takes a scope key from the request's ``:authority`` (the host,
without ``:port``), looks the key up among the ``ScopedRouteConfiguration`` resources it holds,
and routes by the route configuration that scope names, fetched over RDS. A weight change to one
service then changes one small route configuration: that is all that is sent, and all that Envoy
builds again, where one table would be sent and rebuilt whole.

The virtual hosts and their domains are those of the single table (``sidecar_layout``), so every
name a client may use still routes where it did. They are grouped into route configurations so
that every host name (without port) is in exactly one: virtual hosts that share a host name
(one service's ports, a VirtualService host that is also a service alias) share one. Each host
name is a scope key pointing at its route configuration.

Envoy looks scope keys up by exact match, so a wildcard domain (``*.example.com``) cannot be a
key: a sidecar whose table has one keeps the single table (``scoped_layout`` returns None).

Proxyless gRPC clients have no scopes: each target's api listener names its route configuration
over RDS. They get a route configuration per virtual host (``service_layout``), laid out as in
their port's table, so a target routes as it did there.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import compress, count

from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2, scoped_route_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)

from translators import names
from translators.build_clusters import ads_config_source
from translators.build_routes import Layout, VirtualHostRoutes, table_bytes
from translators.model import VirtualHost
from translators.resources import Built, length_delimited, string_field

AUTHORITY = ":authority"
PORT_SEPARATOR = ":"

_SCOPE = scoped_route_pb2.ScopedRouteConfiguration
_KEY = _SCOPE.Key
_FRAGMENT = _KEY.Fragment


@dataclass(frozen=True)
class ScopedLayout:
    """Which virtual hosts (indexes into the model's mesh hosts) each route configuration holds,
    and the route configuration each scope key (a host name) selects; both sorted by name."""

    tables: tuple[tuple[str, tuple[int, ...]], ...]
    scopes: tuple[tuple[str, str], ...]

    @functools.cached_property
    def table_of(self) -> dict[int, int]:
        """For each virtual host (by index), the index of the route configuration holding it."""
        return {host: at for at, (_, members) in enumerate(self.tables) for host in members}


def bare_host(domain: str) -> str:
    """A domain without its ``:port`` (what the scope key builder takes from ``:authority``)."""
    host, sep, port = domain.rpartition(PORT_SEPARATOR)
    return host if sep and port.isdigit() else domain


def scope_name(port: int, host: str) -> str:
    """The scope of ``host`` in the scoped routes of a listener on ``port``: ``15001/reviews``."""
    return f"{names.route_table_name(port)}/{host}"


def scoped_route_table_name(port: int, host_key: str) -> str:
    """A scoped route configuration, named after the listener's port and the first service it
    holds: ``15001/reviews.default.svc.cluster.local``."""
    return f"{names.route_table_name(port)}/{host_key}"


def scoped_layout(hosts: Sequence[VirtualHost], layout: Layout, port: int) -> ScopedLayout | None:
    """The scoped form of a sidecar table laid out as ``layout``; None when a domain of it is a
    wildcard (a scope key is matched exactly, so the table must stay whole)."""
    parent: dict[int, int] = {}

    def root(index: int) -> int:
        while parent[index] != index:
            parent[index] = parent[parent[index]]
            index = parent[index]
        return index

    owner: dict[str, int] = {}  # host name -> a virtual host that claims it
    for index, place in enumerate(layout):
        if place is None:
            continue
        parent[index] = index
        for domain in rc.VirtualHost.FromString(place).domains:
            if "*" in domain:
                return None
            key = bare_host(domain)
            other = owner.setdefault(key, index)
            if other != index:
                parent[root(index)] = root(other)
    members: dict[int, list[int]] = {}
    for index in parent:
        members.setdefault(root(index), []).append(index)
    table_of: dict[int, str] = {}
    tables: dict[str, tuple[int, ...]] = {}
    for group in sorted(members.values()):
        first = hosts[group[0]].name.rpartition(":")[0] or hosts[group[0]].name
        name = scoped_route_table_name(port, first)
        suffix = 1
        while name in tables:
            suffix += 1
            name = scoped_route_table_name(port, f"{first}#{suffix}")
        tables[name] = tuple(group)
        table_of[group[0]] = name
    scopes = {key: table_of[members[root(index)][0]] for key, index in owner.items()}
    return ScopedLayout(tuple(sorted(tables.items())), tuple(sorted(scopes.items())))


def service_table_names(hosts: Sequence[VirtualHost]) -> list[str]:
    """For each virtual host (by index), the route configuration a proxyless gRPC client takes
    for the targets it serves: the virtual host's name, ``host:port`` (as Istio names them);
    ``#2`` and on for a name taken by an earlier one."""
    taken: set[str] = set()
    out = []
    for vhost in hosts:
        name, suffix = vhost.name, 1
        while name in taken:
            suffix += 1
            name = f"{vhost.name}#{suffix}"
        taken.add(name)
        out.append(name)
    return out


def service_layout(hosts: Sequence[VirtualHost]) -> ScopedLayout:
    """Every virtual host alone in a route configuration of its own (``service_table_names``),
    for proxyless gRPC clients: each target's api listener names the one of the virtual host that
    serves it, so a weight change re-sends one small configuration. No scopes: the listener
    picks the configuration."""
    tables = sorted((name, (index,)) for index, name in enumerate(service_table_names(hosts)))
    return ScopedLayout(tuple(tables), ())


def scoped_routes(port: int) -> hcm_pb2.ScopedRoutes:
    """The connection manager's scoped routes: the key is ``:authority`` up to its ``:``,
    scopes and their route configurations come over ADS."""
    extractor = hcm_pb2.ScopedRoutes.ScopeKeyBuilder.FragmentBuilder.HeaderValueExtractor(
        name=AUTHORITY, element_separator=PORT_SEPARATOR, index=0
    )
    out = hcm_pb2.ScopedRoutes(name=names.route_table_name(port))
    out.scope_key_builder.fragments.add(header_value_extractor=extractor)
    out.rds_config_source.CopyFrom(ads_config_source())
    out.scoped_rds.scoped_rds_config_source.CopyFrom(ads_config_source())
    return out


def scope_configurations(
    layout: ScopedLayout, port: int
) -> Built[scoped_route_pb2.ScopedRouteConfiguration]:
    """One ``ScopedRouteConfiguration`` per host name, keyed by it, naming its route
    configuration; they refer to every route configuration of ``layout``."""
    scope_names = [scope_name(port, key) for key, _ in layout.scopes]
    bodies = [
        string_field(_SCOPE.NAME_FIELD_NUMBER, name)
        + string_field(_SCOPE.ROUTE_CONFIGURATION_NAME_FIELD_NUMBER, table)
        + length_delimited(
            _SCOPE.KEY_FIELD_NUMBER,
            length_delimited(
                _KEY.FRAGMENTS_FIELD_NUMBER, string_field(_FRAGMENT.STRING_KEY_FIELD_NUMBER, key)
            ),
        )
        for name, (key, table) in zip(scope_names, layout.scopes, strict=True)
    ]
    references = frozenset(table for table, _ in layout.tables)
    return Built(_SCOPE, scope_names, bodies, references)


def scoped_route_tables(
    hosts: Sequence[VirtualHost],
    routes: VirtualHostRoutes,
    layout: Layout,
    scoped: ScopedLayout,
    earlier: Built[route_pb2.RouteConfiguration] | None = None,
) -> Built[route_pb2.RouteConfiguration]:
    """The route configuration of each group of ``scoped``. A configuration whose bytes are
    those of one in ``earlier`` keeps that one's very bytes and message (nothing is parsed or
    hashed again for a service whose routes did not change)."""
    before: dict[str, bytes] = (
        dict(zip(earlier.names, earlier.bodies, strict=True)) if earlier is not None else {}
    )
    bodies = []
    for name, members in scoped.tables:
        body = table_bytes(name, _placed(hosts, layout, members), routes)
        held = before.get(name)
        bodies.append(held if held == body else body)
    table_names = [name for name, _ in scoped.tables]
    return Built(route_pb2.RouteConfiguration, table_names, bodies, earlier=earlier)


def changed_route_tables(
    before: Sequence[VirtualHost],
    hosts: Sequence[VirtualHost],
    *,
    routes: VirtualHostRoutes,
    layout: Layout,
    scoped: ScopedLayout,
    earlier: Built[route_pb2.RouteConfiguration],
) -> Built[route_pb2.RouteConfiguration] | None:
    """``earlier`` (the route configurations of ``before`` with the same routes, layout and
    scopes) with those holding a virtual host that is not the very same object written again:
    the names and every other configuration's bytes and message are the very same. None when
    the hosts are not the same in number, or too many changed."""
    if len(before) != len(hosts):
        return None
    changed = list(compress(count(), map(operator.is_not, before, hosts)))
    if len(changed) > len(hosts) // 4:
        return None
    table_of = scoped.table_of
    bodies, messages = list(earlier.bodies), list(earlier)
    for at in sorted({table_of[index] for index in changed if index in table_of}):
        name, members = scoped.tables[at]
        body = table_bytes(name, _placed(hosts, layout, members), routes)
        if body != bodies[at]:
            bodies[at], messages[at] = body, route_pb2.RouteConfiguration.FromString(body)
    return Built.assembled(
        route_pb2.RouteConfiguration, earlier.names, bodies, messages, earlier.references
    )


def _placed(
    hosts: Sequence[VirtualHost], layout: Layout, members: Iterable[int]
) -> list[tuple[VirtualHost, bytes | None]]:
    return [(hosts[index], layout[index]) for index in members]
