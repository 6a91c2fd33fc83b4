"""Ingress (networking.k8s.io/v1) + IngressClass → the load-balancer fleet's virtual hosts.

Two steps, so that the last good version of an Ingress can stand in for an invalid one:

1. `parse_ingress` checks one Ingress on its own: whether it is splitplane's (`ingress_classes`),
   its hosts, paths and backends. A rule that is wrong is left out with an error; a malformed
   object is rejected as a whole.
2. `resolve_ingress_hosts` points every path at its service port and builds one virtual host per
   host, merging the Ingresses that share a host oldest first.

Kubernetes semantics throughout: ``Prefix`` matches whole path elements (``/foo`` matches ``/foo``
and ``/foo/bar``, not ``/foobar``; a trailing slash is ignored), ``ImplementationSpecific`` is
served as ``Prefix``, the longest path wins (``Exact`` before ``Prefix`` of the same path), a
``*.`` host matches exactly one DNS label, and the ``defaultBackend`` takes what no path matches.
A backend whose service port has a mesh VirtualService gets that VirtualService's rules (weights,
matches) at the edge, each combined with the Ingress path.

An Ingress is splitplane's when its ``ingressClassName`` (or the legacy annotation
``kubernetes.io/ingress.class``) is ``splitplane`` or names an IngressClass whose controller is
``splitplane.io/ingress-controller``; an Ingress without a class is splitplane's when such an
IngressClass is marked default. Any other Ingress is left alone, with an info diagnostic saying
why.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, TypeGuard

from translators.diagnostics import Diagnostic, Severity
from translators.model import (
    HttpRoute,
    KeyMatch,
    MatchKind,
    RouteMatch,
    Service,
    StringMatch,
    VirtualHost,
    WeightedCluster,
)
from translators.names import CLUSTER_DOMAIN, cluster_name, service_hostname
from translators.objects import is_mapping
from translators.resolve_routing import Source

INGRESS_CLASS = "splitplane"
INGRESS_CONTROLLER = "splitplane.io/ingress-controller"
DEFAULT_CLASS_ANNOTATION = "ingressclass.kubernetes.io/is-default-class"
LEGACY_CLASS_ANNOTATION = "kubernetes.io/ingress.class"
ANY_HOST = "*"
HOST_PORT = 80  # the port the fleet's Ingress virtual hosts are named for

_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_HOST = re.compile(rf"^(\*\.)?{_LABEL}(\.{_LABEL})*$")
_PATH_TYPES = {
    "Exact": MatchKind.EXACT,
    "Prefix": MatchKind.PATH_PREFIX,
    "ImplementationSpecific": MatchKind.PATH_PREFIX,
}
# Kubernetes refuses these in Exact and Prefix paths.
_UNSAFE_PATH_PARTS = ("//", "/./", "/../", "%2f", "%2F")


# ------------------------------------------------------------------------------------------------
# Classes


@dataclass(frozen=True, slots=True)
class IngressClasses:
    """The class names splitplane serves, and whether it serves Ingresses without a class."""

    names: frozenset[str] = frozenset({INGRESS_CLASS})
    serves_default: bool = False

    def serves(self, obj: Mapping[str, Any]) -> bool:
        """Whether the Ingress ``obj`` is splitplane's."""
        return self.refusal(obj) is None

    def refusal(self, obj: Mapping[str, Any]) -> tuple[str, str] | None:
        """Why the Ingress ``obj`` is not splitplane's (the field, the reason); None if it is."""
        spec = obj.get("spec")
        name = spec.get("ingressClassName") if is_mapping(spec) else None
        field = "spec.ingressClassName"
        if not name:
            metadata = obj.get("metadata")
            annotations = metadata.get("annotations") if is_mapping(metadata) else None
            if is_mapping(annotations):
                name = annotations.get(LEGACY_CLASS_ANNOTATION)
                field = f"metadata.annotations[{LEGACY_CLASS_ANNOTATION}]"
        ours = ", ".join(sorted(self.names))
        if not name:
            if self.serves_default:
                return None
            return (
                "spec.ingressClassName",
                "not served by splitplane: it names no class and no IngressClass of"
                f" splitplane's (controller {INGRESS_CONTROLLER}) is marked default"
                f' ({DEFAULT_CLASS_ANNOTATION}: "true"); set ingressClassName to one of: {ours}',
            )
        if isinstance(name, str) and name in self.names:
            return None
        return (
            field,
            f"not served by splitplane: class {name!r} is another controller's (splitplane"
            f" serves {ours})",
        )


