"""Namespace scoping: what the clients of each namespace see, as Istio's ``exportTo`` decides.

A client in namespace N sees

- the Services exported to N (their ``networking.istio.io/exportTo`` annotation);
- for each host, the VirtualService bound to the mesh that comes first among those exported to
  N: one private to N (in N, exported to ``.`` or N), then one exported to N by name, then one
  exported everywhere; the oldest first within each rank. Without one, a service's hosts keep
  its default route;
- for each service, the DestinationRule in N, else the service namespace's if exported to N,
  else the root namespace's (``istio-system``) if exported to N (see `DestinationRuleIndex`).

Most namespaces see the same thing: what is exported everywhere. The model holds that once
(``MeshModel.clusters``, ``endpoints``, ``mesh_hosts``), and for the namespaces that some
``exportTo`` or DestinationRule names and that see something else, one `MeshView` per distinct
difference: namespaces that see the same share it, so the memory of a view is that of the hosts
it changes.
"""

from __future__ import annotations

from bisect import insort
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from operator import attrgetter
from typing import Any, TypeVar

from translators.diagnostics import Diagnostic
from translators.model import MeshModel, MeshView, Service, VirtualHost
from translators.resolve_routing import (
    DestinationRuleIndex,
    DestinationRuleSpec,
    Precedence,
    VirtualServiceRules,
    cluster_endpoints,
    resolve_routing,
)
from translators.visibility import EVERYWHERE, ExportTo

T = TypeVar("T")

# The ranks of a VirtualService for the clients of a namespace (lower first).
_PRIVATE, _EXPORTED, _PUBLIC = 0, 1, 2


def public_rank(vs: VirtualServiceRules) -> int | None:
    """A VirtualService's rank for a namespace no ``exportTo`` names: only those exported
    everywhere count."""
    return _PUBLIC if vs.export_to.everywhere else None


def rank_for(namespace: str) -> Precedence:
    """A VirtualService's rank for the clients of ``namespace`` (None: they do not see it)."""

    def rank(vs: VirtualServiceRules) -> int | None:
        export = vs.export_to
        if export.everywhere:
            return _PUBLIC
        if namespace not in export.namespaces:
            return None
        return _PRIVATE if vs.source.namespace == namespace else _EXPORTED

    return rank


def host_key(vhost: VirtualHost) -> str:
    """The host a mesh virtual host is made for: a service hostname, or a host that is none."""
    return vhost.name.rpartition(":")[0]


def _keys(vs: VirtualServiceRules) -> Iterable[str]:
    return (hostname or host for host, hostname in zip(vs.hosts, vs.hostnames, strict=True))


_Answer = tuple[bool, DestinationRuleSpec | None, VirtualServiceRules | None]


def mesh_views(
    services: Mapping[str, Service],
    exports: Mapping[str, ExportTo],
    rules: DestinationRuleIndex,
    virtual_services: Sequence[VirtualServiceRules],
    domain: str,
) -> tuple[tuple[MeshView, ...], tuple[Diagnostic, ...]]:
    """The views of the namespaces that see something else than what every namespace sees,
    and the conflicts found making them (two VirtualServices of one rank for a host).

    ``exports`` holds the Services not exported everywhere, by hostname.
    """
    mesh = [vs for vs in virtual_services if vs.mesh]
    scoped_keys = {key for vs in mesh if not vs.export_to.everywhere for key in _keys(vs)}
    claimants: dict[str, list[VirtualServiceRules]] = {}
    for vs in sorted(mesh, key=lambda v: v.source.age):
        for key in dict.fromkeys(_keys(vs)):
            if key in scoped_keys:
                claimants.setdefault(key, []).append(vs)

    candidates: dict[str, set[str]] = {}
    for hostname, export in exports.items():
        for namespace in export.namespaces:
            candidates.setdefault(namespace, set()).add(hostname)
    for vs in mesh:
        for namespace in vs.export_to.namespaces:
            candidates.setdefault(namespace, set()).update(_keys(vs))
    for hostname, held in rules.by_namespace.items():
        service = services.get(hostname)
        own = service.namespace if service is not None else ""
        for namespace in rules.namespaces_named(hostname):
            # the service namespace's own rule, exported everywhere, is what everyone gets
            if namespace != own or held.get(own) is not rules.by_host.get(hostname):
                candidates.setdefault(namespace, set()).add(hostname)

    def winner(key: str, rank: Precedence) -> VirtualServiceRules | None:
        ranked = [(r, vs) for vs in claimants.get(key, ()) if (r := rank(vs)) is not None]
        return min(ranked, key=lambda item: item[0])[1] if ranked else None

    def answer(key: str, namespace: str) -> _Answer:
        service = services.get(key)
        export = exports.get(key, EVERYWHERE)
        shown = service is not None and export.visible_to(namespace)
        if not namespace:  # a namespace no exportTo names
            shown = service is not None and export.everywhere
        rule = None
        if shown and service is not None:
            rule = (
                rules.rule_for(namespace, key, service.namespace)
                if namespace
                else rules.by_host.get(key)
            )
        rank = rank_for(namespace) if namespace else public_rank
        vs = winner(key, rank) if key in claimants else None
        return shown, rule, vs

    found: dict[tuple[object, ...], list[str]] = {}
    diagnostics: set[Diagnostic] = set()
    for namespace, keys in sorted(candidates.items()):
        affected = sorted(
            key
            for key in keys
            if not all(
                mine is theirs
                for mine, theirs in zip(answer(key, namespace), answer(key, ""), strict=True)
            )
        )
        if not affected:
            continue
        mesh_objects = _Mesh(services, exports, rules, virtual_services, domain)
        delta, conflicts = _view_delta(namespace, affected, mesh_objects)
        found.setdefault(delta, []).append(namespace)
        diagnostics.update(conflicts)
    views = [
        MeshView(tuple(sorted(namespaces)), *delta)  # type: ignore[arg-type]
        for delta, namespaces in found.items()
    ]
    return tuple(sorted(views, key=lambda view: view.namespaces)), tuple(sorted(diagnostics))


