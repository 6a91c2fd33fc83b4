"""`splitplane demo`: a canary, end to end, on this machine.

Starts two loopback backends (``reviews`` v1 on 127.0.0.2 and v2 on 127.0.0.3), the control
plane on a temporary folder, and a real Envoy sidecar bootstrapped at it. Then walks a canary
100/0 → 90/10 → 50/50 → 0/100: each step rewrites the VirtualService file, waits until Envoy has
ACKed the new routes (the step's propagation time), sends traffic through the sidecar and draws
the measured split. Everything started is stopped at the end, on errors and on Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import shutil
import socket
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import yaml

from xds_server.app import ControlPlane, ServeOptions, serve
from xds_server.cli.bootstrap import render_bootstrap
from xds_server.cli.local_envoy import RunningEnvoy, envoy_binary, running_envoy
from xds_server.logs import configure_logging
from xds_server.xds.cache import ROUTE

STEPS: tuple[tuple[int, int], ...] = ((100, 0), (90, 10), (50, 50), (0, 100))
BACKENDS = (("v1", "127.0.0.2"), ("v2", "127.0.0.3"))
NODE_ID = "sidecar~127.0.0.1~demo.default~default.svc.cluster.local"

MESH = """\
apiVersion: v1
kind: Service
metadata: {{name: reviews, namespace: default}}
spec:
  selector: {{app: reviews}}
  ports: [{{name: http, port: 80, targetPort: {port}}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: reviews-v1, namespace: default, labels: {{app: reviews, version: v1}}}}
status:
  podIP: 127.0.0.2
  phase: Running
  conditions: [{{type: Ready, status: "True"}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: reviews-v2, namespace: default, labels: {{app: reviews, version: v2}}}}
status:
  podIP: 127.0.0.3
  phase: Running
  conditions: [{{type: Ready, status: "True"}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: reviews, namespace: default}}
spec:
  host: reviews
  subsets:
  - {{name: v1, labels: {{version: v1}}}}
  - {{name: v2, labels: {{version: v2}}}}
"""

VIRTUAL_SERVICE = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: reviews, namespace: default}}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {{host: reviews, subset: v1}}
      weight: {v1}
    - destination: {{host: reviews, subset: v2}}
      weight: {v2}
"""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


# ------------------------------------------------------------------------------------------------
# Backends: answer with their version, headers and body in one send


async def _backend(version: str, host: str, port: int) -> asyncio.Server:
    body = f"reviews {version}\n".encode()
    response = (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
        + f"x-version: {version}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        + body
    )

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = _content_length(head)
                if length:
                    await reader.readexactly(length)
                writer.write(response)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    return await asyncio.start_server(answer, host, port)


def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value.strip() or 0)
    return 0


# ------------------------------------------------------------------------------------------------
# Envoy


@dataclass
class Sidecar:
    envoy: RunningEnvoy
    outbound_port: int


@contextlib.contextmanager
def running_sidecar(workdir: Path, xds_port: int) -> Iterator[Sidecar]:
    outbound_port = free_port()
    bootstrap = render_bootstrap(
        node_id=NODE_ID,
        role="sidecar",
        namespace="default",
        xds_address=f"127.0.0.1:{xds_port}",
        admin_port=0,
        outbound_port=outbound_port,
    )
    with running_envoy(yaml.safe_load(bootstrap), workdir / "envoy", wait_ready=False) as envoy:
        yield Sidecar(envoy, outbound_port)


# ------------------------------------------------------------------------------------------------
# The walk


def send(envoy: Sidecar, count: int) -> tuple[Counter[str], int]:
    """Send ``count`` requests through the sidecar; returns where they landed and failures."""
    landed: Counter[str] = Counter()
    failures = 0
    connection = http.client.HTTPConnection("127.0.0.1", envoy.outbound_port, timeout=5)
    for _ in range(count):
        try:
            connection.request("GET", "/", headers={"Host": "reviews"})
            response = connection.getresponse()
            response.read()
            if response.status == 200:
                landed[response.getheader("x-version", "?")] += 1
            else:
                failures += 1
        except (OSError, http.client.HTTPException):
            failures += 1
            connection.close()
            connection = http.client.HTTPConnection("127.0.0.1", envoy.outbound_port, timeout=5)
    connection.close()
    return landed, failures


def bar(share: float, width: int = 40) -> str:
    filled = round(share * width)
    return "█" * filled + "·" * (width - filled)


def routes_acked(plane: ControlPlane) -> str:
    """The route version the demo's Envoy has ACKed ("" before it has)."""
    for client in plane.clients():
        if client.node_id == NODE_ID:
            for status in client.types:
                if status.type_url == ROUTE and status.state.value == "SYNCED":
                    return status.acked_version
    return ""


