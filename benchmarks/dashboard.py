"""How quickly the dashboard answers a mesh of many services, in a real headless Chromium.

A ``splitplane serve --config-dir`` subprocess watches a folder of ``--services`` services
(``translate.service_objects``: pods, an EndpointSlice, a DestinationRule and a 90/10
VirtualService each); the VirtualService of ``svc-0`` is a file of its own.

- first view: from asking Chromium for the page to the first page of VirtualServices drawn
  with its bars (and, for the server's share, one fetch of ``/dashboard/services``);
- live update: from saving a new weight for ``svc-0`` to its bar showing the new share in the
  open page, without a reload (``--edits`` times, alternating 50/50 and 90/10).

    .venv/bin/python benchmarks/dashboard.py --services 10000
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import yaml
from selenium import webdriver
from selenium.webdriver.chrome.service import Service as ChromeService
from translate import NAMESPACE, service_objects

V2 = f"outbound|80|v2|svc-0.{NAMESPACE}.svc.cluster.local"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for(condition: Callable[[], bool], what: str, timeout_s: float = 300) -> float:
    started = time.perf_counter()
    while not condition():
        if time.perf_counter() - started > timeout_s:
            raise TimeoutError(what)
        time.sleep(0.005)
    return time.perf_counter() - started


def ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def virtual_service(v1: int, v2: int) -> str:
    vs = service_objects(0)[-1]
    vs["spec"]["http"][0]["route"][0]["weight"] = v1
    vs["spec"]["http"][0]["route"][1]["weight"] = v2
    return yaml.safe_dump(vs)


def save(path: Path, text: str) -> None:
    staged = path.with_suffix(".tmp")
    staged.write_text(text)
    staged.replace(path)


def browser(profile: Path) -> webdriver.Chrome:
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for argument in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--window-size=1280,900",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(argument)
    return webdriver.Chrome(options=options, service=ChromeService("/usr/bin/chromedriver"))


def share(driver: webdriver.Chrome) -> str:
    # One script: the page may replace the element between a find and a read.
    found = driver.execute_script(
        "const bar = document.querySelector(arguments[0]); return bar && bar.dataset.share;",
        f'tr.destination[data-cluster="{V2}"] .bar.configured',
    )
    return str(found) if found is not None else ""


def shows(driver: webdriver.Chrome, expected: str) -> Callable[[], bool]:
    return lambda: share(driver) == expected


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=10_000)
    parser.add_argument("--edits", type=int, default=6)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="dashboard-bench-"))
    mesh = work / "mesh"
    mesh.mkdir()
    objects = [obj for n in range(args.services) for obj in service_objects(n)]
    first_vs = objects.pop(objects.index(service_objects(0)[-1]))
    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)  # libyaml's, when there
    for start in range(0, len(objects), 500):  # files well under the source's size limit
        text = yaml.dump_all(objects[start : start + 500], Dumper=dumper)
        (mesh / f"mesh-{start // 500:04d}.yaml").write_text(text)
    vs_path = mesh / "svc-0-vs.yaml"
    vs_path.write_text(yaml.safe_dump(first_vs))

    xds, debug = free_port(), free_port()
    splitplane = Path(sys.executable).with_name("splitplane")
    command = [str(splitplane), "serve", "--config-dir", str(mesh)]
    command += ["--xds-address", f"127.0.0.1:{xds}", "--debug-address", f"127.0.0.1:{debug}"]
    with (work / "serve.log").open("wb") as log:
        server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    driver = None
    try:
        took = wait_for(lambda: ready(debug), "serve ready")
        print(f"{args.services} services: serve ready after {took:.1f} s")
        base = f"http://127.0.0.1:{debug}"
        fetches = []
        for _ in range(5):
            started = time.perf_counter()
            with urllib.request.urlopen(base + "/dashboard/services?page=1", timeout=30) as r:
                size = len(r.read())
            fetches.append(time.perf_counter() - started)

        driver = browser(work / "profile")
        driver.get("about:blank")
        started = time.perf_counter()
        driver.get(base + "/")
        first_view = started
        wait_for(shows(driver, "0.1"), "first view")
        first_view = time.perf_counter() - first_view

        updates = []
        for n in range(args.edits):
            v1, v2, expected = (50, 50, "0.5") if n % 2 == 0 else (90, 10, "0.1")
            started = time.perf_counter()
            save(vs_path, virtual_service(v1, v2))
            wait_for(shows(driver, expected), "live update")
            updates.append(time.perf_counter() - started)
            time.sleep(1)

        print(
            f"/dashboard/services first page: {size} bytes,"
            f" median {statistics.median(fetches) * 1000:.0f} ms over 5 fetches"
        )
        print(f"first view in Chromium: {first_view * 1000:.0f} ms")
        print(
            "live update after a weight change: median"
            f" {statistics.median(updates) * 1000:.0f} ms, worst {max(updates) * 1000:.0f} ms"
            f" ({args.edits} edits)"
        )
    finally:
        if driver is not None:
            driver.quit()
        server.terminate()
        server.wait(30)
        if os.environ.get("KEEP") is None:
            subprocess.run(["rm", "-rf", str(work)], check=False)


if __name__ == "__main__":
    main()
