"""Proxies coming back: a reconnecting client's first request is answered, and connections are
aged out so that proxies spread over the replicas after a rollout."""

from __future__ import annotations

import asyncio

import grpc

from tests.protocol.conftest import XdsHarness, running_harness
from tests.protocol.test_sotw import GROUP, mesh, names
from tests.protocol.xds_client import node
from xds_server.xds.cache import CLUSTER, ENDPOINT
from xds_server.xds.grpc_server import ServerOptions


async def test_a_new_stream_whose_first_request_carries_a_nonce_is_answered(
    xds: XdsHarness,
) -> None:
    xds.cache.set_snapshot(GROUP, mesh("a", "b"))
    client = xds.sotw(node("back-again"))

    # What a proxy sends after a reconnect: the nonce and version of the previous stream.
    client.request(CLUSTER, nonce="41", version="old-version")
    clusters = await client.response()
    client.ack(clusters)
    client.request(ENDPOINT, ["a"], nonce="42", version="old-version")
    endpoints = await client.response()

    assert names(clusters) == ["a", "b"]
    assert names(endpoints) == ["a"]
    await client.close()


async def test_a_stale_nonce_on_a_stream_that_was_answered_is_still_ignored(
    xds: XdsHarness,
) -> None:
    xds.cache.set_snapshot(GROUP, mesh("a", "b"))
    client = xds.sotw(node("n"))
    client.request(CLUSTER)
    first = await client.response()

    client.request(CLUSTER, ["a"], nonce="not-the-latest", version=first.version_info)
    client.ack(first)
    xds.cache.set_snapshot(GROUP, mesh("a", "b", "c"))

    assert names(await client.response()) == ["a", "b", "c"]
    await client.close()


async def test_a_connection_past_its_max_age_is_closed_and_the_client_reconnects() -> None:
    options = ServerOptions(max_connection_age_s=0.5, max_connection_age_grace_s=0.5)
    async for xds in running_harness(options):
        xds.cache.set_snapshot(GROUP, mesh("a"))
        client = xds.sotw(node("aged"))
        client.request(CLUSTER)
        await client.response()

        try:
            ended = await asyncio.wait_for(client.call.read(), 10)
        except grpc.aio.AioRpcError as error:
            ended = error.code()

        assert ended is grpc.StatusCode.UNAVAILABLE
        again = xds.sotw(node("aged"))
        again.request(CLUSTER)
        assert names(await again.response()) == ["a"]
        await again.close()
