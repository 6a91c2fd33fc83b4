"""The debug endpoint's server: off the xDS loop, bounded against hostile clients, HTTP done right.

Each test talks to a real server over a real socket on 127.0.0.1, as a client would.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import resource
import socket
import threading
import time
import urllib.request
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
from aiohttp import web
from envoy.config.core.v3.base_pb2 import Node

from tests.unit.test_debug_http import State, reviews_snapshot
from xds_server.app import ControlPlane
from xds_server.debug import http as debug_http
from xds_server.debug.http import DebugServer, is_loopback, start_debug_server
from xds_server.debug.metrics import Histogram
from xds_server.debug.server import HttpServer, Limits, bind, connection_cap
from xds_server.xds.cache import CLUSTER
from xds_server.xds.client_status import ClientRegistry


@contextmanager
def debug_server(limits: Limits | None = None, state: State | None = None) -> Iterator[DebugServer]:
    state = state or State(groups={"sidecar:15001": reviews_snapshot()})
    server = start_debug_server(state, "127.0.0.1", 0, limits=limits)
    try:
        yield server
    finally:
        server.stop()


def connect(server: DebugServer) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    return sock


def request(path: str, method: str = "GET", headers: str = "") -> bytes:
    return f"{method} {path} HTTP/1.1\r\nHost: debug\r\n{headers}\r\n".encode()


# Bytes read past the end of a response (pipelined responses may arrive in one read), per socket.
_UNREAD: weakref.WeakKeyDictionary[socket.socket, bytes] = weakref.WeakKeyDictionary()


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 response with a Content-Length (as the server sends them); what follows it
    is kept for the next call."""
    data = _UNREAD.pop(sock, b"")
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"closed before a whole response head: {data!r}"
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines)}
    length = int(headers.get("content-length", "0"))
    while len(rest) < length:
        chunk = sock.recv(65536)
        assert chunk, "closed in the middle of a body"
        rest += chunk
    if len(rest) > length:
        _UNREAD[sock] = rest[length:]
    return int(status_line.split()[1]), headers, rest[:length]


def closed_by_server(sock: socket.socket, within: float) -> bool:
    """Whether the server closes ``sock`` within ``within`` seconds (reading what it sends)."""
    sock.settimeout(within)
    try:
        while sock.recv(65536):
            pass
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True
    return True


# -- off the xDS loop --------------------------------------------------------------------------


async def test_the_endpoint_answers_while_the_xds_loop_is_busy() -> None:
    plane = ControlPlane()
    server = start_debug_server(plane, "127.0.0.1", 0)
    try:
        url = f"http://127.0.0.1:{server.port}/debug/clients"
        # A blocking read on the xDS loop itself: it holds the loop until the answer comes.
        with urllib.request.urlopen(url, timeout=10) as response:
            assert json.load(response) == {"clients": []}
    finally:
        await asyncio.to_thread(server.stop)


def test_client_views_read_from_another_thread_while_streams_come_and_go() -> None:
    registry = ClientRegistry()
    stop = threading.Event()
    failures: list[BaseException] = []

    def streams() -> None:
        serial = 0
        while not stop.is_set():
            records = [
                registry.connect(Node(id=f"n{i}"), "sidecar", "sidecar:15001", "sotw")
                for i in range(50)
            ]
            for record in records:
                serial += 1
                nonce = str(serial)
                record.sent(CLUSTER, f"v{nonce}", nonce, ())
                record.acked(CLUSTER, nonce)
            for record in records:
                registry.disconnect(record)

    writer = threading.Thread(target=streams)
    writer.start()
    try:
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            try:
                for view in registry.views():
                    for status in view.types:
                        # Whole states only: what was acknowledged is what was sent with it.
                        if status.acked_nonce:
                            assert status.acked_version == f"v{status.acked_nonce}"
            except BaseException as error:
                failures.append(error)
                break
    finally:
        stop.set()
        writer.join()
    assert not failures, failures


def test_a_histogram_renders_whole_while_it_is_observed() -> None:
    histogram = Histogram("h", "help", (0.5, 2.0))
    stop = threading.Event()

    def observe() -> None:
        while not stop.is_set():
            histogram.observe(1.0)

    writer = threading.Thread(target=observe)
    writer.start()
    torn = []
    try:
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            lines = dict(line.rsplit(" ", 1) for line in histogram.render()[2:])
            if lines and float(lines["h_sum"]) != float(lines["h_count"]):
                torn.append(lines)
    finally:
        stop.set()
        writer.join()
    assert not torn, torn[:1]


# -- bounded clients -----------------------------------------------------------------------------


