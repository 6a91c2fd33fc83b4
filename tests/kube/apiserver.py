"""An in-process Kubernetes API server that speaks the real REST list/watch protocol.

It serves API discovery, TokenReview and SubjectAccessReview (against users and RBAC-like grants
the test declares), list (``limit``/``continue`` over a consistent snapshot), watch (chunked
transfer encoding, one JSON event per line, ``resourceVersion``, ``timeoutSeconds``,
``allowWatchBookmarks``, 410 Gone once history is compacted; lists take an equality-based
``labelSelector``), create/replace/patch/delete, the
``status`` subresource, the pods ``proxy`` subresource (``GET
/api/v1/namespaces/NS/pods/NAME:PORT/proxy/PATH``, forwarded over HTTP to the pod's ``podIP`` and
without the caller's ``Authorization`` header, as the real API server does), the pods
``portforward`` subresource over WebSocket (the ``v4.channel.k8s.io`` protocol the API server
and kubelet speak: per port a data and an error channel, each opened with the port number; the
bytes reach the pod unchanged), and faults on demand (error statuses, dropped connections,
compaction).
Tests drive it through the real ``kubernetes`` client or through its direct methods, which stand
in for the cluster's own controllers (they write objects as given, status included).
"""

from __future__ import annotations

import base64
import bisect
import contextlib
import copy
import hashlib
import json
import socket
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import yaml

Obj = dict[str, Any]

ISTIO_GROUP = "networking.istio.io"
DEFAULT_TOKEN = "splitplane-test-token"


@dataclass(frozen=True)
class Resource:
    """One REST resource the server serves."""

    group: str
    kind: str
    plural: str
    namespaced: bool = True
    status_subresource: bool = False
    delete_returns_object: bool = False


RESOURCES: tuple[Resource, ...] = (
    Resource("", "Service", "services", status_subresource=True, delete_returns_object=True),
    Resource("", "Pod", "pods", status_subresource=True, delete_returns_object=True),
    Resource("discovery.k8s.io", "EndpointSlice", "endpointslices"),
    Resource("networking.k8s.io", "Ingress", "ingresses", status_subresource=True),
    Resource("networking.k8s.io", "IngressClass", "ingressclasses", namespaced=False),
    Resource("coordination.k8s.io", "Lease", "leases"),
    # As deploy/crds/ (and Istio's CRDs) declare them: with a status subresource.
    Resource(
        ISTIO_GROUP,
        "VirtualService",
        "virtualservices",
        status_subresource=True,
        delete_returns_object=True,
    ),
    Resource(
        ISTIO_GROUP,
        "DestinationRule",
        "destinationrules",
        status_subresource=True,
        delete_returns_object=True,
    ),
    Resource(
        ISTIO_GROUP, "Sidecar", "sidecars", status_subresource=True, delete_returns_object=True
    ),
)
_BY_KIND = {r.kind: r for r in RESOURCES}
_BY_PLURAL = {(r.group, r.plural): r for r in RESOURCES}


TOKEN_REVIEWS = "/apis/authentication.k8s.io/v1/tokenreviews"
ACCESS_REVIEWS = "/apis/authorization.k8s.io/v1/subjectaccessreviews"


@dataclass(frozen=True)
class Grant:
    """What RBAC would allow ``user``: ``verb`` on a non-resource ``path`` (``*`` at its end
    matches any rest, as in a ClusterRole's nonResourceURLs), or on a resource whose attributes
    include every one of ``resource``."""

    user: str
    verb: str
    path: str = ""
    resource: Mapping[str, str] = field(default_factory=dict)

    def allows(self, spec: Mapping[str, Any]) -> bool:
        if spec.get("user") != self.user:
            return False
        non_resource = spec.get("nonResourceAttributes")
        if non_resource is not None:
            if not self.path or non_resource.get("verb") != self.verb:
                return False
            path = str(non_resource.get("path", ""))
            if self.path.endswith("*"):
                return path.startswith(self.path[:-1])
            return path == self.path
        attributes = spec.get("resourceAttributes")
        if attributes is None or not self.resource or attributes.get("verb") != self.verb:
            return False
        return all(attributes.get(key, "") == value for key, value in self.resource.items())


@dataclass(frozen=True)
class RequestRecord:
    """One request the server received."""

    method: str
    path: str
    query: Mapping[str, str]

    @property
    def is_watch(self) -> bool:
        return self.query.get("watch") in ("true", "1")


@dataclass
class Fault:
    """Answer matching requests with ``status`` (0 = drop the connection without an answer).

    ``remaining`` counts down per matching request; ``None`` means until removed.
    """

    status: int
    remaining: int | None = 1
    method: str | None = None
    watch: bool | None = None
    path_contains: str = ""
    hits: int = 0

    def matches(self, record: RequestRecord) -> bool:
        return (
            (self.method is None or self.method == record.method)
            and (self.watch is None or self.watch == record.is_watch)
            and self.path_contains in record.path
        )


@dataclass(frozen=True)
class _Event:
    rv: int
    group: str
    plural: str
    namespace: str
    type: str
    obj: Obj


@dataclass(frozen=True)
class _WatchSpec:
    resource: Resource
    version: str
    namespace: str | None
    resource_version: int | None
    timeout: float
    bookmarks: bool


