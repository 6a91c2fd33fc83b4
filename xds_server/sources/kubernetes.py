"""Kubernetes informers: each kind is listed, then watched, and reported to an ``ObjectSink``.

One thread per kind (per namespace when namespaces are given) lists with ``limit``/``continue``,
then watches from the list's resourceVersion with bookmarks and a server-side timeout, resumes
from the last resourceVersion it saw, relists on 410 Gone and backs off with jitter on errors.
Every sink call goes through ``call_soon`` in the order the events happened, so the sink can live
on an asyncio loop (``loop.call_soon_threadsafe``). The whole cluster is one source: the first
``replace_all`` is followed by ``mark_synced`` once every informer has listed (a kind the server
does not serve counts as listed empty, is reported as a problem and rediscovered with backoff).
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import random
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import urllib3
from kubernetes import client, config

from xds_server.sources.base import KubeObject, ObjectKey, ObjectSink, SourceProblem, object_key

log = logging.getLogger(__name__)

CallSoon = Callable[[Callable[[], None]], None]

SOURCE_NAME = "kubernetes"


@dataclass(frozen=True)
class KindSpec:
    """A kind splitplane reads and where the API serves it (``versions`` in order of preference)."""

    kind: str
    group: str
    versions: tuple[str, ...]
    plural: str
    namespaced: bool = True


KIND_SPECS: tuple[KindSpec, ...] = (
    KindSpec("Service", "", ("v1",), "services"),
    KindSpec("EndpointSlice", "discovery.k8s.io", ("v1",), "endpointslices"),
    KindSpec("Pod", "", ("v1",), "pods"),
    KindSpec(
        "VirtualService", "networking.istio.io", ("v1", "v1beta1", "v1alpha3"), "virtualservices"
    ),
    KindSpec(
        "DestinationRule", "networking.istio.io", ("v1", "v1beta1", "v1alpha3"), "destinationrules"
    ),
    KindSpec("Sidecar", "networking.istio.io", ("v1", "v1beta1", "v1alpha3"), "sidecars"),
    KindSpec("Ingress", "networking.k8s.io", ("v1",), "ingresses"),
    KindSpec("IngressClass", "networking.k8s.io", ("v1",), "ingressclasses", namespaced=False),
)


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff: ``initial`` doubling up to ``maximum``, less up to ``jitter`` of it."""

    initial: float = 0.5
    maximum: float = 30.0
    factor: float = 2.0
    jitter: float = 0.5


def backoff_delay(policy: Backoff, attempt: int, rand: float) -> float:
    """The pause before retry number ``attempt`` (0-based); ``rand`` is uniform in [0, 1)."""
    base = min(policy.maximum, policy.initial * policy.factor ** min(attempt, 64))
    return base * (1.0 - policy.jitter * rand)


@dataclass(frozen=True)
class WatchSettings:
    """How informers talk to the API server."""

    timeout_seconds: int = 300
    page_size: int = 500
    backoff: Backoff = Backoff()
    connect_timeout: float = 10.0
    read_timeout: float = 60.0


