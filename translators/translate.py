"""The public entry point: Kubernetes and Istio objects → `MeshModel` + diagnostics.

`translate` runs every resolver over the full set of objects. It applies the bad-input rule: an
object that is invalid now but was accepted before is translated from its last accepted version
(with a warning), a new invalid object is left out, and the rest of the mesh always updates. A
Service or DestinationRule whose change or removal would make a VirtualService that was accepted
invalid keeps its last accepted version too (with an error naming the VirtualService).
`translators.incremental` follows one change at a time to what it touches.
"""

from __future__ import annotations

import json
import operator
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from translators.api.networking_pb2 import VirtualService
from translators.delegation import expand_delegation
from translators.diagnostics import STILL_SERVING, Diagnostic, Severity
from translators.memo import Memo, MemoEntries
from translators.model import Cluster, ClusterEndpoints, MeshModel, Service, VirtualHost
from translators.names import CLUSTER_DOMAIN
from translators.objects import is_mapping
from translators.preflight import (
    destination_rule_problems,
    ingress_problems,
    virtual_service_problems,
)
from translators.resolve_ingress import (
    IngressRouting,
    IngressRules,
    ingress_classes,
    parse_ingress,
    resolve_ingress_hosts,
)
from translators.resolve_loadbalancers import resolve_load_balancers
from translators.resolve_routing import (
    DEFAULT_GATEWAY,
    DestinationRuleSpec,
    MeshAnswers,
    RoutingContext,
    Source,
    VirtualServiceRules,
    cluster_endpoints,
    compile_destination_rule,
    compile_virtual_service,
    index_destination_rules,
    resolve_routing,
    services_by_hostname,
)
from translators.resolve_scopes import mesh_views, public_rank
from translators.resolve_services import (
    RESOLVE_STEPS,
    ObjectKey,
    ObjectMeta,
    Services,
    ServiceSpec,
    object_meta,
    parse_service,
    resolve_services,
)
from translators.resolve_sidecars import (
    SidecarScope,
    checked_sidecar,
    choose_sidecars,
    sidecar_views,
)
from translators.spec import parse_destination_rule, parse_virtual_service
from translators.visibility import EXPORT_TO_ANNOTATION, ExportTo, service_export_to

T = TypeVar("T")
KubeObject = Mapping[str, Any]

DEGRADED = (
    "invalid, with no accepted version to fall back to: only its host and subsets are used"
    " (no traffic policy), so that routes to its subsets keep working"
)
ISTIO_GROUP = "networking.istio.io/"
# kind → the apiVersion (or API group prefix, ending in "/") the object must have
_KINDS: Mapping[str, str] = {
    "Service": "v1",
    "Pod": "v1",
    "EndpointSlice": "discovery.k8s.io/v1",
    "VirtualService": ISTIO_GROUP,
    "DestinationRule": ISTIO_GROUP,
    "Sidecar": ISTIO_GROUP,
    "Ingress": "networking.k8s.io/",
    "IngressClass": "networking.k8s.io/",
}


@dataclass(frozen=True, slots=True)
class Options:
    domain: str = CLUSTER_DOMAIN  # the cluster's DNS domain
    only_lb_class: bool = False  # serve only LoadBalancer Services of class splitplane.io/envoy
    # The gateways (namespace/name) whose bound VirtualServices the load-balancer fleet serves.
    gateway_names: frozenset[str] = frozenset({DEFAULT_GATEWAY})


@dataclass(frozen=True, slots=True)
class RoutingState:
    """What routing was resolved with, kept so that a change to one VirtualService can be
    routed again on its own (see `translators.incremental`)."""

    context: RoutingContext
    mesh_claims: Mapping[str, VirtualServiceRules]
    gateway_claims: Mapping[str, VirtualServiceRules]
    exports: Mapping[str, ExportTo]
    # The Ingresses accepted and what they made: their hosts take the routes of mesh hosts.
    ingresses: tuple[IngressRules, ...]
    edge: IngressRouting