def ingress_classes(objects: Iterable[Mapping[str, Any]]) -> IngressClasses:
    """Which IngressClasses name splitplane's controller, and whether one of them is default."""
    names = {INGRESS_CLASS}
    serves_default = False
    for obj in objects:
        metadata = obj.get("metadata")
        spec = obj.get("spec")
        if not is_mapping(metadata) or not is_mapping(spec):
            continue
        name = metadata.get("name")
        if spec.get("controller") != INGRESS_CONTROLLER or not isinstance(name, str):
            continue
        names.add(name)
        annotations = metadata.get("annotations")
        if is_mapping(annotations) and annotations.get(DEFAULT_CLASS_ANNOTATION) == "true":
            serves_default = True
    return IngressClasses(frozenset(names), serves_default)


# ------------------------------------------------------------------------------------------------
# One Ingress


@dataclass(frozen=True, slots=True)
class IngressBackend:
    """A backend as written: a service name and its port by number or by name."""

    service: str
    port_number: int = 0
    port_name: str = ""
    at: str = ""  # field path of the backend


@dataclass(frozen=True, slots=True)
class IngressPath:
    host: str  # "*" when the rule names none
    kind: MatchKind  # EXACT or PATH_PREFIX
    path: str
    backend: IngressBackend
    at: str  # field path of the path entry

    @property
    def key(self) -> tuple[MatchKind, str]:
        """What two paths must share to be the same (a Prefix's trailing slash is ignored)."""
        return (self.kind, _trimmed(self.path) if self.kind is MatchKind.PATH_PREFIX else self.path)

    @property
    def precedence(self) -> tuple[int, int]:
        """Sort key: longest path first, Exact before Prefix of the same path."""
        return (-len(self.key[1]), 0 if self.kind is MatchKind.EXACT else 1)


@dataclass(frozen=True, slots=True)
class IngressRules:
    """An Ingress of splitplane's class that passed its own checks."""

    source: Source
    hosts: tuple[str, ...]  # every host its rules name ("*" for a rule without one)
    paths: tuple[IngressPath, ...]
    default_backend: IngressBackend | None


class _Problems:
    def __init__(self, source: Source) -> None:
        self.source = source
        self.found: list[Diagnostic] = []

    def add(self, field: str, message: str, severity: Severity = Severity.ERROR) -> None:
        self.found.append(
            Diagnostic("Ingress", self.source.namespace, self.source.name, field, message, severity)
        )


def _trimmed(path: str) -> str:
    return path.rstrip("/")


def parse_ingress(
    obj: Mapping[str, Any], source: Source, classes: IngressClasses
) -> tuple[IngressRules | None, list[Diagnostic]]:
    """Check one Ingress; None, with an info saying why, when splitplane does not serve it."""
    problems = _Problems(source)
    refusal = classes.refusal(obj)
    if refusal is not None:
        problems.add(*refusal, Severity.INFO)
        return None, problems.found
    spec = obj.get("spec")
    if not is_mapping(spec):
        problems.add("spec", "must be a mapping")
        return None, problems.found
    if spec.get("tls"):
        problems.add(
            "spec.tls",
            "TLS termination is not supported by splitplane; the rules are served on plain"
            " HTTP only",
            Severity.WARNING,
        )
    default = None
    raw_default = spec.get("defaultBackend", spec.get("backend"))
    if "backend" in spec and "defaultBackend" not in spec:
        problems.add(
            "spec.backend",
            "is the old networking.k8s.io/v1beta1 form; write spec.defaultBackend",
            Severity.WARNING,
        )
    if raw_default is not None:
        at = "spec.defaultBackend" if "defaultBackend" in spec else "spec.backend"
        default = _backend(raw_default, at, problems)
    rules = spec.get("rules")
    if rules is None:
        rules = []
    if not isinstance(rules, list):
        problems.add("spec.rules", "must be a list")
        return None, problems.found
    hosts: list[str] = []
    paths: list[IngressPath] = []
    for i, rule in enumerate(rules):
        at = f"spec.rules[{i}]"
        if not is_mapping(rule):
            problems.add(at, "must be a mapping")
            continue
        host = _host(rule.get("host"), f"{at}.host", problems)
        if host is None:
            continue
        hosts.append(host)
        http = rule.get("http")
        if http is None:
            continue
        raw_paths = http.get("paths") if is_mapping(http) else None
        if not isinstance(raw_paths, list) or not raw_paths:
            problems.add(f"{at}.http.paths", "must be a non-empty list")
            continue
        for j, raw in enumerate(raw_paths):
            parsed = _path(raw, host, f"{at}.http.paths[{j}]", problems)
            if parsed is not None:
                paths.append(parsed)
    if not rules and raw_default is None:
        problems.add("spec", "needs rules or a defaultBackend")
        return None, problems.found
    return (
        IngressRules(source, tuple(dict.fromkeys(hosts)), tuple(paths), default),
        problems.found,
    )


