"""The debug HTTP endpoint (default 127.0.0.1:15014).

=================================  ==========================================================
path                               shows
=================================  ==========================================================
/                                  the web dashboard (``dashboard``), live over server-sent
                                   events from /dashboard/events, paged from /dashboard/*
/debug/snapshot?group=&type=       every node group, type, version and resource
/debug/config_dump?node=ID         what that node was sent, shaped like Envoy's /config_dump
/debug/clients                     per connected node: per type sent/acked version, state
/debug/model                       the resolved mesh model
/debug/diagnostics                 every current diagnostic
/debug/traffic                     per VirtualService route: configured weight, observed share
                                   and error rate of each destination (Envoy's load reports)
/metrics                           Prometheus text
/healthz                           200 while the process serves
/readyz                            200 once every source has synced and a snapshot is out
=================================  ==========================================================

Served by aiohttp on a thread and event loop of its own (``server.HttpServer``: header and idle
timeouts, a connection cap, 414/431), never on the xDS loop: views render in a small pool of
worker threads from immutable state (snapshots, client status, metrics), so neither a slow client
nor a large view delays a push, and ``/healthz`` answers while a view renders. Those threads keep
to a share of the CPU (``pacing.Pacer``): most of a core while xDS is quiet, a tenth while a
change is under way, so readers polling the largest views back to back cannot slow a push.
Keep-alive, HEAD, and gzip when the client accepts it. Bound to a non-loopback address, every
path but the probes (and ``/metrics``, unless configured otherwise) requires authentication
(``auth.DebugAuth``).
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import ssl
import threading
import zlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.payload import Payload
from aiohttp.web_response import ContentCoding

from translators.diagnostics import Diagnostic
from translators.model import MeshModel
from xds_server.debug import dashboard
from xds_server.debug import views as debug_views
from xds_server.debug.auth import DebugAuth
from xds_server.debug.metrics import Metrics
from xds_server.debug.pacing import Pacer, no_pacing
from xds_server.debug.server import HttpServer, Limits
from xds_server.debug.traffic import traffic_json
from xds_server.xds.cache import Snapshot
from xds_server.xds.client_status import ClientView
from xds_server.xds.load_reports import Load

log = logging.getLogger(__name__)


class DebugState(Protocol):
    """What the debug endpoint reads; the wiring provides it."""

    metrics: Metrics

    def snapshots(self) -> Mapping[str, Snapshot]: ...

    def clients(self) -> Sequence[ClientView]: ...

    def model(self) -> MeshModel | None: ...

    def diagnostics(self) -> Sequence[Diagnostic]: ...

    def is_ready(self) -> bool: ...

    def traffic(self) -> Mapping[str, Load]: ...

    @property
    def traffic_window(self) -> float: ...

    def origin(self, kind: str, namespace: str, name: str) -> tuple[str, int] | None:
        """Where an object was read from: (file, line; 0 when not known), when from a folder."""
        ...


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes
    content_type: str = "application/json"
    content_encoding: str = ""  # "gzip": ``body`` is compressed


def json_response(data: Any, status: int = 200) -> Response:
    return Response(status, (json.dumps(data, indent=2, sort_keys=False) + "\n").encode())


def not_found(message: str) -> Response:
    return json_response({"error": message}, 404)


SNAPSHOTS = debug_views.SnapshotRenderer()
CLIENTS = debug_views.ClientsRenderer()


def handle(
    state: DebugState,
    target: str,
    snapshots_renderer: debug_views.SnapshotRenderer = SNAPSHOTS,
    clients_renderer: debug_views.ClientsRenderer = CLIENTS,
    pace: Callable[[], None] = no_pacing,
) -> Response:
    """The response for one GET of ``target`` (path and query); the large views call ``pace``
    between steps of their rendering."""
    url = urlsplit(target)
    query = {key: values[-1] for key, values in parse_qs(url.query).items()}
    path = url.path.rstrip("/") or "/"
    if path == "/healthz":
        return Response(200, b"ok\n", "text/plain")
    if path == "/readyz":
        ready = state.is_ready()
        return Response(
            200 if ready else 503, b"ready\n" if ready else b"not ready\n", "text/plain"
        )
    if path == "/metrics":
        return Response(200, state.metrics.render().encode(), "text/plain; version=0.0.4")
    if path == "/debug/snapshot":
        type_name = query.get("type")
        if type_name and type_name not in debug_views.SHORT_TYPES:
            known = ", ".join(debug_views.SHORT_TYPES)
            return json_response({"error": f"unknown type {type_name!r}; one of {known}"}, 400)
        snapshots = state.snapshots()
        group = query.get("group")
        if group and group not in snapshots:
            return not_found(f"no snapshot for group {group!r}")
        return Response(200, snapshots_renderer.render(snapshots, group, type_name, pace))
    if path == "/debug/config_dump":
        node = query.get("node")
        if not node:
            return json_response({"error": "give the node id: ?node=ID"}, 400)
        client = next((c for c in state.clients() if c.node_id == node), None)
        if client is None:
            return not_found(f"node {node!r} is not connected")
        return json_response(debug_views.config_dump(client))
    if path == "/debug/clients":
        return Response(200, clients_renderer.render(state.clients(), pace))
    if path == "/debug/model":
        return json_response(debug_views.model_json(state.model()))
    if path == "/debug/diagnostics":
        return json_response(debug_views.diagnostics_json(state.diagnostics()))
    if path == "/":
        return Response(200, dashboard.page_html(), "text/html; charset=utf-8")
    if path == "/dashboard/services":
        page = dashboard.page_query(query)
        model, loads = state.model(), state.traffic()
        return json_response(
            dashboard.services_page(model, loads, state.traffic_window, page, state.origin)
        )
    if path == "/dashboard/proxies":
        return json_response(dashboard.proxies_page(state.clients(), dashboard.page_query(query)))
    if path == "/dashboard/diagnostics":
        page = dashboard.page_query(query)
        return json_response(dashboard.diagnostics_page(state.diagnostics(), page))
    if path == "/debug/traffic":
        return json_response(traffic_json(state.model(), state.traffic(), state.traffic_window))
    return not_found(f"no such path {url.path!r}")


# -- the aiohttp application ------------------------------------------------------------------

PATHS = (
    "/",
    "/dashboard/services",
    "/dashboard/proxies",
    "/dashboard/diagnostics",
    "/debug/snapshot",
    "/debug/config_dump",
    "/debug/clients",
    "/debug/model",
    "/debug/diagnostics",
    "/debug/traffic",
    "/metrics",
    "/healthz",
    "/readyz",
)
# Answered on the server's loop; every other view renders in the pool.
INLINE = frozenset(("/healthz", "/readyz"))
# Views rendering at once; more wait (a few large renders at once would only share the CPU).
RENDER_THREADS = 2
# Smaller bodies go out as they are.
GZIP_MIN_BYTES = 1024
GZIP_LEVEL = 6  # zlib's default
# Larger bodies are written a slice at a time (``SlicedBody``).
WRITE_SLICE = 256 * 1024
GZIP_SLICE = 1024 * 1024  # and compressed a slice at a time

STATE: web.AppKey[DebugState] = web.AppKey("state")
PACER: web.AppKey[Pacer] = web.AppKey("pacer")
RENDER_POOL: web.AppKey[ThreadPoolExecutor] = web.AppKey("render_pool")
CHANGES: web.AppKey[dashboard.Changes] = web.AppKey("changes")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class SlicedBody(Payload):
    """A large body written a slice at a time, each handed to the socket before the next is
    taken: the server's loop copies ``WRITE_SLICE`` bytes at once, not the whole body, and
    answers other requests (a probe) between slices; with a ``pacer``, it waits before each
    slice until the debug endpoint is within its share of the CPU."""

    _value: bytes

    def __init__(self, value: bytes, content_type: str, pacer: Pacer | None = None) -> None:
        super().__init__(value, content_type=content_type)
        self._size = len(value)
        self._pacer = pacer

    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        return self._value.decode(encoding, errors)

    async def write(self, writer: AbstractStreamWriter) -> None:
        await self.write_with_length(writer, None)

    async def write_with_length(
        self, writer: AbstractStreamWriter, content_length: int | None
    ) -> None:
        body = memoryview(self._value)
        if content_length is not None:
            body = body[:content_length]
        for start in range(0, len(body), WRITE_SLICE):
            if self._pacer is not None:
                await self._pacer.wait()
            await writer.write(body[start : start + WRITE_SLICE])  # drains past 64 KB


def aiohttp_response(response: Response, pacer: Pacer | None = None) -> web.Response:
    headers = {"Content-Type": response.content_type}
    if response.content_encoding:
        headers["Content-Encoding"] = response.content_encoding
    body: bytes | SlicedBody = response.body
    if len(response.body) > WRITE_SLICE:
        body = SlicedBody(response.body, response.content_type, pacer)
    return web.Response(status=response.status, body=body, headers=headers)


class Compressed:
    """Bodies gzipped once: a view's body is the same object until what it shows changes
    (``SnapshotRenderer``, ``ClientsRenderer``), so readers polling it share one compression.

    Safe to share between threads; one compression runs at a time, so readers asking for the
    same body at once wait for it instead of compressing it again."""

    KEPT = 8  # bodies kept with their compressed form (each holds its body alive)

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._kept: dict[int, tuple[bytes, bytes]] = {}
        self.compressions = 0

    def gzip(self, body: bytes, pace: Callable[[], None] = no_pacing) -> bytes:
        """``body`` gzipped, a slice at a time with ``pace`` between slices."""
        found = self._kept.get(id(body))
        if found is not None and found[0] is body:
            return found[1]
        with self._lock:
            found = self._kept.get(id(body))
            if found is not None and found[0] is body:
                return found[1]
            zipped = _gzipped(body, pace)
            self.compressions += 1
            kept = dict(self._kept)
            kept[id(body)] = (body, zipped)
            while len(kept) > self.KEPT:
                del kept[next(iter(kept))]
            self._kept = kept
            return zipped


def _gzipped(body: bytes, pace: Callable[[], None]) -> bytes:
    """``body`` in gzip's format, compressed a slice at a time."""
    compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    view = memoryview(body)
    parts = []
    for start in range(0, len(view), GZIP_SLICE):
        pace()
        parts.append(compressor.compress(view[start : start + GZIP_SLICE]))
    parts.append(compressor.flush())
    return b"".join(parts)


