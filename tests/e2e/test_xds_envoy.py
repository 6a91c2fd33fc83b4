"""A real Envoy on the xDS server: it ACKs every type, routes by weight, follows changes, NACKs."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import pytest
from envoy.config.cluster.v3.cluster_pb2 import Cluster
from envoy.service.status.v3 import csds_pb2, csds_pb2_grpc
from google.protobuf.duration_pb2 import Duration

from tests.protocol.conftest import XdsHarness, running_harness, wait_until
from tests.support.backends import Backend, count_backends, free_port, http_backend
from tests.support.envoy_resources import http_listener, split_mesh
from tests.support.xds_bootstrap import envoy_bootstrap
from xds_server.cli.local_envoy import running_envoy
from xds_server.xds.cache import (
    CLUSTER,
    ENDPOINT,
    LISTENER,
    ROUTE,
    snapshot_from_messages,
)
from xds_server.xds.client_status import SyncState
from xds_server.xds.grpc_server import ServerOptions

pytestmark = pytest.mark.envoy

GROUP = "sidecar:15001"
NODE_ID = "envoy-under-test"
SYNC_TIMEOUT_S = 30.0


def publish(
    xds: XdsHarness, listener_port: int, backends: list[Backend], weights: dict[str, int]
) -> None:
    """Publish a mesh routing everything on ``listener_port`` to ``backends`` by ``weights``."""
    messages = split_mesh(
        http_listener("listener_http", listener_port, "80"),
        "80",
        ["*"],
        {b.name: b.address for b in backends},
        weights,
    )
    assert xds.cache.set_snapshot(GROUP, snapshot_from_messages(messages))


def states(xds: XdsHarness) -> dict[str, SyncState]:
    """The Envoy's sync state per type URL."""
    return {
        t.type_url: t.state for v in xds.registry.views() if v.node_id == NODE_ID for t in v.types
    }


async def reaches(xds: XdsHarness, type_url: str, state: SyncState) -> None:
    """Wait until the Envoy's state for ``type_url`` is ``state``."""
    await wait_until(lambda: states(xds).get(type_url) is state, SYNC_TIMEOUT_S)


async def synced(xds: XdsHarness) -> None:
    """Wait until the Envoy has acknowledged the latest response of every type."""
    everything_synced = dict.fromkeys((CLUSTER, ENDPOINT, LISTENER, ROUTE), SyncState.SYNCED)
    await wait_until(lambda: states(xds) == everything_synced, SYNC_TIMEOUT_S)


async def count(port: int, requests: int) -> Counter[str]:
    return await asyncio.to_thread(count_backends, port, requests)


@pytest.mark.parametrize("delta", [False, True], ids=["sotw", "delta"])
async def test_envoy_acks_every_type_routes_90_10_and_follows_a_change_to_0_100(
    delta: bool, tmp_path: Path
) -> None:
    with http_backend("v1") as v1, http_backend("v2") as v2:
        async for xds in running_harness(ServerOptions()):
            port = free_port()
            publish(xds, port, [v1, v2], {"v1": 90, "v2": 10})
            bootstrap = envoy_bootstrap(xds.port, NODE_ID, delta=delta)
            with running_envoy(bootstrap, tmp_path, wait_ready=False) as envoy:
                await asyncio.to_thread(envoy.wait_ready)
                await synced(xds)

                split = await count(port, 1000)
                assert split["v1"] + split["v2"] == 1000, split
                # 10 % of 1000: the standard deviation is 9.5 requests; allow about 5 of them.
                assert 50 <= split["v2"] <= 150, split

                publish(xds, port, [v1, v2], {"v1": 0, "v2": 100})
                async with asyncio.timeout(SYNC_TIMEOUT_S):
                    while await count(port, 50) != Counter({"v2": 50}):
                        pass
                assert await count(port, 200) == Counter({"v2": 200})
                await synced(xds)

                stub = csds_pb2_grpc.ClientStatusDiscoveryServiceStub(xds.channel)
                answer = await stub.FetchClientStatus(csds_pb2.ClientStatusRequest())
                (config,) = answer.config
                assert config.node.id == NODE_ID
                reported = {
                    (c.type_url, c.name): c.config_status for c in config.generic_xds_configs
                }
                assert reported == {
                    (CLUSTER, "v1"): csds_pb2.SYNCED,
                    (CLUSTER, "v2"): csds_pb2.SYNCED,
                    (ENDPOINT, "v1"): csds_pb2.SYNCED,
                    (ENDPOINT, "v2"): csds_pb2.SYNCED,
                    (LISTENER, "listener_http"): csds_pb2.SYNCED,
                    (ROUTE, "80"): csds_pb2.SYNCED,
                }


async def test_a_resource_envoy_rejects_is_nacked_once_and_traffic_keeps_flowing(
    tmp_path: Path,
) -> None:
    with http_backend("v1") as v1, http_backend("v2") as v2:
        async for xds in running_harness(ServerOptions()):
            port = free_port()
            publish(xds, port, [v1, v2], {"v1": 50, "v2": 50})
            with running_envoy(
                envoy_bootstrap(xds.port, NODE_ID), tmp_path, wait_ready=False
            ) as envoy:
                await asyncio.to_thread(envoy.wait_ready)
                await synced(xds)

                good = split_mesh(
                    http_listener("listener_http", port, "80"),
                    "80",
                    ["*"],
                    {"v1": v1.address, "v2": v2.address},
                    {"v1": 50, "v2": 50},
                )
                # Valid protobuf, but Envoy refuses a negative connect_timeout.
                bad = Cluster(name="bad", type=Cluster.STATIC, connect_timeout=Duration(seconds=-1))
                good[CLUSTER] = [*good[CLUSTER], bad]
                assert xds.cache.set_snapshot(GROUP, snapshot_from_messages(good))
                await reaches(xds, CLUSTER, SyncState.NACKED)

                view = next(v for v in xds.registry.views() if v.node_id == NODE_ID)
                cds = view.type_status(CLUSTER)
                # Envoy's own words, as it rejected the update.
                assert "Expected positive duration" in cds.error, cds.error
                assert cds.nacked_version == cds.sent_version

                split = await count(port, 400)
                assert split["v1"] + split["v2"] == 400, split
                assert envoy.stat("cluster_manager.cds.update_rejected") == 1
                after = next(v for v in xds.registry.views() if v.node_id == NODE_ID)
                assert after.type_status(CLUSTER).responses_sent == cds.responses_sent
                assert after.type_status(CLUSTER).state is SyncState.NACKED