@dataclass(frozen=True)
class _Reply:
    status: int
    body: Obj


class _DroppedError(Exception):
    """The server was asked to cut this watch connection."""


@dataclass
class _Snapshot:
    rv: int
    items: list[Obj] = field(default_factory=list)


def status_body(code: int, reason: str, message: str) -> Obj:
    """A ``Status`` object as the API server returns it for a failure."""
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result: Obj = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def json_patch(target: Obj, operations: Sequence[Mapping[str, Any]]) -> Obj:
    """RFC 6902 JSON patch (add, remove, replace, test)."""
    doc: Any = copy.deepcopy(target)
    for op in operations:
        parts = [p.replace("~1", "/").replace("~0", "~") for p in str(op["path"]).split("/")[1:]]
        parent: Any = doc
        for part in parts[:-1]:
            parent = parent[int(part)] if isinstance(parent, list) else parent[part]
        last = parts[-1]
        kind = op["op"]
        if kind == "test":
            current = parent[int(last)] if isinstance(parent, list) else parent[last]
            if current != op["value"]:
                raise ValueError(f"test failed at {op['path']}")
        elif kind == "remove":
            del parent[int(last) if isinstance(parent, list) else last]
        elif kind in ("add", "replace"):
            if isinstance(parent, list):
                index = len(parent) if last == "-" else int(last)
                if kind == "add":
                    parent.insert(index, op["value"])
                else:
                    parent[index] = op["value"]
            else:
                parent[last] = op["value"]
        else:
            raise ValueError(f"unsupported op {kind}")
    if not isinstance(doc, dict):
        raise ValueError("patch did not produce an object")
    return doc


def write_kubeconfig(path: Path, server_url: str, token: str | None = DEFAULT_TOKEN) -> Path:
    """Write a kubeconfig that points at ``server_url`` and return its path."""
    user: Obj = {"token": token} if token else {}
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "fake", "cluster": {"server": server_url}}],
        "users": [{"name": "tester", "user": user}],
        "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "tester"}}],
        "current-context": "fake",
    }
    path.write_text(yaml.safe_dump(config))
    return path


WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455
WS_PORT_FORWARD_PROTOCOL = "v4.channel.k8s.io"
WS_BINARY, WS_CLOSE, WS_PING, WS_PONG = 0x2, 0x8, 0x9, 0xA


def _ws_frame(opcode: int, payload: bytes) -> bytes:
    """One final, unmasked frame (a server's)."""
    size = len(payload)
    if size < 126:
        head = bytes([0x80 | opcode, size])
    elif size < 1 << 16:
        head = bytes([0x80 | opcode, 126]) + size.to_bytes(2, "big")
    else:
        head = bytes([0x80 | opcode, 127]) + size.to_bytes(8, "big")
    return head + payload


