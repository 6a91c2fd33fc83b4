"""An in-process xDS server per test, and test clients connected to it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import grpc
import pytest
from envoy.config.core.v3.base_pb2 import Node

from tests.protocol.xds_client import DeltaClient, SotwClient
from xds_server.xds.cache import SnapshotCache
from xds_server.xds.client_status import ClientObserver, ClientRegistry, SyncState
from xds_server.xds.grpc_server import ServerOptions, start_xds_server


async def wait_until(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    """Poll ``condition`` until it holds; fail after a generous timeout."""
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.01)


@dataclass
class XdsHarness:
    """A running server, its cache and status registry, and a channel to it."""

    cache: SnapshotCache
    registry: ClientRegistry
    port: int
    channel: grpc.aio.Channel
    requested: list[str] = field(default_factory=list)

    def sotw(self, client_node: Node) -> SotwClient:
        """Open a state-of-the-world stream."""
        return SotwClient(self.channel, client_node)

    def delta(self, client_node: Node) -> DeltaClient:
        """Open a delta stream."""
        return DeltaClient(self.channel, client_node)

    async def recorded(self, type_url: str, state: SyncState) -> None:
        """Wait until the server recorded the first client's answer for ``type_url``, then let
        the loop run what that scheduled (the server runs on the test's event loop)."""
        await wait_until(lambda: self.registry.views()[0].type_status(type_url).state is state)
        for _ in range(3):
            await asyncio.sleep(0)


async def running_harness(
    options: ServerOptions, observer: ClientObserver | None = None
) -> AsyncIterator[XdsHarness]:
    """Start a server with ``options`` (client events reported to ``observer``); stop it
    afterwards."""
    requested: list[str] = []
    cache = SnapshotCache(on_group_requested=requested.append)
    registry = ClientRegistry(observer)
    server, port = await start_xds_server(cache, registry, "127.0.0.1:0", options)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield XdsHarness(cache, registry, port, channel, requested)
    finally:
        await channel.close(grace=None)
        await server.stop(grace=None)


@pytest.fixture
async def xds() -> AsyncIterator[XdsHarness]:
    async for harness in running_harness(ServerOptions()):
        yield harness
