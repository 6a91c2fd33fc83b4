"""Service + EndpointSlice + Pod objects → `Service` models with per-port ready endpoints.

Endpoints are computed the way Kubernetes' own controllers compute them: from the EndpointSlices
labelled ``kubernetes.io/service-name`` when a service has any, otherwise from the ready Pods its
selector matches. Objects are plain dicts exactly as YAML or the Kubernetes API gives them; nothing
here raises on user input, every problem is a `Diagnostic`.

Resolution is in two steps so that the last good version of a Service can keep serving:
`parse_service` validates one Service object into a `ServiceSpec` (no endpoints), and
`resolve_services` adds the endpoints of the current slices and pods to the chosen specs.
"""

from __future__ import annotations

import operator
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple

from translators.diagnostics import STILL_SERVING, Diagnostic, Severity
from translators.memo import Memo
from translators.model import (
    Endpoint,
    Labels,
    Protocol,
    Service,
    ServicePort,
    labels_match,
    labels_of,
)
from translators.names import CLUSTER_DOMAIN, service_hostname
from translators.objects import is_mapping

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
# Memo steps: parsed EndpointSlices, parsed Pods, each service with its endpoints.
SLICE_STEP, POD_STEP, SERVICE_STEP = "slice", "pod", "service-endpoints"
RESOLVE_STEPS = (SLICE_STEP, POD_STEP, SERVICE_STEP)
DEFAULT_NAMESPACE = "default"

# appProtocol values and Istio port-name prefixes, and the protocol each means.
_PROTOCOLS: Mapping[str, Protocol] = {
    "http": Protocol.HTTP,
    "http2": Protocol.HTTP2,
    "h2c": Protocol.HTTP2,
    "kubernetes.io/h2c": Protocol.HTTP2,
    "grpc": Protocol.GRPC,
    "grpc-web": Protocol.HTTP,
    "kubernetes.io/ws": Protocol.HTTP,
    "tcp": Protocol.TCP,
    "https": Protocol.TCP,
    "tls": Protocol.TCP,
    "kubernetes.io/wss": Protocol.TCP,
    "mongo": Protocol.TCP,
    "mysql": Protocol.TCP,
    "redis": Protocol.TCP,
}
_PORT_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,13}[a-z0-9])?$")
_IANA_SVC_NAME = re.compile(r"^(?=.*[a-z])[a-z0-9]([a-z0-9-]{0,13}[a-z0-9])?$")
_SLICE_ADDRESS_TYPES = frozenset({"IPv4", "IPv6"})
# An RFC 1123 DNS subdomain, as Kubernetes requires of `spec.externalName` (a final dot allowed).
_DNS_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_DNS_NAME_MAX = 253


class ObjectKey(NamedTuple):
    """Identity of an object: kind, namespace and name."""

    kind: str
    namespace: str
    name: str


@dataclass(frozen=True, slots=True)
class ObjectMeta:
    """The parts of a Kubernetes object's envelope the resolvers use."""

    kind: str
    namespace: str
    name: str
    created: str = ""  # RFC 3339, UTC; "" when absent (files on disk)
    labels: Labels = ()
    deleting: bool = False

    @property
    def key(self) -> ObjectKey:
        return ObjectKey(self.kind, self.namespace, self.name)


def object_meta(obj: Mapping[str, Any]) -> ObjectMeta | None:
    """The envelope of ``obj``; None when it has no usable kind or name."""
    kind = obj.get("kind")
    metadata = obj.get("metadata")
    if not isinstance(kind, str) or not is_mapping(metadata):
        return None
    name = metadata.get("name")
    if not isinstance(name, str) or not name:
        return None
    namespace = metadata.get("namespace")
    if not isinstance(namespace, str) or not namespace:
        namespace = DEFAULT_NAMESPACE
    created = metadata.get("creationTimestamp")
    labels = metadata.get("labels")
    return ObjectMeta(
        kind,
        namespace,
        name,
        created if type(created) is str else _timestamp(created),
        _string_labels(labels) if labels else (),
        metadata.get("deletionTimestamp") is not None,
    )