def _ws_read_frame(stream: Any) -> tuple[int, bytes] | None:
    """The next message from a client (masked frames, fragments joined); None at the end."""
    opcode, message = 0, b""
    while True:
        head = stream.read(2)
        if len(head) < 2:
            return None
        fin, frame_opcode, size = head[0] & 0x80, head[0] & 0x0F, head[1] & 0x7F
        if size == 126:
            size = int.from_bytes(stream.read(2), "big")
        elif size == 127:
            size = int.from_bytes(stream.read(8), "big")
        mask = stream.read(4) if head[1] & 0x80 else b""
        payload = stream.read(size)
        if len(payload) < size:
            return None
        if mask and size:
            key = (mask * (size // 4 + 1))[:size]
            payload = (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(
                size, "big"
            )
        if frame_opcode >= 0x8:  # control frames may come between fragments
            return frame_opcode, payload
        opcode = opcode or frame_opcode
        message += payload
        if fin:
            return opcode, message


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _api_version(group: str, version: str) -> str:
    return f"{group}/{version}" if group else version


class FakeApiServer:
    """The server: object state, event history and an HTTP listener on 127.0.0.1."""

    def __init__(
        self,
        *,
        istio_versions: Sequence[str] = ("v1", "v1beta1", "v1alpha3"),
        token: str | None = DEFAULT_TOKEN,
        bookmark_interval: float = 60.0,
        history_limit: int = 10_000,
    ) -> None:
        self.token = token
        self.bookmark_interval = bookmark_interval
        self.history_limit = history_limit
        self._cond = threading.Condition()
        self._istio_versions: tuple[str, ...] = tuple(istio_versions)
        self._objects: dict[tuple[str, str, str, str], Obj] = {}
        self._history: list[_Event] = []
        self._rv = 1
        self._compacted_rv = 0
        self._drop_generation = 0
        self._bookmark_generation = 0
        self._stopping = False
        self._faults: list[Fault] = []
        self._requests: list[RequestRecord] = []
        self._snapshots: dict[str, _Snapshot] = {}
        self._active_watches: dict[str, int] = {}
        self._bookmarks_sent: dict[str, int] = {}
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        # Authentication and authorization: bearer tokens of users, and what they may do.
        self._users: dict[str, Obj] = {}
        self._grants: list[Grant] = []
        self.token_reviews: list[Obj] = []
        self.access_reviews: list[Obj] = []

    # lifecycle -----------------------------------------------------------------------------

    def start(self) -> FakeApiServer:
        server = self

        class Handler(_Handler):
            api = server

        httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        httpd.daemon_threads = True
        httpd.block_on_close = False
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-apiserver"
        )
        self._thread.daemon = True
        self._thread.start()
        return self

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def __enter__(self) -> FakeApiServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._httpd is not None, "server not started"
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def write_kubeconfig(self, path: Path) -> Path:
        """A kubeconfig for this server (with its bearer token) at ``path``."""
        return write_kubeconfig(path, self.url, self.token)

    # direct state access (what the cluster's own controllers would write) -----------------

    @property
    def resource_version(self) -> int:
        with self._cond:
            return self._rv

    def create(self, obj: Mapping[str, Any]) -> Obj:
        """Store a new object exactly as given (status included)."""
        resource, namespace, name = self._locate(obj)
        with self._cond:
            return self._create(resource, namespace, name, dict(obj))

    def apply(self, obj: Mapping[str, Any]) -> Obj:
        """Create the object, or replace it (status included) if it exists."""
        resource, namespace, name = self._locate(obj)
        with self._cond:
            current = self._objects.get((resource.group, resource.plural, namespace, name))
            if current is None:
                return self._create(resource, namespace, name, dict(obj))
            return self._replace(resource, current, copy.deepcopy(dict(obj)))

    def delete(self, kind: str, namespace: str, name: str) -> Obj | None:
        """Delete an object; the deleted object, or None if there was none."""
        resource = _BY_KIND[kind]
        ns = namespace if resource.namespaced else ""
        with self._cond:
            return self._delete(resource, ns, name)

    def get(self, kind: str, namespace: str, name: str) -> Obj | None:
        resource = _BY_KIND[kind]
        ns = namespace if resource.namespaced else ""
        with self._cond:
            found = self._objects.get((resource.group, resource.plural, ns, name))
            return copy.deepcopy(found) if found is not None else None

    def objects(self, kind: str) -> list[Obj]:
        """Every stored object of one kind, in namespace/name order."""
        with self._cond:
            return copy.deepcopy(self._matching(_BY_KIND[kind], None))

    # users and grants ----------------------------------------------------------------------

    def add_user(
        self, token: str, username: str, groups: Sequence[str] = (), uid: str = ""
    ) -> None:
        """TokenReview authenticates ``token`` as ``username``."""
        with self._cond:
            self._users[token] = {
                "username": username,
                "uid": uid or str(uuid.uuid4()),
                "groups": [*groups, "system:authenticated"],
            }

    def grant(self, grant: Grant) -> None:
        """SubjectAccessReview allows what ``grant`` allows (nothing else is allowed)."""
        with self._cond:
            self._grants.append(grant)

    def _review(self, path: str, body: bytes) -> _Reply:
        review = _decode(body)
        spec = review.get("spec") or {}
        with self._cond:
            if path == TOKEN_REVIEWS:
                self.token_reviews.append(copy.deepcopy(review))
                user = self._users.get(str(spec.get("token", "")))
                status: Obj = {"authenticated": user is not None}
                if user is not None:
                    status["user"] = copy.deepcopy(user)
                    status["audiences"] = spec.get("audiences") or []
                else:
                    status["error"] = "invalid bearer token"
            else:
                self.access_reviews.append(copy.deepcopy(review))
                allowed = any(grant.allows(spec) for grant in self._grants)
                status = {"allowed": allowed}
                if not allowed:
                    status["reason"] = "no RBAC policy matched"
        return _Reply(201, {**review, "status": status})

    # faults and observation ----------------------------------------------------------------

    def inject_fault(
        self,
        status: int,
        *,
        count: int | None = 1,
        method: str | None = None,
        watch: bool | None = None,
        path_contains: str = "",
    ) -> Fault:
        """Answer the next ``count`` matching requests with ``status`` (0 drops the connection)."""
        fault = Fault(status, count, method, watch, path_contains)
        with self._cond:
            self._faults.append(fault)
        return fault

    def remove_fault(self, fault: Fault) -> None:
        with self._cond:
            if fault in self._faults:
                self._faults.remove(fault)

    def drop_watches(self) -> None:
        """Cut every open watch connection abruptly (no terminating chunk)."""
        with self._cond:
            self._drop_generation += 1
            self._cond.notify_all()

    def compact(self) -> None:
        """Forget all history up to now: watches from an older resourceVersion get 410 Gone."""
        with self._cond:
            self._history.clear()
            self._compacted_rv = self._rv
            self._snapshots.clear()
            self._cond.notify_all()

    def send_bookmarks(self) -> None:
        """Make every open watch that allows bookmarks send one now."""
        with self._cond:
            self._bookmark_generation += 1
            self._cond.notify_all()

    def set_istio_versions(self, versions: Sequence[str]) -> None:
        """Change which networking.istio.io versions are served (empty: the CRDs are gone)."""
        with self._cond:
            self._istio_versions = tuple(versions)

    @property
    def requests(self) -> list[RequestRecord]:
        with self._cond:
            return list(self._requests)

    def bookmarks_sent(self, plural: str) -> int:
        """How many BOOKMARK events were written to watches of ``plural``."""
        with self._cond:
            return self._bookmarks_sent.get(plural, 0)

    def active_watches(self, plural: str | None = None) -> int:
        """How many watch connections are open (for ``plural``, or in all)."""
        with self._cond:
            if plural is None:
                return sum(self._active_watches.values())
            return self._active_watches.get(plural, 0)

    # discovery ----------------------------------------------------------------------------

    def _served(self) -> dict[str, tuple[str, ...]]:
        groups: dict[str, tuple[str, ...]] = {}
        for resource in RESOURCES:
            if resource.group == ISTIO_GROUP:
                if self._istio_versions:
                    groups[ISTIO_GROUP] = self._istio_versions
            else:
                groups[resource.group] = ("v1",)
        return groups

    def _serves(self, group: str, version: str) -> bool:
        return version in self._served().get(group, ())

    def _resource_list(self, group: str, version: str) -> Obj:
        resources: list[Obj] = []
        for r in RESOURCES:
            if r.group != group:
                continue
            verbs = ["create", "delete", "get", "list", "patch", "update", "watch"]
            resources.append(
                {
                    "name": r.plural,
                    "singularName": r.kind.lower(),
                    "namespaced": r.namespaced,
                    "kind": r.kind,
                    "verbs": verbs,
                }
            )
            if r.status_subresource:
                resources.append(
                    {
                        "name": f"{r.plural}/status",
                        "singularName": "",
                        "namespaced": r.namespaced,
                        "kind": r.kind,
                        "verbs": ["get", "patch", "update"],
                    }
                )
        return {
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": _api_version(group, version),
            "resources": resources,
        }

    def _discovery(self, parts: list[str]) -> _Reply | None:
        served = self._served()
        if parts == ["api"]:
            return _Reply(
                200, {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []}
            )
        if parts == ["api", "v1"]:
            return _Reply(200, self._resource_list("", "v1"))
        if parts == ["apis"]:
            groups = [
                {
                    "name": group,
                    "versions": [{"groupVersion": f"{group}/{v}", "version": v} for v in versions],
                    "preferredVersion": {
                        "groupVersion": f"{group}/{versions[0]}",
                        "version": versions[0],
                    },
                }
                for group, versions in sorted(served.items())
                if group
            ]
            return _Reply(200, {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
        if len(parts) == 3 and parts[0] == "apis":
            if not self._serves(parts[1], parts[2]):
                return _not_found("the server could not find the requested resource")
            return _Reply(200, self._resource_list(parts[1], parts[2]))
        return None

    # state changes (the lock is held) -----------------------------------------------------

    def _locate(self, obj: Mapping[str, Any]) -> tuple[Resource, str, str]:
        resource = _BY_KIND[str(obj["kind"])]
        meta = obj.get("metadata") or {}
        namespace = str(meta.get("namespace") or "default") if resource.namespaced else ""
        return resource, namespace, str(meta["name"])

    def _record(self, resource: Resource, namespace: str, kind: str, obj: Obj) -> None:
        self._history.append(
            _Event(self._rv, resource.group, resource.plural, namespace, kind, obj)
        )
        if len(self._history) > self.history_limit:
            dropped = self._history[: len(self._history) - self.history_limit]
            del self._history[: len(dropped)]
            self._compacted_rv = dropped[-1].rv
        self._cond.notify_all()

    def _create(self, resource: Resource, namespace: str, name: str, obj: Obj) -> Obj:
        key = (resource.group, resource.plural, namespace, name)
        if key in self._objects:
            raise _ApiError(409, "AlreadyExists", f'{resource.plural} "{name}" already exists')
        stored = copy.deepcopy(obj)
        meta = stored.setdefault("metadata", {})
        if resource.namespaced:
            meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)
        meta["name"] = name
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = _now()
        meta.setdefault("generation", 1)
        self._rv += 1
        meta["resourceVersion"] = str(self._rv)
        self._objects[key] = stored
        self._record(resource, namespace, "ADDED", stored)
        return copy.deepcopy(stored)

    def _replace(self, resource: Resource, current: Obj, new: Obj) -> Obj:
        meta = new.setdefault("metadata", {})
        old_meta = current["metadata"]
        for fixed in ("name", "namespace", "uid", "creationTimestamp"):
            if fixed in old_meta:
                meta[fixed] = old_meta[fixed]
        meta["generation"] = old_meta.get("generation", 1)
        meta["resourceVersion"] = old_meta["resourceVersion"]
        if new == current:
            return copy.deepcopy(current)
        if new.get("spec") != current.get("spec"):
            meta["generation"] = int(old_meta.get("generation", 1)) + 1
        self._rv += 1
        meta["resourceVersion"] = str(self._rv)
        key = (resource.group, resource.plural, old_meta.get("namespace", ""), old_meta["name"])
        self._objects[key] = new
        self._record(resource, key[2], "MODIFIED", new)
        return copy.deepcopy(new)

    def _delete(self, resource: Resource, namespace: str, name: str) -> Obj | None:
        current = self._objects.pop((resource.group, resource.plural, namespace, name), None)
        if current is None:
            return None
        self._rv += 1
        gone = copy.deepcopy(current)
        gone["metadata"]["resourceVersion"] = str(self._rv)
        self._record(resource, namespace, "DELETED", gone)
        return copy.deepcopy(gone)

    # REST -----------------------------------------------------------------------------------

    def _admit(self, record: RequestRecord, authorization: str | None) -> _Reply | Fault | None:
        with self._cond:
            self._requests.append(record)
            for fault in self._faults:
                if fault.matches(record):
                    fault.hits += 1
                    if fault.remaining is not None:
                        fault.remaining -= 1
                        if fault.remaining <= 0:
                            self._faults.remove(fault)
                    return fault
        if self.token and authorization != f"Bearer {self.token}":
            return _Reply(401, status_body(401, "Unauthorized", "Unauthorized"))
        return None

    def handle(
        self, method: str, path: str, query: Mapping[str, str], body: bytes, content_type: str
    ) -> _Reply | _WatchSpec:
        """Answer one REST request (the lock is taken here)."""
        parts = [p for p in path.split("/") if p]
        if method == "POST" and path in (TOKEN_REVIEWS, ACCESS_REVIEWS):
            try:
                return self._review(path, body)
            except _ApiError as err:
                return _Reply(err.code, status_body(err.code, err.reason, err.message))
        try:
            with self._cond:
                if method == "GET":
                    found = self._discovery(parts)
                    if found is not None:
                        return found
                target = self._parse_path(parts)
                if target is None:
                    return _not_found("the server could not find the requested resource")
                resource, version, namespace, name, subresource = target
                return self._rest(
                    method,
                    resource=resource,
                    version=version,
                    namespace=namespace,
                    name=name,
                    subresource=subresource,
                    query=query,
                    body=body,
                    content_type=content_type,
                )
        except _ApiError as err:
            return _Reply(err.code, status_body(err.code, err.reason, err.message))

    def pod_proxy_target(self, path: str) -> tuple[_Reply | None, str] | None:
        """For ``/api/v1/namespaces/NS/pods/NAME[:PORT]/proxy[/PATH]``: the URL on the pod to
        forward to (or the failure to answer with); None for any other path."""
        parts = path.split("/")
        if len(parts) < 8 or parts[1:4] != ["api", "v1", "namespaces"] or parts[5] != "pods":
            return None
        if parts[7] != "proxy":
            return None
        namespace, name_port = parts[4], parts[6]
        name, _, port = name_port.partition(":")
        with self._cond:
            pod = self._objects.get(("", "pods", namespace, name))
        if pod is None:
            return _Reply(404, status_body(404, "NotFound", f'pods "{name}" not found')), ""
        ip = (pod.get("status") or {}).get("podIP")
        if not ip:
            return _Reply(503, status_body(503, "ServiceUnavailable", "pod has no IP")), ""
        rest = "/".join(parts[8:])
        return None, f"http://{ip}:{port or 80}/{rest}"

    def pod_portforward_target(self, path: str) -> tuple[str, str] | None:
        """For ``/api/v1/namespaces/NS/pods/NAME/portforward``: the pod's (name, IP) ("" when it
        has none); None for any other path."""
        parts = path.split("/")
        if len(parts) != 8 or parts[1:4] != ["api", "v1", "namespaces"] or parts[5] != "pods":
            return None
        if parts[7] != "portforward":
            return None
        namespace, name = parts[4], parts[6]
        with self._cond:
            pod = self._objects.get(("", "pods", namespace, name))
        if pod is None:
            return name, "-"
        return name, str((pod.get("status") or {}).get("podIP") or "")

    def _parse_path(
        self, parts: list[str]
    ) -> tuple[Resource, str, str | None, str | None, str | None] | None:
        if parts[:2] == ["api", "v1"]:
            group, version, rest = "", "v1", parts[2:]
        elif len(parts) >= 3 and parts[0] == "apis":
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            return None
        if not self._serves(group, version):
            return None
        namespace: str | None = None
        if len(rest) >= 3 and rest[0] == "namespaces":
            namespace, rest = rest[1], rest[2:]
        if not rest or len(rest) > 3:
            return None
        resource = _BY_PLURAL.get((group, rest[0]))
        if resource is None:
            return None
        if resource.namespaced and namespace is None and len(rest) > 1:
            return None
        if not resource.namespaced and namespace is not None:
            return None
        name = rest[1] if len(rest) >= 2 else None
        subresource = rest[2] if len(rest) == 3 else None
        if subresource is not None and (subresource != "status" or not resource.status_subresource):
            return None
        return resource, version, namespace, name, subresource

    def _out(self, obj: Obj, resource: Resource, version: str) -> Obj:
        return {**obj, "apiVersion": _api_version(resource.group, version), "kind": resource.kind}

    def _rest(
        self,
        method: str,
        *,
        resource: Resource,
        version: str,
        namespace: str | None,
        name: str | None,
        subresource: str | None,
        query: Mapping[str, str],
        body: bytes,
        content_type: str,
    ) -> _Reply | _WatchSpec:
        ns = namespace or ""
        if name is None:
            if method == "GET" and query.get("watch") in ("true", "1"):
                return self._watch_spec(resource, version, namespace, query)
            if method == "GET":
                return _Reply(200, self._list(resource, version, namespace, query))
            if method == "POST" and (namespace is not None or not resource.namespaced):
                obj = _decode(body)
                meta = obj.get("metadata") or {}
                if not meta.get("name"):
                    raise _ApiError(422, "Invalid", "metadata.name: Required value")
                if resource.status_subresource:
                    obj.pop("status", None)
                created = self._create(resource, ns, str(meta["name"]), obj)
                return _Reply(201, self._out(created, resource, version))
            raise _ApiError(405, "MethodNotAllowed", f"{method} is not allowed here")
        key = (resource.group, resource.plural, ns, name)
        current = self._objects.get(key)
        if current is None:
            raise _ApiError(404, "NotFound", f'{resource.plural} "{name}" not found')
        if method == "GET":
            return _Reply(200, self._out(current, resource, version))
        if method == "DELETE":
            gone = self._delete(resource, ns, name)
            assert gone is not None
            if resource.delete_returns_object:
                return _Reply(200, self._out(gone, resource, version))
            return _Reply(
                200,
                {
                    "kind": "Status",
                    "apiVersion": "v1",
                    "metadata": {},
                    "status": "Success",
                    "details": {
                        "name": name,
                        "kind": resource.plural,
                        "uid": gone["metadata"]["uid"],
                    },
                },
            )
        if method == "PUT":
            new = _decode(body)
            sent_rv = (new.get("metadata") or {}).get("resourceVersion")
            if sent_rv and sent_rv != current["metadata"]["resourceVersion"]:
                raise _ApiError(
                    409,
                    "Conflict",
                    f"Operation cannot be fulfilled on {resource.plural}"
                    f' "{name}": the object has been modified',
                )
        elif method == "PATCH":
            try:
                if "json-patch" in content_type:
                    new = json_patch(current, json.loads(body))
                elif "merge-patch" in content_type:
                    new = merge_patch(current, _decode(body))
                else:
                    raise _ApiError(415, "UnsupportedMediaType", f"{content_type} not supported")
            except (ValueError, KeyError, IndexError, TypeError) as err:
                raise _ApiError(422, "Invalid", str(err)) from err
        else:
            raise _ApiError(405, "MethodNotAllowed", f"{method} is not allowed here")
        if resource.status_subresource:
            if subresource == "status":
                new = {**copy.deepcopy(current), "status": new.get("status", {})}
            elif "status" in current:
                new["status"] = copy.deepcopy(current["status"])
            else:
                new.pop("status", None)
        return _Reply(200, self._out(self._replace(resource, current, new), resource, version))

    def _matching(self, resource: Resource, namespace: str | None) -> list[Obj]:
        return [
            obj
            for (group, plural, ns, _), obj in sorted(self._objects.items())
            if group == resource.group
            and plural == resource.plural
            and (namespace is None or ns == namespace)
        ]

    def _list(
        self, resource: Resource, version: str, namespace: str | None, query: Mapping[str, str]
    ) -> Obj:
        token = query.get("continue")
        if token:
            try:
                state = json.loads(base64.urlsafe_b64decode(token.encode()))
                snapshot = self._snapshots[state["id"]]
                start = int(state["start"])
            except (ValueError, KeyError) as err:
                raise _ApiError(
                    410,
                    "Expired",
                    "The provided continue parameter is too old "
                    "to display a consistent list result.",
                ) from err
        else:
            snapshot_id = uuid.uuid4().hex
            selected = _label_selector(query.get("labelSelector", ""))
            snapshot = _Snapshot(
                self._rv,
                [
                    self._out(o, resource, version)
                    for o in self._matching(resource, namespace)
                    if selected(o)
                ],
            )
            self._snapshots[snapshot_id] = snapshot
            state = {"id": snapshot_id}
            start = 0
        limit = int(query.get("limit") or 0)
        end = len(snapshot.items) if limit <= 0 else min(len(snapshot.items), start + limit)
        metadata: Obj = {"resourceVersion": str(snapshot.rv)}
        if end < len(snapshot.items):
            next_state = {"id": state["id"], "start": end}
            metadata["continue"] = base64.urlsafe_b64encode(
                json.dumps(next_state).encode()
            ).decode()
            metadata["remainingItemCount"] = len(snapshot.items) - end
        else:
            self._snapshots.pop(state["id"], None)
        return {
            "kind": f"{resource.kind}List",
            "apiVersion": _api_version(resource.group, version),
            "metadata": metadata,
            "items": [
                {k: v for k, v in item.items() if k not in ("kind", "apiVersion")}
                for item in snapshot.items[start:end]
            ],
        }

    def _watch_spec(
        self, resource: Resource, version: str, namespace: str | None, query: Mapping[str, str]
    ) -> _WatchSpec:
        raw_rv = query.get("resourceVersion") or ""
        try:
            rv = int(raw_rv) if raw_rv not in ("", "0") else None
        except ValueError as err:
            raise _ApiError(400, "BadRequest", f"invalid resourceVersion {raw_rv!r}") from err
        timeout = float(query.get("timeoutSeconds") or 1800)
        bookmarks = query.get("allowWatchBookmarks") in ("true", "1")
        return _WatchSpec(resource, version, namespace, rv, timeout, bookmarks)

    def watch_events(self, spec: _WatchSpec) -> Iterator[Obj]:
        """The events of one watch, each as it happens, until its timeout (or a drop/stop)."""
        resource = spec.resource
        with self._cond:
            generation = self._drop_generation
            bookmark_generation = self._bookmark_generation
            self._active_watches[resource.plural] = self._active_watches.get(resource.plural, 0) + 1
            if spec.resource_version is None:
                initial = [
                    {"type": "ADDED", "object": self._out(o, resource, spec.version)}
                    for o in self._matching(resource, spec.namespace)
                ]
                sent = self._rv
            else:
                initial = []
                sent = spec.resource_version
        try:
            yield from initial
            deadline = time.monotonic() + spec.timeout
            next_bookmark = time.monotonic() + self.bookmark_interval
            while True:
                bookmark = False
                with self._cond:
                    while True:
                        if self._stopping or generation != self._drop_generation:
                            raise _DroppedError
                        if sent < self._compacted_rv:
                            message = f"too old resource version: {sent} ({self._compacted_rv})"
                            pending = [
                                {"type": "ERROR", "object": status_body(410, "Expired", message)}
                            ]
                            break
                        pending = [
                            {"type": e.type, "object": self._out(e.obj, resource, spec.version)}
                            for e in self._history[
                                bisect.bisect_right(self._history, sent, key=lambda e: e.rv) :
                            ]
                            if e.group == resource.group
                            and e.plural == resource.plural
                            and (spec.namespace is None or e.namespace == spec.namespace)
                        ]
                        sent = self._rv
                        now = time.monotonic()
                        bookmark = spec.bookmarks and (
                            bookmark_generation != self._bookmark_generation or now >= next_bookmark
                        )
                        if pending or bookmark or now >= deadline:
                            break
                        self._cond.wait(min(deadline, next_bookmark) - now)
                    bookmark_generation = self._bookmark_generation
                yield from pending
                if pending and pending[-1]["type"] == "ERROR":
                    return
                if bookmark:
                    next_bookmark = time.monotonic() + self.bookmark_interval
                    with self._cond:
                        count = self._bookmarks_sent.get(resource.plural, 0)
                        self._bookmarks_sent[resource.plural] = count + 1
                    yield {
                        "type": "BOOKMARK",
                        "object": {
                            "kind": resource.kind,
                            "apiVersion": _api_version(resource.group, spec.version),
                            "metadata": {"resourceVersion": str(sent)},
                        },
                    }
                if time.monotonic() >= deadline:
                    return
        finally:
            with self._cond:
                self._active_watches[resource.plural] -= 1


class _ApiError(Exception):
    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message


def _label_selector(text: str) -> Callable[[Obj], bool]:
    """Whether an object's labels match an equality-based selector (``a=b,c==d,e!=f``)."""
    wanted: list[tuple[str, str, bool]] = []
    for term in filter(None, (t.strip() for t in text.split(","))):
        if "!=" in term:
            key, value = term.split("!=", 1)
            wanted.append((key, value, False))
        else:
            key, value = term.replace("==", "=").split("=", 1)
            wanted.append((key, value, True))

    def matches(obj: Obj) -> bool:
        labels = (obj.get("metadata") or {}).get("labels") or {}
        return all((labels.get(key) == value) is equal for key, value, equal in wanted)

    return matches


def _not_found(message: str) -> _Reply:
    return _Reply(404, status_body(404, "NotFound", message))


def _decode(body: bytes) -> Obj:
    try:
        value = json.loads(body or b"{}")
    except ValueError as err:
        raise _ApiError(400, "BadRequest", f"invalid JSON: {err}") from err
    if not isinstance(value, dict):
        raise _ApiError(400, "BadRequest", "the body must be a JSON object")
    return value


class _Handler(BaseHTTPRequestHandler):
    """Turns HTTP/1.1 requests into ``FakeApiServer.handle`` calls."""

    api: FakeApiServer
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().setup()

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: tests read the request log instead."""

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_PUT(self) -> None:
        self._serve("PUT")

    def do_PATCH(self) -> None:
        self._serve("PATCH")

    def do_DELETE(self) -> None:
        self._serve("DELETE")

    def _serve(self, method: str) -> None:
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        record = RequestRecord(method, url.path, query)
        refused = self.api._admit(record, self.headers.get("Authorization"))
        if isinstance(refused, Fault):
            if refused.status == 0:
                self._drop()
                return
            reply = _Reply(
                refused.status, status_body(refused.status, "InternalError", "injected fault")
            )
            if refused.status == 410:
                reply = _Reply(
                    410, status_body(410, "Expired", "injected: resource version too old")
                )
            self._reply(reply)
            return
        if refused is not None:
            self._reply(refused)
            return
        if method == "GET" and (proxied := self.api.pod_proxy_target(url.path)) is not None:
            self._proxy(*proxied, url.query)
            return
        if method == "GET" and (pod := self.api.pod_portforward_target(url.path)) is not None:
            self._portforward(*pod, parse_qs(url.query).get("ports", []))
            return
        answer = self.api.handle(
            method, url.path, query, body, self.headers.get("Content-Type") or ""
        )
        if isinstance(answer, _Reply):
            self._reply(answer)
        else:
            self._stream(answer)

    def _proxy(self, reply: _Reply | None, target: str, query: str) -> None:
        """Forward a GET to a pod (the caller's headers, Authorization included, stay here)."""
        if reply is None:
            url = target + (f"?{query}" if query else "")
            try:
                with urllib.request.urlopen(url, timeout=10) as response:
                    status, data = response.status, response.read()
                    content_type = response.headers.get("Content-Type") or "text/plain"
            except urllib.error.HTTPError as error:
                status, data = error.code, error.read()
                content_type = error.headers.get("Content-Type") or "text/plain"
            except OSError as error:
                reply = _Reply(
                    503,
                    status_body(503, "ServiceUnavailable", f"error trying to reach pod: {error}"),
                )
        if reply is not None:
            self._reply(reply)
            return
        head = (
            f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n"
            f"Content-Type: {content_type}\r\n"
            f"Content-Length: {len(data)}\r\n\r\n"
        ).encode()
        self.wfile.write(head + data)

    def _portforward(self, name: str, ip: str, port_values: list[str]) -> None:
        """Upgrade to a WebSocket and forward each of ``ports`` to the pod, as the kubelet's
        ``v4.channel.k8s.io`` protocol does: port *i* has data channel ``2i`` and error channel
        ``2i+1``; the server opens each with the port number (two bytes, little-endian), then
        every binary frame is the channel byte and data. An error reaching the pod's port is
        sent as text on that port's error channel."""
        if ip == "-":
            self._reply(_Reply(404, status_body(404, "NotFound", f'pods "{name}" not found')))
            return
        if not ip:
            self._reply(_Reply(400, status_body(400, "BadRequest", "pod has no IP")))
            return
        try:
            ports = [int(p) for value in port_values for p in value.split(",")]
        except ValueError:
            ports = []
        if not ports or not all(0 < p < 65536 for p in ports):
            self._reply(_Reply(400, status_body(400, "BadRequest", "invalid or missing ports")))
            return
        protocols = [
            p.strip() for p in (self.headers.get("Sec-WebSocket-Protocol") or "").split(",")
        ]
        key = self.headers.get("Sec-WebSocket-Key")
        if (self.headers.get("Upgrade") or "").lower() != "websocket" or not key:
            self._reply(_Reply(400, status_body(400, "BadRequest", "Upgrade request required")))
            return
        if WS_PORT_FORWARD_PROTOCOL not in protocols:
            self._reply(_Reply(400, status_body(400, "BadRequest", "unsupported subprotocol")))
            return
        accept = base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()
        self.wfile.write(
            (
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n"
                f"Sec-WebSocket-Protocol: {WS_PORT_FORWARD_PROTOCOL}\r\n\r\n"
            ).encode()
        )
        self.close_connection = True
        writing = threading.Lock()

        def send(opcode: int, payload: bytes) -> None:
            with writing, contextlib.suppress(OSError):
                self.wfile.write(_ws_frame(opcode, payload))

        pods: dict[int, socket.socket] = {}
        for index, port in enumerate(ports):
            number = port.to_bytes(2, "little")
            send(WS_BINARY, bytes([2 * index]) + number)
            send(WS_BINARY, bytes([2 * index + 1]) + number)
            try:
                pods[2 * index] = socket.create_connection((ip, port), timeout=10)
            except OSError as error:
                message = f"error forwarding port {port} to pod {name}: {error}"
                send(WS_BINARY, bytes([2 * index + 1]) + message.encode())
        pumps = [
            threading.Thread(target=self._pod_to_client, args=(channel, pod, send), daemon=True)
            for channel, pod in pods.items()
        ]
        for pump in pumps:
            pump.start()
        try:
            while (frame := _ws_read_frame(self.rfile)) is not None:
                opcode, payload = frame
                if opcode == WS_CLOSE:
                    break
                if opcode == WS_PING:
                    send(WS_PONG, payload)
                elif opcode == WS_BINARY and payload and payload[0] in pods:
                    pods[payload[0]].sendall(payload[1:])
        except OSError:
            pass
        for pod in pods.values():
            with contextlib.suppress(OSError):
                pod.shutdown(socket.SHUT_RDWR)
            pod.close()
        for pump in pumps:
            pump.join(10)
        send(WS_CLOSE, (1000).to_bytes(2, "big"))

    @staticmethod
    def _pod_to_client(
        channel: int, pod: socket.socket, send: Callable[[int, bytes], None]
    ) -> None:
        pod.settimeout(None)
        prefix = bytes([channel])
        with contextlib.suppress(OSError):
            while data := pod.recv(65536):
                send(WS_BINARY, prefix + data)

    def _reply(self, reply: _Reply) -> None:
        data = json.dumps(reply.body).encode()
        head = (
            f"HTTP/1.1 {reply.status} {HTTPStatus(reply.status).phrase}\r\n"
            "Content-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\n\r\n"
        ).encode()
        self.wfile.write(head + data)

    def _stream(self, spec: _WatchSpec) -> None:
        self.wfile.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        try:
            for event in self.api.watch_events(spec):
                line = json.dumps(event).encode() + b"\n"
                self.wfile.write(b"%x\r\n%s\r\n" % (len(line), line))
            self.wfile.write(b"0\r\n\r\n")
        except _DroppedError:
            self._drop()
        except OSError:
            self.close_connection = True

    def _drop(self) -> None:
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)