@dataclass(frozen=True, slots=True)
class Translation:
    """One translation: the model, every diagnostic (sorted) and what was accepted.

    ``accepted`` holds the version of each VirtualService, DestinationRule, Service and Ingress
    and EndpointSlice that this translation used: the next translation falls back to it when that
    object turns invalid.
    """

    model: MeshModel
    diagnostics: tuple[Diagnostic, ...]
    accepted: Mapping[ObjectKey, KubeObject]
    options: Options = field(default_factory=Options)
    # What an endpoint change reuses (see `translators.incremental`): the services as specified
    # (without endpoints) and the diagnostics that do not depend on endpoints.
    service_specs: tuple[ServiceSpec, ...] = field(default=(), repr=False)
    static_diagnostics: tuple[Diagnostic, ...] = field(default=(), repr=False)
    # Per-object results the next translation reuses for objects that did not change.
    memo: MemoEntries = field(default_factory=dict, repr=False, compare=False)
    # The very objects the services' endpoints were resolved from (specs, slices, pods) and the
    # result: the next translation reuses it while the same objects come back.
    resolved_from: tuple[tuple[object, ...], ...] = field(default=(), repr=False, compare=False)
    resolved: Services | None = field(default=None, repr=False, compare=False)
    routing: RoutingState | None = field(default=None, repr=False, compare=False)
    # The Services and DestinationRules kept at their last accepted version (see `translate`).
    held_back: frozenset[ObjectKey] = field(default=frozenset(), repr=False, compare=False)
    # The VirtualServices those would break.
    holders: frozenset[ObjectKey] = field(default=frozenset(), repr=False, compare=False)

    @property
    def has_errors(self) -> bool:
        return any(d.is_error for d in self.diagnostics)


@dataclass(frozen=True, slots=True)
class _Objects:
    """The input sorted by kind; keyed kinds hold one object per key."""

    keyed: Mapping[str, Mapping[ObjectKey, tuple[ObjectMeta, KubeObject]]]
    unnamed: Mapping[str, tuple[KubeObject, ...]]  # keyed kinds without a usable name
    slices: tuple[KubeObject, ...]
    pods: tuple[KubeObject, ...]
    diagnostics: tuple[Diagnostic, ...]


def _sort_objects(objects: Iterable[object], kinds: frozenset[str], memo: Memo) -> _Objects:
    keyed: dict[str, dict[ObjectKey, tuple[ObjectMeta, KubeObject]]] = {}
    unnamed: dict[str, list[KubeObject]] = {}
    slices: list[KubeObject] = []
    pods: list[KubeObject] = []
    diagnostics: list[Diagnostic] = []
    versions = {kind: _KINDS[kind] for kind in kinds}
    for obj in objects:
        if not is_mapping(obj):
            continue
        kind = obj.get("kind")
        if not isinstance(kind, str):
            continue
        wanted = versions.get(kind)
        if wanted is None or not _api_version_fits(obj.get("apiVersion"), wanted):
            continue
        if kind == "EndpointSlice":
            slices.append(obj)
            continue
        if kind == "Pod":
            pods.append(obj)
            continue
        meta = memo.get("meta", obj, object_meta, obj)
        if meta is None:
            unnamed.setdefault(kind, []).append(obj)
            continue
        by_key = keyed.setdefault(kind, {})
        key = meta.key
        other = by_key.get(key)
        if other is None:
            by_key[key] = (meta, obj)
            continue
        diagnostics.append(
            Diagnostic(
                kind,
                meta.namespace,
                meta.name,
                "metadata.name",
                "given more than once; one version is used",
            )
        )
        if _canonical(obj) > _canonical(other[1]):
            by_key[key] = (meta, obj)
    return _Objects(
        keyed,
        {k: tuple(v) for k, v in unnamed.items()},
        tuple(slices),
        tuple(pods),
        tuple(diagnostics),
    )


def _api_version_fits(api_version: object, wanted: str) -> bool:
    """Whether ``api_version`` is ``wanted``, or in its API group when ``wanted`` ends in "/"."""
    if not isinstance(api_version, str):
        return False
    return api_version == wanted or (wanted[-1] == "/" and api_version.startswith(wanted))


def is_read(obj: KubeObject) -> bool:
    """Whether translation reads ``obj``: a kind it knows, with that kind's apiVersion."""
    kind = obj.get("kind")
    wanted = _KINDS.get(kind) if isinstance(kind, str) else None
    return wanted is not None and _api_version_fits(obj.get("apiVersion"), wanted)