class ApiStatusError(Exception):
    """The API server answered with a non-2xx status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.message = message


def api_client_from_flags(
    kubeconfig: str | None = None, in_cluster: bool = False, context: str | None = None
) -> client.ApiClient:
    """An ApiClient for ``--in-cluster`` or ``--kubeconfig PATH`` (default: ``$KUBECONFIG``)."""
    configuration = client.Configuration()
    if in_cluster:
        config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    else:
        config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=kubeconfig,
            context=context,
            client_configuration=configuration,
            persist_config=False,
        )
    return client.ApiClient(configuration)


def open_request(
    api: client.ApiClient,
    method: str,
    path: str,
    *,
    query: Mapping[str, str | int] | None = None,
    body: Any = None,
    content_type: str | None = None,
    timeout: tuple[float, float] | None = None,
) -> urllib3.BaseHTTPResponse:
    """Send one request through the client (auth included); the unread streaming response.

    A non-2xx answer is read and raised as ``ApiStatusError``.
    """
    headers = {"Accept": "application/json"}
    if content_type is not None:
        headers["Content-Type"] = content_type
    request = api.param_serialize(
        method=method,
        resource_path=path,
        query_params=dict(query) if query else None,
        header_params=headers,
        body=body,
        auth_settings=["BearerToken"],
    )
    response: urllib3.BaseHTTPResponse = api.call_api(*request, _request_timeout=timeout).response
    if not 200 <= response.status <= 299:
        raw = response.read()
        response.release_conn()
        raise ApiStatusError(response.status, _status_message(raw))
    return response


def request_json(
    api: client.ApiClient,
    method: str,
    path: str,
    *,
    query: Mapping[str, str | int] | None = None,
    body: Any = None,
    content_type: str | None = None,
    timeout: tuple[float, float] | None = (10.0, 60.0),
) -> Any:
    """Send one request and return its decoded JSON answer."""
    response = open_request(
        api, method, path, query=query, body=body, content_type=content_type, timeout=timeout
    )
    try:
        return json.loads(response.read())
    finally:
        response.release_conn()


def _status_message(raw: bytes) -> str:
    try:
        decoded = json.loads(raw)
    except ValueError:
        return raw.decode(errors="replace")[:200]
    if isinstance(decoded, dict) and decoded.get("message"):
        return str(decoded["message"])
    return raw.decode(errors="replace")[:200]


def served_api_version(api: client.ApiClient, spec: KindSpec) -> str | None:
    """The apiVersion (``group/version``) the server serves ``spec`` at, preferring the first
    of ``spec.versions``; None when it is not served at all."""
    if not spec.group:
        found = _serves_resource(api, f"/api/{spec.versions[0]}", spec.plural)
        return spec.versions[0] if found else None
    groups = request_json(api, "GET", "/apis").get("groups") or []
    offered = {
        str(v.get("version"))
        for g in groups
        if g.get("name") == spec.group
        for v in g.get("versions") or []
    }
    for version in spec.versions:
        if version in offered and _serves_resource(
            api, f"/apis/{spec.group}/{version}", spec.plural
        ):
            return f"{spec.group}/{version}"
    return None


def _serves_resource(api: client.ApiClient, path: str, plural: str) -> bool:
    try:
        listing = request_json(api, "GET", path)
    except ApiStatusError as err:
        if err.status == 404:
            return False
        raise
    return any(r.get("name") == plural for r in listing.get("resources") or [])


def collection_path(spec: KindSpec, api_version: str, namespace: str | None) -> str:
    """The REST path of a kind's collection (in one namespace, or across all)."""
    root = f"/apis/{api_version}" if spec.group else f"/api/{api_version}"
    scope = f"/namespaces/{namespace}" if namespace and spec.namespaced else ""
    return f"{root}{scope}/{spec.plural}"


_POD_METADATA = ("name", "namespace", "labels", "uid", "creationTimestamp", "resourceVersion")
_POD_STATUS = ("podIP", "podIPs", "phase", "conditions")


def trimmed_pod(pod: KubeObject) -> dict[str, Any]:
    """The parts of a Pod that translation reads.

    Identity, labels, node, IPs, readiness, and the named container ports a Service's
    ``targetPort`` may refer to.
    """
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    status = pod.get("status") or {}
    out: dict[str, Any] = {
        "apiVersion": pod.get("apiVersion", "v1"),
        "kind": "Pod",
        "metadata": {k: meta[k] for k in _POD_METADATA if k in meta},
        "spec": _trimmed_pod_spec(spec),
        "status": {k: status[k] for k in _POD_STATUS if k in status},
    }
    return out


def _trimmed_pod_spec(spec: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"nodeName": spec["nodeName"]} if "nodeName" in spec else {}
    containers = [
        {"ports": [p for p in c.get("ports") or () if isinstance(p, Mapping) and "name" in p]}
        for c in spec.get("containers") or ()
        if isinstance(c, Mapping)
    ]
    if any(c["ports"] for c in containers):
        out["containers"] = containers
    return out