def served_routes(plane: ControlPlane) -> str:
    """The route version the control plane serves the demo's sidecar (its node group is its
    outbound port and namespace)."""
    groups = [client.group for client in plane.clients() if client.node_id == NODE_ID]
    snapshot = plane.cache.snapshot(groups[0]) if groups else None
    return snapshot.of_type(ROUTE).version if snapshot else ""


def within(share: float, expected: float, count: int) -> bool:
    """Whether a measured share is within five standard deviations of the expected one."""
    if expected in (0.0, 1.0):
        return share == expected
    sigma: float = (expected * (1 - expected) / count) ** 0.5
    return abs(share - expected) <= 5 * sigma


async def apply_step(plane: ControlPlane, vs_file: Path, v1: int, v2: int) -> float:
    """Write the step's weights; returns the seconds until Envoy ACKed the new routes."""
    before = served_routes(plane)
    written = time.perf_counter()
    vs_file.write_text(VIRTUAL_SERVICE.format(v1=v1, v2=v2))
    await _until(lambda: served_routes(plane) != before, 10, "new routes")
    await _until(lambda: routes_acked(plane) == served_routes(plane), 10, "the ACK")
    return time.perf_counter() - written


async def walk(args: argparse.Namespace) -> bool:
    """The demo proper; returns whether every step's split was as configured."""
    workdir = Path(tempfile.mkdtemp(prefix="splitplane-demo-"))
    mesh_dir = workdir / "mesh"
    mesh_dir.mkdir()
    port = free_port("127.0.0.2")
    backends = [await _backend(version, host, port) for version, host in BACKENDS]
    (mesh_dir / "reviews.yaml").write_text(MESH.format(port=port))
    vs_file = mesh_dir / "reviews-virtualservice.yaml"
    vs_file.write_text(VIRTUAL_SERVICE.format(v1=STEPS[0][0], v2=STEPS[0][1]))

    plane = ControlPlane()
    stop = asyncio.Event()
    ready = asyncio.Event()
    options = ServeOptions(
        config_dir=mesh_dir,
        xds_address="127.0.0.1:0",
        debug_address="127.0.0.1:0",
        drain_seconds=0.5,
    )
    server = asyncio.create_task(serve(options, plane=plane, stop=stop, ready=ready))
    all_good = True
    try:
        await ready.wait()
        print(
            f"control plane: xDS on 127.0.0.1:{plane.xds_port}, debug on "
            f"http://127.0.0.1:{plane.debug_port}/debug/clients"
        )
        with running_sidecar(workdir, plane.xds_port) as envoy:
            await _until(
                lambda: envoy.envoy.is_ready() and routes_acked(plane) != "", 30, "Envoy ready"
            )
            print(f"envoy sidecar: outbound listener 127.0.0.1:{envoy.outbound_port}\n")
            for step, (v1, v2) in enumerate(STEPS):
                if step == 0:
                    heading = "initial config"  # served before Envoy connected
                else:
                    # A person applies one step at a time: let the previous change settle past
                    # the debounce window so this one is pushed at once, as a lone edit is.
                    await asyncio.sleep(plane.quiet)
                    took = await apply_step(plane, vs_file, v1, v2)
                    heading = f"propagated in {took * 1000:6.1f} ms"
                landed, failures = await asyncio.to_thread(send, envoy, args.requests)
                total = max(sum(landed.values()), 1)
                print(f"step {v1}/{v2}   {heading}   {args.requests} requests, {failures} failed")
                for version, weight in (("v1", v1), ("v2", v2)):
                    share = landed[version] / total
                    ok = within(share, weight / (v1 + v2), total)
                    all_good &= ok and failures == 0
                    mark = "" if ok else "   <-- outside tolerance"
                    print(
                        f"  {version} {bar(share)} {share * 100:5.1f} % "
                        f"(configured {weight} %){mark}"
                    )
                print()
    finally:
        stop.set()
        await server
        for backend in backends:
            backend.close()
        shutil.rmtree(workdir, ignore_errors=True)
    return all_good


async def _until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        await asyncio.sleep(0.001)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--short",
        action="store_true",
        help="fewer requests per step and exit 1 unless every split is within tolerance (CI)",
    )
    parser.add_argument(
        "--requests", type=int, default=0, metavar="N", help="requests per step (default 1000)"
    )


def run(args: argparse.Namespace) -> int:
    configure_logging("warning")
    if not args.requests:
        args.requests = 300 if args.short else 1000
    try:
        envoy_binary()
    except FileNotFoundError as err:
        print(f"splitplane demo: {err}", file=sys.stderr)
        return 1
    try:
        good = asyncio.run(walk(args))
    except KeyboardInterrupt:
        print("\ninterrupted: everything stopped")
        return 130
    print("every step split as configured" if good else "some step did not split as configured")
    return 0 if good or not args.short else 1