def test_a_request_head_that_trickles_in_is_cut_off_at_the_header_timeout() -> None:
    with debug_server(Limits(header_timeout=0.5, idle_timeout=60)) as server:
        sock = connect(server)
        started = time.monotonic()
        cut = False
        for byte in request("/healthz")[:-2]:  # never the final empty line
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                cut = True
                break
            if closed_by_server(sock, 0.05):
                cut = True
                break
            if time.monotonic() - started > 20:
                break
        sock.close()
    assert cut, "a slow request head kept its connection"


def test_an_idle_kept_alive_connection_is_closed_after_the_idle_timeout() -> None:
    idle = Limits(header_timeout=60, idle_timeout=0.5)
    with debug_server(idle) as server, connect(server) as sock:
        sock.sendall(request("/healthz"))
        status, _, _ = read_response(sock)
        assert status == 200

        assert closed_by_server(sock, within=20)


def test_a_connection_that_never_sends_is_closed_after_the_idle_timeout() -> None:
    idle = Limits(header_timeout=60, idle_timeout=0.5)
    with debug_server(idle) as server, connect(server) as sock:
        assert closed_by_server(sock, within=20)


def test_at_the_cap_a_new_connection_takes_the_place_of_the_oldest_idle_one() -> None:
    with debug_server(Limits(max_connections=4, idle_timeout=60)) as server:
        silent = [connect(server) for _ in range(4)]
        wait_for(lambda: server.http.connections == 4)

        with connect(server) as probe:
            probe.sendall(request("/healthz"))
            status, _, body = read_response(probe)

        assert (status, body) == (200, b"ok\n")
        assert closed_by_server(silent[0], within=10)
        assert server.http.evicted == 1
        assert server.http.connections <= 4
        for sock in silent:
            sock.close()


def test_when_every_connection_has_a_request_under_way_the_server_stops_accepting() -> None:
    release = threading.Event()
    started: list[web.Request] = []

    async def slow(request: web.Request) -> web.Response:
        started.append(request)
        await asyncio.to_thread(release.wait, 30)
        return web.Response(text="done")

    app = web.Application()
    app.router.add_get("/slow", slow)
    app.router.add_get("/fast", fast)
    server = HttpServer(app, Limits(max_connections=2))
    server.start()
    try:
        port = server.listen("127.0.0.1", 0)
        busy = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(2)]
        for sock in busy:
            sock.sendall(request("/slow"))
        wait_for(lambda: len(started) == 2)
        waiting = socket.create_connection(("127.0.0.1", port), timeout=10)
        waiting.sendall(request("/fast"))
        time.sleep(0.3)
        assert server.connections == 2  # the third waits in the kernel's backlog

        release.set()

        assert read_response(waiting)[2] == b"fast"
        assert [read_response(sock)[2] for sock in busy] == [b"done", b"done"]
        for sock in [*busy, waiting]:
            sock.close()
    finally:
        release.set()
        server.stop()


async def fast(request: web.Request) -> web.Response:
    return web.Response(text="fast")