def _timestamp(value: object) -> str:
    if isinstance(value, datetime):  # YAML loaders turn an unquoted timestamp into a datetime
        if value.tzinfo is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)
        return value.strftime("%Y-%m-%dT%H:%M:%SZ")
    return value if isinstance(value, str) else ""


def _string_labels(value: object) -> Labels:
    """The string-valued labels of ``value``, as a canonical label set (see `labels_of`)."""
    if type(value) is dict and all(type(k) is str and type(v) is str for k, v in value.items()):
        return tuple(sorted(value.items()))
    if not is_mapping(value):
        return ()
    return tuple(
        sorted((k, v) for k, v in value.items() if isinstance(k, str) and isinstance(v, str))
    )


# ------------------------------------------------------------------------------------------------
# Service objects


@dataclass(frozen=True, slots=True)
class PortSpec:
    port: int
    name: str
    protocol: Protocol
    target_port: int | str  # a number, or a container port name


@dataclass(frozen=True, slots=True)
class ServiceSpec:
    """A valid Service object without its endpoints."""

    name: str
    namespace: str
    hostname: str
    ports: tuple[PortSpec, ...]
    selector: Labels
    type: str = "ClusterIP"
    load_balancer_class: str = ""
    headless: bool = False
    publish_not_ready: bool = False
    external_name: str = ""  # an ExternalName service's DNS name


class _Problems:
    """Diagnostics collected for one object."""

    def __init__(self, kind: str, namespace: str, name: str) -> None:
        self.kind, self.namespace, self.name = kind, namespace, name
        self.found: list[Diagnostic] = []

    def add(self, field: str, message: str, severity: Severity = Severity.ERROR) -> None:
        self.found.append(
            Diagnostic(self.kind, self.namespace, self.name, field, message, severity)
        )

    @property
    def has_error(self) -> bool:
        return any(d.is_error for d in self.found)


def _port_number(value: object) -> int | None:
    """``value`` when it is a valid port number (1-65535), else None."""
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 65535:
        return value
    return None


def port_protocol(name: str, app_protocol: str) -> Protocol:
    """A service port's protocol: ``appProtocol``, else the Istio port-name prefix, else HTTP."""
    if app_protocol and app_protocol.lower() in _PROTOCOLS:
        return _PROTOCOLS[app_protocol.lower()]
    lowered = name.lower()
    prefix = lowered.split("-", 1)[0]
    if lowered.startswith("grpc-web"):
        return Protocol.HTTP
    return _PROTOCOLS.get(prefix, Protocol.HTTP)


