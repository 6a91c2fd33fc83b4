"""What the debug endpoint shows, as plain JSON-ready data.

Rendering reads the shared snapshot and client-status objects; it never changes them and never
runs on the push path. A snapshot's resources are rendered once per version (``SnapshotRenderer``):
a reader polling ``/debug/snapshot`` pays again only for what changed.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

# Imported for their side effect: every type a snapshot holds must be known to the
# descriptor pool to render an Any as JSON.
from envoy.admin.v3 import config_dump_pb2, config_dump_shared_pb2
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2, scoped_route_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2  # noqa: F401
from envoy.extensions.filters.http.router.v3 import router_pb2  # noqa: F401
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2  # noqa: F401
from envoy.extensions.retry.host.previous_hosts.v3 import previous_hosts_pb2  # noqa: F401
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2  # noqa: F401
from google.protobuf import json_format
from google.protobuf.any_pb2 import Any as AnyProto
from google.protobuf.timestamp_pb2 import Timestamp

from translators.diagnostics import Diagnostic
from translators.model import MeshModel
from translators.preflight import violations
from xds_server.debug.pacing import no_pacing
from xds_server.xds.cache import (
    CLUSTER,
    ENDPOINT,
    LISTENER,
    ROUTE,
    SCOPED_ROUTE,
    Resource,
    Snapshot,
    TypeResources,
)
from xds_server.xds.client_status import ClientView, TypeStatus

SHORT_TYPES: Mapping[str, str] = {
    "clusters": CLUSTER,
    "endpoints": ENDPOINT,
    "listeners": LISTENER,
    "scopes": SCOPED_ROUTE,
    "routes": ROUTE,
}
TYPE_NAMES: Mapping[str, str] = {url: short for short, url in SHORT_TYPES.items()}


def resource_json(resource: Resource) -> dict[str, Any]:
    """A resource rendered like Envoy's own JSON (``@type``, proto field names)."""
    rendered: dict[str, Any] = json_format.MessageToDict(
        resource.as_any(), preserving_proto_field_name=True
    )
    return rendered


def snapshot_json(
    snapshots: Mapping[str, Snapshot], group: str | None = None, type_name: str | None = None
) -> dict[str, Any]:
    """Every group, type, version and resource, optionally narrowed to one group and type."""
    out: dict[str, Any] = {}
    for group_key, snapshot in sorted(snapshots.items()):
        if group and group_key != group:
            continue
        types: dict[str, Any] = {}
        for short, url in SHORT_TYPES.items():
            if type_name and short != type_name:
                continue
            resources = snapshot.of_type(url)
            types[short] = {
                "version": resources.version,
                "resources": [
                    {"name": r.name, "version": r.version, "resource": resource_json(r)}
                    for r in resources.resources
                ],
            }
        out[group_key] = types
    return {"groups": out}


# Where a rendered section goes in the document (a JSON string json.dumps writes as it is).
_PLACEHOLDER = re.compile(r'"@section:(\d+)"')
# Resource entries sit at this depth of the document: groups, group, type, resources, entry.
_ENTRY_INDENT = "\n" + " " * 10

_EntryKey = tuple[str, str, str]  # type URL, name, version
_SectionKey = tuple[str, str]  # type URL, version of the type's resources


def _section_text(version: str, entries: Sequence[str]) -> str:
    """One type of one group (``{"version": ..., "resources": [...]}``) as ``json.dumps(...,
    indent=2)`` writes it at its depth in the document."""
    head = '{\n        "version": ' + json.dumps(version) + ',\n        "resources": '
    if not entries:
        return head + "[]\n      }"
    return head + "[" + _ENTRY_INDENT + ("," + _ENTRY_INDENT).join(entries) + "\n        ]\n      }"