def wait_for(condition: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_a_client_that_does_not_take_its_response_loses_the_connection() -> None:
    large = b"x" * (64 << 20)  # more than the kernel's socket buffers hold

    async def big(request: web.Request) -> web.Response:
        return web.Response(body=large)

    app = web.Application()
    app.router.add_get("/big", big)
    server = HttpServer(app, Limits(write_timeout=0.5))
    server.start()
    try:
        port = server.listen("127.0.0.1", 0)
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", port))
        sock.sendall(request("/big"))  # and never read
        wait_for(lambda: server.connections == 1)

        wait_for(lambda: server.connections == 0, timeout=20)
        sock.close()
    finally:
        server.stop()


def test_the_connection_cap_leaves_most_descriptors_to_xds() -> None:
    assert connection_cap(1024) == 128
    assert connection_cap(1_048_576) == 1024
    assert connection_cap(16) == 8
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
    try:
        assert Limits().connections() == 32
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_an_over_long_request_line_is_414_and_over_large_headers_431() -> None:
    limits = Limits(max_request_line=1024, max_request_head=4096)
    with debug_server(limits) as server:
        with connect(server) as sock:
            sock.sendall(request("/debug/snapshot?group=" + "x" * 2000))
            status, headers, _ = read_response(sock)
            assert status == 414
            assert headers["connection"] == "close"
        with connect(server) as sock:
            padding = "".join(f"X-Pad-{i}: {'y' * 100}\r\n" for i in range(50))
            sock.sendall(request("/healthz", headers=padding))
            assert read_response(sock)[0] == 431
        with connect(server) as sock:  # a head within the limits is served
            sock.sendall(request("/healthz", headers="X-Pad: " + "y" * 500 + "\r\n"))
            assert read_response(sock)[0] == 200


def test_a_request_line_over_the_limit_is_refused_before_it_ends() -> None:
    with debug_server(Limits(max_request_line=1024)) as server, connect(server) as sock:
        sock.sendall(b"GET /" + b"a" * 4096)  # no line end: the server need not wait for it

        assert read_response(sock)[0] == 414


# -- HTTP ---------------------------------------------------------------------------------------


def test_requests_share_a_kept_alive_connection() -> None:
    with debug_server() as server, connect(server) as sock:
        for path in ("/healthz", "/debug/clients", "/readyz"):
            sock.sendall(request(path))
            status, headers, _ = read_response(sock)
            assert status == 200
            assert headers.get("connection", "keep-alive").lower() != "close"
        sock.sendall(request("/healthz") + request("/readyz"))  # pipelined
        assert read_response(sock)[2] == b"ok\n"
        assert read_response(sock)[2] == b"ready\n"
        assert server.http.connections == 1


def test_gzip_when_the_client_accepts_it() -> None:
    with debug_server() as server, connect(server) as sock:
        sock.sendall(request("/debug/snapshot", headers="Accept-Encoding: gzip, deflate\r\n"))
        status, headers, body = read_response(sock)
        assert status == 200
        assert headers["content-encoding"] == "gzip"
        zipped = json.loads(gzip.decompress(body))

        sock.sendall(request("/debug/snapshot"))
        _, plain_headers, plain = read_response(sock)
        assert "content-encoding" not in plain_headers
        assert json.loads(plain) == zipped
        assert len(body) < len(plain)

        sock.sendall(request("/debug/snapshot", headers="Accept-Encoding: gzip;q=0\r\n"))
        assert "content-encoding" not in read_response(sock)[1]


def test_readers_polling_a_view_share_one_compression(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(debug_http, "COMPRESSED", debug_http.Compressed())
    with debug_server() as server, connect(server) as sock:
        bodies = []
        for _ in range(3):
            sock.sendall(request("/debug/snapshot", headers="Accept-Encoding: gzip\r\n"))
            status, headers, body = read_response(sock)
            assert (status, headers["content-encoding"]) == (200, "gzip")
            bodies.append(json.loads(gzip.decompress(body)))

        assert bodies[0] == bodies[1] == bodies[2]
        assert debug_http.COMPRESSED.compressions == 1


def test_head_gives_the_get_headers_without_a_body() -> None:
    with debug_server() as server, connect(server) as sock:
        sock.sendall(request("/debug/snapshot"))
        _, get_headers, get_body = read_response(sock)
        sock.sendall(request("/debug/snapshot", method="HEAD"))
        sock.settimeout(10)
        data = b""
        while b"\r\n\r\n" not in data:
            data += sock.recv(65536)
        head, _, extra = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200")
        assert f"Content-Length: {len(get_body)}".encode() in head
        assert extra == b""
        sock.sendall(request("/healthz"))  # the connection goes on after a HEAD
        assert read_response(sock)[2] == b"ok\n"
        assert get_headers["content-type"] == "application/json"


def test_other_methods_and_unknown_paths_are_json_errors() -> None:
    with debug_server() as server, connect(server) as sock:
        sock.sendall(request("/debug/clients", method="DELETE"))
        status, _, body = read_response(sock)
        assert (status, json.loads(body)) == (405, {"error": "DELETE is not supported; use GET"})
        sock.sendall(request("/debug/nothing"))
        status, _, body = read_response(sock)
        assert (status, json.loads(body)) == (404, {"error": "no such path '/debug/nothing'"})
        sock.sendall(request("/debug/clients/"))
        assert read_response(sock)[0] == 200


def test_a_busy_port_is_a_clear_error() -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    try:
        with pytest.raises(OSError, match=rf"127\.0\.0\.1:{port}.*already in use"):
            start_debug_server(State(), "127.0.0.1", port)
        with pytest.raises(OSError, match="already in use"):
            bind("127.0.0.1", port)
    finally:
        taken.close()


def test_off_loopback_the_endpoint_refuses_to_start_without_authentication() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.0.0.1")
    with pytest.raises(ValueError, match="authentication"):
        start_debug_server(State(), "0.0.0.0", 0)


def test_a_large_body_goes_out_whole_a_slice_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(debug_http, "WRITE_SLICE", 100)  # the snapshot is some 1,500 bytes
    state = State(groups={"sidecar:15001": reviews_snapshot()})
    with debug_server(state=state) as server, connect(server) as sock:
        sock.sendall(request("/debug/snapshot"))
        status, _, body = read_response(sock)
        assert status == 200
        assert body == debug_http.handle(state, "/debug/snapshot").body
        assert len(body) > 10 * 100

        sock.sendall(request("/debug/snapshot", method="HEAD"))
        sock.settimeout(10)
        data = b""
        while b"\r\n\r\n" not in data:
            data += sock.recv(65536)
        head, _, extra = data.partition(b"\r\n\r\n")
        assert f"Content-Length: {len(body)}".encode() in head
        assert extra == b""
        sock.sendall(request("/healthz"))
        assert read_response(sock)[2] == b"ok\n"
