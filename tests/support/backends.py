"""Loopback backends for traffic tests, and a client that counts where requests landed."""

from __future__ import annotations

import http.client
import itertools
import os
import socket
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field

BACKEND_HEADER = "x-backend"


@dataclass
class Backend:
    """A running loopback backend."""

    name: str
    port: int
    _listener: socket.socket
    _connections: list[socket.socket] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    host: str = "127.0.0.1"

    @property
    def address(self) -> tuple[str, int]:
        """``(host, port)``."""
        return (self.host, self.port)


def _http_response(name: str) -> bytes:
    body = name.encode()
    head = (
        "HTTP/1.1 200 OK\r\n"
        f"content-length: {len(body)}\r\n"
        "content-type: text/plain\r\n"
        f"{BACKEND_HEADER}: {name}\r\n"
        "\r\n"
    )
    return head.encode() + body


def _serve_http(connection: socket.socket, name: str) -> None:
    """Answer every request on a keep-alive connection, headers and body in one send."""
    response = _http_response(name)
    buffer = b""
    while True:
        while b"\r\n\r\n" not in buffer:
            chunk = connection.recv(65536)
            if not chunk:
                return
            buffer += chunk
        head, buffer = buffer.split(b"\r\n\r\n", 1)
        length = 0
        for line in head.split(b"\r\n")[1:]:
            key, _, value = line.partition(b":")
            if key.strip().lower() == b"content-length":
                length = int(value.strip())
        while len(buffer) < length:
            chunk = connection.recv(65536)
            if not chunk:
                return
            buffer += chunk
        buffer = buffer[length:]
        connection.sendall(response)


def _serve_echo(connection: socket.socket, _name: str) -> None:
    while chunk := connection.recv(65536):
        connection.sendall(chunk)


def _accept_loop(backend: Backend, serve: Callable[[socket.socket, str], None]) -> None:
    while True:
        try:
            connection, _ = backend._listener.accept()
        except OSError:
            return
        connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with backend._lock:
            backend._connections.append(connection)

        def run(conn: socket.socket = connection) -> None:
            try:
                serve(conn, backend.name)
            except OSError:
                pass
            finally:
                conn.close()

        threading.Thread(target=run, daemon=True).start()


@contextmanager
def _backend(
    name: str, serve: Callable[[socket.socket, str], None], host: str, port: int
) -> Iterator[Backend]:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((host, port))
    listener.listen(128)
    backend = Backend(name, listener.getsockname()[1], listener, host=host)
    acceptor = threading.Thread(target=_accept_loop, args=(backend, serve), daemon=True)
    acceptor.start()
    try:
        yield backend
    finally:
        listener.shutdown(socket.SHUT_RDWR)
        listener.close()
        with backend._lock:
            for connection in backend._connections:
                with suppress(OSError):
                    connection.shutdown(socket.SHUT_RDWR)
                connection.close()
        acceptor.join(timeout=5)


@contextmanager
def http_backend(name: str, host: str = "127.0.0.1", port: int = 0) -> Iterator[Backend]:
    """An HTTP/1.1 keep-alive backend answering every request with its name (header and body),
    on ``host`` (any loopback address) and ``port`` (0: a free one)."""
    with _backend(name, _serve_http, host, port) as backend:
        yield backend


@contextmanager
def tcp_echo_backend(name: str = "echo") -> Iterator[Backend]:
    """A TCP backend that echoes what it receives."""
    with _backend(name, _serve_echo, "127.0.0.1", 0) as backend:
        yield backend


# Ports handed out by ``free_port``: below the kernel's ephemeral range (which starts at 32768),
# so no port bound to 0 elsewhere can take one, and a separate block per pytest-xdist worker, so
# two workers never pick the same port for listeners they bind later. Envoy binds its listeners
# with SO_REUSEPORT: two Envoys given one port would both bind it and share its traffic.
_PORT_BLOCK = 4000
_PORT_BASE = 16000
_next_port = itertools.count()


def free_port() -> int:
    """A loopback port no other test of this run is given, and free when it was handed out
    (for a listener another process binds)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    block = _PORT_BASE + (int(worker) if worker.isdigit() else 0) % 4 * _PORT_BLOCK
    for _ in range(_PORT_BLOCK):
        port = block + next(_next_port) % _PORT_BLOCK
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise OSError("no free loopback port left in this worker's block")


def count_backends(
    port: int,
    requests: int,
    *,
    host: str = "example",
    path: str = "/",
    headers: dict[str, str] | None = None,
    connections: int = 1,
    timeout_s: float = 10.0,
) -> Counter[str]:
    """Send ``requests`` GETs (with ``headers``) through a proxy on ``port``; count answers by
    backend name.

    Uses ``connections`` keep-alive connections in turn. A reply without the backend header
    counts as ``status <code>``; a broken connection is reopened and counts as ``error``.
    """
    counts: Counter[str] = Counter()
    pool = [http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s)]
    pool += [
        http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s)
        for _ in range(connections - 1)
    ]
    try:
        for i in range(requests):
            connection = pool[i % len(pool)]
            try:
                connection.request("GET", path, headers={"Host": host, **(headers or {})})
                reply = connection.getresponse()
                reply.read()
                counts[reply.getheader(BACKEND_HEADER) or f"status {reply.status}"] += 1
            except (OSError, http.client.HTTPException):
                connection.close()
                counts["error"] += 1
    finally:
        for connection in pool:
            connection.close()
    return counts