class SnapshotRenderer:
    """``/debug/snapshot`` as JSON (the text ``json.dumps(snapshot_json(...), indent=2)`` gives,
    UTF-8), rendered once per set of snapshots: a type whose version did not change keeps its
    text, and a resource is rendered once per version while a snapshot holds it.

    Safe to share between threads. One render runs at a time: a reader asking for what another
    is rendering waits for that result instead of rendering it again (renders take the
    interpreter from the xDS loop; two at once would only double that).
    """

    # Whole documents kept, for the last snapshots of each narrowing (group, type).
    DOCUMENTS = 16

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sections: dict[_SectionKey, tuple[str, dict[_EntryKey, str]]] = {}
        self._documents: dict[
            tuple[str | None, str | None], tuple[list[tuple[str, Snapshot]], bytes]
        ] = {}
        self.renders = 0  # documents rendered (not served from what was kept)
        # Route tables' virtual hosts (serialized) rendered: those of the last render, and
        # those the render under way used.
        self._hosts: dict[bytes, str] = {}
        self._hosts_used: dict[bytes, str] = {}
        self._pace: Callable[[], None] = no_pacing  # of the render under way

    def render(
        self,
        snapshots: Mapping[str, Snapshot],
        group: str | None = None,
        type_name: str | None = None,
        pace: Callable[[], None] = no_pacing,
    ) -> bytes:
        """The document for ``snapshots``, narrowed to ``group`` and ``type_name`` (UTF-8);
        ``pace`` is called between the resources it renders."""
        held = [(key, snapshots[key]) for key in sorted(snapshots) if not group or key == group]
        found = self._kept(group, type_name, held)
        if found is not None:
            return found
        with self._lock:
            found = self._kept(group, type_name, held)  # rendered while this one waited
            if found is not None:
                return found
            self._hosts_used = {}
            self._pace = pace
            try:
                text = self._render(held, type_name).encode()
            finally:
                self._pace = no_pacing
            if self._hosts_used:  # a route table was rendered: keep what the others hold too
                hosts, used = self._hosts, self._hosts_used
                self._hosts = {**hosts, **used} if len(hosts) < 4 * len(used) + 10_000 else used
            self._hosts_used = {}
            self.renders += 1
            documents = dict(self._documents)
            documents[(group, type_name)] = (held, text)
            while len(documents) > self.DOCUMENTS:
                del documents[next(iter(documents))]
            self._documents = documents
            return text

    def _kept(
        self, group: str | None, type_name: str | None, held: list[tuple[str, Snapshot]]
    ) -> bytes | None:
        last = self._documents.get((group, type_name))
        if (
            last is not None
            and len(last[0]) == len(held)
            and all(a == b and x is y for (a, x), (b, y) in zip(last[0], held, strict=True))
        ):
            return last[1]
        return None

    def _render(self, held: list[tuple[str, Snapshot]], type_name: str | None) -> str:
        known = self._sections
        used: dict[_SectionKey, tuple[str, dict[_EntryKey, str]]] = {}
        entries: dict[_EntryKey, str] | None = None  # of every kept section, on the first miss
        order: list[str] = []
        out: dict[str, Any] = {}
        for group_key, snapshot in held:
            types: dict[str, Any] = {}
            for short, url in SHORT_TYPES.items():
                if type_name and short != type_name:
                    continue
                resources = snapshot.of_type(url)
                key = (url, resources.version)
                section = used.get(key) or known.get(key)
                if section is None:
                    if entries is None:
                        entries = {
                            k: t
                            for _, held_entries in known.values()
                            for k, t in held_entries.items()
                        }
                    section = self._render_section(resources, entries)
                used[key] = section
                types[short] = f"@section:{len(order)}"
                order.append(section[0])
            out[group_key] = types
        # Sections of other narrowings stay, unless they would outnumber these many times over.
        self._sections = {**known, **used} if len(known) < 4 * len(used) + 64 else used
        skeleton = json.dumps({"groups": out}, indent=2)
        return _PLACEHOLDER.sub(lambda found: order[int(found.group(1))], skeleton) + "\n"

    def _render_section(
        self, resources: TypeResources, known: Mapping[_EntryKey, str]
    ) -> tuple[str, dict[_EntryKey, str]]:
        rendered: dict[_EntryKey, str] = {}
        texts: list[str] = []
        for resource in resources.resources:
            key = (resources.type_url, resource.name, resource.version)
            text = rendered.get(key) or known.get(key)
            if text is None:
                self._pace()
                text = self._entry_text(resource).replace("\n", _ENTRY_INDENT)
            rendered[key] = text
            texts.append(text)
        return _section_text(resources.version, texts), rendered

    def _entry_text(self, resource: Resource) -> str:
        """``{"name", "version", "resource"}`` as ``json.dumps(..., indent=2)`` writes it.

        A route table's virtual hosts are rendered one by one and kept while a table holds
        them: a weight flip changes one host of a table of thousands, and renders that one."""
        if resource.type_url != ROUTE:
            entry = {
                "name": resource.name,
                "version": resource.version,
                "resource": resource_json(resource),
            }
            return json.dumps(entry, indent=2)
        table = route_pb2.RouteConfiguration.FromString(resource.body)
        hosts = [host.SerializeToString(deterministic=True) for host in table.virtual_hosts]
        del table.virtual_hosts[:]
        rest = json_format.MessageToDict(_any(table), preserving_proto_field_name=True)
        placeholders = [f"@host:{index}" for index in range(len(hosts))]
        shown: dict[str, Any] = {}
        for field_name, value in rest.items():
            if field_name not in ("@type", "name") and hosts and "virtual_hosts" not in shown:
                shown["virtual_hosts"] = placeholders  # its place: field 2, after the name
            shown[field_name] = value
        if hosts and "virtual_hosts" not in shown:
            shown["virtual_hosts"] = placeholders
        entry = {"name": resource.name, "version": resource.version, "resource": shown}
        known = self._hosts
        texts = []
        for body in hosts:
            text = known.get(body)
            if text is None:
                self._pace()
                text = virtual_host_text(body)
            self._hosts_used[body] = text
            texts.append(text)
        skeleton = json.dumps(entry, indent=2)
        return _HOST_PLACEHOLDER.sub(lambda found: texts[int(found.group(1))], skeleton)