@dataclass(frozen=True, slots=True)
class _Mesh:
    services: Mapping[str, Service]
    exports: Mapping[str, ExportTo]
    rules: DestinationRuleIndex
    virtual_services: Sequence[VirtualServiceRules]
    domain: str


def _view_delta(
    namespace: str, affected: Sequence[str], mesh: _Mesh
) -> tuple[tuple[object, ...], tuple[Diagnostic, ...]]:
    """The hosts, clusters, load assignments and virtual hosts ``namespace`` sees for
    ``affected``."""
    keys = frozenset(affected)
    services, exports, rules = mesh.services, mesh.exports, mesh.rules
    virtual_services, domain = mesh.virtual_services, mesh.domain

    def visible(hostname: str) -> bool:
        return exports.get(hostname, EVERYWHERE).visible_to(namespace)

    mine = {key: services[key] for key in affected if key in services and visible(key)}
    by_host = {
        hostname: rule
        for hostname, service in mine.items()
        if (rule := rules.rule_for(namespace, hostname, service.namespace)) is not None
    }
    index = DestinationRuleIndex(by_host, rules.subset_names)
    claiming = [vs for vs in virtual_services if vs.mesh and not keys.isdisjoint(_keys(vs))]
    routing = resolve_routing(
        mine,
        index,
        claiming,
        domain,
        visible=visible,
        precedence=rank_for(namespace),
        mesh_only=True,
    )
    hosts = tuple(v for v in routing.mesh_hosts if host_key(v) in keys)
    delta = (
        tuple(affected),
        routing.clusters,
        cluster_endpoints(routing.clusters, services),
        hosts,
    )
    return delta, routing.diagnostics


def with_endpoints(
    views: tuple[MeshView, ...], services: Mapping[str, Service]
) -> tuple[MeshView, ...]:
    """``views`` with their load assignments made again from ``services``' endpoints."""
    return tuple(
        replace(view, endpoints=cluster_endpoints(view.clusters, services)) for view in views
    )


def scoped_model(model: MeshModel, view: MeshView) -> MeshModel:
    """The model as the clients of ``view`` see it: its clusters, load assignments and mesh
    virtual hosts in place of the model's for the view's hosts. Everything else is the model's
    very objects."""
    hosts = frozenset(view.hosts)
    replaced = frozenset(c.name for c in model.clusters if c.service in hosts)

    return replace(
        model,
        clusters=_merged(
            (c for c in model.clusters if c.service not in hosts),
            view.clusters,
            attrgetter("name"),
        ),
        endpoints=_merged(
            (e for e in model.endpoints if e.cluster not in replaced),
            view.endpoints,
            attrgetter("cluster"),
        ),
        mesh_hosts=_merged(
            (v for v in model.mesh_hosts if host_key(v) not in hosts),
            view.mesh_hosts,
            attrgetter("port", "name"),
        ),
        views=(),
    )


def _merged(kept: Iterable[T], added: Iterable[T], key: Callable[[T], Any]) -> tuple[T, ...]:
    """``kept`` (sorted by ``key``) with the few ``added`` put in their places."""
    out = list(kept)
    for item in added:
        insort(out, item, key=key)
    return tuple(out)