def _canonical(obj: KubeObject) -> str:
    """A text that orders duplicate objects the same way whatever the input order."""
    try:
        return json.dumps(obj, sort_keys=True, default=str)
    except (TypeError, ValueError):  # keys of mixed types, or a value that refers to itself
        return repr(obj)


class _Acceptor:
    """Applies the bad-input rule per object and records the versions used."""

    def __init__(self, previous: Translation | None) -> None:
        self.previous = previous.accepted if previous is not None else {}
        self.accepted: dict[ObjectKey, KubeObject] = {}
        self.refused: list[ObjectKey] = []
        self.diagnostics: list[Diagnostic] = []

    def accept(
        self,
        entries: Mapping[ObjectKey, tuple[ObjectMeta, KubeObject]],
        unnamed: Iterable[KubeObject],
        check: Callable[[ObjectMeta | None, KubeObject], tuple[T | None, list[Diagnostic]]],
        degraded: Callable[[ObjectMeta, KubeObject], T | None] | None = None,
    ) -> list[T]:
        """The checked value of each object: the current version, else the last accepted one,
        else (with ``degraded``) what can still be taken from the current version."""
        values: list[T] = []
        for obj in unnamed:
            self.diagnostics.extend(check(None, obj)[1])
        for key in sorted(entries):
            meta, obj = entries[key]
            value, found = check(meta, obj)
            self.diagnostics.extend(found)
            if value is None and any(d.is_error for d in found):
                last = self.previous.get(key)
                if last is not None and last is not obj:
                    value, _ = check(object_meta(last), last)
                    if value is not None:
                        obj = last
                        self.diagnostics.append(
                            Diagnostic(
                                key.kind,
                                key.namespace,
                                key.name,
                                "",
                                STILL_SERVING,
                                Severity.WARNING,
                            )
                        )
            if value is not None:
                self.accepted[key] = obj
                values.append(value)
            else:
                self.refused.append(key)
                if degraded is not None and (value := degraded(meta, obj)) is not None:
                    self.diagnostics.append(
                        Diagnostic(
                            key.kind, key.namespace, key.name, "", DEGRADED, Severity.WARNING
                        )
                    )
                    values.append(value)
        return values


def _source(meta: ObjectMeta | None) -> Source:
    return Source(meta.namespace, meta.name, meta.created) if meta else Source("default", "")


def translate(
    objects: Iterable[KubeObject],
    previous: Translation | None = None,
    options: Options = Options(),
) -> Translation:
    """The mesh model and diagnostics for the full set of ``objects``.

    ``previous`` is the last translation: its accepted versions stand in for objects that are
    invalid now. Objects of other kinds are ignored; the result does not depend on input order.

    A Service or DestinationRule that changed or went away so that a VirtualService accepted last
    time is refused now (a subset it routes to is gone, its port, the service itself) is kept at
    its last accepted version too, with an error naming the VirtualService it would break.
    """
    objects = list(objects)
    translation, current = _translate(objects, previous, options)
    if previous is None:
        return translation
    kept, holders = _dependencies_to_keep(previous, translation, current)
    if not kept:
        return translation
    held_back = {key for key in kept if key in current}
    again = [
        obj
        for obj in objects
        if obj.get("kind") not in _DEPENDENCY_KINDS or _key_of(obj) not in held_back
    ]
    again += [previous.accepted[key] for key in sorted(kept)]
    translation, _ = _translate(again, previous, options)
    notes = tuple(
        Diagnostic(
            key.kind,
            key.namespace,
            key.name,
            "spec" if key in current else "metadata.name",
            f"{'changing' if key in current else 'removing'} it breaks {broken};"
            " still serving the last accepted version",
        )
        for key, broken in sorted(kept.items())
    )
    return replace(
        translation,
        diagnostics=tuple(sorted((*translation.diagnostics, *notes))),
        static_diagnostics=tuple(sorted((*translation.static_diagnostics, *notes))),
        held_back=frozenset(kept),
        holders=holders,
    )


_DEPENDENCY_KINDS = ("Service", "DestinationRule")


def _key_of(obj: KubeObject) -> ObjectKey | None:
    meta = object_meta(obj)
    return meta.key if meta is not None else None