COMPRESSED = Compressed()


def _rendered(
    state: DebugState, target: str, gzip: bool = False, pace: Callable[[], None] = no_pacing
) -> Response:
    """The response for ``target``; gzipped (``Content-Encoding``) when ``gzip`` and large."""
    pace()
    try:
        response = handle(state, target, pace=pace)
    except Exception:
        log.exception("debug endpoint failed on %s", target)
        return json_response({"error": "internal error; see the server log"}, 500)
    if gzip and len(response.body) >= GZIP_MIN_BYTES:
        zipped = COMPRESSED.gzip(response.body, pace)
        return Response(response.status, zipped, response.content_type, "gzip")
    return response


async def render(request: web.Request) -> web.Response:
    """The view of the request's path and query, rendered (and gzipped when the client takes
    it) in the pool; the probes here."""
    state = request.app[STATE]
    target = request.raw_path
    if request.path in INLINE:
        return aiohttp_response(_rendered(state, target))
    loop = asyncio.get_running_loop()
    pool = request.app[RENDER_POOL]
    pacer = request.app[PACER]
    zipped = accepts_gzip(request)
    response = await loop.run_in_executor(pool, _rendered, state, target, zipped, pacer.pace)
    return aiohttp_response(response, pacer)


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Errors as JSON bodies; a path no route knows is answered by ``handle`` (a trailing
    slash, or a 404 naming the path)."""
    try:
        response = await handler(request)
    except web.HTTPNotFound:
        response = await render(request)
    except web.HTTPMethodNotAllowed:
        message = f"{request.method} is not supported; use GET"
        response = aiohttp_response(json_response({"error": message}, 405))
    if request.body_exists:
        response.force_close()  # no endpoint takes a body: the next request starts afresh
    return response


def accepts_gzip(request: web.Request) -> bool:
    """Whether the client takes gzip (``Accept-Encoding``, a q of 0 refuses it)."""
    for item in request.headers.get("Accept-Encoding", "").split(","):
        coding, _, params = item.strip().partition(";")
        if coding.strip().lower() in ("gzip", "x-gzip", "*"):
            quality = params.strip().lower().removeprefix("q=")
            try:
                return not params or float(quality) > 0
            except ValueError:
                return False
    return False


@web.middleware
async def gzip(request: web.Request, handler: Handler) -> web.StreamResponse:
    response = await handler(request)
    if isinstance(response, web.Response):
        response.headers["Vary"] = "Accept-Encoding"
        if (
            "Content-Encoding" not in response.headers  # not compressed already
            and accepts_gzip(request)
            and isinstance(response.body, bytes)  # a large body is compressed in the pool
            and len(response.body) >= GZIP_MIN_BYTES
        ):
            response.enable_compression(ContentCoding.gzip)
    return response


def debug_app(
    state: DebugState, auth: DebugAuth | None = None, pacer: Pacer | None = None
) -> web.Application:
    """The debug endpoint's application: every path of the table above; with ``auth``, every
    path but the open ones requires an authenticated, authorized client. Its render threads
    keep to ``pacer``'s share of the CPU."""
    app = web.Application(middlewares=[json_errors, gzip])
    if auth is not None:
        auth.install(app)
    app[STATE] = state
    app[PACER] = pacer = pacer or Pacer()
    app[RENDER_POOL] = ThreadPoolExecutor(
        RENDER_THREADS, thread_name_prefix="debug-render", initializer=pacer.enlist
    )

    async def stop_pool(app: web.Application) -> None:
        await app[CHANGES].close()
        app[RENDER_POOL].shutdown(wait=False, cancel_futures=True)

    async def start_changes(app: web.Application) -> None:
        app[CHANGES] = dashboard.Changes(state, app[RENDER_POOL])

    async def events(request: web.Request) -> web.StreamResponse:
        return await dashboard.event_stream(request, request.app[CHANGES])

    app.on_startup.append(start_changes)
    app.on_shutdown.append(stop_pool)
    for path in PATHS:
        app.router.add_get(path, render)
    app.router.add_get("/dashboard/events", events)
    return app


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address (or ``localhost``)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass
class DebugServer:
    """The running debug endpoint."""

    http: HttpServer
    host: str
    port: int
    auth: DebugAuth | None = field(default=None)

    def stop(self) -> None:
        """Stop serving (blocks briefly; call it off the xDS loop, e.g. with to_thread)."""
        self.http.stop()


def start_debug_server(
    state: DebugState,
    host: str,
    port: int,
    *,
    auth: DebugAuth | None = None,
    limits: Limits | None = None,
    ssl_context: ssl.SSLContext | None = None,
    pacer: Pacer | None = None,
) -> DebugServer:
    """Serve the debug endpoint on ``host:port`` (port 0 picks a free one) in a thread of its
    own, over HTTPS with ``ssl_context``, within ``pacer``'s share of the CPU. A non-loopback
    ``host`` needs ``auth``; a busy port is an ``OSError``."""
    if auth is None and not is_loopback(host):
        raise ValueError(
            f"the debug endpoint on {host} (not loopback) needs authentication"
            " (a Kubernetes API for TokenReview and SubjectAccessReview)"
        )
    app = debug_app(state, auth, pacer)
    http = HttpServer(app, limits, name="debug-http", pacer=app[PACER])
    http.start()
    try:
        bound = http.listen(host, port, ssl_context)
    except OSError:
        http.stop()
        raise
    return DebugServer(http, host, bound, auth)