def parse_service(
    obj: Mapping[str, Any], domain: str = CLUSTER_DOMAIN, meta: ObjectMeta | None = None
) -> tuple[ServiceSpec | None, list[Diagnostic]]:
    """Validate one Service object; None when it is malformed.

    ``meta`` is ``object_meta(obj)`` when the caller has it already.
    """
    meta = meta or object_meta(obj)
    if meta is None:
        problems = _Problems("Service", _namespace_of(obj), "")
        problems.add("metadata.name", "a Service needs a name")
        return None, problems.found
    problems = _Problems("Service", meta.namespace, meta.name)
    spec = obj.get("spec")
    if spec is None:
        spec = {}
    if not is_mapping(spec):
        problems.add("spec", "must be a mapping")
        return None, problems.found
    kind = spec.get("type", "ClusterIP")
    if kind is None:
        kind = "ClusterIP"
    if kind not in ("ClusterIP", "NodePort", "LoadBalancer", "ExternalName"):
        problems.add("spec.type", f"unknown Service type {kind!r}")
        return None, problems.found
    external_name = ""
    if kind == "ExternalName":
        external_name = _external_name(spec.get("externalName"), problems)
    selector = spec.get("selector") if not external_name else None  # Kubernetes ignores it
    if selector is not None and not (
        is_mapping(selector)
        and all(isinstance(k, str) and isinstance(v, str) for k, v in selector.items())
    ):
        problems.add("spec.selector", "must be a mapping of label names to strings")
    lb_class = spec.get("loadBalancerClass") or ""
    if not isinstance(lb_class, str):
        problems.add("spec.loadBalancerClass", "must be a string")
        lb_class = ""
    publish = spec.get("publishNotReadyAddresses", False)
    if not isinstance(publish, bool):
        problems.add("spec.publishNotReadyAddresses", "must be true or false")
    ports = _parse_ports(spec.get("ports"), problems)
    if problems.has_error:
        return None, problems.found
    return (
        ServiceSpec(
            name=meta.name,
            namespace=meta.namespace,
            hostname=service_hostname(meta.name, meta.namespace, domain),
            ports=ports,
            selector=labels_of(selector) if is_mapping(selector) else (),
            type=kind,
            load_balancer_class=lb_class,
            headless=spec.get("clusterIP") == "None" and not external_name,
            publish_not_ready=publish is True,
            external_name=external_name,
        ),
        problems.found,
    )


def _external_name(raw: object, problems: _Problems) -> str:
    """The DNS name of an ExternalName service, without a final dot; "" (and an error) when
    it is missing or is not a DNS name."""
    at = "spec.externalName"
    if raw is None or raw == "":
        problems.add(at, "is required for an ExternalName Service")
        return ""
    if not isinstance(raw, str):
        problems.add(at, "must be a string")
        return ""
    name = raw.removesuffix(".")
    if len(name) > _DNS_NAME_MAX or not all(_DNS_LABEL.match(p) for p in name.split(".")):
        problems.add(
            at,
            f"{raw!r} is not a DNS name: lowercase letters, digits and '-' in dot-separated"
            f" labels of at most 63 characters, {_DNS_NAME_MAX} in all",
        )
        return ""
    return name


def _namespace_of(obj: Mapping[str, Any]) -> str:
    metadata = obj.get("metadata")
    namespace = metadata.get("namespace") if is_mapping(metadata) else None
    return namespace if isinstance(namespace, str) and namespace else DEFAULT_NAMESPACE


def _parse_ports(raw: object, problems: _Problems) -> tuple[PortSpec, ...]:
    if raw is None:
        raw = []
    if not isinstance(raw, list):
        problems.add("spec.ports", "must be a list")
        return ()
    if not raw:
        problems.add("spec.ports", "no ports: nothing to route", Severity.WARNING)
    ports: list[PortSpec] = []
    seen_names: set[str] = set()
    seen_ports: set[tuple[int, str]] = set()
    for i, item in enumerate(raw):
        at = f"spec.ports[{i}]"
        if not is_mapping(item):
            problems.add(at, "must be a mapping")
            continue
        number = _port_number(item.get("port"))
        if number is None:
            problems.add(f"{at}.port", "must be an integer from 1 to 65535")
            continue
        name = item.get("name", "")
        if name is None:
            name = ""
        if not isinstance(name, str) or (name and not _PORT_NAME.match(name)):
            problems.add(f"{at}.name", "must be a lowercase DNS label of at most 15 characters")
            continue
        if not name and len(raw) > 1:
            problems.add(f"{at}.name", "is required when a Service has several ports")
            continue
        if name in seen_names:
            problems.add(f"{at}.name", f"duplicate port name {name!r}")
            continue
        seen_names.add(name)
        transport = item.get("protocol", "TCP") or "TCP"
        if transport not in ("TCP", "UDP", "SCTP"):
            problems.add(f"{at}.protocol", "must be TCP, UDP or SCTP")
            continue
        if (number, transport) in seen_ports:
            problems.add(f"{at}.port", f"duplicate port {number}/{transport}")
            continue
        seen_ports.add((number, transport))
        app_protocol = item.get("appProtocol", "") or ""
        if not isinstance(app_protocol, str):
            problems.add(f"{at}.appProtocol", "must be a string")
            continue
        target = _target_port(item.get("targetPort"), number, f"{at}.targetPort", problems)
        if target is None:
            continue
        if transport != "TCP":
            problems.add(
                f"{at}.protocol",
                f"{transport} ports are not routed by splitplane; port {number} left out",
                Severity.WARNING,
            )
            continue
        ports.append(PortSpec(number, name, port_protocol(name, app_protocol), target))
    return tuple(sorted(ports, key=lambda p: p.port))


