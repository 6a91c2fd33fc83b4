"""An HTTP server for aiohttp applications, on a thread and event loop of its own, that hostile
clients cannot turn against the process it runs in.

The xDS event loop never runs a request: this server's loop accepts, parses and answers, and the
applications it serves read immutable state. What a client controls is bounded:

- **connections**: at most ``Limits.max_connections`` at once (by default a share of the
  process's descriptor limit, so xDS keeps the rest). At the cap, a new connection takes the
  place of the oldest one with no request under way (idle, or still trickling its head in), so a
  probe gets through slow clients; when every connection has a request under way, the server
  stops accepting and new connections wait in the kernel's backlog, holding no descriptor;
- **time**: a request head must arrive whole within ``header_timeout`` of its first byte, a
  client must take a response within ``write_timeout``, and a connection with no request under
  way is closed after ``idle_timeout`` (keep-alive);
- **size**: a request line longer than ``max_request_line`` is answered 414, a request head
  larger than ``max_request_head`` 431, both before the head is parsed, and the connection closed.

A request with a body ends its connection after the answer (the endpoints served here take
none), so every later head is screened too.

Plaintext or TLS: ``listen(..., ssl_context=...)`` serves TLS on a site (the handshake must also
finish within ``header_timeout``).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import re
import resource
import socket
import ssl
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from xds_server.debug.pacing import Pacer

log = logging.getLogger(__name__)

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Per connection: this many descriptors are left to everything else for every one the HTTP server
# may hold (xDS streams, watches, files, Envoy's admin connections in tests).
DESCRIPTOR_SHARE = 8
MAX_CONNECTIONS = 1024
MIN_CONNECTIONS = 8


def connection_cap(descriptor_limit: int | None = None) -> int:
    """Connections an HTTP server may hold: an eighth of the process's descriptor limit
    (RLIMIT_NOFILE), between 8 and 1,024."""
    if descriptor_limit is None:
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        descriptor_limit = soft if soft != resource.RLIM_INFINITY else MAX_CONNECTIONS * 64
    return max(MIN_CONNECTIONS, min(MAX_CONNECTIONS, descriptor_limit // DESCRIPTOR_SHARE))


@dataclass(frozen=True)
class Limits:
    """What one client may take of the server."""

    header_timeout: float = 10.0  # from a request's first byte to the end of its head
    idle_timeout: float = 30.0  # a connection with no request under way (keep-alive)
    write_timeout: float = 30.0  # for the client to take a whole response a handler returned
    max_request_line: int = 8 * 1024  # longer: 414 URI Too Long
    max_request_head: int = 32 * 1024  # request line and headers; larger: 431
    max_connections: int | None = None  # None: connection_cap() of RLIMIT_NOFILE
    shutdown_timeout: float = 2.0  # requests under way may finish this long on stop()

    def connections(self) -> int:
        return self.max_connections if self.max_connections is not None else connection_cap()


def _canned(status: int, reason: str, message: str) -> bytes:
    body = (json.dumps({"error": message}) + "\n").encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode() + body


URI_TOO_LONG = _canned(414, "URI Too Long", "request line too long")
HEADERS_TOO_LARGE = _canned(431, "Request Header Fields Too Large", "request headers too large")


_REQUEST_START = re.compile(rb"[^\r\n]")


def _has_body(head: bytes) -> bool:
    """Whether the request whose ``head`` this is carries a body (Transfer-Encoding, or a
    Content-Length other than 0)."""
    lowered = head.lower()
    if b"\ntransfer-encoding:" in lowered:
        return True
    at = lowered.find(b"\ncontent-length:")
    if at < 0:
        return False
    value = lowered[at + len(b"\ncontent-length:") :].split(b"\n", 1)[0].strip()
    return value != b"0"


class _Connections:
    """The connections held, oldest first, and the cap on them.

    At the cap, a new connection takes the place of the oldest one with no request under way
    (idle, or still sending its head), which is closed: clients that send a request at once (a
    probe, an operator) get in while slow ones wait; when every connection has a request under
    way, the server stops accepting until one ends.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self.held: dict[_Guard, None] = {}  # insertion order: oldest first
        self.by_transport: dict[asyncio.BaseTransport, _Guard] = {}
        self.accepted = 0  # accepted, not yet connected (or failed)
        self.evicted = 0
        self._changed = asyncio.Event()

    def __len__(self) -> int:
        return len(self.held) + self.accepted

    def changed(self) -> None:
        self._changed.set()

    async def room(self) -> None:
        """Wait until a new connection may be accepted: under the cap, or one can be evicted."""
        while len(self) >= self.size and not any(g.evictable for g in self.held):
            await self._change()

    async def make_room(self) -> None:
        """Over the cap (with a connection just accepted), close the oldest connection with no
        request under way; if there is none, wait until one ends or becomes idle."""
        while len(self) > self.size:
            victim = next((guard for guard in self.held if guard.evictable), None)
            if victim is not None:
                self.evicted += 1
                victim.evict()
                return
            await self._change()

    async def _change(self) -> None:
        self._changed.clear()
        await self._changed.wait()