def _host(raw: object, at: str, problems: _Problems) -> str | None:
    if raw is None or raw == "":
        return ANY_HOST
    if not isinstance(raw, str) or not _HOST.match(raw.lower()):
        problems.add(at, "must be a DNS name, optionally starting with '*.'; the rule is left out")
        return None
    return raw.lower()


def _path(raw: object, host: str, at: str, problems: _Problems) -> IngressPath | None:
    if not is_mapping(raw):
        problems.add(at, "must be a mapping")
        return None
    path = raw.get("path", "/")
    if path is None or path == "":
        path = "/"
    if not isinstance(path, str) or not path.startswith("/"):
        problems.add(f"{at}.path", "must be an absolute path (start with '/'); path left out")
        return None
    if any(ch in path for ch in "?# \t"):
        problems.add(f"{at}.path", "must not hold '?', '#' or spaces; path left out")
        return None
    path_type = raw.get("pathType")
    if path_type is None:
        problems.add(
            f"{at}.pathType",
            "is required in networking.k8s.io/v1; served as ImplementationSpecific (Prefix)",
            Severity.WARNING,
        )
        path_type = "ImplementationSpecific"
    kind = _PATH_TYPES.get(path_type) if isinstance(path_type, str) else None
    if kind is None:
        problems.add(
            f"{at}.pathType", "must be Exact, Prefix or ImplementationSpecific; path left out"
        )
        return None
    if path_type != "ImplementationSpecific" and (
        any(part in path for part in _UNSAFE_PATH_PARTS) or path.endswith(("/..", "/."))
    ):
        problems.add(f"{at}.path", "must not hold '//', '/./', '/../' or '%2f'; path left out")
        return None
    backend = _backend(raw.get("backend"), f"{at}.backend", problems)
    if backend is None:
        return None
    return IngressPath(host, kind, path, backend, at)


def _backend(raw: object, at: str, problems: _Problems) -> IngressBackend | None:
    if not is_mapping(raw):
        problems.add(at, "must be a mapping with a service")
        return None
    if "serviceName" in raw or "servicePort" in raw:
        return _legacy_backend(raw, at, problems)
    if raw.get("resource") is not None:
        problems.add(
            f"{at}.resource",
            "resource backends are not served by splitplane; left out",
            Severity.WARNING,
        )
        return None
    service = raw.get("service")
    if not is_mapping(service):
        problems.add(f"{at}.service", "is required")
        return None
    name = service.get("name")
    if not isinstance(name, str) or not name:
        problems.add(f"{at}.service.name", "is required")
        return None
    port = service.get("port")
    if not is_mapping(port):
        problems.add(f"{at}.service.port", "needs a number or a name")
        return None
    number, port_name = port.get("number"), port.get("name")
    if number is not None and port_name is not None:
        problems.add(f"{at}.service.port", "give a number or a name, not both")
        return None
    if number is not None:
        if not _is_port(number):
            problems.add(f"{at}.service.port.number", "must be a port from 1 to 65535")
            return None
        return IngressBackend(name, port_number=number, at=at)
    if isinstance(port_name, str) and port_name:
        return IngressBackend(name, port_name=port_name, at=at)
    problems.add(f"{at}.service.port", "needs a number or a name")
    return None


def _legacy_backend(raw: Mapping[str, Any], at: str, problems: _Problems) -> IngressBackend | None:
    name, port = raw.get("serviceName"), raw.get("servicePort")
    if not isinstance(name, str) or not name:
        problems.add(f"{at}.serviceName", "is required")
        return None
    if _is_port(port):
        written = f"port: {{number: {port}}}"
        backend = IngressBackend(name, port_number=port, at=at)
    elif isinstance(port, str) and port:
        written = f"port: {{name: {port}}}"
        backend = IngressBackend(name, port_name=port, at=at)
    else:
        problems.add(f"{at}.servicePort", "must be a port number or a port name")
        return None
    problems.add(
        at,
        "serviceName/servicePort is the old networking.k8s.io/v1beta1 form; write"
        f" service: {{name: {name}, {written}}}",
        Severity.WARNING,
    )
    return backend