def _target_port(raw: object, port: int, at: str, problems: _Problems) -> int | str | None:
    if raw is None:
        return port
    number = _port_number(raw)
    if number is not None:
        return number
    if isinstance(raw, str) and _IANA_SVC_NAME.match(raw):
        return raw
    problems.add(at, "must be an integer from 1 to 65535 or a port name")
    return None


# ------------------------------------------------------------------------------------------------
# Endpoints


@dataclass(frozen=True, slots=True)
class _PodInfo:
    namespace: str
    name: str
    labels: Labels
    ip: str
    ready: bool  # Running, Ready=True and not terminating
    serving_candidate: bool  # has an IP and is not in a terminal phase
    named_ports: Mapping[str, int]


def _pod_info(obj: Mapping[str, Any], labels: Labels) -> _PodInfo | None:
    """What a pod contributes; ``labels`` are its labels, read from ``obj`` as `object_meta`
    reads them (the pod index reads them first)."""
    # `object_meta`'s rules, without what a pod does not need (its creation time)
    kind, metadata = obj.get("kind"), obj.get("metadata")
    if not isinstance(kind, str) or not is_mapping(metadata):
        return None
    name = metadata.get("name")
    if not isinstance(name, str) or not name:
        return None
    namespace = metadata.get("namespace")
    if not isinstance(namespace, str) or not namespace:
        namespace = DEFAULT_NAMESPACE
    deleting = metadata.get("deletionTimestamp") is not None
    status = obj.get("status")
    status = status if is_mapping(status) else {}
    ip = status.get("podIP")
    ip = ip if isinstance(ip, str) else ""
    phase = status.get("phase")
    conditions = status.get("conditions")
    ready_condition = isinstance(conditions, list) and any(
        is_mapping(c) and c.get("type") == "Ready" and c.get("status") == "True" for c in conditions
    )
    return _PodInfo(
        namespace=namespace,
        name=name,
        labels=labels,
        ip=ip,
        ready=bool(ip) and phase == "Running" and ready_condition and not deleting,
        serving_candidate=bool(ip) and phase not in ("Succeeded", "Failed"),
        named_ports=_named_ports(obj.get("spec")),
    )


def _named_ports(spec: object) -> Mapping[str, int]:
    if not is_mapping(spec) or not isinstance(spec.get("containers"), list):
        return {}
    named: dict[str, int] = {}
    for container in spec["containers"]:
        ports = container.get("ports") if is_mapping(container) else None
        for port in ports if isinstance(ports, list) else ():
            if not is_mapping(port):
                continue
            name, number = port.get("name"), _port_number(port.get("containerPort"))
            if isinstance(name, str) and name and number is not None and name not in named:
                named[name] = number
    return named


@dataclass(frozen=True, slots=True)
class Services:
    """The resolved services, the diagnostics that depend on endpoints, and the version of each
    EndpointSlice that was used."""

    services: tuple[Service, ...]
    diagnostics: tuple[Diagnostic, ...]
    accepted: Mapping[ObjectKey, Mapping[str, Any]] = field(default_factory=dict)


