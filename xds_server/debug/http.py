"""The debug HTTP endpoint (default 127.0.0.1:15014).

=================================  ==========================================================
path                               shows
=================================  ==========================================================
/debug/snapshot?group=&type=       every node group, type, version and resource
/debug/config_dump?node=ID         what that node was sent, shaped like Envoy's /config_dump
/debug/clients                     per connected node: per type sent/acked version, state
/debug/model                       the resolved mesh model
/debug/diagnostics                 every current diagnostic
/metrics                           Prometheus text
/healthz                           200 while the process serves
/readyz                            200 once every source has synced and a snapshot is out
=================================  ==========================================================

A small HTTP/1.1 server on the event loop the xDS server runs on: GET only, one request per
connection. It reads shared state and never blocks a push.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

from translators.diagnostics import Diagnostic
from translators.model import MeshModel
from xds_server.debug import views as debug_views
from xds_server.debug.metrics import Metrics
from xds_server.xds.cache import Snapshot
from xds_server.xds.client_status import ClientView

log = logging.getLogger(__name__)

MAX_REQUEST_HEAD = 16 * 1024


class DebugState(Protocol):
    """What the debug endpoint reads; the wiring provides it."""

    metrics: Metrics

    def snapshots(self) -> Mapping[str, Snapshot]: ...

    def clients(self) -> Sequence[ClientView]: ...

    def model(self) -> MeshModel | None: ...

    def diagnostics(self) -> Sequence[Diagnostic]: ...

    def is_ready(self) -> bool: ...


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes
    content_type: str = "application/json"


REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


def json_response(data: Any, status: int = 200) -> Response:
    return Response(status, (json.dumps(data, indent=2, sort_keys=False) + "\n").encode())


def not_found(message: str) -> Response:
    return json_response({"error": message}, 404)


def handle(state: DebugState, target: str) -> Response:
    """The response for one GET of ``target`` (path and query)."""
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
        return json_response(debug_views.snapshot_json(snapshots, group, type_name))
    if path == "/debug/config_dump":
        node = query.get("node")
        if not node:
            return json_response({"error": "give the node id: ?node=ID"}, 400)
        client = next((c for c in state.clients() if c.node_id == node), None)
        if client is None:
            return not_found(f"node {node!r} is not connected")
        return json_response(debug_views.config_dump(client))
    if path == "/debug/clients":
        return json_response(debug_views.clients_json(state.clients()))
    if path == "/debug/model":
        return json_response(debug_views.model_json(state.model()))
    if path == "/debug/diagnostics":
        return json_response(debug_views.diagnostics_json(state.diagnostics()))
    return not_found(f"no such path {url.path!r}")


def encode(response: Response) -> bytes:
    head = (
        f"HTTP/1.1 {response.status} {REASONS.get(response.status, 'Error')}\r\n"
        f"Content-Type: {response.content_type}\r\n"
        f"Content-Length: {len(response.body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode() + response.body


async def _serve_connection(
    state: DebugState, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
        writer.close()
        return
    try:
        method, target, _ = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ", 2)
    except ValueError:
        response = json_response({"error": "malformed request line"}, 400)
    else:
        if method not in ("GET", "HEAD"):
            response = json_response({"error": f"{method} is not supported; use GET"}, 405)
        else:
            try:
                response = handle(state, target)
            except Exception:
                log.exception("debug endpoint failed on %s", target)
                response = json_response({"error": "internal error; see the server log"}, 500)
            if method == "HEAD":
                response = Response(response.status, b"", response.content_type)
    try:
        writer.write(encode(response))
        await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


async def start_debug_server(state: DebugState, host: str, port: int) -> asyncio.Server:
    """Listen on ``host:port`` (port 0 picks a free one; read it from ``server.sockets``)."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _serve_connection(state, reader, writer)

    return await asyncio.start_server(serve, host, port, limit=MAX_REQUEST_HEAD)
