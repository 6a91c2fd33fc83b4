"""How quickly the dashboard answers a mesh of many services, in a real headless Chromium.

A ``splitplane serve --config-dir`` subprocess watches a folder of ``--services`` services
(``translate.service_objects``: pods, an EndpointSlice, a DestinationRule and a 90/10
VirtualService each); the VirtualService of ``svc-0`` is a file of its own.

- first view: from asking Chromium for the page to the first page of VirtualServices drawn
  with its bars (and, for the server's share, one fetch of ``/dashboard/services``);
- live update: from saving a new weight for ``svc-0`` to its bar showing the new share in the
  open page, without a reload (``--edits`` times, alternating 50/50 and 90/10).

With ``--proxies N``, N xDS clients stay connected meanwhile (real grpcio ADS streams, from
another process): proxyless gRPC clients in the services' namespace, each asking for the
listener of ``svc-0`` and ACKing it, so the server holds N streams and the dashboard's proxies
view N clients (a weight change does not push to them; see ``ProxylessClient``).

    cd benchmarks && ../.venv/bin/python dashboard.py --services 10000 --proxies 1000
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import AsyncIterator, Callable
from multiprocessing.connection import Connection
from pathlib import Path

import grpc
import yaml
from envoy.config.core.v3.base_pb2 import Node
from envoy.service.discovery.v3 import ads_pb2_grpc
from envoy.service.discovery.v3.discovery_pb2 import DiscoveryRequest, DiscoveryResponse
from google.protobuf.struct_pb2 import Struct
from selenium import webdriver
from selenium.webdriver.chrome.service import Service as ChromeService
from translate import NAMESPACE, service_objects

V2 = f"outbound|80|v2|svc-0.{NAMESPACE}.svc.cluster.local"
LISTENER_NAME = f"svc-0.{NAMESPACE}.svc.cluster.local:80"
TYPES = "type.googleapis.com/envoy.config."
LDS = TYPES + "listener.v3.Listener"
STREAMS_PER_CHANNEL = 100


class ProxylessClient:
    """One ADS stream of a proxyless gRPC client that dials ``svc-0``: it asks for that target's
    listener and ACKs what it gets. It does not ask for the route table the listener names: in
    this mesh that is the table of port 80, all 10,000 services, megabytes a copy, and a thousand
    copies per edit are more than this benchmark's machine can take (nor is it what is measured
    here: see ``fanout.py`` for pushes)."""

    def __init__(self, stub: ads_pb2_grpc.AggregatedDiscoveryServiceStub, node_id: str) -> None:
        self.outbox: asyncio.Queue[DiscoveryRequest] = asyncio.Queue()
        self.listener_version = ""
        self.changed = asyncio.Event()
        self._stub = stub
        metadata = Struct()
        metadata.update({"ROLE": "proxyless", "NAMESPACE": NAMESPACE})
        self._node = Node(id=node_id, metadata=metadata)

    async def _requests(self) -> AsyncIterator[DiscoveryRequest]:
        while True:
            yield await self.outbox.get()

    async def run(self) -> None:
        self.outbox.put_nowait(
            DiscoveryRequest(type_url=LDS, node=self._node, resource_names=[LISTENER_NAME])
        )
        async for response in self._stub.StreamAggregatedResources(self._requests()):
            assert isinstance(response, DiscoveryResponse)
            self.outbox.put_nowait(
                DiscoveryRequest(
                    type_url=response.type_url,
                    version_info=response.version_info,
                    response_nonce=response.nonce,
                    resource_names=[LISTENER_NAME],
                )
            )
            self.listener_version = response.version_info
            self.changed.set()


async def _proxies(port: int, count: int, conn: Connection) -> None:
    channels = [
        grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        for _ in range(-(-count // STREAMS_PER_CHANNEL))
    ]
    clients = [
        ProxylessClient(
            ads_pb2_grpc.AggregatedDiscoveryServiceStub(channels[n // STREAMS_PER_CHANNEL]),
            f"proxyless-{n}",
        )
        for n in range(count)
    ]
    tasks = [asyncio.create_task(client.run()) for client in clients]

    async def all_have_a_listener() -> None:
        for client, task in zip(clients, tasks, strict=True):
            while not client.listener_version:
                if task.done():
                    task.result()  # a stream that ended says why
                    raise RuntimeError("an xDS stream ended")
                client.changed.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(client.changed.wait(), 1)

    await asyncio.wait_for(all_have_a_listener(), 600)
    conn.send(time.perf_counter())
    await asyncio.to_thread(conn.recv)  # until the benchmark is done
    ended = [task for task in tasks if task.done()]
    conn.send(len(ended))
    for task in tasks:
        task.cancel()
    for channel in channels:
        await channel.close(None)


def run_proxies(port: int, count: int, conn: Connection) -> None:
    asyncio.run(_proxies(port, count, conn))


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


def cpu_seconds(pid: int) -> float:
    """The CPU time (user and system) process ``pid`` has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


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
    parser.add_argument("--proxies", type=int, default=0, help="xDS clients connected meanwhile")
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
    proxies, ours = None, None
    try:
        took = wait_for(lambda: ready(debug), "serve ready")
        print(f"{args.services} services: serve ready after {took:.1f} s")
        base = f"http://127.0.0.1:{debug}"
        if args.proxies:
            ours, theirs = multiprocessing.Pipe()
            spawn = multiprocessing.get_context("spawn")  # gRPC cannot be forked
            proxies = spawn.Process(target=run_proxies, args=(xds, args.proxies, theirs))
            proxies.start()
            theirs.close()  # a child that dies ends the pipe
            started = time.perf_counter()
            ours.recv()
            took = time.perf_counter() - started
            print(f"{args.proxies} proxies connected and synced in {took:.1f} s")
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

        updates, cpu = [], []
        for n in range(args.edits):
            v1, v2, expected = (50, 50, "0.5") if n % 2 == 0 else (90, 10, "0.1")
            cpu_before = cpu_seconds(server.pid)
            started = time.perf_counter()
            save(vs_path, virtual_service(v1, v2))
            wait_for(shows(driver, expected), "live update")
            updates.append(time.perf_counter() - started)
            cpu.append(cpu_seconds(server.pid) - cpu_before)
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
        print(
            "server CPU from the save to the bar moving: median"
            f" {statistics.median(cpu) * 1000:.0f} ms, worst {max(cpu) * 1000:.0f} ms"
        )
        if ours is not None:
            with urllib.request.urlopen(base + "/dashboard/proxies?size=1", timeout=30) as r:
                listed = json.load(r)["total"]
            print(f"the dashboard lists {listed} proxies")
            ours.send(True)
            print(f"{args.proxies} proxies connected throughout; streams ended: {ours.recv()}")
    finally:
        if proxies is not None:
            proxies.join(60)
            if proxies.is_alive():
                proxies.terminate()
        if driver is not None:
            driver.quit()
        server.terminate()
        server.wait(30)
        if os.environ.get("KEEP") is None:
            subprocess.run(["rm", "-rf", str(work)], check=False)


if __name__ == "__main__":
    main()