def normalized(obj: Mapping[str, Any], kind: str, api_version: str) -> KubeObject:
    """An object as the sink receives it: ``kind``/``apiVersion`` set, no ``managedFields``,
    Pods trimmed to what translation needs."""
    out = dict(obj)
    out.setdefault("kind", kind)
    out.setdefault("apiVersion", api_version)
    if kind == "Pod":
        return trimmed_pod(out)
    meta = out.get("metadata")
    if isinstance(meta, dict) and "managedFields" in meta:
        out["metadata"] = {k: v for k, v in meta.items() if k != "managedFields"}
    return out


def _resource_version(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("resourceVersion") or "")


class _Hub:
    """What every informer holds, reported to the sink in the order it happened."""

    def __init__(
        self, sink: ObjectSink, source: str, informers: Sequence[str], call_soon: CallSoon
    ) -> None:
        self._sink = sink
        self._source = source
        self._call_soon = call_soon
        self._lock = threading.Lock()
        self._caches: dict[str, dict[ObjectKey, KubeObject]] = {i: {} for i in informers}
        self._listed: set[str] = set()
        self._problems: dict[str, SourceProblem] = {}
        self._synced = False

    def _deliver(self, call: Callable[[], None]) -> None:
        self._call_soon(call)

    def _replace_all(self) -> None:
        objects = [obj for cache in self._caches.values() for obj in cache.values()]
        self._deliver(functools.partial(self._sink.replace_all, self._source, objects))

    def _set_problem(self, informer: str, problem: SourceProblem | None) -> None:
        if self._problems.get(informer) == problem:
            return
        if problem is None:
            del self._problems[informer]
        else:
            self._problems[informer] = problem
        problems = [self._problems[k] for k in sorted(self._problems)]
        self._deliver(functools.partial(self._sink.set_problems, self._source, problems))

    def _note_listed(self, informer: str) -> None:
        """Once every informer has listed: the full state, then synced."""
        self._listed.add(informer)
        if not self._synced and self._listed == set(self._caches):
            self._synced = True
            self._replace_all()
            self._deliver(functools.partial(self._sink.mark_synced, self._source))

    def listed(self, informer: str, objects: dict[ObjectKey, KubeObject]) -> None:
        """A (re)list of ``informer`` finished: it holds exactly ``objects`` now.

        Before every informer has listed, nothing is handed over: the sink gets the full state
        once, when the last list is in (the store would hold it back until then anyway, and
        handing over the growing state after each kind's list cost a pass over every object
        listed so far, per kind).
        """
        with self._lock:
            self._caches[informer] = objects
            self._set_problem(informer, None)
            if self._synced:
                self._replace_all()
            self._note_listed(informer)

    def unserved(self, informer: str, problem: SourceProblem) -> None:
        """``informer``'s kind is not served: it holds nothing and counts as listed."""
        with self._lock:
            if self._caches[informer]:
                self._caches[informer] = {}
                if self._synced:
                    self._replace_all()
            self._set_problem(informer, problem)
            self._note_listed(informer)

    def problem(self, informer: str, problem: SourceProblem | None) -> None:
        with self._lock:
            self._set_problem(informer, problem)

    def event(self, informer: str, event_type: str, obj: KubeObject) -> None:
        """One ADDED / MODIFIED / DELETED watch event."""
        key = object_key(obj)
        with self._lock:
            cache = self._caches[informer]
            if event_type == "DELETED":
                if cache.pop(key, None) is not None:
                    self._deliver(functools.partial(self._sink.delete, self._source, key))
                return
            old = cache.get(key)
            if old is not None and _resource_version(old) == _resource_version(obj):
                return
            cache[key] = obj
            self._deliver(functools.partial(self._sink.upsert, self._source, obj))


class _StopRequestedError(Exception):
    """The source is stopping."""


class _RelistNeededError(Exception):
    """The watch cannot resume (410 Gone, or the resource went away): list again."""


_TRANSIENT = (ApiStatusError, urllib3.exceptions.HTTPError, OSError, ValueError)


