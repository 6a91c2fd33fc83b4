"""Istio's ``Sidecar``: the hosts the sidecars of a namespace receive.

A Sidecar's ``spec.egress[].hosts`` are ``namespace/dnsName`` entries. The namespace is ``*``
(every namespace), ``.`` (the namespace of the sidecar that receives the configuration) or a
namespace name; a leading ``~`` leaves the hosts it names out instead (``~/*``: every host of
every namespace, so nothing). The dnsName is ``*`` (every host of that namespace), a wildcard
``*.example.com`` or an exact FQDN. A host is received when an entry of its namespace or of
``*`` takes it and no ``~`` entry of either leaves it out. The host of a service is in the
service's namespace; a host that is no service (a VirtualService host such as
``api.example.com``) is in its VirtualService's. The services a received virtual host routes
to are received too (as Istio infers them from VirtualServices), and so is nothing else.

Which Sidecar a sidecar gets, as in Istio: the one without ``workloadSelector`` in its own
namespace (if a namespace holds several, the oldest; the others get a warning), else the one in
the root namespace (``istio-system``), the mesh default, else none: without a Sidecar, a sidecar
receives everything exported to its namespace, as before. What a Sidecar hides comes on top of
``exportTo``. A Sidecar with a ``workloadSelector`` (with labels) is checked but not applied yet:
it gets a warning naming the field. A Sidecar applies to sidecars and proxyless gRPC clients,
never to the load-balancer fleet.

Validation follows Istio's: an entry must be ``namespace/dnsName`` with both parts, a namespace
that is ``*``, ``.`` or a DNS-1123 label (after an optional ``~``), and a dnsName that is ``*``, a
``*.``-prefixed wildcard or an FQDN (no short names, no partial wildcards); an egress listener
needs hosts; a spec needs egress or one of the fields splitplane ignores (``ingress``,
``outboundTrafficPolicy``, ``inboundConnectionPool``). A host given twice, or ``*/*`` beside
others, is a warning.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from translators.api.networking_pb2 import Sidecar
from translators.diagnostics import Diagnostic, Severity
from translators.hostnames import hostname_problem
from translators.model import (
    Cluster,
    ClusterEndpoints,
    MeshModel,
    MeshView,
    Service,
    VirtualHost,
)
from translators.objects import is_mapping
from translators.resolve_routing import ROOT_NAMESPACE, Source
from translators.resolve_scopes import host_key, with_endpoints
from translators.spec import parse_sidecar
from translators.visibility import is_namespace_name

KIND = "Sidecar"
ANY = "*"
CURRENT = "."
EXCLUDE = "~"
SIDECAR_SCOPE = "sidecar"  # the `MeshView.scope` of the views a Sidecar makes
NOT_APPLIED = (
    "selecting pods by labels is not supported by splitplane yet; this Sidecar is not applied"
    " (the namespace's Sidecar without workloadSelector, or the mesh default, is)"
)
# Fields of a spec that make it a configuration even without egress (splitplane ignores them).
_OTHER_CONFIGURATION = ("ingress", "outboundTrafficPolicy", "inboundConnectionPool")


@dataclass(frozen=True, slots=True)
class EgressHost:
    """One ``namespace/dnsName`` entry: ``namespace`` is ``*``, ``.`` or a name."""

    namespace: str
    host: str
    excluded: bool = False


@dataclass(frozen=True, slots=True)
class SidecarScope:
    """A checked Sidecar: where it is, whether it selects pods, and its egress hosts (``*/*``
    when it gives none)."""

    source: Source
    hosts: tuple[EgressHost, ...]
    selects_pods: bool = False

    def egress_for(self, namespace: str) -> Egress:
        """The hosts a sidecar in ``namespace`` receives (``.`` read as ``namespace``)."""
        return Egress.of(self.hosts, namespace)


@dataclass(frozen=True, slots=True)
class _Patterns:
    exact: frozenset[str] = frozenset()
    suffixes: tuple[str, ...] = ()  # of wildcards: "*.example.com" → ".example.com"; "*" → ""

    def take(self, host: str) -> bool:
        return host in self.exact or any(host.endswith(suffix) for suffix in self.suffixes)


@dataclass(frozen=True, slots=True)
class Egress:
    """Egress hosts bound to one client namespace, by namespace (``*`` for every one)."""

    included: Mapping[str, _Patterns]
    excluded: Mapping[str, _Patterns]

    @staticmethod
    def of(hosts: Iterable[EgressHost], namespace: str) -> Egress:
        found: dict[bool, dict[str, tuple[set[str], list[str]]]] = {True: {}, False: {}}
        for entry in hosts:
            owner = namespace if entry.namespace == CURRENT else entry.namespace
            exact, suffixes = found[entry.excluded].setdefault(owner, (set(), []))
            host = entry.host.lower()
            if host.startswith(ANY):
                suffixes.append(host[1:])
            else:
                exact.add(host)

        def patterns(by: dict[str, tuple[set[str], list[str]]]) -> Mapping[str, _Patterns]:
            return {
                ns: _Patterns(frozenset(e), tuple(dict.fromkeys(s))) for ns, (e, s) in by.items()
            }

        return Egress(patterns(found[False]), patterns(found[True]))

    def sees(self, namespace: str, host: str) -> bool:
        """Whether a host of ``namespace`` is received."""
        host = host.lower()
        for owner in (namespace, ANY):
            left_out = self.excluded.get(owner)
            if left_out is not None and left_out.take(host):
                return False
        return any(
            (taken := self.included.get(owner)) is not None and taken.take(host)
            for owner in (namespace, ANY)
        )


EVERY_HOST = (EgressHost(ANY, ANY),)


def check_sidecar(
    source: Source, spec: Sidecar, raw: object
) -> tuple[SidecarScope | None, list[Diagnostic]]:
    """A parsed Sidecar checked as Istio checks it (``raw``: the object's ``spec`` as given,
    for the fields splitplane does not model); None when it is invalid."""
    found: list[Diagnostic] = []

    def report(path: str, message: str, severity: Severity = Severity.ERROR) -> None:
        found.append(Diagnostic(KIND, source.namespace, source.name, path, message, severity))

    raw_spec: Mapping[str, Any] = raw if is_mapping(raw) else {}
    raw_egress = raw_spec.get("egress")
    listeners = raw_egress if isinstance(raw_egress, list) else []
    if not spec.egress and not any(raw_spec.get(key) is not None for key in _OTHER_CONFIGURATION):
        report("spec", "empty configuration: give egress hosts (namespace/dnsName)")

    selects_pods = False
    if spec.HasField("workload_selector"):
        labels = spec.workload_selector.labels
        for key, value in sorted(labels.items()):
            where = f"spec.workloadSelector.labels[{key}]"
            if not key:
                report(where, "an empty label key is not supported")
            if ANY in key or ANY in value:
                report(where, f"a wildcard is not supported in a selector: {key}={value}")
        if labels:
            selects_pods = True
            report("spec.workloadSelector", NOT_APPLIED, Severity.WARNING)
        else:
            report(
                "spec.workloadSelector",
                "has no labels; the Sidecar applies to every sidecar of its namespace",
                Severity.WARNING,
            )

    hosts: list[EgressHost] = []
    for index, listener in enumerate(spec.egress):
        at = f"spec.egress[{index}]"
        raw_listener = listeners[index] if index < len(listeners) else None
        if raw_listener is None and index < len(listeners):
            report(at, "an egress listener may not be null")
            continue
        has_port = is_mapping(raw_listener) and raw_listener.get("port") is not None
        if not has_port and index != len(spec.egress) - 1:
            report(at, "the egress listener without a port must be the last one")
        if not listener.hosts:
            report(f"{at}.hosts", "an egress listener must have at least one host")
            continue
        seen: dict[str, set[str]] = {}
        for position, text in enumerate(listener.hosts):
            where = f"{at}.hosts[{position}]"
            entry, problems = _egress_host(text)
            for problem in problems:
                report(where, problem)
            if entry is None:
                continue
            if not entry.excluded:
                owner = source.namespace if entry.namespace == CURRENT else entry.namespace
                held = seen.setdefault(owner, set())
                if (entry.host in held or ANY in held) if entry.host != ANY else bool(held):
                    report(where, f"duplicated egress host: {text}", Severity.WARNING)
                held.add(entry.host)
            hosts.append(entry)
        if ANY in seen.get(ANY, set()) and len(seen) != 1:
            report(
                f"{at}.hosts",
                "*/* selects every host; no other hosts can be added",
                Severity.WARNING,
            )
    if any(d.is_error for d in found):
        return None, found
    return SidecarScope(source, tuple(hosts) or EVERY_HOST, selects_pods), found