def _dependencies_to_keep(
    previous: Translation, translation: Translation, current: _Given
) -> tuple[dict[ObjectKey, str], frozenset[ObjectKey]]:
    """The Services and DestinationRules to keep at their last accepted version, each with what
    its new version (or its removal) breaks: the VirtualServices accepted last time and refused
    now, though they are still there, and the services they name whose Service or
    DestinationRule changed or went away since. Also the keys of those VirtualServices."""
    broken = [
        key for key in current.refused if key.kind == "VirtualService" and key in previous.accepted
    ]
    if not broken:
        return {}, frozenset()
    changed = [
        key
        for key, last in previous.accepted.items()
        if key.kind in _DEPENDENCY_KINDS and (now := current.get(key)) is not last and now != last
    ]
    if not changed:
        return {}, frozenset()
    kept: dict[ObjectKey, str] = {}
    holders: set[ObjectKey] = set()
    for vs_key in broken:
        named = _services_named(previous.accepted[vs_key], vs_key.namespace)
        errors = [
            d
            for d in translation.diagnostics
            if d.is_error and (d.kind, d.namespace, d.name) == vs_key
        ]
        what = f"VirtualService {vs_key.namespace}/{vs_key.name}"
        if errors:
            what += f" ({errors[0].field}: {errors[0].message})"
        for key in changed:
            versions = (previous.accepted[key], current.get(key))
            if key in kept:
                continue
            if key.kind == "Service":
                hit = (key.namespace, key.name) in named
            else:
                hit = any(
                    _service_of(_rule_host(obj), key.namespace) in named
                    for obj in versions
                    if obj is not None
                )
            if hit:
                kept[key] = what
                holders.add(vs_key)
    return kept, frozenset(holders)


def _services_named(virtual_service: KubeObject, namespace: str) -> set[tuple[str, str]]:
    """The (namespace, name) of every service a VirtualService's hosts and destinations may
    name (every string under a ``host`` key, and ``spec.hosts``)."""
    hosts: list[object] = []
    spec = virtual_service.get("spec")
    if is_mapping(spec) and isinstance(spec.get("hosts"), list):
        hosts.extend(spec["hosts"])
    stack: list[object] = [spec]
    while stack:
        node = stack.pop()
        if is_mapping(node):
            hosts.append(node.get("host"))
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return {found for host in hosts if (found := _service_of(host, namespace)) is not None}


def _rule_host(rule: KubeObject) -> object:
    spec = rule.get("spec")
    return spec.get("host") if is_mapping(spec) else None


def _service_of(host: object, namespace: str) -> tuple[str, str] | None:
    """The (namespace, name) of the service a host may name: ``name``, ``name.namespace``..."""
    if not isinstance(host, str) or not host:
        return None
    parts = host.split(".")
    return (namespace, parts[0]) if len(parts) == 1 else (parts[1], parts[0])


@dataclass(frozen=True, slots=True)
class _Given:
    """What one translation was given, by key, and the keys it refused (invalid, and without a
    last accepted version that is valid)."""

    keyed: Mapping[str, Mapping[ObjectKey, tuple[ObjectMeta, KubeObject]]]
    refused: tuple[ObjectKey, ...]

    def __contains__(self, key: ObjectKey) -> bool:
        return key in self.keyed.get(key.kind, {})

    def get(self, key: ObjectKey) -> KubeObject | None:
        found = self.keyed.get(key.kind, {}).get(key)
        return found[1] if found is not None else None