class _Informer:
    """Lists and watches one kind (in one namespace, or in all) for the hub."""

    def __init__(
        self,
        api: client.ApiClient,
        hub: _Hub,
        *,
        spec: KindSpec,
        namespace: str | None,
        settings: WatchSettings,
        stopping: threading.Event,
    ) -> None:
        self.name = informer_name(spec, namespace)
        self._api = api
        self._hub = hub
        self._spec = spec
        self._namespace = namespace
        self._settings = settings
        self._stopping = stopping
        self._rng = random.Random()
        self._response_lock = threading.Lock()
        self._response: urllib3.BaseHTTPResponse | None = None
        self._resource_version = ""
        self.thread = threading.Thread(target=self._run, name=f"informer {self.name}", daemon=True)

    def interrupt(self) -> None:
        """Unblock a watch read (used when stopping)."""
        with self._response_lock:
            response = self._response
        if response is not None:
            with contextlib.suppress(ValueError, RuntimeError, OSError, NotImplementedError):
                response.shutdown()

    def _pause(self, attempt: int) -> None:
        delay = backoff_delay(self._settings.backoff, attempt, self._rng.random())
        if self._stopping.wait(delay):
            raise _StopRequestedError

    def _run(self) -> None:
        failures = 0
        try:
            while not self._stopping.is_set():
                try:
                    api_version = served_api_version(self._api, self._spec)
                    if api_version is None:
                        self._hub.unserved(self.name, self._unserved_problem())
                        self._pause(failures)
                        failures += 1
                        continue
                    path = collection_path(self._spec, api_version, self._namespace)
                    self._list(path, api_version)
                    failures = 0
                    self._watch(path, api_version)
                except _RelistNeededError:
                    continue
                except _TRANSIENT as err:
                    log.warning("listing %s failed: %s", self.name, err)
                    self._hub.problem(self.name, self._problem(f"cannot list: {err}"))
                    self._pause(failures)
                    failures += 1
        except _StopRequestedError:
            pass
        except Exception:
            log.exception("informer %s stopped unexpectedly", self.name)
            raise

    def _problem(self, message: str) -> SourceProblem:
        where = f" in namespace {self._namespace}" if self._namespace else ""
        return SourceProblem(message=f"{self._spec.kind}{where}: {message}", kind=self._spec.kind)

    def _unserved_problem(self) -> SourceProblem:
        spec = self._spec
        api = f"{spec.group}/({'|'.join(spec.versions)})" if spec.group else spec.versions[0]
        return self._problem(
            f"{spec.plural} ({api}) is not served by the API server; treated as empty and retried"
        )

    def _list(self, path: str, api_version: str) -> None:
        objects: dict[ObjectKey, KubeObject] = {}
        token = ""
        while True:
            if self._stopping.is_set():
                raise _StopRequestedError
            query: dict[str, str | int] = {"limit": self._settings.page_size}
            if token:
                query["continue"] = token
            page = request_json(self._api, "GET", path, query=query, timeout=self._timeouts())
            for item in page.get("items") or []:
                obj = normalized(item, self._spec.kind, api_version)
                objects[object_key(obj)] = obj
            meta = page.get("metadata") or {}
            token = str(meta.get("continue") or "")
            if not token:
                self._resource_version = str(meta.get("resourceVersion") or "")
                break
        log.debug(
            "listed %d %s at resourceVersion %s", len(objects), self.name, self._resource_version
        )
        self._hub.listed(self.name, objects)

    def _timeouts(self) -> tuple[float, float]:
        return (self._settings.connect_timeout, self._settings.read_timeout)

    def _watch(self, path: str, api_version: str) -> None:
        """Watch until a relist is needed; reconnects from the last resourceVersion seen."""
        failures = 0
        while not self._stopping.is_set():
            try:
                if self._watch_once(path, api_version):
                    failures = 0
            except ApiStatusError as err:
                if err.status in (404, 410):
                    raise _RelistNeededError from err
                log.info("watch %s failed: %s", self.name, err)
                self._pause(failures)
                failures += 1
            except (urllib3.exceptions.HTTPError, OSError) as err:
                if self._stopping.is_set():
                    raise _StopRequestedError from err
                log.info("watch %s broke: %s", self.name, err)
                self._pause(failures)
                failures += 1
        raise _StopRequestedError

    def _watch_once(self, path: str, api_version: str) -> bool:
        """One watch request; True if it delivered anything or ended cleanly."""
        query: dict[str, str | int] = {
            "watch": "true",
            "resourceVersion": self._resource_version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": self._settings.timeout_seconds,
        }
        read_timeout = self._settings.timeout_seconds + self._settings.read_timeout
        response = open_request(
            self._api,
            "GET",
            path,
            query=query,
            timeout=(self._settings.connect_timeout, read_timeout),
        )
        with self._response_lock:
            self._response = response
        try:
            if self._stopping.is_set():
                raise _StopRequestedError
            for line in _lines(response.stream(None, decode_content=True)):
                self._on_line(line, api_version)
            return True
        finally:
            with self._response_lock:
                self._response = None
            response.release_conn()

    def _on_line(self, line: bytes, api_version: str) -> None:
        event = json.loads(line)
        event_type = str(event.get("type"))
        obj = event.get("object") or {}
        if event_type == "ERROR":
            code = int(obj.get("code") or 0)
            if code == 410:
                log.info(
                    "watch %s: resourceVersion %s is gone, relisting",
                    self.name,
                    self._resource_version,
                )
                raise _RelistNeededError
            raise ApiStatusError(code, str(obj.get("message") or "watch error"))
        rv = _resource_version(obj)
        if event_type == "BOOKMARK":
            if rv:
                self._resource_version = rv
            return
        if event_type not in ("ADDED", "MODIFIED", "DELETED"):
            log.warning("watch %s: unknown event type %r", self.name, event_type)
            return
        self._hub.event(self.name, event_type, normalized(obj, self._spec.kind, api_version))
        if rv:
            self._resource_version = rv