class _Guard(asyncio.Protocol):
    """Stands between a connection and aiohttp's protocol: screens each request head (size,
    time) before handing the bytes on unchanged, and counts the connection among those held."""

    def __init__(
        self,
        inner: asyncio.Protocol,
        limits: Limits,
        loop: asyncio.AbstractEventLoop,
        connections: _Connections,
    ) -> None:
        self._inner = inner
        self._limits = limits
        self._loop = loop
        self._connections = connections
        self.busy = 0  # requests under way (between the handler's start and the response's end)
        self._transport: asyncio.Transport | None = None
        self._head = bytearray()  # the part of the current request head received so far
        self._timer: asyncio.TimerHandle | None = None
        self._passing = False  # after a head with a body: the rest is the application's
        self._closed = False

    @property
    def evictable(self) -> bool:
        return self.busy == 0 and not self._closed

    def evict(self) -> None:
        self._closed = True
        self._stop_timer()
        if self._transport is not None:
            self._transport.abort()

    def request_started(self) -> None:
        self.busy += 1

    def request_ended(self) -> None:
        self.busy -= 1
        if self.busy == 0:
            self._connections.changed()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._connections.held[self] = None
        self._connections.by_transport[transport] = self
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self._closed:
            return
        if not self._passing and not self._screen(data):
            return
        self._inner.data_received(data)

    def _screen(self, data: bytes) -> bool:
        """Follow the request heads in ``data``; False (after answering and closing) when one is
        over a limit."""
        limits = self._limits
        pos, size = 0, len(data)
        while pos < size:
            if not self._head:
                # Empty lines before a request line are allowed (RFC 9112 2.2).
                found = _REQUEST_START.search(data, pos)
                if found is None:
                    return True
                pos = found.start()
                self._start_timer()
            previous = len(self._head)
            take = min(size - pos, limits.max_request_head + 1 - previous)
            self._head += data[pos : pos + take]
            end = self._head.find(b"\r\n\r\n", max(0, previous - 3))
            head_length = end + 4 if end >= 0 else len(self._head)
            line_end = self._head.find(b"\n", 0, head_length)
            line_length = line_end if line_end >= 0 else head_length
            if line_length > limits.max_request_line:
                self._refuse(URI_TOO_LONG)
                return False
            if head_length > limits.max_request_head:
                self._refuse(HEADERS_TOO_LARGE)
                return False
            if end < 0:
                return True  # the head goes on in the next read
            head = bytes(self._head[:head_length])
            self._head.clear()
            self._stop_timer()
            if _has_body(head):
                self._passing = True
                return True
            pos += head_length - previous
        return True

    def _start_timer(self) -> None:
        if self._timer is None:
            self._timer = self._loop.call_later(self._limits.header_timeout, self._too_slow)

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _too_slow(self) -> None:
        self._timer = None
        if self._transport is not None and not self._closed:
            self._closed = True
            self._transport.abort()

    def _refuse(self, answer: bytes) -> None:
        self._closed = True
        self._stop_timer()
        if self._transport is not None:
            self._transport.write(answer)
            self._transport.close()

    def eof_received(self) -> bool | None:
        return self._inner.eof_received()

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._stop_timer()
        try:
            self._inner.connection_lost(exc)
        finally:
            if self._transport is not None:
                self._connections.by_transport.pop(self._transport, None)
            self._connections.held.pop(self, None)
            self._connections.changed()


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0: any free one), never shared with
    another process (no SO_REUSEPORT); a busy port is an ``OSError`` naming the address."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
    except OSError as error:
        raise OSError(error.errno, f"cannot listen on {host}:{port}: {error.strerror}") from error
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        # A deep accept queue: a client arriving while slow ones crowd in waits its turn there
        # (the server takes the queue quickly, making room as it goes) instead of having its
        # connection attempts dropped and retried a second later.
        sock.listen(socket.SOMAXCONN)
        sock.setblocking(False)
    except OSError as error:
        sock.close()
        reason = error.strerror or str(error)
        if error.errno == errno.EADDRINUSE:
            reason = "the address is already in use (is another server running?)"
        raise OSError(error.errno, f"cannot listen on {host}:{port}: {reason}") from error
    return sock