def _translate(
    objects: Iterable[KubeObject],
    previous: Translation | None,
    options: Options,
) -> tuple[Translation, _Given]:
    """One translation of ``objects``, and what it was given."""
    domain = options.domain
    memo = Memo(previous.memo if previous is not None else None)
    objects_by_kind = _sort_objects(objects, frozenset(_KINDS), memo)
    acceptor = _Acceptor(previous)

    service_step = f"service/{domain}"

    def check_service(
        meta: ObjectMeta | None, obj: KubeObject
    ) -> tuple[ServiceSpec | None, list[Diagnostic]]:
        return memo.get(service_step, obj, parse_service, obj, domain, meta)

    specs = acceptor.accept(
        objects_by_kind.keyed.get("Service", {}),
        objects_by_kind.unnamed.get("Service", ()),
        check_service,
    )
    resolved_from = (tuple(specs), objects_by_kind.slices, objects_by_kind.pods)
    resolved = _resolved_before(previous, resolved_from, memo)
    if resolved is None:
        resolved = resolve_services(
            specs, objects_by_kind.slices, objects_by_kind.pods, memo, _accepted_slices(previous)
        )
    services = services_by_hostname(resolved.services)

    def compiled_rule(
        meta: ObjectMeta | None, obj: KubeObject
    ) -> tuple[DestinationRuleSpec | None, list[Diagnostic]]:
        spec, found = parse_destination_rule(obj)
        if spec is None:
            return None, found
        rule, more = compile_destination_rule(_source(meta), spec)
        if rule is None:
            return None, found + more
        rejected = destination_rule_problems(rule)
        return (None if rejected else rule), found + more + rejected

    def check_rule(
        meta: ObjectMeta | None, obj: KubeObject
    ) -> tuple[DestinationRuleSpec | None, list[Diagnostic]]:
        return memo.get("destination-rule", obj, compiled_rule, meta, obj)

    def subsets_only(meta: ObjectMeta, obj: KubeObject) -> DestinationRuleSpec | None:
        reduced = _subsets_only(obj)
        if reduced is None:
            return None
        return memo.get("destination-rule-subsets", obj, compiled_rule, meta, reduced)[0]

    rules = acceptor.accept(
        objects_by_kind.keyed.get("DestinationRule", {}),
        objects_by_kind.unnamed.get("DestinationRule", ()),
        check_rule,
        subsets_only,
    )
    index, rule_diagnostics = index_destination_rules(rules, services, domain)
    context = RoutingContext(services, index, domain, options.gateway_names)
    exports, export_diagnostics = _service_exports(specs, acceptor.accepted, memo)

    def check_virtual_service(
        meta: ObjectMeta | None, obj: KubeObject
    ) -> tuple[VirtualServiceRules | None, list[Diagnostic]]:
        return checked_virtual_service(memo, options, context, meta, obj)

    # Roots take their delegates' rules; delegates (no hosts) count only through a root.
    roots, delegation_diagnostics = expand_delegation(
        objects_by_kind.keyed.get("VirtualService", {})
    )
    acceptor.diagnostics.extend(delegation_diagnostics)
    virtual_services = acceptor.accept(
        roots,
        objects_by_kind.unnamed.get("VirtualService", ()),
        check_virtual_service,
    )
    routing = resolve_routing(
        services,
        index,
        virtual_services,
        domain,
        memo,
        visible=lambda hostname: hostname not in exports,
        precedence=public_rank,
    )
    views, view_diagnostics = mesh_views(services, exports, index, virtual_services, domain)

    # The load-balancer fleet: Ingresses of splitplane's class and LoadBalancer Services.
    classes = ingress_classes(
        obj for _, obj in objects_by_kind.keyed.get("IngressClass", {}).values()
    )

    def check_ingress(
        meta: ObjectMeta | None, obj: KubeObject
    ) -> tuple[IngressRules | None, list[Diagnostic]]:
        rules, found = parse_ingress(obj, _source(meta), classes)
        if rules is None:
            return None, found
        rejected = ingress_problems(rules)
        return (None if rejected else rules), found + rejected

    ingresses = acceptor.accept(
        objects_by_kind.keyed.get("Ingress", {}),
        objects_by_kind.unnamed.get("Ingress", ()),
        check_ingress,
    )
    edge = resolve_ingress_hosts(
        ingresses,
        services,
        routing.mesh_hosts,
        (host for vhost in routing.gateway_hosts for host in vhost.hosts),
        domain,
    )
    balancers = resolve_load_balancers(
        resolved.services,
        routing.tcp_routes,
        only_lb_class=options.only_lb_class,
        created={
            (meta.namespace, meta.name): meta.created
            for meta, _ in objects_by_kind.keyed.get("Service", {}).values()
        },
    )
    model = MeshModel(
        services=resolved.services,
        clusters=routing.clusters,
        endpoints=_endpoints(previous, routing.clusters, services),
        mesh_hosts=routing.mesh_hosts,
        gateway_hosts=routing.gateway_hosts + edge.hosts,
        gateway_tcp=balancers.listeners,
        tcp_routes=routing.tcp_routes,
        views=views,
    )
    model, sidecar_diagnostics = _with_sidecars(
        model, objects_by_kind.keyed.get("Sidecar", {}), objects_by_kind.unnamed, acceptor, memo
    )
    if previous is not None:
        model = reuse_unchanged(previous.model, model)
    static = (
        *objects_by_kind.diagnostics,
        *acceptor.diagnostics,
        *export_diagnostics,
        *rule_diagnostics,
        *routing.diagnostics,
        *(d for d in view_diagnostics if d not in routing.diagnostics),
        *edge.diagnostics,
        *balancers.diagnostics,
        *sidecar_diagnostics,
    )
    translation = Translation(
        model=model,
        diagnostics=tuple(sorted((*static, *resolved.diagnostics))),
        accepted={**acceptor.accepted, **resolved.accepted},
        options=options,
        service_specs=tuple(specs),
        static_diagnostics=tuple(sorted(static)),
        memo=memo.entries,
        resolved_from=resolved_from,
        resolved=resolved,
        routing=RoutingState(
            context, routing.mesh_claims, routing.gateway_claims, exports, tuple(ingresses), edge
        ),
    )
    return translation, _Given(objects_by_kind.keyed, tuple(acceptor.refused))