def resolve_services(
    specs: Iterable[ServiceSpec],
    slices: Iterable[Mapping[str, Any]],
    pods: Iterable[Mapping[str, Any]],
    memo: Memo | None = None,
    last_accepted: Mapping[ObjectKey, Mapping[str, Any]] | None = None,
) -> Services:
    """The given services with the ready endpoints of each port, sorted by hostname.

    An EndpointSlice that is invalid is read as its version in ``last_accepted`` (the previous
    result's ``accepted``), with a warning, when there is one; otherwise it is left out.

    With a ``memo``, an EndpointSlice that is the same object as last time is not parsed again,
    and a service whose spec, slices (or selected pods) and endpoint pod labels are the same as
    last time is the very same `Service` object.
    """
    memo = memo or Memo()
    diagnostics: list[Diagnostic] = []
    pod_index = _Pods(pods, memo)
    slices_by_service: dict[tuple[str, str], list[_Slice]] = defaultdict(list)
    accepted: dict[ObjectKey, Mapping[str, Any]] = {}
    for obj in slices:
        parsed, problems = memo.get(SLICE_STEP, obj, _parse_slice, obj)
        diagnostics.extend(problems)
        if parsed is None and problems and last_accepted:
            parsed = _last_slice(
                obj, problems, last_accepted, memo, accepted=accepted, diagnostics=diagnostics
            )
        elif parsed is not None:
            accepted[ObjectKey("EndpointSlice", parsed.namespace, parsed.name)] = obj
        if parsed is not None:
            slices_by_service[parsed.namespace, parsed.service].append(parsed)
    services: list[Service] = []
    for spec in specs:
        # An ExternalName service's one endpoint is its DNS name: slices and pods play no part.
        owned = None if spec.external_name else slices_by_service.get((spec.namespace, spec.name))
        if owned is not None:
            labels = tuple(
                pod_index.labels(e.pod) if e.pod else () for piece in owned for e in piece.endpoints
            )
            inputs = _Inputs(tuple(owned), labels, ())
        else:
            inputs = _Inputs(None, (), tuple(pod_index.selected(spec)))
        resolved = memo.get_checked(
            SERVICE_STEP, spec, inputs.same_as, _resolve_service, spec, inputs
        )
        services.append(resolved.service)
        diagnostics.extend(resolved.diagnostics)
    services.sort(key=lambda s: s.hostname)
    return Services(tuple(services), tuple(sorted(diagnostics)), accepted)


def _last_slice(
    obj: object,
    problems: Sequence[Diagnostic],
    last_accepted: Mapping[ObjectKey, Mapping[str, Any]],
    memo: Memo,
    *,
    accepted: dict[ObjectKey, Mapping[str, Any]],
    diagnostics: list[Diagnostic],
) -> _Slice | None:
    """The last accepted version of the invalid EndpointSlice ``obj``, if it has one."""
    first = problems[0]
    key = ObjectKey("EndpointSlice", first.namespace, first.name)
    last = last_accepted.get(key)
    if not first.name or last is None or last is obj or not any(p.is_error for p in problems):
        return None
    parsed, _ = memo.get(SLICE_STEP, last, _parse_slice, last)
    if parsed is None:
        return None
    accepted[key] = last
    diagnostics.append(
        Diagnostic(key.kind, key.namespace, key.name, "", STILL_SERVING, Severity.WARNING)
    )
    return parsed


@dataclass(frozen=True, slots=True)
class _Inputs:
    """What one service's endpoints are computed from."""

    slices: tuple[_Slice, ...] | None  # None: from the pods its selector matches
    labels: tuple[Labels, ...]  # the pod labels of each slice endpoint, in order
    selected: tuple[_PodInfo, ...]

    def same_as(self, held: _Resolved) -> bool:
        """Whether ``held`` was resolved from the very same slices or pods and equal labels."""
        before = held.inputs
        if self.slices is None or before.slices is None:
            return (
                self.slices is before.slices
                and len(self.selected) == len(before.selected)
                and all(map(operator.is_, self.selected, before.selected))
            )
        return (
            len(self.slices) == len(before.slices)
            and all(map(operator.is_, self.slices, before.slices))
            and self.labels == before.labels
        )


