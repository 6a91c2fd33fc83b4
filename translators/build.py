"""A node group's Envoy resources: model → {type URL: resources sorted by name}.

Clusters (one set for Envoy, one for proxyless gRPC clients, which support fewer balancing
policies), endpoints and the per-port route tables do not otherwise depend on the group, so they
are built once and shared by every group. A ``ResourceBuilder`` also remembers what it built
from the previous model: a part of the model that is the very same object as before
(an endpoint change keeps the clusters and virtual hosts, see ``translators.incremental``) is not
built again, so an endpoint change rebuilds load assignments and nothing else, and of those it
writes again only the ones whose endpoints changed.

A group in a namespace that sees a view of the mesh of its own (``exportTo``, see `MeshView`)
gets the resources of that view, built from the rest of the mesh's: only what the view changes
is built for it. Groups that see the same get the very same resources. Sidecars and proxyless
clients of a namespace an Istio ``Sidecar`` scopes get its view instead (``exportTo`` included);
the load-balancer fleet never does.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Collection, Sequence
from itertools import compress, count
from typing import Any, TypeVar

from google.protobuf.message import Message

from translators import resources
from translators.build_clusters import build_clusters
from translators.build_endpoints import LoadAssignments
from translators.build_listeners import api_listeners, gateway_listeners, sidecar_listeners
from translators.build_routes import (
    Layout,
    VirtualHostRoutes,
    gateway_layout,
    gateway_route_tables,
    layout_key,
    port_layout,
    same_layout_key,
    sidecar_claimants,
    sidecar_layout,
    sidecar_layout_changed,
    sidecar_route_tables,
)
from translators.build_scoped_routes import (
    ScopedLayout,
    changed_route_tables,
    scope_configurations,
    scoped_layout,
    scoped_route_tables,
    service_layout,
)
from translators.model import (
    Cluster,
    ClusterEndpoints,
    EndpointsChange,
    MeshModel,
    MeshView,
    NodeGroup,
    Role,
    VirtualHost,
)
from translators.resolve_scopes import scoped_model
from translators.resources import Built

Resources = dict[str, tuple[Message, ...]]
T = TypeVar("T")

LAYOUT_KEYS_KEPT = 16
DEFAULT_SIDECAR_PORT = 15001
DEFAULT_GATEWAY_PORT = 8080


def _unscoped(part: str) -> str:
    """A part's key without the view it was built for (``view:a,b/sidecar:15001/routes`` →
    ``sidecar:15001/routes``)."""
    return part.partition("/")[2] if part.startswith("view:") else part


class ResourceBuilder:
    """Builds node groups' resources from successive models, reusing unchanged parts.

    Holds the last result of each part (one per part and group: bounded by the number of
    groups) with the model pieces it was built from; a piece that is the same object, or
    equal, is not built again.
    """

    def __init__(self) -> None:
        self._parts: dict[str, tuple[tuple[object, ...], Any]] = {}
        self.builds: dict[str, int] = {}  # how often each part was built (for tests and debug)
        self._assignments = LoadAssignments()
        self._views: tuple[MeshView, ...] = ()
        # per kind of resource: the last base set, and its bytes and message by name
        self._indexes: dict[str, tuple[Built[Any], dict[str, tuple[bytes, Any]]]] = {}
        # layout keys by id of the tuple of virtual hosts (holding the tuple keeps the id)
        self._layout_keys: dict[int, tuple[tuple[VirtualHost, ...], object]] = {}
        self._last_layout: tuple[tuple[VirtualHost, ...], object] | None = None

    def _part(self, key: str, inputs: tuple[object, ...], build: Callable[[], T]) -> T:
        held = self._parts.get(key)
        if held is not None and all(a is b or a == b for a, b in zip(held[0], inputs, strict=True)):
            result: T = held[1]
            return result
        result = build()
        self._parts[key] = (inputs, result)
        self.builds[key] = self.builds.get(key, 0) + 1
        return result

    def _layout_key(self, hosts: tuple[VirtualHost, ...]) -> object:
        """`layout_key` of ``hosts``, made once per tuple of virtual hosts; the very key of the
        last tuple when the virtual hosts that differ from it keep their names, ports and hosts
        (a routing change), so that parts keyed on it are found by identity."""
        held = self._layout_keys.get(id(hosts))
        if held is None or held[0] is not hosts:
            if len(self._layout_keys) >= LAYOUT_KEYS_KEPT:
                self._layout_keys.clear()
            last = self._last_layout
            key = (
                last[1]
                if last is not None and same_layout_key(last[0], hosts)
                else layout_key(hosts)
            )
            held = self._layout_keys[id(hosts)] = (hosts, key)
            self._last_layout = held
        return held[1]

    def forget_group(self, group: NodeGroup) -> None:
        """Forget what was built for ``group``'s role and port only (its listeners, layouts and
        route tables, in every view); parts shared by every group stay. Groups of one role and
        port in several namespaces share these: forget them once none of those is left."""
        prefix = NodeGroup(group.role, group.port).key + "/"
        for part in [part for part in self._parts if _unscoped(part).startswith(prefix)]:
            del self._parts[part]
            self.builds.pop(part, None)

    def build_group(
        self,
        model: MeshModel,
        group: NodeGroup,
        listener_names: Collection[str] | None = None,
    ) -> Resources:
        """Every resource a node of ``group`` receives, keyed by type URL, sorted by name.

        Every EDS name a cluster uses has a load assignment, and every route table a listener
        names is present (possibly empty). A proxyless group gets an api listener for every
        dialable target, or with ``listener_names`` only for those of them it names (gRPC
        clients ask for listeners by the target they dial); other groups ignore it.

        A group whose namespace sees a view of the mesh of its own (see `MeshView`) gets it;
        groups that see the same share every resource, and a view shares with the rest of the
        mesh the resources of every host it does not change.
        """
        view = model.view_for(group.namespace, sidecar=group.role is not Role.GATEWAY)
        if view is None:
            return self._build(model, group, "", listener_names)
        scope = f"view:{view.key}/"
        self._forget_views_but(model.every_view)
        grpc = group.role is Role.PROXYLESS
        scoped = self._part(
            f"{scope}model",
            (model.clusters, model.endpoints, model.mesh_hosts, view),
            lambda: scoped_model(model, view),
        )
        # every cluster of a host the view changes is built for the view; the others are the
        # rest of the mesh's, bytes and messages
        changed = self._part(
            f"{scope}changed", (model.clusters, view), lambda: _changed_clusters(model, view)
        )
        kind = "grpc-clusters" if grpc else "clusters"
        clusters = self._clusters(model, grpc)
        self._part(
            f"{scope}{kind}",
            (scoped.clusters,),
            lambda: self._with_view(
                kind,
                clusters,
                [c.name for c in scoped.clusters],
                changed,
                build_clusters(view.clusters, grpc=grpc),
            ),
        )
        endpoints = self._endpoints(model)
        self._part(
            f"{scope}endpoints",
            (scoped.clusters, scoped.endpoints),
            lambda: self._with_view(
                "endpoints",
                endpoints,
                [c.name for c in scoped.clusters if c.uses_eds],
                changed,
                LoadAssignments().build(_assignments(view.clusters, view.endpoints)),
            ),
        )
        routes = self._routes(model)
        self._part(
            f"{scope}routes",
            (scoped.clusters,),
            lambda: VirtualHostRoutes(scoped, routes, changed),
        )
        if group.role is Role.SIDECAR:
            self._sidecar_layout(model, scoped, view, scope, group)
        return self._build(scoped, group, scope, listener_names)

    def _sidecar_layout(
        self, model: MeshModel, scoped: MeshModel, view: MeshView, scope: str, group: NodeGroup
    ) -> None:
        """Lay out a view's sidecar table from the rest of the mesh's where the hosts it changes
        share no domain with the others (the layout of 10,000 virtual hosts is the costly part
        of a table)."""
        role_key = NodeGroup(group.role, group.port).key
        base = model.mesh_hosts
        base_key = self._layout_key(base)
        base_layout = self._part(f"{role_key}/layout", (base_key,), lambda: sidecar_layout(base))
        claimants = self._part("sidecar-claimants", (base_key,), lambda: sidecar_claimants(base))
        keys = frozenset(view.hosts)

        def layout() -> Layout:
            found = sidecar_layout_changed(base, base_layout, claimants, scoped.mesh_hosts, keys)
            return found if found is not None else sidecar_layout(scoped.mesh_hosts)

        self._part(f"{scope}{role_key}/layout", (self._layout_key(scoped.mesh_hosts),), layout)

    def _with_view(
        self,
        kind: str,
        base: Built[Any],
        names: Sequence[str],
        changed: frozenset[str],
        fresh: Built[Any],
    ) -> Built[Any]:
        """Resources named ``names`` (sorted): ``fresh``'s for the ``changed`` names, ``base``'s
        (the very bytes and messages) for the others."""
        held = self._indexes.get(kind)
        if held is None or held[0] is not base:
            held = self._indexes[kind] = (base, _by_name(base))
        index = held[1]
        made = _by_name(fresh)
        pairs = [made[name] if name in changed else index[name] for name in names]
        references = (base.references & frozenset(names)) | fresh.references
        return Built.assembled(
            base.message_type,
            names,
            [body for body, _ in pairs],
            [message for _, message in pairs],
            references,
        )

    def _forget_views_but(self, views: tuple[MeshView, ...]) -> None:
        """Drop what was built for views the model no longer has (namespaces are unbounded)."""
        if views == self._views:  # the same view objects (compared by identity first)
            return
        self._views = views
        live = {f"view:{view.key}/" for view in views}
        for key in [k for k in self._parts if k.startswith("view:")]:
            if key[: key.index("/") + 1] not in live:
                del self._parts[key]
                self.builds.pop(key, None)

    def _clusters(self, model: MeshModel, grpc: bool, scope: str = "") -> Built[Any]:
        built: Built[Any] = self._part(
            f"{scope}{'grpc-clusters' if grpc else 'clusters'}",
            (model.clusters,),
            lambda: build_clusters(model.clusters, grpc=grpc),
        )
        return built

    def _endpoints(self, model: MeshModel, scope: str = "") -> Built[Any]:
        key = f"{scope}endpoints"
        held = self._parts.get(key)
        if held is not None and held[0][0] is model.clusters and isinstance(held[0][1], tuple):
            # the same clusters: rewrite only the assignments that are not the very same
            changed = _changed_at(held[0][1], model.endpoints, model.endpoints_change)
            if changed is not None:
                spliced = self._assignments.spliced(held[1], changed) if changed else held[1]
                if spliced is not None:
                    self._parts[key] = ((model.clusters, model.endpoints), spliced)
                    return spliced
        built: Built[Any] = self._part(
            key,
            (model.clusters, model.endpoints),
            lambda: _load_assignments(model, self._assignments),
        )
        return built

    def _routes(self, model: MeshModel, scope: str = "") -> VirtualHostRoutes:
        routes: VirtualHostRoutes = self._part(
            f"{scope}routes", (model.clusters,), lambda: VirtualHostRoutes(model)
        )
        return routes

    def _scoped_tables(
        self,
        key: str,
        model: MeshModel,
        routes: VirtualHostRoutes,
        layout: Layout,
        scoped: ScopedLayout,
    ) -> Built[Any]:
        """The route configurations of ``scoped`` for the model's mesh hosts; after a change
        with the same routes and layout, the last ones with only those holding a virtual host
        that changed written again."""
        held = self._parts.get(key)
        earlier = held[1] if held is not None else None
        if earlier is not None and held is not None:
            before = held[0][0]
            if held[0][1:] == (routes, layout, scoped) and isinstance(before, tuple):
                found = (
                    earlier
                    if before is model.mesh_hosts
                    else changed_route_tables(
                        before,
                        model.mesh_hosts,
                        routes=routes,
                        layout=layout,
                        scoped=scoped,
                        earlier=earlier,
                    )
                )
                if found is not None:
                    self._parts[key] = ((model.mesh_hosts, routes, layout, scoped), found)
                    return found
        tables: Built[Any] = self._part(
            key,
            (model.mesh_hosts, routes, layout, scoped),
            lambda: scoped_route_tables(model.mesh_hosts, routes, layout, scoped, earlier),
        )
        return tables

    def _build(
        self,
        model: MeshModel,
        group: NodeGroup,
        scope: str,
        listener_names: Collection[str] | None,
    ) -> Resources:
        """The group's resources from ``model``, its parts kept under ``scope`` (the view's;
        "" for what every namespace sees): the parts of a view were built before this."""
        # Proxyless gRPC clients get clusters with only the balancing they support.
        grpc = group.role is Role.PROXYLESS
        clusters = self._clusters(model, grpc, scope)
        endpoints = self._endpoints(model, scope)
        routes = self._routes(model, scope)
        role_key = f"{scope}{NodeGroup(group.role, group.port).key}"
        listeners: tuple[Message, ...]
        tables: tuple[Message, ...]
        scopes: tuple[Message, ...] | None = None
        # Where each virtual host goes in a table depends only on the virtual hosts' names,
        # ports and hosts: a routing change keeps the layout and only reassembles the table.
        if group.role is Role.SIDECAR:
            port = group.port or DEFAULT_SIDECAR_PORT
            listeners = self._part(f"{role_key}/listeners", (), lambda: sidecar_listeners(port))
            layout = self._part(
                f"{role_key}/layout",
                (self._layout_key(model.mesh_hosts),),
                lambda: sidecar_layout(model.mesh_hosts),
            )
            # a table per service, chosen by host (SRDS), unless a wildcard host needs one table
            scoped = self._part(
                f"{role_key}/scoped",
                (layout,),
                lambda: scoped_layout(model.mesh_hosts, layout, port),
            )
            if scoped is not None:
                listeners = self._part(
                    f"{role_key}/srds", (), lambda: sidecar_listeners(port, True)
                )
                scopes = self._part(
                    f"{role_key}/scopes", (scoped,), lambda: scope_configurations(scoped, port)
                )
                tables = self._scoped_tables(f"{role_key}/routes", model, routes, layout, scoped)
            else:
                tables = self._part(
                    f"{role_key}/routes",
                    (model.mesh_hosts, routes, layout, None),
                    lambda: sidecar_route_tables(model, port, routes, layout),
                )
        elif group.role is Role.GATEWAY:
            port = group.port or DEFAULT_GATEWAY_PORT
            listeners = self._part(
                f"{role_key}/listeners",
                (model.gateway_tcp,),
                lambda: gateway_listeners(port, model.gateway_tcp),
            )
            layout = self._part(
                f"{role_key}/layout",
                (self._layout_key(model.gateway_hosts),),
                lambda: gateway_layout(model.gateway_hosts, port),
            )
            tables = self._part(
                f"{role_key}/routes",
                (model.gateway_hosts, routes, layout),
                lambda: gateway_route_tables(model, port, routes, layout),
            )
        else:
            # api listeners depend only on each host's names and port, not on its routes
            targets = self._layout_key(model.mesh_hosts)
            if listener_names is None:
                listeners = self._part(
                    f"{scope}api-listeners", (targets,), lambda: api_listeners(model.mesh_hosts)
                )
            else:
                wanted = frozenset(listener_names)
                listeners = self._part(
                    f"{scope}requested-api-listeners",
                    (targets, wanted),
                    lambda: api_listeners(model.mesh_hosts, wanted),
                )
            layout = self._part(
                f"{scope}port-layout",
                (self._layout_key(model.mesh_hosts),),
                lambda: port_layout(model.mesh_hosts),
            )
            # a route configuration per virtual host, each laid out as in its port's table
            services = self._part(
                f"{scope}service-layout", (targets,), lambda: service_layout(model.mesh_hosts)
            )
            tables = self._scoped_tables(f"{scope}service-routes", model, routes, layout, services)
        return {
            resources.CLUSTER: clusters,
            resources.ENDPOINT: endpoints,
            resources.LISTENER: listeners,
            **({resources.SCOPED_ROUTE: scopes} if scopes is not None else {}),
            resources.ROUTE: tables,
        }


def _assignments(
    clusters: Sequence[Cluster], endpoints: Sequence[ClusterEndpoints]
) -> list[ClusterEndpoints]:
    """The load assignment of every EDS cluster of ``clusters`` (empty when ``endpoints`` has
    none for it)."""
    given = {e.cluster: e for e in endpoints}
    return [given.get(c.name) or ClusterEndpoints(c.name) for c in clusters if c.uses_eds]


SPLICE_AT_MOST = 0.25  # of the assignments: past that, building them all is as quick


def _changed_at(
    before: Sequence[ClusterEndpoints],
    after: Sequence[ClusterEndpoints],
    hint: EndpointsChange | None = None,
) -> dict[int, ClusterEndpoints] | None:
    """The assignments of ``after`` that are not the very ones of ``before``, by index (read
    from ``hint`` when it tells how ``after`` was made from ``before``, else by comparing them
    all); None when the two do not name the same clusters in the same order or too many
    changed."""
    if before is after:
        return {}
    if len(before) != len(after):
        return None
    if hint is not None and hint.source is before and hint.result is after:
        changed = {at: after[at] for at in hint.at}
    else:
        changed = {at: after[at] for at in compress(count(), map(operator.is_not, before, after))}
    if len(changed) > SPLICE_AT_MOST * len(after):
        return None
    if any(before[at].cluster != assignment.cluster for at, assignment in changed.items()):
        return None
    return changed


def _by_name(built: Built[Any]) -> dict[str, tuple[bytes, Any]]:
    return dict(zip(built.names, zip(built.bodies, built, strict=True), strict=True))


def _changed_clusters(model: MeshModel, view: MeshView) -> frozenset[str]:
    """The clusters a view changes: its own that differ from the model's of the same name, and
    the model's of the hosts it changes that it does not have."""
    hosts = frozenset(view.hosts)
    before = {c.name: c for c in model.clusters if c.service in hosts}
    mine = {c.name: c for c in view.clusters}
    differ = {name for name, cluster in mine.items() if before.get(name) != cluster}
    return frozenset(differ | (before.keys() - mine.keys()))


def _load_assignments(model: MeshModel, builder: LoadAssignments) -> Built[Any]:
    """A load assignment for every EDS cluster (empty when the model has none for it)."""
    given = {e.cluster: e for e in model.endpoints}
    return builder.build(
        given.get(c.name) or ClusterEndpoints(cluster=c.name) for c in model.clusters if c.uses_eds
    )


def build_group(
    model: MeshModel, group: NodeGroup, listener_names: Collection[str] | None = None
) -> Resources:
    """One group's resources from one model, with nothing remembered (tests, validation)."""
    return ResourceBuilder().build_group(model, group, listener_names)
