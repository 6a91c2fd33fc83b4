"""The dashboard in a real headless Chromium: it shows the configured split as bars, follows a
weight edited in the watched folder without a reload, and shows the share Envoy observed."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml
from selenium import webdriver
from selenium.webdriver.chrome.service import Service as ChromeService
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from tests.e2e.test_serve_envoy import (
    FolderMesh,
    Server,
    mesh_objects,
    sidecar_bootstrap,
    splitplane_serve,
    virtual_service,
    wait_for,
    within_tolerance,
)
from tests.support.backends import count_backends, free_port, http_backend
from xds_server.cli.local_envoy import running_envoy

pytestmark = pytest.mark.browser

V1 = "outbound|80|v1|reviews.default.svc.cluster.local"
V2 = "outbound|80|v2|reviews.default.svc.cluster.local"
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[WebDriver]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--window-size=1280,900",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=ChromeService(CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()


def bar_share(browser: WebDriver, cluster: str, kind: str) -> str:
    """The share a destination's bar shows ("" while there is none), read from the DOM."""
    # One script: the page may replace the element between a find and a read.
    found = browser.execute_script(
        "const bar = document.querySelector(arguments[0]); return bar && bar.dataset.share;",
        f'tr.destination[data-cluster="{cluster}"] .bar.{kind}',
    )
    return str(found) if found is not None else "missing"


def shows(browser: WebDriver, cluster: str, kind: str, share: str) -> Callable[[], bool]:
    return lambda: bar_share(browser, cluster, kind) == share


def open_dashboard(browser: WebDriver, server: Server) -> None:
    browser.get(f"http://127.0.0.1:{server.debug_port}/")
    wait_for(lambda: browser.find_element(By.ID, "live").text == "live", "the event stream")


def screenshot(browser: WebDriver, name: str) -> None:
    """Kept for a person to look at when SPLITPLANE_SCREENSHOTS names a folder."""
    folder = os.environ.get("SPLITPLANE_SCREENSHOTS")
    if folder:
        browser.save_screenshot(str(Path(folder) / name))


def test_an_edited_weight_moves_the_bar_without_a_reload(
    tmp_path: Path, browser: WebDriver
) -> None:
    mesh = FolderMesh(tmp_path / "mesh")
    mesh.root.mkdir()
    with http_backend("v1") as v1, http_backend("v2") as v2:
        for obj in mesh_objects(v1, v2):
            mesh.put(obj)
        mesh.put(virtual_service(90, 10))
        with splitplane_serve(mesh, tmp_path) as server:
            open_dashboard(browser, server)
            wait_for(shows(browser, V2, "configured", "0.1"), "the 90/10 bars")
            assert bar_share(browser, V1, "configured") == "0.9"
            card = browser.find_element(By.CSS_SELECTOR, ".card.service")
            assert "VirtualService default/reviews" in card.text
            # A file of its own: its only document starts on line 1.
            origin = card.find_element(By.CSS_SELECTOR, ".origin")
            assert origin.text == "virtualservice-reviews.yaml:1"
            browser.execute_script("window.notReloaded = true")

            mesh.put(virtual_service(50, 50))

            wait_for(shows(browser, V2, "configured", "0.5"), "the bars after the edit")
            assert bar_share(browser, V1, "configured") == "0.5"
            assert browser.execute_script("return window.notReloaded") is True
            width = browser.find_element(
                By.CSS_SELECTOR, f'tr.destination[data-cluster="{V2}"] .bar.configured > div'
            ).get_attribute("style")
            assert "width: 50%" in str(width)

            mesh.put(virtual_service(0, 0))  # rejected: a diagnostic appears, live too
            wait_for(
                lambda: any(
                    "weights sum to 0" in str(d.get_attribute("textContent"))
                    for d in browser.find_elements(By.CSS_SELECTOR, ".card.diagnostic")
                ),
                "the diagnostic",
            )
            assert browser.find_element(By.ID, "count-diagnostics").text != "0"

            # Moved into a file of several documents, it is shown at its document's line.
            others = [obj for obj in mesh_objects(v1, v2) if obj["kind"] == "DestinationRule"]
            before = "# reviews: canary\n---\n" + "".join(
                yaml.safe_dump(obj) + "---\n" for obj in others
            )
            (mesh.root / "routes.yaml").write_text(before + yaml.safe_dump(virtual_service(60, 40)))
            mesh.remove_virtual_service()
            wait_for(shows(browser, V2, "configured", "0.4"), "the bars from routes.yaml")
            line = before.count("\n") + 1  # the line after the last "---"
            wait_for(
                lambda: (
                    browser.execute_script(
                        "return document.querySelector('.card.service .origin').textContent"
                    )
                    == f"routes.yaml:{line}"
                ),
                f"routes.yaml:{line} as the VirtualService's origin",
            )


@pytest.mark.envoy
def test_the_share_envoy_observed_is_shown_beside_the_weight(
    tmp_path: Path, browser: WebDriver
) -> None:
    mesh = FolderMesh(tmp_path / "mesh")
    mesh.root.mkdir()
    with http_backend("v1") as v1, http_backend("v2") as v2:
        for obj in mesh_objects(v1, v2):
            mesh.put(obj)
        mesh.put(virtual_service(80, 20))
        with splitplane_serve(mesh, tmp_path, "--load-report-interval", "1") as server:
            outbound = free_port()
            with running_envoy(sidecar_bootstrap(server.xds_port, outbound), tmp_path / "envoy"):
                open_dashboard(browser, server)
                wait_for(shows(browser, V2, "configured", "0.2"), "the 80/20 bars")
                assert bar_share(browser, V2, "observed") == ""  # nothing reported yet

                counts = count_backends(outbound, 1000, host="reviews")
                assert counts["v1"] + counts["v2"] == 1000, counts

                wait_for(lambda: bar_share(browser, V2, "observed") != "", "an observed share")
                # One read of the whole table: a live update may land between two reads.
                rows = browser.execute_script(
                    """return [...document.querySelectorAll("tr.destination")].map(row => [
                        row.dataset.cluster,
                        row.querySelector(".bar.observed").dataset.share,
                        Number(row.querySelector("td.requests").textContent)])"""
                )
                shares = {cluster: float(share) for cluster, share, _ in rows}
                requests = {cluster: count for cluster, _, count in rows}
                total = requests[V1] + requests[V2]
                assert shares[V2] == pytest.approx(requests[V2] / total, abs=1e-4)
                assert within_tolerance(requests[V2], total, 0.20), requests

                proxies = browser.find_element(By.CSS_SELECTOR, 'nav button[data-view="proxies"]')
                proxies.click()
                proxy = browser.find_element(By.CSS_SELECTOR, ".card.proxy")
                wait_for(lambda: "SYNCED" in proxy.text, "the proxy's state")
                link = proxy.find_element(By.LINK_TEXT, "what it was sent")
                assert "/debug/config_dump?node=sidecar~127.0.0.1~test.default" in str(
                    link.get_attribute("href")
                )
                screenshot(browser, "proxies.png")
                browser.find_element(By.CSS_SELECTOR, 'nav button[data-view="services"]').click()
                screenshot(browser, "services.png")