@dataclass(frozen=True, slots=True)
class _Resolved:
    inputs: _Inputs
    service: Service
    diagnostics: tuple[Diagnostic, ...]


NO_READY_ENDPOINTS = "no ready endpoints; its clusters have empty load assignments"


def _resolve_service(spec: ServiceSpec, inputs: _Inputs) -> _Resolved:
    diagnostics: list[Diagnostic] = []
    if inputs.slices is not None:
        ports = _ports_from_slices(spec, inputs.slices, inputs.labels)
    else:
        ports = _ports_from_pods(spec, inputs.selected, diagnostics)
    if ports and not spec.external_name and not any(p.endpoints for p in ports):
        diagnostics.append(
            Diagnostic(
                "Service",
                spec.namespace,
                spec.name,
                "",
                NO_READY_ENDPOINTS,
                Severity.INFO,  # a state (scaled to zero, starting), not a mistake in the YAML
            )
        )
    service = Service(
        name=spec.name,
        namespace=spec.namespace,
        hostname=spec.hostname,
        ports=ports,
        type=spec.type,
        load_balancer_class=spec.load_balancer_class,
        headless=spec.headless,
        external_name=spec.external_name,
    )
    return _Resolved(inputs, service, tuple(diagnostics))


def _service_port(spec: PortSpec, endpoints: Iterable[Endpoint]) -> ServicePort:
    unique = {(e.address, e.port): e for e in endpoints}
    return ServicePort(
        port=spec.port,
        name=spec.name,
        protocol=spec.protocol,
        target_port=spec.target_port,
        endpoints=tuple(unique[k] for k in sorted(unique)),
    )


class _Pods:
    """The pods by name and by label pair, each read only when first needed.

    Services with EndpointSlices only look up the pods their endpoints name; the label index (so
    a selector never scans a whole namespace) is built on the first service without slices.
    """

    def __init__(self, objects: Iterable[object], memo: Memo) -> None:
        self._memo = memo
        self._raw: dict[tuple[str, str], Mapping[str, Any]] = {}
        # Labels are read here, while each pod's metadata is at hand: nearly every pod is named
        # by some slice endpoint, and reading them later means visiting every pod again.
        self._labels: dict[tuple[str, str], Labels] = {}
        for obj in objects:
            if not is_mapping(obj):
                continue
            metadata = obj.get("metadata")
            if is_mapping(metadata) and isinstance(metadata.get("name"), str):
                namespace = metadata.get("namespace")
                namespace = namespace if isinstance(namespace, str) and namespace else "default"
                key = (namespace, metadata["name"])
                self._raw[key] = obj
                labels = metadata.get("labels")
                self._labels[key] = _string_labels(labels) if labels else ()
        self._parsed: dict[tuple[str, str], _PodInfo | None] = {}
        self._by_label: dict[tuple[str, str, str], list[_PodInfo]] | None = None

    def labels(self, key: tuple[str, str]) -> Labels:
        """The labels of a pod an endpoint names (only the labels: the slice says the rest)."""
        return self._labels.get(key, ())

    def get(self, key: tuple[str, str]) -> _PodInfo | None:
        if key not in self._parsed:
            raw = self._raw.get(key)
            self._parsed[key] = (
                self._memo.get(POD_STEP, raw, _pod_info, raw, self._labels[key])
                if raw is not None
                else None
            )
        return self._parsed[key]

    def selected(self, spec: ServiceSpec) -> list[_PodInfo]:
        """The pods that are endpoints of ``spec`` (none without a selector, as in Kubernetes)."""
        if not spec.selector:
            return []
        if self._by_label is None:
            self._by_label = defaultdict(list)
            for key in sorted(self._raw):
                pod = self.get(key)
                if pod is not None and pod.serving_candidate:
                    for label, value in pod.labels:
                        self._by_label[pod.namespace, label, value].append(pod)
        index = self._by_label
        smallest = min(
            (index.get((spec.namespace, key, value), []) for key, value in spec.selector),
            key=len,
        )
        return [
            pod
            for pod in smallest
            if (pod.ready or spec.publish_not_ready)
            and (len(spec.selector) == 1 or labels_match(spec.selector, pod.labels))
        ]