# Where a rendered virtual host goes in its route table's entry, and its depth there: entry,
# resource, virtual_hosts, host.
_HOST_PLACEHOLDER = re.compile(r'"@host:(\d+)"')
_HOST_INDENT = "\n" + " " * 6


def virtual_host_text(body: bytes) -> str:
    """A virtual host (serialized) as its route table's entry holds it."""
    host = route_components_pb2.VirtualHost.FromString(body)
    rendered = json_format.MessageToDict(host, preserving_proto_field_name=True)
    return json.dumps(rendered, indent=2).replace("\n", _HOST_INDENT)


def _timestamp(when: float | None) -> Timestamp:
    stamp = Timestamp()
    if when is not None:
        stamp.FromNanoseconds(int(when * 1e9))
    return stamp


def _error_state(status: TypeStatus) -> config_dump_shared_pb2.UpdateFailureState | None:
    if not status.error:
        return None
    return config_dump_shared_pb2.UpdateFailureState(
        details=status.error,
        version_info=status.nacked_version,
        last_update_attempt=_timestamp(status.error_at),
    )


def _any(message: Any) -> AnyProto:
    packed = AnyProto()
    packed.Pack(message)
    return packed


def config_dump(client: ClientView) -> dict[str, Any]:
    """What ``client`` was last sent, shaped like Envoy's ``/config_dump``.

    ``rejected`` lists, per type, the last response the client NACKed and its error text.
    """
    by_type = {status.type_url: status for status in client.types}
    empty = TypeStatus("")

    clusters = by_type.get(CLUSTER, empty)
    cluster_dump = config_dump_shared_pb2.ClustersConfigDump(version_info=clusters.acked_version)
    for resource in clusters.sent_resources:
        entry = cluster_dump.dynamic_active_clusters.add(
            version_info=resource.version, last_updated=_timestamp(clusters.sent_at)
        )
        entry.cluster.Pack(cluster_pb2.Cluster.FromString(resource.body))

    endpoints = by_type.get(ENDPOINT, empty)
    endpoint_dump = config_dump_shared_pb2.EndpointsConfigDump()
    for resource in endpoints.sent_resources:
        endpoint_entry = endpoint_dump.dynamic_endpoint_configs.add(
            version_info=resource.version, last_updated=_timestamp(endpoints.sent_at)
        )
        endpoint_entry.endpoint_config.Pack(
            endpoint_pb2.ClusterLoadAssignment.FromString(resource.body)
        )

    listeners = by_type.get(LISTENER, empty)
    listener_dump = config_dump_shared_pb2.ListenersConfigDump(version_info=listeners.acked_version)
    for resource in listeners.sent_resources:
        listener_entry = listener_dump.dynamic_listeners.add(name=resource.name)
        listener_entry.active_state.version_info = resource.version
        listener_entry.active_state.last_updated.CopyFrom(_timestamp(listeners.sent_at))
        listener_entry.active_state.listener.Pack(listener_pb2.Listener.FromString(resource.body))

    scopes = by_type.get(SCOPED_ROUTE, empty)
    scope_dump = config_dump_shared_pb2.ScopedRoutesConfigDump()
    for resource in scopes.sent_resources:
        owner = resource.name.partition("/")[0]  # the scoped routes (listener port) it is of
        if not scope_dump.dynamic_scoped_route_configs or (
            scope_dump.dynamic_scoped_route_configs[-1].name != owner
        ):
            scope_dump.dynamic_scoped_route_configs.add(
                name=owner,
                version_info=scopes.acked_version,
                last_updated=_timestamp(scopes.sent_at),
            )
        scope_dump.dynamic_scoped_route_configs[-1].scoped_route_configs.add().Pack(
            scoped_route_pb2.ScopedRouteConfiguration.FromString(resource.body)
        )

    routes = by_type.get(ROUTE, empty)
    route_dump = config_dump_shared_pb2.RoutesConfigDump()
    for resource in routes.sent_resources:
        route_entry = route_dump.dynamic_route_configs.add(
            version_info=resource.version, last_updated=_timestamp(routes.sent_at)
        )
        route_entry.route_config.Pack(route_pb2.RouteConfiguration.FromString(resource.body))

    whole = config_dump_pb2.ConfigDump(
        configs=[
            _any(cluster_dump),
            _any(endpoint_dump),
            _any(listener_dump),
            *([_any(scope_dump)] if scope_dump.dynamic_scoped_route_configs else []),
            _any(route_dump),
        ]
    )
    rendered: dict[str, Any] = json_format.MessageToDict(whole, preserving_proto_field_name=True)
    rendered["node"] = {"id": client.node_id, "cluster": client.node_cluster, "group": client.group}
    rendered["rejected"] = {
        TYPE_NAMES.get(status.type_url, status.type_url): json_format.MessageToDict(
            failure, preserving_proto_field_name=True
        )
        for status in client.types
        if (failure := _error_state(status)) is not None
    }
    return rendered


