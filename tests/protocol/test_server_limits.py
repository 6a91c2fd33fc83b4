"""Transport limits of the xDS server."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from tests.protocol.conftest import running_harness
from tests.protocol.test_sotw import GROUP, mesh
from tests.protocol.xds_client import node
from xds_server.xds.cache import CLUSTER
from xds_server.xds.grpc_server import ServerOptions


async def test_streams_beyond_the_configured_cap_are_refused() -> None:
    async for xds in running_harness(ServerOptions(max_concurrent_streams=1)):
        xds.cache.set_snapshot(GROUP, mesh("a"))
        first = xds.sotw(node("first"))
        first.request(CLUSTER)
        await first.response()
        second = xds.sotw(node("second"))
        second.request(CLUSTER)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await asyncio.wait_for(second.call.read(), 10)
        assert refused.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        await first.close()