def _egress_host(text: str) -> tuple[EgressHost | None, list[str]]:
    """One ``namespace/dnsName`` entry, or the reasons it is not one (Istio's rules)."""
    namespace, slash, host = text.partition("/")
    if not slash:
        return None, [f"{text!r} must be of the form namespace/dnsName"]
    problems: list[str] = []
    if not namespace or not host:
        problems.append("the namespace and the dnsName of an egress host cannot be empty")
    excluded = namespace.startswith(EXCLUDE)
    owner = namespace.removeprefix(EXCLUDE)
    if owner not in ("", ANY, CURRENT) and not is_namespace_name(owner):
        problems.append(f"invalid namespace {namespace!r}: '*', '.' or a namespace name")
    if host:
        problems.extend(_dns_name_problems(host))
    if problems:
        return None, problems
    return EgressHost(owner or ANY, host, excluded), []


def _dns_name_problems(host: str) -> list[str]:
    problems = []
    if host != ANY and "." not in host:
        problems.append(f"{host!r}: short names are not allowed; give an FQDN or '*'")
    reason = hostname_problem(host)
    if reason:
        problems.append(reason)
    if ANY in host and host != ANY and not host.startswith("*."):
        problems.append(f"partial wildcard {host!r} is not allowed; use '*' or '*.domain'")
    return problems