def _is_port(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 65535


# ------------------------------------------------------------------------------------------------
# Assembly


@dataclass(frozen=True, slots=True)
class IngressRouting:
    """The fleet's virtual hosts from Ingresses (sorted by name), and what went wrong."""

    hosts: tuple[VirtualHost, ...]
    diagnostics: tuple[Diagnostic, ...]


@dataclass(frozen=True, slots=True)
class _Entry:
    """One Ingress path or default backend on one host, ready to become routes."""

    source: Source
    path: IngressPath | None  # None: a default backend
    backend: IngressBackend


def resolve_ingress_hosts(
    ingresses: Iterable[IngressRules],
    services: Mapping[str, Service],
    mesh_hosts: Sequence[VirtualHost] = (),
    taken_hosts: Iterable[str] = (),
    domain: str = CLUSTER_DOMAIN,
) -> IngressRouting:
    """One virtual host per Ingress host, routes ordered as Kubernetes requires.

    ``mesh_hosts`` are the mesh's virtual hosts (their routes apply at the edge for a backend
    that has a VirtualService); ``taken_hosts`` are the hosts VirtualServices bound to the fleet
    already route, which an Ingress cannot take over.
    """
    mesh = {v.name: v for v in mesh_hosts}
    taken = frozenset(taken_hosts)
    diagnostics: list[Diagnostic] = []
    by_host: dict[str, list[_Entry]] = {}
    defaults: dict[str, _Entry] = {}
    for rules in sorted(ingresses, key=lambda r: r.source.age):
        problems = _Problems(rules.source)
        for host in rules.hosts:
            if host in taken:
                problems.add(
                    "spec.rules",
                    f"host {host} is routed by a VirtualService bound to the gateway; this"
                    " Ingress's rules for it are ignored",
                    Severity.WARNING,
                )
        for path in rules.paths:
            if path.host not in taken:
                by_host.setdefault(path.host, []).append(_Entry(rules.source, path, path.backend))
        if rules.default_backend is not None:
            entry = _Entry(rules.source, None, rules.default_backend)
            for host in (ANY_HOST, *rules.hosts):
                if host not in taken:
                    defaults.setdefault(host, entry)
        diagnostics.extend(problems.found)
    assembler = _Assembler(services, mesh, domain)
    found: list[VirtualHost] = []
    for host in sorted(set(by_host) | set(defaults)):
        routes = assembler.host_routes(host, by_host.get(host, []), defaults.get(host))
        if routes:
            found.append(VirtualHost(f"{host}:{HOST_PORT}", HOST_PORT, (host,), routes))
    diagnostics.extend(assembler.diagnostics)
    return IngressRouting(tuple(found), tuple(sorted(set(diagnostics))))


def _diagnostic(
    source: Source, field: str, message: str, severity: Severity = Severity.ERROR
) -> Diagnostic:
    return Diagnostic("Ingress", source.namespace, source.name, field, message, severity)


class _Assembler:
    """Turns the entries of each host into routes, collecting the problems found."""

    def __init__(
        self, services: Mapping[str, Service], mesh: Mapping[str, VirtualHost], domain: str
    ) -> None:
        self.services, self.mesh, self.domain = services, mesh, domain
        self.diagnostics: list[Diagnostic] = []

    def host_routes(
        self, host: str, entries: list[_Entry], default: _Entry | None
    ) -> tuple[HttpRoute, ...]:
        """The routes of one host: its paths by precedence, then its default backend."""
        seen: dict[tuple[MatchKind, str], Source] = {}
        ordered: list[_Entry] = []
        for entry in sorted(entries, key=lambda e: e.path.precedence if e.path else (0, 0)):
            assert entry.path is not None
            owner = seen.get(entry.path.key)
            if owner is not None:
                self.diagnostics.append(
                    _diagnostic(
                        entry.source,
                        entry.path.at,
                        f"{entry.path.path} on host {host} is already routed by the Ingress"
                        f" {owner}; this path is ignored",
                        Severity.WARNING,
                    )
                )
                continue
            seen[entry.path.key] = entry.source
            ordered.append(entry)
        if default is not None:
            ordered.append(default)
        routes: list[HttpRoute] = []
        for entry in ordered:
            routes.extend(self.entry_routes(host, entry))
        return tuple(routes)

    def entry_routes(self, host: str, entry: _Entry) -> list[HttpRoute]:
        """The routes of one path (or default backend): its service port's mesh rules, or one
        route to the port's cluster."""
        backend = entry.backend
        hostname = service_hostname(backend.service, entry.source.namespace, self.domain)
        service = self.services.get(hostname)
        if service is None:
            self.diagnostics.append(
                _diagnostic(
                    entry.source,
                    f"{backend.at}.service.name",
                    f"service {backend.service!r} not found in namespace"
                    f" {entry.source.namespace}; the rule is left out",
                )
            )
            return []
        if backend.port_name:
            port = next((p for p in service.ports if p.name == backend.port_name), None)
            field, wanted = f"{backend.at}.service.port.name", repr(backend.port_name)
        else:
            port = service.port(backend.port_number)
            field, wanted = f"{backend.at}.service.port.number", str(backend.port_number)
        if port is None:
            known = ", ".join(
                f"{p.port} ({p.name})" if p.name else str(p.port) for p in service.ports
            )
            self.diagnostics.append(
                _diagnostic(
                    entry.source,
                    field,
                    f"{hostname} has no port {wanted} (ports: {known or 'none'}); the rule is"
                    " left out",
                )
            )
            return []
        edge = edge_match(host, entry.path)
        vhost = self.mesh.get(f"{hostname}:{port.port}")
        if vhost is None:
            cluster = cluster_name(port.port, "", hostname)
            return [
                HttpRoute(
                    matches=(edge,) if edge != RouteMatch() else (),
                    destinations=(WeightedCluster(cluster, 100),),
                )
            ]
        routes: list[HttpRoute] = []
        for route in vhost.routes:
            combined, regex = _combined_route(route, edge)
            if regex:
                self.diagnostics.append(
                    _diagnostic(
                        entry.source,
                        entry.path.at if entry.path else backend.at,
                        f"a rule of the VirtualService for {hostname} matches the URI by regex,"
                        " which cannot be combined with an Ingress path; that match is left"
                        " out at the edge",
                        Severity.WARNING,
                    )
                )
            if combined is not None:
                routes.append(combined)
        return routes


def edge_match(host: str, path: IngressPath | None) -> RouteMatch:
    """The match an Ingress path means on ``host`` (a wildcard host takes one label only)."""
    headers: tuple[KeyMatch, ...] = ()
    if host.startswith("*."):
        suffix = host[2:].replace(".", r"\.")
        pattern = rf"(?i)[^.:]+\.{suffix}(:[0-9]+)?"
        headers = (KeyMatch(":authority", StringMatch(MatchKind.REGEX, pattern)),)
    uri = StringMatch(path.kind, path.path) if path is not None else None
    return RouteMatch(uri=uri, headers=headers)


def _combined_route(route: HttpRoute, edge: RouteMatch) -> tuple[HttpRoute | None, bool]:
    """``route`` narrowed to ``edge`` (None when no match is left), and whether a regex URI
    match had to be left out."""
    if not route.matches:
        matches: tuple[RouteMatch, ...] = (edge,) if edge != RouteMatch() else ()
        return replace(route, matches=matches), False
    combined: list[RouteMatch] = []
    regex = False
    for match in route.matches:
        if match.uri is not None and match.uri.kind is MatchKind.REGEX and edge.uri is not None:
            regex = True
            continue
        overlap, uri = _intersection(edge.uri, match)
        if not overlap:
            continue
        combined.append(
            replace(
                match,
                uri=uri,
                headers=edge.headers + match.headers,
                ignore_uri_case=match.ignore_uri_case and uri is match.uri,
                port=0,
            )
        )
    return (replace(route, matches=tuple(combined)) if combined else None), regex


def _intersection(edge: StringMatch | None, match: RouteMatch) -> tuple[bool, StringMatch | None]:
    """Whether an Ingress path and a VirtualService uri match overlap, and the narrower one."""
    theirs = match.uri
    if edge is None or theirs is None:
        return True, theirs if edge is None else edge
    fold = str.lower if match.ignore_uri_case else str
    mine, value = fold(edge.value), fold(theirs.value)
    if edge.kind is MatchKind.EXACT:
        fits = {
            MatchKind.EXACT: mine == value,
            MatchKind.PREFIX: mine.startswith(value),
            MatchKind.PATH_PREFIX: _under(mine, _trimmed(value)),
        }.get(theirs.kind, False)
        return fits, edge
    prefix = _trimmed(mine)
    if theirs.kind is MatchKind.EXACT:
        return _under(value, prefix), theirs
    if theirs.kind is MatchKind.PREFIX:
        if not prefix or value.startswith(prefix + "/"):
            return True, theirs
        return prefix.startswith(value), edge
    other = _trimmed(value)
    if _under(other, prefix):
        return True, theirs
    return _under(prefix, other), edge


def _under(path: str, prefix: str) -> bool:
    """Whether ``path`` is ``prefix`` or below it, by whole path elements."""
    return not prefix or path == prefix or path.startswith(prefix + "/")