def clients_json(clients: Sequence[ClientView]) -> dict[str, Any]:
    """Every connected client with its per-type sync state."""
    return {"clients": [_client_json(client) for client in clients]}


# Client entries sit at this depth of the document: clients, entry.
_CLIENT_INDENT = "\n" + " " * 4


class ClientsRenderer:
    """``/debug/clients`` as JSON (the text ``json.dumps(clients_json(...), indent=2)`` gives,
    UTF-8), each client rendered once per state: a client's view changes only with its per-type
    statuses (immutable, replaced on each event), so an unchanged one keeps its text, and an
    unchanged list of clients its document.

    Safe to share between threads; one render runs at a time and readers asking meanwhile wait
    for it, then take its result when nothing changed since.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[int, tuple[tuple[TypeStatus, ...], str]] = {}
        self._document: tuple[list[tuple[int, tuple[TypeStatus, ...]]], bytes] | None = None
        self.rendered = 0  # client entries rendered (not taken from what was kept)

    def render(self, clients: Sequence[ClientView], pace: Callable[[], None] = no_pacing) -> bytes:
        """The document for ``clients`` (UTF-8); ``pace`` is called between the clients it
        renders."""
        held = [(client.stream_id, client.types) for client in clients]
        found = self._kept(held)
        if found is not None:
            return found
        with self._lock:
            found = self._kept(held)
            if found is not None:
                return found
            known = self._entries
            used: dict[int, tuple[tuple[TypeStatus, ...], str]] = {}
            texts: list[str] = []
            for client in clients:
                entry = known.get(client.stream_id)
                if entry is None or not _same(entry[0], client.types):
                    pace()
                    text = json.dumps(_client_json(client), indent=2)
                    entry = (client.types, text.replace("\n", _CLIENT_INDENT))
                    self.rendered += 1
                used[client.stream_id] = entry
                texts.append(entry[1])
            self._entries = used
            if texts:
                joined = ("," + _CLIENT_INDENT).join(texts)
                text = '{\n  "clients": [' + _CLIENT_INDENT + joined + "\n  ]\n}\n"
            else:
                text = '{\n  "clients": []\n}\n'
            document = text.encode()
            self._document = (held, document)
            return document

    def _kept(self, held: list[tuple[int, tuple[TypeStatus, ...]]]) -> bytes | None:
        last = self._document
        if last is None or len(last[0]) != len(held):
            return None
        for (stream, statuses), (held_stream, held_statuses) in zip(last[0], held, strict=True):
            if stream != held_stream or not _same(statuses, held_statuses):
                return None
        return last[1]


def _same(a: tuple[TypeStatus, ...], b: tuple[TypeStatus, ...]) -> bool:
    return len(a) == len(b) and all(x is y for x, y in zip(a, b, strict=True))


# Envoy cuts the text of a rejection at 4 KB (its gRPC status limit) and ends it so; the text
# often starts with a dump of the rejected resource, so the reason is what gets cut.
ENVOY_TRUNCATED = "...(truncated)"
MAX_FINDINGS = 50

_MESSAGE_TYPES: Mapping[str, Any] = {
    CLUSTER: cluster_pb2.Cluster,
    ENDPOINT: endpoint_pb2.ClusterLoadAssignment,
    LISTENER: listener_pb2.Listener,
    SCOPED_ROUTE: scoped_route_pb2.ScopedRouteConfiguration,
    ROUTE: route_pb2.RouteConfiguration,
}


def _client_json(client: ClientView) -> dict[str, Any]:
    data = client.as_dict()
    data["connected_since"] = _iso(client.connected_since)
    for entry, status in zip(data["types"], client.types, strict=True):
        entry["type"] = TYPE_NAMES.get(entry["type_url"], entry["type_url"])
        for key in ("sent_at", "acked_at", "error_at"):
            entry[key] = _iso(entry[key])
        if status.error:
            entry["error_truncated_by_envoy"] = status.error.endswith(ENVOY_TRUNCATED)
            entry["error_reasons"] = rejection_reasons(status)
    return data


# The reasons found for each rejected response (by the identity of its resources, which a
# status holds while it is the latest response), so a rejection is checked once, not per request.
# Render threads share it without a lock: each read and write is one dict operation, and two
# threads racing only check a rejection twice.
_REASONS: dict[int, tuple[tuple[object, ...], list[str]]] = {}
_MAX_REASONS = 16  # each holds the resources it was found in alive


def rejection_reasons(status: TypeStatus) -> list[str]:
    """What breaks Envoy's rules in the resources of the response a client rejected, in full
    (``resource: field path: reason``), by splitplane's own check: Envoy's text may be cut
    before its reason. Empty when the check finds nothing, or the rejected response is no
    longer the latest one sent."""
    message_type = _MESSAGE_TYPES.get(status.type_url)
    if message_type is None or status.nacked_nonce != status.sent_nonce:
        return []
    held = _REASONS.get(id(status.sent_resources))
    if held is not None and held[0] is status.sent_resources:
        return held[1]
    found: list[str] = []
    for resource in status.sent_resources:
        for path, reason in violations(message_type.FromString(resource.body)):
            found.append(f"{resource.name}: {path}: {reason}")
        if len(found) >= MAX_FINDINGS:
            del found[MAX_FINDINGS:]
            break
    if len(_REASONS) >= _MAX_REASONS:
        _REASONS.clear()
    _REASONS[id(status.sent_resources)] = (status.sent_resources, found)
    return found


def _iso(when: float | None) -> str | None:
    if when is None:
        return None
    return datetime.fromtimestamp(when, UTC).isoformat(timespec="milliseconds")


def diagnostics_json(diagnostics: Sequence[Diagnostic]) -> dict[str, Any]:
    return {"diagnostics": [d.as_dict() for d in diagnostics]}


def model_json(model: MeshModel | None) -> dict[str, Any]:
    """The resolved mesh model as plain data (enums by value)."""
    if model is None:
        return {"model": None}
    data = dataclasses.asdict(dataclasses.replace(model, endpoints_change=None))
    del data["endpoints_change"]  # how it was made, not what it is
    return {"model": _plain(data)}


def _plain(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value