def _lines(chunks: Iterator[bytes]) -> Iterator[bytes]:
    """Newline-separated lines, each yielded as soon as its last byte arrives."""
    buffer = bytearray()
    for chunk in chunks:
        buffer.extend(chunk)
        while (end := buffer.find(b"\n")) >= 0:
            line = bytes(buffer[:end]).strip()
            del buffer[: end + 1]
            if line:
                yield line
    rest = bytes(buffer).strip()
    if rest:
        yield rest


def informer_name(spec: KindSpec, namespace: str | None) -> str:
    """``Kind`` for all namespaces, ``Kind/namespace`` for one."""
    return f"{spec.kind}/{namespace}" if namespace and spec.namespaced else spec.kind


def _call_now(call: Callable[[], None]) -> None:
    call()


class KubernetesSource:
    """Informers for every kind in ``KIND_SPECS``, reporting into ``sink`` as source ``name``.

    ``namespaces`` empty means all; otherwise one informer per namespaced kind per namespace
    (cluster-scoped kinds are always watched once). ``call_soon`` delivers each sink call (for
    an asyncio sink: ``loop.call_soon_threadsafe``); by default the call is made on the informer
    thread, serialized with every other.
    """

    def __init__(
        self,
        api: client.ApiClient,
        sink: ObjectSink,
        *,
        namespaces: Sequence[str] = (),
        call_soon: CallSoon = _call_now,
        name: str = SOURCE_NAME,
        settings: WatchSettings = WatchSettings(),
        kinds: Sequence[KindSpec] = KIND_SPECS,
    ) -> None:
        self.name = name
        self._stopping = threading.Event()
        scopes: list[tuple[KindSpec, str | None]] = []
        for spec in kinds:
            if spec.namespaced and namespaces:
                scopes.extend((spec, ns) for ns in dict.fromkeys(namespaces))
            else:
                scopes.append((spec, None))
        hub = _Hub(sink, name, [informer_name(s, ns) for s, ns in scopes], call_soon)
        self._informers = [
            _Informer(api, hub, spec=spec, namespace=ns, settings=settings, stopping=self._stopping)
            for spec, ns in scopes
        ]

    @property
    def informer_names(self) -> list[str]:
        return [i.name for i in self._informers]

    def start(self) -> None:
        """Start every informer thread (returns at once; ``mark_synced`` tells when listed)."""
        for informer in self._informers:
            informer.thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop every informer and wait (up to ``timeout`` each) for its thread to end."""
        self._stopping.set()
        for informer in self._informers:
            informer.interrupt()
        for informer in self._informers:
            if informer.thread.is_alive():
                informer.thread.join(timeout)

    @property
    def running(self) -> bool:
        return any(i.thread.is_alive() for i in self._informers)