def checked_virtual_service(
    memo: Memo, options: Options, context: RoutingContext, meta: ObjectMeta | None, obj: KubeObject
) -> tuple[VirtualServiceRules | None, list[Diagnostic]]:
    """A VirtualService object's rules (None when it is invalid) and what is wrong with it."""
    spec, found = memo.get("virtual-service", obj, parse_virtual_service, obj)
    if spec is None:
        return None, found
    compiled, more, _ = memo.get_checked(
        f"virtual-service-rules/{','.join(sorted(options.gateway_names))}",
        obj,
        lambda held: held[2].still_hold(context),
        _checked_virtual_service,
        _source(meta),
        spec,
        context,
    )
    return compiled, found + more


def _with_sidecars(
    model: MeshModel,
    entries: Mapping[ObjectKey, tuple[ObjectMeta, KubeObject]],
    unnamed: Mapping[str, tuple[KubeObject, ...]],
    acceptor: _Acceptor,
    memo: Memo,
) -> tuple[MeshModel, tuple[Diagnostic, ...]]:
    """``model`` with what the Sidecars scope (see `translators.resolve_sidecars`)."""

    def check(
        meta: ObjectMeta | None, obj: KubeObject
    ) -> tuple[SidecarScope | None, list[Diagnostic]]:
        return memo.get("sidecar", obj, checked_sidecar, _source(meta), obj)

    scopes = acceptor.accept(entries, unnamed.get("Sidecar", ()), check)
    chosen = choose_sidecars(scopes)
    views, default = sidecar_views(model, chosen)
    return replace(model, sidecar_views=views, sidecar_default=default), chosen.diagnostics


def _subsets_only(obj: KubeObject) -> KubeObject | None:
    """A DestinationRule object reduced to its host and its subsets' names and labels (None
    when it has no subsets to keep)."""
    spec = obj.get("spec")
    if not is_mapping(spec):
        return None
    subsets = spec.get("subsets")
    if not isinstance(subsets, list) or not subsets:
        return None
    kept = [
        {key: subset[key] for key in ("name", "labels") if key in subset}
        for subset in subsets
        if is_mapping(subset)
    ]
    return {**obj, "spec": {"host": spec.get("host"), "subsets": kept}}


def _checked_virtual_service(
    source: Source, spec: VirtualService, context: RoutingContext
) -> tuple[VirtualServiceRules | None, list[Diagnostic], MeshAnswers]:
    """`compile_virtual_service`, and then whether Envoy takes the routes of each of its rules:
    a VirtualService with a rule Envoy would reject is invalid (its last accepted version keeps
    serving), before its routes are put in a route table with anybody else's."""
    compiled, found, answers = compile_virtual_service(source, spec, context)
    if compiled is None:
        return None, found, answers
    rejected = virtual_service_problems(compiled)
    return (None if rejected else compiled), found + rejected, answers


