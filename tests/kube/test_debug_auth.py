"""The debug endpoint off loopback: bearer tokens checked with TokenReview, then access with a
SubjectAccessReview, as kube-rbac-proxy does, against the API server's own answers.
"""

from __future__ import annotations

import base64
import http.client
import json
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from tests.kube.apiserver import FakeApiServer, Grant
from xds_server.app import ControlPlane, ServeOptions, _debug_auth
from xds_server.debug.auth import (
    SESSION_COOKIE,
    SESSION_PATH,
    SESSION_SECONDS,
    ResourceAttributes,
    SessionTickets,
    User,
    kubernetes_debug_auth,
)
from xds_server.debug.http import DebugServer, start_debug_server

READER_TOKEN = "reader-token"
STRANGER_TOKEN = "stranger-token"


@pytest.fixture
def users(apiserver: FakeApiServer) -> FakeApiServer:
    apiserver.add_user(READER_TOKEN, "system:serviceaccount:ops:reader")
    apiserver.add_user(STRANGER_TOKEN, "system:serviceaccount:apps:stranger")
    apiserver.grant(Grant("system:serviceaccount:ops:reader", "get", path="/debug/*"))
    return apiserver


def serve(api: client.ApiClient, **settings: Any) -> DebugServer:
    # Loopback with authentication given explicitly: what serve does off loopback.
    return start_debug_server(
        ControlPlane(), "127.0.0.1", 0, auth=kubernetes_debug_auth(api, **settings)
    )


@pytest.fixture
def debug(api: client.ApiClient, users: FakeApiServer) -> Iterator[DebugServer]:
    server = serve(api)
    try:
        yield server
    finally:
        server.stop()


def get(
    server: DebugServer, path: str, token: str | None = None, method: str = "GET"
) -> tuple[int, dict[str, Any] | str, dict[str, str]]:
    request = urllib.request.Request(f"http://127.0.0.1:{server.port}{path}", method=method)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            status, body, headers = response.status, response.read(), dict(response.headers)
    except urllib.error.HTTPError as error:
        status, body, headers = error.code, error.read(), dict(error.headers)
    if headers.get("Content-Type", "").startswith("application/json") and body:
        return status, json.loads(body), headers
    return status, body.decode(), headers


def test_a_request_without_a_token_is_401(debug: DebugServer, users: FakeApiServer) -> None:
    status, body, headers = get(debug, "/debug/clients")

    assert status == 401
    assert "token" in body["error"]  # type: ignore[index]
    assert headers["WWW-Authenticate"].startswith("Bearer")
    assert users.token_reviews == []  # nothing to review


def test_a_token_the_token_review_rejects_is_401(debug: DebugServer, users: FakeApiServer) -> None:
    status, _, _ = get(debug, "/debug/clients", token="forged")

    assert status == 401
    [review] = users.token_reviews
    assert review["spec"]["token"] == "forged"
    assert users.access_reviews == []


def test_a_valid_token_the_access_review_denies_is_403(
    debug: DebugServer, users: FakeApiServer
) -> None:
    status, body, _ = get(debug, "/debug/snapshot", token=STRANGER_TOKEN)

    assert status == 403
    assert "stranger" in body["error"]  # type: ignore[index]
    [review] = users.access_reviews
    assert review["spec"]["user"] == "system:serviceaccount:apps:stranger"
    assert "system:authenticated" in review["spec"]["groups"]
    assert review["spec"]["nonResourceAttributes"] == {"path": "/debug/snapshot", "verb": "get"}


def test_an_allowed_token_gets_the_view(debug: DebugServer, users: FakeApiServer) -> None:
    status, body, _ = get(debug, "/debug/clients", token=READER_TOKEN)

    assert (status, body) == (200, {"clients": []})


def test_probes_and_metrics_stay_open(debug: DebugServer, users: FakeApiServer) -> None:
    assert get(debug, "/healthz")[0] == 200
    assert get(debug, "/readyz")[0] == 503  # open, and honest: nothing is published yet
    assert get(debug, "/metrics")[0] == 200
    assert users.token_reviews == users.access_reviews == []


def test_metrics_can_be_put_behind_authentication(
    api: client.ApiClient, users: FakeApiServer
) -> None:
    users.grant(Grant("system:serviceaccount:ops:reader", "get", path="/metrics"))
    server = serve(api, protect_metrics=True)
    try:
        assert get(server, "/metrics")[0] == 401
        assert get(server, "/metrics", token=STRANGER_TOKEN)[0] == 403
        assert get(server, "/metrics", token=READER_TOKEN)[0] == 200
        assert get(server, "/healthz")[0] == 200
    finally:
        server.stop()