@dataclass(frozen=True, slots=True)
class ChosenSidecars:
    """The Sidecar of each namespace that has one, and the mesh default (the root
    namespace's)."""

    by_namespace: Mapping[str, SidecarScope]
    default: SidecarScope | None
    diagnostics: tuple[Diagnostic, ...]


def choose_sidecars(
    scopes: Iterable[SidecarScope], root_namespace: str = ROOT_NAMESPACE
) -> ChosenSidecars:
    """The oldest Sidecar without ``workloadSelector`` of each namespace; a warning for each
    other one (Istio takes the oldest too)."""
    by_namespace: dict[str, list[SidecarScope]] = {}
    for scope in scopes:
        if not scope.selects_pods:
            by_namespace.setdefault(scope.source.namespace, []).append(scope)
    chosen: dict[str, SidecarScope] = {}
    diagnostics: list[Diagnostic] = []
    for namespace, held in sorted(by_namespace.items()):
        oldest, *others = sorted(held, key=lambda scope: scope.source.age)
        chosen[namespace] = oldest
        for other in others:
            diagnostics.append(
                Diagnostic(
                    KIND,
                    namespace,
                    other.source.name,
                    "",
                    f"namespace {namespace} has more than one Sidecar without workloadSelector;"
                    f" the oldest, {oldest.source.name}, is applied and this one is not",
                    Severity.WARNING,
                )
            )
    default = chosen.pop(root_namespace, None)
    return ChosenSidecars(chosen, default, tuple(diagnostics))


def sidecar_views(
    model: MeshModel, chosen: ChosenSidecars
) -> tuple[tuple[MeshView, ...], MeshView | None]:
    """What the sidecars of each namespace a Sidecar scopes see where it differs from the
    model's (``exportTo`` views included), and what those of every other namespace see when
    the root namespace has a Sidecar (None when it has none)."""
    if not chosen.by_namespace and chosen.default is None:
        return (), None
    services = {service.hostname: service for service in model.services}
    base = _Hosts.of(model.clusters, model.mesh_hosts, services)
    wanted: dict[str, SidecarScope] = dict(chosen.by_namespace)
    if chosen.default is not None:
        # namespaces that see the mesh differently, or whose own hosts "." may take
        others = {ns for view in model.views for ns in view.namespaces}
        if any(entry.namespace == CURRENT for entry in chosen.default.hosts):
            others.update(base.namespaces.values())
        for namespace in others:
            wanted.setdefault(namespace, chosen.default)
    found: dict[_Delta, list[str]] = {}
    for namespace, scope in sorted(wanted.items()):
        delta = _sidecar_delta(
            model, services, base, view=model.view_for(namespace), scope=scope, namespace=namespace
        )
        found.setdefault(delta, []).append(namespace)
    views = tuple(
        sorted(
            (_view(tuple(sorted(namespaces)), delta) for delta, namespaces in found.items()),
            key=lambda view: view.namespaces,
        )
    )
    default = None
    if chosen.default is not None:
        default = _view(
            (),
            _sidecar_delta(model, services, base, view=None, scope=chosen.default, namespace=""),
        )
    return views, default


_Delta = tuple[
    tuple[str, ...], tuple[Cluster, ...], tuple[ClusterEndpoints, ...], tuple[VirtualHost, ...]
]


def _view(namespaces: tuple[str, ...], delta: _Delta) -> MeshView:
    hosts, clusters, endpoints, mesh_hosts = delta
    return MeshView(namespaces, hosts, clusters, endpoints, mesh_hosts, SIDECAR_SCOPE)