def _ports_from_pods(
    spec: ServiceSpec, selected: Sequence[_PodInfo], diagnostics: list[Diagnostic]
) -> tuple[ServicePort, ...]:
    ports: list[ServicePort] = []
    for i, port in enumerate(spec.ports):
        endpoints: list[Endpoint] = []
        for pod in selected:
            target = port.target_port
            number = target if isinstance(target, int) else pod.named_ports.get(target)
            if number is None:
                continue
            endpoints.append(
                Endpoint(pod.ip, number, pod.labels, pod=f"{pod.namespace}/{pod.name}")
            )
        if selected and not endpoints:
            diagnostics.append(
                Diagnostic(
                    "Service",
                    spec.namespace,
                    spec.name,
                    f"spec.ports[{i}].targetPort",
                    f"no selected pod has a container port named {port.target_port!r}",
                    Severity.WARNING,
                )
            )
        ports.append(_service_port(port, endpoints))
    return tuple(ports)


class _SliceEndpoint(NamedTuple):
    address: str
    zone: str
    pod: tuple[str, str] | None  # (namespace, name) of the pod behind it
    pod_ref: str  # the same as "namespace/name", or ""


@dataclass(frozen=True, slots=True)
class _Slice:
    namespace: str
    name: str
    service: str
    ports: Mapping[str, int]  # port name → endpoint port
    endpoints: tuple[_SliceEndpoint, ...]  # ready ones only


def _ports_from_slices(
    spec: ServiceSpec, slices: Sequence[_Slice], labels: Sequence[Labels]
) -> tuple[ServicePort, ...]:
    """``labels`` holds the pod labels of every endpoint of ``slices``, in order."""
    each = iter(labels)
    found = [(piece, [(e, next(each), e.pod_ref) for e in piece.endpoints]) for piece in slices]
    ports: list[ServicePort] = []
    for port in spec.ports:
        endpoints: list[Endpoint] = []
        for piece, entries in found:
            number = piece.ports.get(port.name)
            if number is not None:
                endpoints.extend(
                    Endpoint(e.address, number, labels, e.zone, pod) for e, labels, pod in entries
                )
        ports.append(_service_port(port, endpoints))
    return tuple(ports)


def _parse_slice(obj: object) -> tuple[_Slice | None, list[Diagnostic]]:
    """The ready endpoints of one EndpointSlice; None when it is malformed or not IP-addressed."""
    if not is_mapping(obj):
        return None, []
    meta = object_meta(obj)
    if meta is None:
        problems = _Problems("EndpointSlice", _namespace_of(obj), "")
        problems.add("metadata.name", "an EndpointSlice needs a name")
        return None, problems.found
    problems = _Problems("EndpointSlice", meta.namespace, meta.name)
    service = dict(meta.labels).get(SERVICE_NAME_LABEL)
    if not service:
        return None, []  # not managed for a service
    address_type = obj.get("addressType")
    if not isinstance(address_type, str) or address_type not in _SLICE_ADDRESS_TYPES:
        if address_type != "FQDN":
            problems.add("addressType", "must be IPv4, IPv6 or FQDN")
        return None, problems.found
    ports: dict[str, int] = {}
    raw_ports = obj.get("ports") or []
    if not isinstance(raw_ports, list):
        problems.add("ports", "must be a list")
        raw_ports = []
    for i, port in enumerate(raw_ports):
        if not is_mapping(port):
            problems.add(f"ports[{i}]", "must be a mapping")
            continue
        name = port.get("name") or ""
        number = _port_number(port.get("port"))
        if not isinstance(name, str):
            problems.add(f"ports[{i}].name", "must be a string")
        elif number is None:
            problems.add(f"ports[{i}].port", "must be an integer from 1 to 65535")
        elif port.get("protocol", "TCP") in (None, "TCP"):
            ports[name] = number
    raw_endpoints = obj.get("endpoints") or []
    if not isinstance(raw_endpoints, list):
        problems.add("endpoints", "must be a list")
        raw_endpoints = []
    endpoints: list[_SliceEndpoint] = []
    for i, raw in enumerate(raw_endpoints):
        parsed = _slice_endpoint(raw, meta.namespace, i, problems)
        if parsed is not None:
            endpoints.append(parsed)
    if problems.has_error:
        return None, problems.found
    return _Slice(meta.namespace, meta.name, service, ports, tuple(endpoints)), problems.found


