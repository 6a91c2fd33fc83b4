"""Translation one change at a time, at a cost that follows what the change touches.

A `Translator` holds the current objects by key and the last translation. Two kinds of change,
the ones a running mesh makes all day, are translated from what they touch alone:

- EndpointSlices and Pods: the endpoints of the services they belong to (by the slice's service
  label, by the pods' labels and the services' selectors, by the slices that name a pod) are
  resolved again, and the load assignments of those services' clusters made again;
- one VirtualService whose rules changed, but not its hosts, gateways, ``exportTo`` or age, and
  that routes every host it names alone: its virtual hosts are made again.

Every other change, and any of these whose effects reach further (a view of the mesh of some
namespace, an Ingress, a delegation, a VirtualService that became invalid...), is a full
`translate` with the last translation as ``previous``. Both give the same translation: the tests
compare them change by change.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from translators.delegation import is_delegate
from translators.diagnostics import Diagnostic
from translators.memo import Memo, MemoEntries
from translators.model import (
    Cluster,
    EndpointsChange,
    MeshModel,
    Service,
    VirtualHost,
    labels_match,
)
from translators.objects import is_mapping
from translators.resolve_ingress import resolve_ingress_hosts
from translators.resolve_routing import claimed_hosts, cluster_endpoints
from translators.resolve_services import (
    ObjectKey,
    Services,
    ServiceSpec,
    namespace_of,
    object_meta,
    pod_labels,
    resolve_services,
    slice_owner,
    slice_pods,
)
from translators.resolve_sidecars import routed_hosts, scoped_by_sidecars, with_sidecar_endpoints
from translators.translate import (
    Options,
    Translation,
    checked_virtual_service,
    is_read,
    translate,
)

KubeObject = Mapping[str, Any]
Key = tuple[str, str, str]  # kind, namespace, name
ServiceName = tuple[str, str]  # namespace, name

ENDPOINT_KINDS = frozenset({"EndpointSlice", "Pod"})


class Translator:
    """The objects by key and their last translation; each change translated from the last.

    ``paths`` counts how changes were translated: ``full``, ``endpoints`` or ``routes``.
    Not thread-safe: one change at a time.
    """

    def __init__(self, options: Options | None = None) -> None:
        self.options = options or Options()
        self.objects: dict[Key, KubeObject] = {}
        self.translation: Translation | None = None
        self.paths: Counter[str] = Counter()
        self._index: _Index | None = None
        # Whether the objects hold a change the last translation does not have (one whose
        # translation failed): the next change is then translated in full.
        self._behind = False

    def reset(self, objects: Mapping[Key, KubeObject]) -> Translation:
        """Translate ``objects`` (every object, by key) in full, after the last translation."""
        self.objects = dict(objects)
        self._index = None
        return self._full()

    def apply(self, changes: Mapping[Key, KubeObject | None]) -> Translation:
        """Translate after ``changes`` (each key's new object, None for one that is gone)."""
        before = {key: self.objects.get(key) for key in changes}
        for key, obj in changes.items():
            if obj is None:
                self.objects.pop(key, None)
            else:
                self.objects[key] = obj
        if self._index is not None:
            self._index.update(before, changes)
        previous = self.translation
        if previous is None or not changes or self._behind:
            return self._full()
        self._behind = True  # until this change is translated: a failure leaves it out
        kinds = {key[0] for key in changes}
        found: Translation | None = None
        path = ""
        if kinds <= ENDPOINT_KINDS:
            found, path = self._endpoints_changed(previous, before, changes), "endpoints"
        elif len(changes) == 1 and kinds == {"VirtualService"}:
            ((key, obj),) = changes.items()
            found, path = self._rules_changed(previous, key, before[key], obj), "routes"
        if found is None:
            return self._full()
        self.paths[path] += 1
        self.translation = found
        self._behind = False
        return found

    @property
    def prepared(self) -> bool:
        """Whether the objects are indexed for the next change (see `prepare`)."""
        return self._index is not None and self._index.positioned

    def prepare(self) -> None:
        """Index the objects and the last translation now, rather than on the first change
        that needs them (a cold start leaves that to later, to publish sooner)."""
        if self.translation is not None:
            self._index_of().positions(self.translation.model)

    def _full(self) -> Translation:
        self._behind = True
        self.paths["full"] += 1
        self.translation = translate(self.objects.values(), self.translation, self.options)
        self._behind = False
        return self.translation

    def _index_of(self) -> _Index:
        if self._index is None:
            self._index = _Index(self.objects)
        return self._index

    # -- EndpointSlices and Pods ---------------------------------------------------------------

    def _endpoints_changed(
        self,
        previous: Translation,
        before: Mapping[Key, KubeObject | None],
        changes: Mapping[Key, KubeObject | None],
    ) -> Translation | None:
        if previous.resolved is None:
            return None
        index = self._index_of()
        specs = index.specs(previous.service_specs)
        affected: set[ServiceName] = set()
        slice_keys: set[Key] = set()
        for key, now in changes.items():
            versions = [obj for obj in (before[key], now) if obj is not None]
            for obj in versions:
                meta = object_meta(obj)
                if meta is None or tuple(meta.key) != key or not is_read(obj):
                    return None  # no usable name, or not what it says: translated in full
            if key[0] == "EndpointSlice":
                slice_keys.add(key)
                for obj in versions:
                    owner = slice_owner(obj)
                    if owner is None:
                        return None
                    affected.add(owner)
            else:
                for obj in versions:
                    affected.update(specs.selecting(key[1], pod_labels(obj)))
                affected.update(index.referring((key[1], key[2])))
        names = sorted(affected)
        chosen = [spec for name in names if (spec := specs.by_name.get(name)) is not None]
        slices: list[KubeObject] = []
        pods: dict[Key, KubeObject] = {}
        for name in names:
            for slice_key, obj in sorted(index.slices_of.get(name, {}).items()):
                meta = object_meta(obj)
                if meta is None or tuple(meta.key) != slice_key:
                    return None  # its diagnostics name another key than the store's
                slice_keys.add(slice_key)
                slices.append(obj)
                for pod in slice_pods(obj):
                    found = self.objects.get(("Pod", *pod))
                    if found is not None and is_read(found):
                        pods[("Pod", *pod)] = found
        for spec in chosen:
            if spec.selector:
                namespace, (label, value) = spec.namespace, spec.selector[0]
                for pod_key in index.pods_by_label.get((namespace, label, value), ()):
                    pods[pod_key] = self.objects[pod_key]
        memo = Memo(previous.memo)
        resolved = resolve_services(
            chosen, slices, [pods[key] for key in sorted(pods)], memo, previous.accepted
        )
        model = previous.model
        positions = index.positions(model)
        services = list(model.services)
        fresh: dict[str, Service] = {}
        for service in resolved.services:
            at = positions.services.get(service.hostname)
            if at is None:
                return None
            services[at] = service
            fresh[service.hostname] = service
        clusters = [c for hostname in fresh for c in positions.clusters.get(hostname, ())]
        endpoints = list(model.endpoints)
        replaced: list[int] = []
        for assignment in cluster_endpoints(clusters, fresh):
            at = positions.endpoints.get(assignment.cluster)
            if at is None:
                return None
            if endpoints[at] != assignment:
                endpoints[at] = assignment
                replaced.append(at)
        views = model.views
        if any(not fresh.keys().isdisjoint(view.hosts) for view in views):
            everyone = {s.hostname: s for s in services}
            views = tuple(
                view
                if fresh.keys().isdisjoint(view.hosts)
                else replace(view, endpoints=cluster_endpoints(view.clusters, everyone))
                for view in views
            )
        touched = {("Service", *name) for name in names} | slice_keys
        kept = [d for d in previous.resolved.diagnostics if _key(d) not in touched]
        resolved_diagnostics = tuple(sorted((*kept, *resolved.diagnostics)))
        accepted = _with_changes(
            previous.accepted, resolved.accepted, [ObjectKey(*k) for k in slice_keys]
        )
        result = tuple(endpoints)
        new_model = replace(
            model,
            services=tuple(services),
            endpoints=result,
            views=views,
            endpoints_change=EndpointsChange(model.endpoints, result, tuple(sorted(replaced))),
        )
        if new_model.sidecar_views or new_model.sidecar_default is not None:
            new_model = with_sidecar_endpoints(new_model, {s.hostname: s for s in services})
        index.carry_positions(model, new_model)
        stale = [obj for obj in before.values() if obj is not None]
        return replace(
            previous,
            model=new_model,
            diagnostics=tuple(sorted((*previous.static_diagnostics, *resolved_diagnostics))),
            accepted=accepted,
            memo=_merged(previous.memo, memo, stale),
            resolved_from=(),
            resolved=Services(tuple(services), resolved_diagnostics),
        )

    # -- one VirtualService's rules ------------------------------------------------------------

    def _rules_changed(
        self,
        previous: Translation,
        key: Key,
        old: KubeObject | None,
        new: KubeObject | None,
    ) -> Translation | None:
        state = previous.routing
        if state is None or ObjectKey(*key) in previous.holders:
            return None  # its change may let go of what is held back for it
        if old is None or new is None or previous.accepted.get(ObjectKey(*key)) is not old:
            return None
        if any(is_delegate(obj) or _delegates(obj) or not is_read(obj) for obj in (old, new)):
            return None
        old_meta, new_meta = object_meta(old), object_meta(new)
        if old_meta is None or new_meta is None or tuple(new_meta.key) != key:
            return None
        memo = Memo(previous.memo)
        options, context = previous.options, state.context
        old_rules, old_found = checked_virtual_service(memo, options, context, old_meta, old)
        new_rules, new_found = checked_virtual_service(memo, options, context, new_meta, new)
        if old_rules is None or new_rules is None or any(d.is_error for d in new_found):
            return None
        same_shape = (
            old_rules.source == new_rules.source
            and old_rules.hosts == new_rules.hosts
            and old_rules.hostnames == new_rules.hostnames
            and old_rules.mesh == new_rules.mesh
            and old_rules.gateway == new_rules.gateway
            and old_rules.export_to == new_rules.export_to
            and old_rules.export_to.everywhere
            and not old_rules.tcp
            and not new_rules.tcp
        )
        if not same_shape:
            return None
        mesh_keys = [
            name or host for host, name in zip(old_rules.hosts, old_rules.hostnames, strict=True)
        ]
        if old_rules.mesh and any(state.mesh_claims.get(k) is not old_rules for k in mesh_keys):
            return None
        gateway_keys = old_rules.hosts if old_rules.gateway else ()
        if any(state.gateway_claims.get(host) is not old_rules for host in gateway_keys):
            return None
        model = previous.model
        if any(k in state.exports for k in mesh_keys) or any(
            not set(view.hosts).isdisjoint(mesh_keys) for view in model.views
        ):
            return None
        said = sorted(d for d in previous.diagnostics if _key(d) == key)
        if said != sorted(old_found):
            return None
        services = context.services
        old_mesh, old_gateway = claimed_hosts(
            old_rules, services, context.domain, Memo(previous.memo)
        )
        new_mesh, new_gateway = claimed_hosts(new_rules, services, context.domain, memo)
        if scoped_by_sidecars(model) and routed_hosts(old_mesh) != routed_hosts(new_mesh):
            return None  # a Sidecar's view takes in the services routes go to
        index = self._index_of()
        positions = index.positions(model)
        mesh_hosts = _spliced(model.mesh_hosts, positions.mesh_hosts, old_mesh, new_mesh)
        gateway_hosts = _spliced(
            model.gateway_hosts, positions.gateway_hosts, old_gateway, new_gateway
        )
        if mesh_hosts is None or gateway_hosts is None:
            return None
        edge = state.edge
        if state.ingresses:  # an Ingress backend's routes are its VirtualService's
            routed = gateway_hosts[: len(gateway_hosts) - len(edge.hosts)]
            edge = resolve_ingress_hosts(
                state.ingresses,
                services,
                mesh_hosts,
                (host for vhost in routed for host in vhost.hosts),
                context.domain,
            )
            if edge.diagnostics != state.edge.diagnostics:
                return None
            edge = replace(edge, hosts=_same_hosts(state.edge.hosts, edge.hosts))
            gateway_hosts = routed + edge.hosts
        new_model = replace(model, mesh_hosts=mesh_hosts, gateway_hosts=gateway_hosts)
        index.carry_positions(model, new_model)
        accepted = _with_changes(previous.accepted, {ObjectKey(*key): new})
        claims = dict(state.mesh_claims)
        claims.update(dict.fromkeys(mesh_keys if new_rules.mesh else (), new_rules))
        gateway_claims = dict(state.gateway_claims)
        gateway_claims.update(dict.fromkeys(gateway_keys, new_rules))
        return replace(
            previous,
            model=new_model,
            diagnostics=_replaced(previous.diagnostics, key, new_found),
            static_diagnostics=_replaced(previous.static_diagnostics, key, new_found),
            accepted=accepted,
            memo=_merged(previous.memo, memo, [old]),
            routing=replace(state, mesh_claims=claims, gateway_claims=gateway_claims, edge=edge),
        )


class _Overlay(Mapping[ObjectKey, KubeObject]):
    """A mapping made of another and a few changes to it: changing a few keys of a mapping
    of ten thousands does not copy it."""

    __slots__ = ("base", "gone", "length", "sets")

    def __init__(
        self,
        base: Mapping[ObjectKey, KubeObject],
        sets: dict[ObjectKey, KubeObject],
        gone: set[ObjectKey],
    ) -> None:
        self.base, self.sets, self.gone = base, sets, gone
        self.length = len(base) - len(gone) + sum(1 for key in sets if key not in base)

    def __getitem__(self, key: ObjectKey) -> KubeObject:
        found = self.sets.get(key)
        if found is not None:
            return found
        if key in self.gone:
            raise KeyError(key)
        return self.base[key]

    def __iter__(self) -> Iterator[ObjectKey]:
        sets, gone = self.sets, self.gone
        yield from (key for key in self.base if key not in gone and key not in sets)
        yield from sets

    def __len__(self) -> int:
        return self.length


OVERLAY_LIMIT = 1024  # changes an overlay holds before it is made one mapping again


def _with_changes(
    mapping: Mapping[ObjectKey, KubeObject],
    updates: Mapping[ObjectKey, KubeObject],
    removed: Iterable[ObjectKey] = (),
) -> Mapping[ObjectKey, KubeObject]:
    """``mapping`` with ``removed`` keys taken out and ``updates`` put in."""
    if isinstance(mapping, _Overlay):
        base, sets, gone = mapping.base, dict(mapping.sets), set(mapping.gone)
    else:
        base, sets, gone = mapping, {}, set()
    for key in removed:
        sets.pop(key, None)
        if key in base:
            gone.add(key)
    for key, value in updates.items():
        sets[key] = value
        gone.discard(key)
    if len(sets) + len(gone) > OVERLAY_LIMIT:
        return dict(_Overlay(base, sets, gone).items())
    return _Overlay(base, sets, gone)


def _key(diagnostic: Diagnostic) -> Key:
    return (diagnostic.kind, diagnostic.namespace, diagnostic.name)


def _replaced(
    diagnostics: Sequence[Diagnostic], key: Key, found: Iterable[Diagnostic]
) -> tuple[Diagnostic, ...]:
    """``diagnostics`` with those about ``key`` replaced by ``found`` (sorted)."""
    return tuple(sorted((*(d for d in diagnostics if _key(d) != key), *found)))


def _same_hosts(
    before: tuple[VirtualHost, ...], after: tuple[VirtualHost, ...]
) -> tuple[VirtualHost, ...]:
    """``after``, each virtual host equal to the one at its place in ``before`` being that one."""
    if before == after:
        return before
    if len(before) != len(after):
        return after
    return tuple(old if old == new else new for old, new in zip(before, after, strict=True))


def _delegates(obj: KubeObject) -> bool:
    """Whether a VirtualService hands a rule over to another (``delegate``)."""
    spec = obj.get("spec")
    http = spec.get("http") if is_mapping(spec) else None
    return isinstance(http, list) and any(is_mapping(r) and "delegate" in r for r in http)


def _spliced(
    hosts: tuple[VirtualHost, ...],
    positions: Mapping[str, int],
    old: Sequence[VirtualHost],
    new: Sequence[VirtualHost],
) -> tuple[VirtualHost, ...] | None:
    """``hosts`` with each of ``old`` replaced by the one of ``new`` of the same name; None when
    the names differ or ``old`` is not what ``hosts`` holds."""
    if [v.name for v in old] != [v.name for v in new]:
        return None
    if not new:
        return hosts
    out = list(hosts)
    for before, after in zip(old, new, strict=True):
        at = positions.get(before.name)
        if at is None or out[at] != before:
            return None
        if after != before:
            out[at] = after
    return tuple(out)


def _merged(previous: MemoEntries, memo: Memo, stale: Iterable[object]) -> MemoEntries:
    """The previous translation's memo with this one's results, without those of ``stale``
    objects (the versions a change replaced). The per-step tables are updated in place: a memo
    is handed from one translation to the next, and an entry only saves work."""
    out = dict(previous)
    for step, entries in memo.entries.items():
        held = out.get(step)
        if isinstance(held, dict):
            held.update(entries)
        else:
            out[step] = dict(entries)
    for obj in stale:
        for held in out.values():
            found = held.get(id(obj))
            if found is not None and found[0] is obj and isinstance(held, dict):
                del held[id(obj)]
    return out


@dataclass(frozen=True, slots=True)
class _Positions:
    """Where each service, cluster's load assignment and virtual host is in a model's tuples."""

    services: dict[str, int]
    clusters: dict[str, list[Cluster]]  # by service hostname
    endpoints: dict[str, int]
    mesh_hosts: dict[str, int]
    gateway_hosts: dict[str, int]


def _positions(model: MeshModel) -> _Positions:
    clusters: dict[str, list[Cluster]] = defaultdict(list)
    for cluster in model.clusters:
        if cluster.uses_eds:
            clusters[cluster.service].append(cluster)
    return _Positions(
        services={s.hostname: i for i, s in enumerate(model.services)},
        clusters=dict(clusters),
        endpoints={e.cluster: i for i, e in enumerate(model.endpoints)},
        mesh_hosts={v.name: i for i, v in enumerate(model.mesh_hosts)},
        gateway_hosts={v.name: i for i, v in enumerate(model.gateway_hosts)},
    )


def _model_key(model: MeshModel) -> tuple[int, ...]:
    return (
        id(model.services),
        id(model.clusters),
        id(model.endpoints),
        id(model.mesh_hosts),
        id(model.gateway_hosts),
    )


class _Specs:
    """The services as specified, by name and by the first label pair of their selector."""

    def __init__(self, specs: Sequence[ServiceSpec]) -> None:
        self.source = specs
        self.by_name: dict[ServiceName, ServiceSpec] = {}
        self._by_label: dict[tuple[str, str, str], list[ServiceSpec]] = defaultdict(list)
        for spec in specs:
            self.by_name[spec.namespace, spec.name] = spec
            if spec.selector:
                label, value = spec.selector[0]
                self._by_label[spec.namespace, label, value].append(spec)

    def selecting(self, namespace: str, labels: Sequence[tuple[str, str]]) -> list[ServiceName]:
        """The services of ``namespace`` whose selector the labels match."""
        return [
            (spec.namespace, spec.name)
            for pair in labels
            for spec in self._by_label.get((namespace, *pair), ())
            if labels_match(spec.selector, tuple(labels))
        ]


class _Index:
    """The objects' relations a change is followed along: slices by service, pods by label and
    by the slices that name them; and positions in the current model."""

    def __init__(self, objects: Mapping[Key, KubeObject]) -> None:
        self.slices_of: dict[ServiceName, dict[Key, KubeObject]] = defaultdict(dict)
        self.pods_by_label: dict[tuple[str, str, str], set[Key]] = defaultdict(set)
        self._naming: dict[tuple[str, str], set[Key]] = defaultdict(set)  # pod → slices
        self._owners: dict[Key, ServiceName] = {}
        self._specs: _Specs | None = None
        self._positions: tuple[tuple[int, ...], _Positions] | None = None
        for key, obj in objects.items():
            self._add(key, obj)

    def update(
        self, before: Mapping[Key, KubeObject | None], after: Mapping[Key, KubeObject | None]
    ) -> None:
        for key, obj in before.items():
            if obj is not None:
                self._remove(key, obj)
        for key, obj in after.items():
            if obj is not None:
                self._add(key, obj)

    def specs(self, specs: Sequence[ServiceSpec]) -> _Specs:
        if self._specs is None or self._specs.source is not specs:
            self._specs = _Specs(specs)
        return self._specs

    def referring(self, pod: tuple[str, str]) -> set[ServiceName]:
        """The services whose slices name ``pod``."""
        return {owner for key in self._naming.get(pod, ()) if (owner := self._owners.get(key))}

    def positions(self, model: MeshModel) -> _Positions:
        held = self._positions
        if held is None or held[0] != _model_key(model):
            held = self._positions = (_model_key(model), _positions(model))
        return held[1]

    @property
    def positioned(self) -> bool:
        return self._positions is not None

    def carry_positions(self, before: MeshModel, after: MeshModel) -> None:
        """``after`` holds what ``before`` held, in the same places."""
        held = self._positions
        if held is not None and held[0] == _model_key(before):
            self._positions = (_model_key(after), held[1])

    def _add(self, key: Key, obj: KubeObject) -> None:
        if not is_read(obj):
            return
        kind = key[0]
        if kind == "EndpointSlice":
            owner = slice_owner(obj)
            if owner is not None:
                self.slices_of[owner][key] = obj
                self._owners[key] = owner
            for pod in slice_pods(obj):
                self._naming[pod].add(key)
        elif kind == "Pod":
            namespace = namespace_of(obj)
            for label, value in pod_labels(obj):
                self.pods_by_label[namespace, label, value].add(key)

    def _remove(self, key: Key, obj: KubeObject) -> None:
        if not is_read(obj):
            return
        kind = key[0]
        if kind == "EndpointSlice":
            owner = self._owners.pop(key, None)
            if owner is not None:
                held = self.slices_of.get(owner)
                if held is not None:
                    held.pop(key, None)
                    if not held:
                        del self.slices_of[owner]
            for pod in slice_pods(obj):
                naming = self._naming.get(pod)
                if naming is not None:
                    naming.discard(key)
                    if not naming:
                        del self._naming[pod]
        elif kind == "Pod":
            namespace = namespace_of(obj)
            for label, value in pod_labels(obj):
                pods = self.pods_by_label.get((namespace, label, value))
                if pods is not None:
                    pods.discard(key)
                    if not pods:
                        del self.pods_by_label[namespace, label, value]