class HttpServer:
    """Serves one aiohttp application on a thread and event loop of its own.

    ``start()`` and ``stop()`` are called from any other thread; ``listen()`` binds a site
    (plaintext, or TLS with an ``ssl_context``) and returns its port. Request handlers run on
    this server's loop: they must not touch state another loop owns. With a ``pacer``, the
    loop's thread counts among the threads it keeps to their share of the CPU.
    """

    def __init__(
        self,
        app: web.Application,
        limits: Limits | None = None,
        name: str = "http",
        pacer: Pacer | None = None,
    ) -> None:
        self.app = app
        self.pacer = pacer
        app.middlewares.insert(0, self._request_under_way)
        self.limits = limits or Limits()
        self.name = name
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._runner: web.AppRunner | None = None
        self._connections: _Connections | None = None
        self._accepting: list[asyncio.Task[None]] = []
        self._connecting: set[asyncio.Task[None]] = set()
        self._listeners: list[socket.socket] = []

    # -- from other threads -------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()
        self._call(self._setup())

    def listen(self, host: str, port: int, ssl_context: ssl.SSLContext | None = None) -> int:
        """Serve on ``host:port``; the bound port. A busy port is an ``OSError``."""
        sock = bind(host, port)
        self._call(self._serve(sock, ssl_context))
        bound: int = sock.getsockname()[1]
        return bound

    def stop(self) -> None:
        """Stop accepting, let requests under way finish (``shutdown_timeout``), close the rest."""
        if not self._thread.is_alive():
            return
        with contextlib.suppress(Exception):
            self._call(self._shutdown())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    @property
    def connections(self) -> int:
        """Connections held now."""
        return len(self._connections.held) if self._connections is not None else 0

    @property
    def max_connections(self) -> int:
        return self._connections.size if self._connections else self.limits.connections()

    @property
    def evicted(self) -> int:
        """Connections closed to make room for new ones."""
        return self._connections.evicted if self._connections is not None else 0

    # -- on the server's loop -----------------------------------------------------------------

    @web.middleware
    async def _request_under_way(
        self, request: web.Request, handler: _Handler
    ) -> web.StreamResponse:
        """Marks the connection busy from the handler's start to the response's end, so that
        it is not evicted in the middle of a response; a client that does not take the response
        within ``write_timeout`` loses the connection."""
        connections = self._connections
        transport = request.transport
        guard = connections.by_transport.get(transport) if connections and transport else None
        if guard is None:
            return await handler(request)
        guard.request_started()
        try:
            response = await handler(request)
            try:
                async with asyncio.timeout(self.limits.write_timeout):
                    await response.prepare(request)
                    await response.write_eof()
            except TimeoutError:
                guard.evict()
                raise ConnectionResetError("the client did not take the response") from None
            return response
        finally:
            guard.request_ended()

    def _run(self) -> None:
        if self.pacer is not None:
            self.pacer.enlist()
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_forever()
        finally:
            if self.pacer is not None:
                self.pacer.leave()

    def _call(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(30)

    async def _setup(self) -> None:
        limits = self.limits
        self._connections = _Connections(limits.connections())
        self._runner = web.AppRunner(
            self.app,
            handle_signals=False,
            access_log=None,
            keepalive_timeout=limits.idle_timeout,
            shutdown_timeout=limits.shutdown_timeout,
            # The guard refuses long lines first (414/431); aiohttp's own limits stay as a
            # second line behind it for heads it does not screen.
            max_line_size=limits.max_request_head + 1,
            max_field_size=limits.max_request_head + 1,
            logger=_QuietProtocolLog(log),
        )
        await self._runner.setup()

    async def _serve(self, sock: socket.socket, ssl_context: ssl.SSLContext | None) -> None:
        self._listeners.append(sock)
        task = asyncio.get_running_loop().create_task(self._accept(sock, ssl_context))
        self._accepting.append(task)

    async def _accept(self, sock: socket.socket, ssl_context: ssl.SSLContext | None) -> None:
        loop = asyncio.get_running_loop()
        connections = self._connections
        assert connections is not None
        while True:
            await connections.room()
            try:
                connection, _ = await loop.sock_accept(sock)
            except OSError as error:  # out of descriptors, or the peer gave up
                log.warning("%s: accept failed: %s", self.name, error)
                await asyncio.sleep(0.1)
                continue
            connections.accepted += 1
            try:
                await connections.make_room()  # holds one descriptor over the cap at most
            except asyncio.CancelledError:
                connections.accepted -= 1
                connection.close()
                raise
            task = loop.create_task(self._connect(connection, ssl_context))
            self._connecting.add(task)
            task.add_done_callback(self._connecting.discard)

    async def _connect(self, connection: socket.socket, ssl_context: ssl.SSLContext | None) -> None:
        loop = asyncio.get_running_loop()
        assert self._runner is not None and self._runner.server is not None
        assert self._connections is not None
        factory = self._runner.server
        limits = self.limits
        connections = self._connections

        def protocol() -> _Guard:
            return _Guard(factory(), limits, loop, connections)

        try:
            await loop.connect_accepted_socket(
                protocol,
                connection,
                ssl=ssl_context,
                ssl_handshake_timeout=limits.header_timeout if ssl_context else None,
            )
        except (OSError, TimeoutError) as error:  # SSL and connection errors among them
            log.debug("%s: connection failed: %s", self.name, error)
            connection.close()
        finally:
            connections.accepted -= 1
            connections.changed()

    async def _shutdown(self) -> None:
        for task in self._accepting:
            task.cancel()
        for task in self._accepting:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for sock in self._listeners:
            sock.close()
        if self._runner is not None:
            await self._runner.cleanup()


class _QuietProtocolLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """aiohttp logs every malformed request as an error with its traceback; a hostile client
    could fill the log. They are logged at debug level, without the traceback."""

    def exception(self, msg: object, *args: Any, **kwargs: Any) -> None:
        error = kwargs.pop("exc_info", None)
        kwargs.pop("stack_info", None)
        self.debug("%s: %s", str(msg) % args if args else msg, error)

    def error(self, msg: object, *args: Any, **kwargs: Any) -> None:
        self.exception(msg, *args, **kwargs)