def test_answers_are_cached_briefly(debug: DebugServer, users: FakeApiServer) -> None:
    for _ in range(3):
        assert get(debug, "/debug/clients", token=READER_TOKEN)[0] == 200
        assert get(debug, "/debug/clients", token="forged")[0] == 401

    assert len(users.token_reviews) == 2  # one per token
    assert len(users.access_reviews) == 1


def test_answers_expire(api: client.ApiClient, users: FakeApiServer) -> None:
    server = serve(api, cache_seconds=0)
    try:
        for _ in range(2):
            assert get(server, "/debug/clients", token=READER_TOKEN)[0] == 200
    finally:
        server.stop()

    assert len(users.token_reviews) == len(users.access_reviews) == 2


def test_access_can_follow_rbac_on_a_resource(api: client.ApiClient, users: FakeApiServer) -> None:
    proxy = {"namespace": "splitplane-system", "resource": "services", "subresource": "proxy"}
    users.grant(Grant("system:serviceaccount:apps:stranger", "get", resource=proxy))
    attributes = ResourceAttributes(
        namespace="splitplane-system", resource="services", subresource="proxy"
    )
    server = serve(api, resource=attributes)
    try:
        assert get(server, "/debug/model", token=STRANGER_TOKEN)[0] == 200
        assert get(server, "/debug/model", token=READER_TOKEN)[0] == 403  # only the path grant
    finally:
        server.stop()

    assert users.access_reviews[0]["spec"]["resourceAttributes"] == {**proxy, "verb": "get"}


def test_head_is_authorized_as_get(debug: DebugServer, users: FakeApiServer) -> None:
    assert get(debug, "/debug/clients", token=READER_TOKEN, method="HEAD")[0] == 200
    assert get(debug, "/debug/clients", method="HEAD")[0] == 401


def test_an_unreachable_api_is_503_and_not_cached(
    api: client.ApiClient, users: FakeApiServer, debug: DebugServer
) -> None:
    users.inject_fault(500, count=1, path_contains="tokenreviews")

    assert get(debug, "/debug/clients", token=READER_TOKEN)[0] == 503
    assert get(debug, "/debug/clients", token=READER_TOKEN)[0] == 200


def splitplane(*args: str) -> subprocess.CompletedProcess[str]:
    command = [str(Path(sys.executable).with_name("splitplane")), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)


def test_status_and_snapshot_present_a_token(debug: DebugServer, tmp_path: Path) -> None:
    address = f"127.0.0.1:{debug.port}"
    token_file = tmp_path / "token"
    token_file.write_text(READER_TOKEN + "\n")

    refused = splitplane("status", "--debug-address", address)
    by_flag = splitplane("status", "--debug-address", address, "--token", READER_TOKEN)
    by_file = splitplane("snapshot", "--debug-address", address, "--token-file", str(token_file))

    assert refused.returncode == 2
    assert "HTTP 401" in refused.stderr
    assert by_flag.returncode == 0, by_flag.stderr
    assert "(no proxies connected)" in by_flag.stdout
    assert by_file.returncode == 0, by_file.stderr
    assert "groups: {}" in by_file.stdout


def test_serve_authenticates_the_debug_endpoint_only_off_loopback(kubeconfig: Path) -> None:
    options = ServeOptions(kubeconfig=str(kubeconfig), debug_protect_metrics=True)

    assert _debug_auth(options, "127.0.0.1") is None
    auth = _debug_auth(options, "0.0.0.0")
    assert auth is not None
    assert "/metrics" not in auth.open_paths
    with pytest.raises(ValueError, match="loopback"):
        _debug_auth(ServeOptions(config_dir=Path(".")), "0.0.0.0")


def test_serve_on_a_folder_refuses_a_debug_address_off_loopback(tmp_path: Path) -> None:
    result = splitplane(
        "serve", "--config-dir", str(tmp_path), "--debug-address", "0.0.0.0:0",
        "--xds-address", "127.0.0.1:0",
    )  # fmt: skip

    assert result.returncode == 2
    assert "not loopback" in result.stderr
    assert "serving" not in result.stderr