def slice_owner(obj: Mapping[str, Any]) -> tuple[str, str] | None:
    """The (namespace, name) of the service an EndpointSlice is labelled for, if any."""
    metadata = obj.get("metadata")
    labels = metadata.get("labels") if is_mapping(metadata) else None
    service = labels.get(SERVICE_NAME_LABEL) if is_mapping(labels) else None
    return (_namespace_of(obj), service) if isinstance(service, str) and service else None


def slice_pods(obj: Mapping[str, Any]) -> set[tuple[str, str]]:
    """The (namespace, name) of every pod an EndpointSlice's endpoints name."""
    namespace = _namespace_of(obj)
    endpoints = obj.get("endpoints")
    found: set[tuple[str, str]] = set()
    for raw in endpoints if isinstance(endpoints, list) else ():
        ref = raw.get("targetRef") if is_mapping(raw) else None
        if is_mapping(ref) and ref.get("kind") == "Pod" and isinstance(ref.get("name"), str):
            ref_namespace = ref.get("namespace")
            found.add(
                (
                    ref_namespace
                    if isinstance(ref_namespace, str) and ref_namespace
                    else namespace,
                    ref["name"],
                )
            )
    return found


def pod_labels(obj: Mapping[str, Any]) -> Labels:
    """A pod's labels, as services' selectors read them."""
    metadata = obj.get("metadata")
    labels = metadata.get("labels") if is_mapping(metadata) else None
    return _string_labels(labels) if labels else ()


def namespace_of(obj: Mapping[str, Any]) -> str:
    """An object's namespace (``default`` when it names none)."""
    return _namespace_of(obj)


def _slice_endpoint(
    raw: object, namespace: str, index: int, problems: _Problems
) -> _SliceEndpoint | None:
    if not is_mapping(raw):
        problems.add(f"endpoints[{index}]", "must be a mapping")
        return None
    addresses = raw.get("addresses")
    if not isinstance(addresses, list) or not addresses or not isinstance(addresses[0], str):
        problems.add(f"endpoints[{index}].addresses", "must be a non-empty list of addresses")
        return None
    conditions = raw.get("conditions") or {}
    if not is_mapping(conditions):
        problems.add(f"endpoints[{index}].conditions", "must be a mapping")
        return None
    if conditions.get("ready") is False:
        return None
    zone = raw.get("zone") or ""
    ref = raw.get("targetRef")
    pod: tuple[str, str] | None = None
    if is_mapping(ref) and ref.get("kind") == "Pod" and isinstance(ref.get("name"), str):
        ref_namespace = ref.get("namespace")
        pod = (
            ref_namespace if isinstance(ref_namespace, str) and ref_namespace else namespace,
            ref["name"],
        )
    return _SliceEndpoint(
        addresses[0],
        zone if isinstance(zone, str) else "",
        pod,
        f"{pod[0]}/{pod[1]}" if pod else "",
    )
