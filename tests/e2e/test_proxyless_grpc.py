"""A proxyless gRPC client (``xds:///svc``) on the xDS server: weighted routing and live changes.

The client runs in a subprocess so ``GRPC_XDS_BOOTSTRAP`` never reaches the test process; the
subprocess is this module run as ``python -m tests.e2e.test_proxyless_grpc``: it reads a number
per line from stdin, makes that many calls and prints the answers counted by backend as JSON.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import grpc

from tests.protocol.conftest import XdsHarness, running_harness, wait_until
from tests.support.envoy_resources import api_listener, split_mesh
from tests.support.xds_bootstrap import grpc_bootstrap
from xds_server.xds.cache import CLUSTER, ENDPOINT, LISTENER, ROUTE, snapshot_from_messages
from xds_server.xds.client_status import SyncState
from xds_server.xds.grpc_server import ServerOptions

SERVICE = "svc"
METHOD = "/splitplane.test.Who/Name"
REPO_ROOT = Path(__file__).resolve().parents[2]
TIMEOUT_S = 30.0


@contextmanager
def grpc_backend(name: str, host: str = "127.0.0.1", port: int = 0) -> Iterator[tuple[str, int]]:
    """A loopback gRPC server whose one method answers with ``name``, on ``host`` (any
    loopback address) and ``port`` (0: a free one)."""

    def answer(_request: bytes, _context: grpc.ServicerContext) -> bytes:
        return name.encode()

    handler = grpc.method_handlers_generic_handler(
        "splitplane.test.Who",
        {"Name": grpc.unary_unary_rpc_method_handler(answer)},
    )
    server = grpc.server(ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port(f"{host}:{port}")
    server.start()
    try:
        yield (host, port)
    finally:
        server.stop(grace=None)


def publish(xds: XdsHarness, backends: dict[str, tuple[str, int]], weights: dict[str, int]) -> None:
    """The proxyless group's snapshot: ``svc`` routed over ``backends`` by ``weights``."""
    messages = split_mesh(
        api_listener(SERVICE, "svc-route"), "svc-route", [SERVICE], backends, weights
    )
    assert xds.cache.set_snapshot("proxyless", snapshot_from_messages(messages))


def _states(xds: XdsHarness) -> dict[str, SyncState]:
    return {t.type_url: t.state for v in xds.registry.views() for t in v.types}


async def all_synced(xds: XdsHarness) -> None:
    """Wait until the client has acknowledged the latest response of every type."""
    everything_synced = dict.fromkeys((CLUSTER, ENDPOINT, LISTENER, ROUTE), SyncState.SYNCED)
    await wait_until(lambda: _states(xds) == everything_synced, TIMEOUT_S)


class ProxylessClient:
    """The subprocess client, driven one batch of calls at a time."""

    def __init__(self, bootstrap_path: Path, target: str = f"xds:///{SERVICE}") -> None:
        env = {**os.environ, "GRPC_XDS_BOOTSTRAP": str(bootstrap_path)}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.e2e.test_proxyless_grpc", target],
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def _calls(self, count: int) -> Counter[str]:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(f"{count}\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        assert line, f"client exited with {self.process.poll()}"
        return Counter(json.loads(line))

    async def calls(self, count: int) -> Counter[str]:
        """Make ``count`` calls to the target; count answers by backend name.

        A client that cannot get its configuration (a NACK) fails the test instead of hanging.
        """
        return await asyncio.wait_for(asyncio.to_thread(self._calls, count), 2 * TIMEOUT_S)

    def stop(self) -> None:
        """Close stdin and wait for the client to exit."""
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


async def test_proxyless_client_routes_80_20_and_follows_a_change(tmp_path: Path) -> None:
    with grpc_backend("a") as a, grpc_backend("b") as b:
        async for xds in running_harness(ServerOptions()):
            publish(xds, {"a": a, "b": b}, {"a": 80, "b": 20})
            bootstrap_path = tmp_path / "grpc_bootstrap.json"
            bootstrap_path.write_text(json.dumps(grpc_bootstrap(xds.port, "grpc-client")))
            client = ProxylessClient(bootstrap_path)
            try:
                split = await client.calls(1000)
                assert split["a"] + split["b"] == 1000, split
                # 20 % of 1000: the standard deviation is 12.6 calls; allow about 5 of them.
                assert 140 <= split["b"] <= 260, split

                publish(xds, {"a": a, "b": b}, {"a": 0, "b": 100})
                async with asyncio.timeout(TIMEOUT_S):
                    while await client.calls(50) != Counter({"b": 50}):
                        pass
                assert await client.calls(200) == Counter({"b": 200})

                (view,) = xds.registry.views()
                assert (view.node_id, view.group) == ("grpc-client", "proxyless")
                await all_synced(xds)
            finally:
                client.stop()


def _serve_calls(target: str) -> None:
    """The subprocess side: one channel to ``target``, batches of calls on request."""
    with grpc.insecure_channel(target) as channel:
        call = channel.unary_unary(METHOD, request_serializer=bytes, response_deserializer=bytes)
        for line in sys.stdin:
            counts: Counter[str] = Counter()
            for _ in range(int(line)):
                try:
                    answer = call(b"", timeout=TIMEOUT_S, wait_for_ready=True)
                    counts[bytes(answer).decode()] += 1
                except grpc.RpcError as error:
                    counts[f"error {error.code().name}"] += 1
            print(json.dumps(counts), flush=True)


if __name__ == "__main__":
    _serve_calls(sys.argv[1])