# -- the dashboard's session: a browser's EventSource cannot send a token ------------------------


def request(
    server: DebugServer,
    path: str,
    *,
    method: str = "GET",
    token: str | None = None,
    cookie: str | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and the start of the body (an event stream is not read to its end)."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        headers = {}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        if cookie is not None:
            headers["Cookie"] = cookie
        connection.request(method, path, headers=headers)
        response = connection.getresponse()
        start = response.read1(64) if response.chunked or response.length else b""
        return response.status, dict(response.getheaders()), start
    finally:
        connection.close()


def session_cookie(headers: dict[str, str]) -> str:
    """The ``name=value`` of the session cookie a response sets."""
    cookie = headers["Set-Cookie"].split(";")[0]
    assert cookie.startswith(f"{SESSION_COOKIE}=")
    return cookie


@pytest.fixture
def dashboard_users(users: FakeApiServer) -> FakeApiServer:
    users.grant(Grant("system:serviceaccount:ops:reader", "create", path=SESSION_PATH))
    users.grant(Grant("system:serviceaccount:ops:reader", "get", path="/dashboard/*"))
    users.grant(Grant("system:serviceaccount:apps:stranger", "create", path=SESSION_PATH))
    return users


def test_the_dashboard_page_is_open_and_holds_no_data(debug: DebugServer) -> None:
    status, headers, _ = request(debug, "/")

    assert status == 200
    assert headers["Content-Type"].startswith("text/html")
    assert request(debug, "/dashboard/services")[0] == 401  # its data is not


def test_a_token_is_exchanged_for_a_session_cookie_that_the_event_stream_carries(
    debug: DebugServer, dashboard_users: FakeApiServer
) -> None:
    status, headers, _ = request(debug, SESSION_PATH, method="POST", token=READER_TOKEN)

    assert status == 200
    attributes = [part.strip().lower() for part in headers["Set-Cookie"].split(";")]
    assert {"httponly", "samesite=strict", "path=/", f"max-age={SESSION_SECONDS}"} <= set(
        attributes
    )
    cookie = session_cookie(headers)
    status, headers, start = request(debug, "/dashboard/events", cookie=cookie)
    assert status == 200
    assert headers["Content-Type"] == "text/event-stream"
    assert start.startswith(b"retry:")
    assert request(debug, "/dashboard/services", cookie=cookie)[0] == 200
    assert request(debug, "/dashboard/events")[0] == 401  # without it


def test_a_session_is_authorized_per_path_like_a_token(
    debug: DebugServer, dashboard_users: FakeApiServer
) -> None:
    status, headers, _ = request(debug, SESSION_PATH, method="POST", token=STRANGER_TOKEN)
    assert status == 200
    cookie = session_cookie(headers)

    status, _, start = request(debug, "/dashboard/events", cookie=cookie)

    assert status == 403  # the stranger may start a session, not read the dashboard
    assert b"stranger" in start


def test_a_forged_or_tampered_session_cookie_is_401(
    debug: DebugServer, dashboard_users: FakeApiServer
) -> None:
    _, headers, _ = request(debug, SESSION_PATH, method="POST", token=STRANGER_TOKEN)
    payload, _, signature = session_cookie(headers).partition("=")[2].partition(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["name"] = "system:serviceaccount:ops:reader"  # someone the dashboard lets in
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")

    for value in (f"{forged}.{signature}", "made-up", f"{payload}.{'A' * len(signature)}"):
        status, _, start = request(debug, "/dashboard/events", cookie=f"{SESSION_COOKIE}={value}")
        assert status == 401, value
        assert b"sign in again" in start


def test_a_session_cannot_start_another_one(
    debug: DebugServer, dashboard_users: FakeApiServer
) -> None:
    _, headers, _ = request(debug, SESSION_PATH, method="POST", token=READER_TOKEN)

    status, headers, _ = request(debug, SESSION_PATH, method="POST", cookie=session_cookie(headers))

    assert status == 401
    assert "Set-Cookie" not in headers


def test_a_session_expires() -> None:
    now = [1000.0]
    tickets = SessionTickets(seconds=60, clock=lambda: now[0])
    ticket = tickets.issue(User("reader", "uid-1", ("ops",)))

    assert tickets.verify(ticket) == User("reader", "uid-1", ("ops",))
    now[0] += 61
    assert tickets.verify(ticket) is None
    assert SessionTickets(key=b"another process").verify(ticket) is None
