"""The web dashboard at the debug endpoint's ``/``.

One HTML page (package data, ``dashboard.html``: its script and style inline, nothing fetched
from anywhere else) reads three paged JSON views and one event stream:

=================================  ==========================================================
/dashboard/services?q=&page=&size= VirtualService routes: configured weights, observed shares,
                                   error rates, and where each came from (the file and line of
                                   a watched folder, else namespace/name)
/dashboard/proxies?q=&page=&size=  connected proxies: identity, role, group, per-type state
                                   with Envoy's full error text
/dashboard/diagnostics?q=&page=    current diagnostics
/dashboard/events                  server-sent events: which views changed
=================================  ==========================================================

The server filters and pages (``q`` matches any part of a row's text, case-insensitively), so a
browser never holds more than a page of a mesh of 10k services. Pages render in the debug
endpoint's worker threads from immutable state; the VirtualServices' order and filter text are
worked out once per model, so a page after a change costs its own rows, not a sort of the mesh.
``Changes`` watches, only while a browser listens, whether each view changed and tells every
listening browser which views to fetch again: whether the model or the diagnostics were replaced
is a comparison of identities, made on the HTTP server's loop every 50 ms (a weight change is
seen as soon as the new model is); the observed traffic and the proxies' states, which cost a
walk over every reported cluster and every client, are fingerprinted twice a second in a worker
thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from importlib import resources
from typing import Any, Protocol

from aiohttp import web

from translators.diagnostics import Diagnostic
from translators.model import MeshModel, VirtualHost
from xds_server.debug import views as debug_views
from xds_server.debug.traffic import route_traffic
from xds_server.xds.client_status import ClientView
from xds_server.xds.load_reports import Load

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
POLL_SECONDS = 0.05  # how often the model's and diagnostics' identities are compared
WALK_SECONDS = 0.5  # how often traffic and proxies are fingerprinted while a browser listens
KEEPALIVE_SECONDS = 15.0  # a comment line on an idle event stream
VIEWS = ("services", "proxies", "diagnostics")
CLOSED: frozenset[str] = frozenset({"closed"})  # tells an event stream the server is stopping


class DashboardState(Protocol):
    """What the dashboard reads (a part of the debug endpoint's state)."""

    def clients(self) -> Sequence[ClientView]: ...

    def model(self) -> MeshModel | None: ...

    def diagnostics(self) -> Sequence[Diagnostic]: ...

    def traffic(self) -> Mapping[str, Load]: ...

    @property
    def traffic_window(self) -> float: ...


def page_html() -> bytes:
    """The dashboard page."""
    return resources.files(__package__).joinpath("dashboard.html").read_bytes()


@dataclass(frozen=True)
class PageQuery:
    text: str = ""  # lower-case filter; "" keeps everything
    page: int = 1
    size: int = DEFAULT_PAGE_SIZE


def page_query(query: Mapping[str, str]) -> PageQuery:
    """The filter and page a request asks for, clamped to sane values."""

    def number(key: str, default: int, high: int) -> int:
        value = query.get(key, "")
        return max(1, min(high, int(value))) if value.isdigit() else default

    return PageQuery(
        text=query.get("q", "").strip().lower()[:200],
        page=number("page", 1, 1_000_000),
        size=number("size", DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE),
    )


def _paged(rows: Sequence[Any], query: PageQuery, render: Callable[[Any], Any]) -> dict[str, Any]:
    pages = max(1, -(-len(rows) // query.size))
    page = min(query.page, pages)
    start = (page - 1) * query.size
    return {
        "total": len(rows),
        "page": page,
        "pages": pages,
        "size": query.size,
        "items": [render(row) for row in rows[start : start + query.size]],
    }


def _host_text(scope: str, host: VirtualHost) -> str:
    clusters = " ".join(d.cluster for route in host.routes for d in route.destinations)
    return f"{host.source} {scope} {host.name} {' '.join(host.hosts)} {clusters}".lower()


@dataclass(frozen=True)
class _HostIndex:
    """A model's VirtualService hosts in page order, with their filter texts."""

    model: MeshModel | None
    hosts: tuple[tuple[str, VirtualHost], ...]
    texts: tuple[str, ...]


# The last model's index, replaced whole (pages render in several threads).
_last_index: list[_HostIndex] = [_HostIndex(None, (), ())]


def _host_index(model: MeshModel | None) -> _HostIndex:
    index = _last_index[0]
    if index.model is model and model is not None:
        return index
    hosts: list[tuple[str, VirtualHost]] = []
    if model is not None:
        for scope, group in (("mesh", model.mesh_hosts), ("gateway", model.gateway_hosts)):
            hosts += [(scope, h) for h in group if h.source]
    hosts.sort(key=lambda item: (item[1].source, item[0], item[1].name))
    index = _HostIndex(model, tuple(hosts), tuple(_host_text(*item) for item in hosts))
    _last_index[0] = index
    return index


# Where an object was read from: (file, line; 0 when not known), or None (e.g. from the API).
Origin = Callable[[str, str, str], "tuple[str, int] | None"]


def _no_origin(kind: str, namespace: str, name: str) -> tuple[str, int] | None:
    return None


def origin_of(virtual_service: str, origin: Origin) -> dict[str, Any]:
    """Where the VirtualService ``namespace/name`` came from: ``file`` and ``line`` when a
    folder holds it, and ``origin``, the text to show (``file:line``, else the object's name)."""
    namespace, _, name = virtual_service.partition("/")
    found = origin("VirtualService", namespace, name)
    if found is None:
        return {"origin": f"VirtualService {virtual_service}"}
    file, line = found
    return {"origin": f"{file}:{line}" if line else file, "file": file, "line": line or None}


def services_page(
    model: MeshModel | None,
    loads: Mapping[str, Load],
    window: float,
    query: PageQuery,
    origin: Origin = _no_origin,
) -> dict[str, Any]:
    """One page of the virtual hosts a VirtualService wrote (mesh, then gateway), each with its
    routes' configured and observed splits and where the VirtualService came from (looked up for
    the page's rows only)."""
    index = _host_index(model)
    hosts: Sequence[tuple[str, VirtualHost]] = index.hosts
    if query.text:
        hosts = [item for item, text in zip(hosts, index.texts, strict=True) if query.text in text]

    def render(item: tuple[str, VirtualHost]) -> dict[str, Any]:
        scope, host = item
        routes = []
        for index, route in enumerate(host.routes):
            entry: dict[str, Any] = {"route": index, "name": route.name}
            if route.destinations:
                split = route_traffic(scope, host, index, route, loads)
                entry["requests"] = split.requests
                entry["destinations"] = [d.as_dict() for d in split.destinations]
            elif route.redirect is not None:
                entry["action"] = "redirect"
            elif route.direct_response is not None:
                entry["action"] = f"direct response {route.direct_response.status}"
            routes.append(entry)
        return {
            "virtual_service": host.source,
            **origin_of(host.source, origin),
            "scope": scope,
            "host": host.name,
            "hosts": list(host.hosts),
            "routes": routes,
        }

    page = _paged(hosts, query, render)
    page["window_seconds"] = window
    return page


def _identity(client: ClientView) -> str:
    """The identity the transport proved for ``client`` (its SPIFFE ID; "" without one)."""
    return client.identity


def _proxy_text(client: ClientView) -> str:
    states = " ".join(t.state.value for t in client.types)
    return f"{client.node_id} {client.role} {client.group} {_identity(client)} {states}".lower()


def proxies_page(clients: Sequence[ClientView], query: PageQuery) -> dict[str, Any]:
    """One page of the connected proxies: identity, role, group and per-type state; the NACKED
    and STALE first, so trouble is on the first page."""
    order = {"NACKED": 0, "STALE": 1, "NOT_SENT": 2, "SYNCED": 3}
    rows = sorted(clients, key=lambda c: (order[c.state.value], c.node_id, c.stream_id))
    if query.text:
        rows = [c for c in rows if query.text in _proxy_text(c)]

    def render(client: ClientView) -> dict[str, Any]:
        by_type = {t.type_url: t for t in client.types}
        types: list[dict[str, Any]] = []
        for short, url in debug_views.SHORT_TYPES.items():
            status = by_type.get(url)
            if status is None:
                types.append({"type": short, "state": "NOT_SENT"})
                continue
            types.append(
                {
                    "type": short,
                    "state": status.state.value,
                    "sent_version": status.sent_version,
                    "acked_version": status.acked_version,
                    "nacked_version": status.nacked_version,
                    "error": status.error,
                    # Envoy cuts its text at 4 KB; splitplane's own check says what broke.
                    "error_reasons": debug_views.rejection_reasons(status) if status.error else [],
                }
            )
        return {
            "node_id": client.node_id,
            "identity": _identity(client),
            "role": client.role,
            "group": client.group,
            "protocol": client.protocol,
            "state": client.state.value,
            "types": types,
        }

    return _paged(rows, query, render)


def diagnostics_page(diagnostics: Sequence[Diagnostic], query: PageQuery) -> dict[str, Any]:
    """One page of the current diagnostics, errors first."""
    rows = [d.as_dict() for d in diagnostics]
    rank = {"error": 0, "warning": 1, "info": 2}
    rows.sort(key=lambda d: rank.get(str(d.get("severity")), 3))
    if query.text:
        rows = [d for d in rows if query.text in json.dumps(d).lower()]
    return _paged(rows, query, lambda row: row)


def identities(state: DashboardState) -> tuple[object, object]:
    """The model and the diagnostics, to be compared by identity: the state replaces them whole,
    never changes them in place (held, not their ``id``, so a freed one's address reused by a
    new one cannot hide a change)."""
    return state.model(), state.diagnostics()


def walked(state: DashboardState) -> dict[str, int]:
    """A number for the observed traffic and one for the proxies' states, which change when
    what those show changes (a walk over every reported cluster and every client)."""
    loads = state.traffic()
    traffic = hash(tuple(sorted((name, load.issued, load.failed) for name, load in loads.items())))
    proxies = hash(
        tuple(
            (c.stream_id, tuple((t.sent_nonce, t.acked_nonce, t.nacked_nonce) for t in c.types))
            for c in state.clients()
        )
    )
    return {"traffic": traffic, "proxies": proxies}


class Changes:
    """Tells every listening browser which views changed.

    Runs on the HTTP server's loop, only while at least one browser listens: the model's and
    diagnostics' identities every ``POLL_SECONDS`` here, traffic and proxies every
    ``WALK_SECONDS`` in ``pool`` (never on this loop). Each listener holds at most one pending
    notice (the views changed since it last read), so a slow browser costs nothing.
    """

    def __init__(self, state: DashboardState, pool: Executor) -> None:
        self._state = state
        self._pool = pool
        self._listeners: dict[asyncio.Queue[frozenset[str]], None] = {}
        self._task: asyncio.Task[None] | None = None

    def subscribe(self) -> asyncio.Queue[frozenset[str]]:
        queue: asyncio.Queue[frozenset[str]] = asyncio.Queue(maxsize=1)
        self._listeners[queue] = None
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._watch())
        return queue

    def unsubscribe(self, queue: asyncio.Queue[frozenset[str]]) -> None:
        self._listeners.pop(queue, None)

    async def _watch(self) -> None:
        loop = asyncio.get_running_loop()
        model, diagnostics = identities(self._state)
        walk = await loop.run_in_executor(self._pool, walked, self._state)
        walk_due = loop.time() + WALK_SECONDS
        while self._listeners:
            await asyncio.sleep(POLL_SECONDS)
            changed: set[str] = set()
            now_model, now_diagnostics = identities(self._state)
            if now_model is not model:
                changed.add("services")
            if now_diagnostics is not diagnostics:
                changed.add("diagnostics")
            model, diagnostics = now_model, now_diagnostics
            if loop.time() >= walk_due:
                now_walk = await loop.run_in_executor(self._pool, walked, self._state)
                walk_due = loop.time() + WALK_SECONDS
                if now_walk["traffic"] != walk["traffic"]:
                    changed.add("services")
                if now_walk["proxies"] != walk["proxies"]:
                    changed.add("proxies")
                walk = now_walk
            if changed:
                for queue in list(self._listeners):
                    pending = queue.get_nowait() if queue.full() else frozenset()
                    queue.put_nowait(pending | changed)

    async def close(self) -> None:
        """Stop watching and end every event stream."""
        for queue in list(self._listeners):
            if queue.full():
                queue.get_nowait()
            queue.put_nowait(CLOSED)
        self._listeners.clear()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task


async def event_stream(request: web.Request, changes: Changes) -> web.StreamResponse:
    """``/dashboard/events``: an event ``change`` whose data lists the views to fetch again."""
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
        }
    )
    await response.prepare(request)
    await response.write(b"retry: 2000\n\n")
    queue = changes.subscribe()
    try:
        while True:
            try:
                async with asyncio.timeout(KEEPALIVE_SECONDS):
                    changed = await queue.get()
            except TimeoutError:
                await response.write(b": keep-alive\n\n")
                continue
            if changed is CLOSED:
                break
            data = json.dumps(sorted(changed))
            await response.write(f"event: change\ndata: {data}\n\n".encode())
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    finally:
        changes.unsubscribe(queue)
    return response