@dataclass(frozen=True, slots=True)
class _Hosts:
    """The hosts of a set of clusters and virtual hosts: each host's namespace (its service's,
    or its VirtualService's for a host that is no service) and the hosts its routes send to."""

    namespaces: Mapping[str, str]
    targets: Mapping[str, frozenset[str]]

    @staticmethod
    def of(
        clusters: Iterable[Cluster],
        vhosts: Iterable[VirtualHost],
        services: Mapping[str, Service],
    ) -> _Hosts:
        by_name = {cluster.name: cluster for cluster in clusters}
        namespaces: dict[str, str] = {}
        for cluster in by_name.values():
            service = services.get(cluster.service)
            namespaces[cluster.service] = service.namespace if service is not None else ""
        targets: dict[str, set[str]] = {}
        for vhost in vhosts:
            key = host_key(vhost)
            if key not in namespaces:
                service = services.get(key)
                owner = service.namespace if service is not None else None
                if owner is None:
                    owner = vhost.source.partition("/")[0] if vhost.source else ""
                namespaces[key] = owner
            found = {
                target_cluster.service
                for target in _targets(vhost)
                if (target_cluster := by_name.get(target)) is not None
            }
            if found:
                targets.setdefault(key, set()).update(found)
        return _Hosts(namespaces, {key: frozenset(found) for key, found in targets.items()})


def _sidecar_delta(
    model: MeshModel,
    services: Mapping[str, Service],
    base: _Hosts,
    *,
    view: MeshView | None,
    scope: SidecarScope,
    namespace: str,
) -> _Delta:
    """The hosts the sidecars of ``namespace`` see otherwise than the model says (those of
    ``view`` and those ``scope`` hides), and their clusters, load assignments and virtual hosts
    for them."""
    egress = scope.egress_for(namespace)
    hosts = base
    changed: frozenset[str] = frozenset()
    if view is not None:  # what exportTo changes for the namespace (a few hosts)
        changed = frozenset(view.hosts)
        clusters = [c for c in model.clusters if c.service not in changed]
        vhosts = [v for v in model.mesh_hosts if host_key(v) not in changed]
        hosts = _Hosts.of([*clusters, *view.clusters], [*vhosts, *view.mesh_hosts], services)
    # a host no exportTo lets the namespace see (it is in ``changed``) stays hidden
    shown = {key for key, owner in hosts.namespaces.items() if egress.sees(owner, key)}
    # the services a received virtual host routes (or mirrors) to, as Istio infers them
    for key in list(shown):
        shown.update(hosts.targets.get(key, ()))
    hidden = (hosts.namespaces.keys() | changed) - shown
    if view is None:
        return (tuple(sorted(hidden)), (), (), ())
    kept = tuple(c for c in view.clusters if c.service in shown)
    names = frozenset(c.name for c in kept)
    return (
        tuple(sorted(changed | hidden)),
        kept,
        tuple(e for e in view.endpoints if e.cluster in names),
        tuple(v for v in view.mesh_hosts if host_key(v) in shown),
    )


def _targets(vhost: VirtualHost) -> Iterable[str]:
    for route in vhost.routes:
        for destination in route.destinations:
            yield destination.cluster
        if route.mirror is not None:
            yield route.mirror.cluster
        for mirror in route.mirrors:
            yield mirror.cluster


def scoped_by_sidecars(model: MeshModel) -> bool:
    """Whether a Sidecar scopes some sidecars of ``model``."""
    return bool(model.sidecar_views) or model.sidecar_default is not None


def routed_hosts(vhosts: Iterable[VirtualHost]) -> frozenset[str]:
    """The hostnames of the clusters ``vhosts`` route or mirror to (what a Sidecar's view takes
    in with them)."""
    # a cluster's name ends in its service's hostname (`translators.names.cluster_name`)
    return frozenset(name.rpartition("|")[2] for vhost in vhosts for name in _targets(vhost))


def with_sidecar_endpoints(model: MeshModel, services: Mapping[str, Service]) -> MeshModel:
    """``model`` with the load assignments of its Sidecar views made again from
    ``services``' endpoints."""
    if not model.sidecar_views and model.sidecar_default is None:
        return model
    default = model.sidecar_default
    return replace(
        model,
        sidecar_views=with_endpoints(model.sidecar_views, services),
        sidecar_default=with_endpoints((default,), services)[0] if default else None,
    )


def checked_sidecar(
    source: Source, obj: Mapping[str, Any]
) -> tuple[SidecarScope | None, list[Diagnostic]]:
    """A Sidecar object parsed and checked; None when it is invalid."""
    spec, found = parse_sidecar(obj)
    if spec is None:
        return None, found
    scope, more = check_sidecar(source, spec, obj.get("spec"))
    return scope, found + more
