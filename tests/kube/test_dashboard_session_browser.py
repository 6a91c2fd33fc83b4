"""The dashboard off loopback, in a real headless Chromium: the page asks for a bearer token,
trades it for a session cookie, and from then on its live updates (an ``EventSource``, which
cannot send a token) arrive with the cookie. The debug port authenticates as ``serve`` does off
loopback, against the in-process API server's TokenReview and SubjectAccessReview."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from tests.e2e.test_dashboard_browser import V2, bar_share, browser, shows
from tests.e2e.test_operator_tools import ServerThread
from tests.e2e.test_serve_envoy import FolderMesh, mesh_objects, virtual_service, wait_for
from tests.kube.apiserver import FakeApiServer, Grant
from tests.support.backends import http_backend
from xds_server.debug.auth import SESSION_PATH, kubernetes_debug_auth
from xds_server.debug.http import DebugServer, start_debug_server
from xds_server.sources.kubernetes import api_client_from_flags

pytestmark = pytest.mark.browser

__all__ = ["browser"]  # the fixture, shared with the loopback tests

READER = "system:serviceaccount:ops:dashboard"
READER_TOKEN = "dashboard-reader-token"


@pytest.fixture
def mesh(tmp_path: Path) -> Iterator[FolderMesh]:
    mesh = FolderMesh(tmp_path / "mesh")
    mesh.root.mkdir()
    with http_backend("v1") as v1, http_backend("v2") as v2:
        for obj in mesh_objects(v1, v2):
            mesh.put(obj)
        mesh.put(virtual_service(90, 10))
        yield mesh


@pytest.fixture
def debug(mesh: FolderMesh, apiserver: FakeApiServer, kubeconfig: Path) -> Iterator[DebugServer]:
    apiserver.add_user(READER_TOKEN, READER)
    apiserver.grant(Grant(READER, "create", path=SESSION_PATH))
    apiserver.grant(Grant(READER, "get", path="/dashboard/*"))
    reviews = api_client_from_flags(kubeconfig=str(kubeconfig))
    with ServerThread(mesh.root) as server:
        debug = start_debug_server(
            server.plane, "127.0.0.1", 0, auth=kubernetes_debug_auth(reviews)
        )
        try:
            yield debug
        finally:
            debug.stop()
            reviews.close()  # type: ignore[no-untyped-call]


def test_the_page_signs_in_with_a_token_and_then_follows_edits_live(
    browser: WebDriver, debug: DebugServer, mesh: FolderMesh
) -> None:
    browser.get(f"http://127.0.0.1:{debug.port}/")
    form = browser.find_element(By.ID, "signin")
    wait_for(form.is_displayed, "the page to ask for a token")
    assert bar_share(browser, V2, "configured") == "missing"  # nothing without signing in

    browser.find_element(By.ID, "token").send_keys(READER_TOKEN)
    form.submit()

    wait_for(lambda: browser.find_element(By.ID, "live").text == "live", "the event stream")
    wait_for(shows(browser, V2, "configured", "0.1"), "the 90/10 bars")
    assert not form.is_displayed()
    # The cookie is the page's only credential, and no script can read it.
    assert browser.execute_script("return document.cookie") == ""
    browser.execute_script("window.notReloaded = true")

    mesh.put(virtual_service(50, 50))

    wait_for(shows(browser, V2, "configured", "0.5"), "the bars after the edit, live")
    assert browser.execute_script("return window.notReloaded") is True