def _service_exports(
    specs: Iterable[ServiceSpec], accepted: Mapping[ObjectKey, KubeObject], memo: Memo
) -> tuple[dict[str, ExportTo], list[Diagnostic]]:
    """The Services not exported to every namespace (by hostname), from the annotation of the
    version of each that was accepted; and what is wrong with an annotation."""
    exports: dict[str, ExportTo] = {}
    diagnostics: list[Diagnostic] = []
    for spec in specs:
        obj = accepted.get(ObjectKey("Service", spec.namespace, spec.name))
        if obj is None:
            continue
        export, found = memo.get("service-export", obj, _service_export, obj, spec)
        diagnostics.extend(found)
        if not export.everywhere:
            exports[spec.hostname] = export
    return exports, diagnostics


def _service_export(obj: KubeObject, spec: ServiceSpec) -> tuple[ExportTo, list[Diagnostic]]:
    metadata = obj.get("metadata")
    annotations = metadata.get("annotations") if is_mapping(metadata) else None
    found: list[Diagnostic] = []

    def problem(message: str) -> None:
        found.append(
            Diagnostic(
                "Service",
                spec.namespace,
                spec.name,
                f"metadata.annotations[{EXPORT_TO_ANNOTATION}]",
                message,
                Severity.WARNING,
            )
        )

    mapping = annotations if is_mapping(annotations) else None
    return service_export_to(mapping, spec.namespace, problem), found


def _resolved_before(
    previous: Translation | None, resolved_from: tuple[tuple[object, ...], ...], memo: Memo
) -> Services | None:
    """The previous translation's services if they were resolved from the very same objects."""
    if previous is None or previous.resolved is None:
        return None
    before = previous.resolved_from
    if len(before) != len(resolved_from) or not all(
        len(old) == len(new) and all(map(operator.is_, old, new))
        for old, new in zip(before, resolved_from, strict=True)
    ):
        return None
    for step in RESOLVE_STEPS:
        memo.keep(step)
    return previous.resolved


def _accepted_slices(previous: Translation | None) -> Mapping[ObjectKey, KubeObject]:
    """The EndpointSlices ``previous`` used: an invalid one now is read as it was then."""
    return previous.accepted if previous is not None else {}


def _endpoints(
    previous: Translation | None,
    clusters: tuple[Cluster, ...],
    services: Mapping[str, Service],
) -> tuple[ClusterEndpoints, ...]:
    """The clusters' load assignments; the previous ones while the clusters are the very same
    objects as last time (a change to routes only). A cluster is the same object only while its
    service is (see `resolve_routing`), and so are that service's endpoints."""
    if (
        previous is not None
        and len(clusters) == len(previous.model.clusters)
        and all(map(operator.is_, clusters, previous.model.clusters))
    ):
        return previous.model.endpoints
    return cluster_endpoints(clusters, services)


def reuse_unchanged(previous: MeshModel, model: MeshModel) -> MeshModel:
    """``model`` with every part equal to ``previous``'s replaced by the previous object.

    Builders and the serializer recognize unchanged parts by identity, so a change to one
    VirtualService rebuilds that service's routes, not every cluster and virtual host.
    """
    return MeshModel(
        services=_same_or_new(previous.services, model.services),
        clusters=_same_or_new(previous.clusters, model.clusters),
        endpoints=_same_or_new(previous.endpoints, model.endpoints),
        mesh_hosts=_hosts(previous.mesh_hosts, model.mesh_hosts),
        gateway_hosts=_hosts(previous.gateway_hosts, model.gateway_hosts),
        gateway_tcp=_same_or_new(previous.gateway_tcp, model.gateway_tcp),
        tcp_routes=_same_or_new(previous.tcp_routes, model.tcp_routes),
        views=_same_or_new(previous.views, model.views),
        sidecar_views=_same_or_new(previous.sidecar_views, model.sidecar_views),
        sidecar_default=(
            previous.sidecar_default
            if previous.sidecar_default == model.sidecar_default
            else model.sidecar_default
        ),
    )


def _same_or_new(previous: tuple[T, ...], current: tuple[T, ...]) -> tuple[T, ...]:
    return previous if previous == current else current


def _hosts(
    previous: tuple[VirtualHost, ...], current: tuple[VirtualHost, ...]
) -> tuple[VirtualHost, ...]:
    """Virtual hosts, each unchanged one being the previous object (routes are built per host)."""
    if previous == current:
        return previous
    before = {vhost.name: vhost for vhost in previous}
    return tuple(
        old if (old := before.get(vhost.name)) is not None and old == vhost else vhost
        for vhost in current
    )
