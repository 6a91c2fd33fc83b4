"""Every golden case's proxyless resources are accepted by a real gRPC client (grpcio).

The proxyless node group's listeners, route tables, clusters and endpoints are served by an
in-process xDS server; a grpcio subprocess dials every api listener (``xds:///<name>``) as a
proxyless client does, so gRPC's xDS client fetches and checks everything those targets reach.
Every response must be ACKed: gRPC is stricter than Envoy in places (a locality on every
endpoint group, a weight on every locality, the balancing policies it supports).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest
from envoy.config.cluster.v3.cluster_pb2 import Cluster
from envoy.config.route.v3.route_pb2 import RouteConfiguration
from google.protobuf.message import Message

from tests.golden.test_golden import CASES, run_case
from tests.protocol.conftest import XdsHarness, running_harness
from tests.support.grpc_subscriber import subscribing
from tests.support.xds_bootstrap import grpc_bootstrap
from translators import resources
from translators.model import NodeGroup, Role
from xds_server.xds.cache import snapshot_from_messages
from xds_server.xds.client_status import SyncState, TypeStatus
from xds_server.xds.grpc_server import ServerOptions

pytestmark = pytest.mark.envoy

GROUP = NodeGroup(Role.PROXYLESS).key
TIMEOUT_S = 60.0


def routed_clusters(tables: Sequence[Message]) -> set[str]:
    """Every cluster a route of ``tables`` sends to."""
    names: set[str] = set()
    for table in tables:
        assert isinstance(table, RouteConfiguration)
        for vhost in table.virtual_hosts:
            for route in vhost.routes:
                if route.route.cluster:
                    names.add(route.route.cluster)
                names.update(c.name for c in route.route.weighted_clusters.clusters)
    return names


def expected_types(built: Mapping[str, Sequence[Message]]) -> set[str]:
    """The types a client dialing every listener fetches."""
    wanted = {resources.LISTENER, resources.ROUTE}
    clusters = routed_clusters(built[resources.ROUTE])
    if clusters:
        wanted.add(resources.CLUSTER)
    by_name = {c.name: c for c in built[resources.CLUSTER] if isinstance(c, Cluster)}
    if any(by_name[name].type == Cluster.EDS for name in clusters if name in by_name):
        wanted.add(resources.ENDPOINT)
    return wanted


def answered(xds: XdsHarness) -> dict[str, TypeStatus]:
    return {t.type_url: t for view in xds.registry.views() for t in view.types}


@pytest.mark.parametrize("case", CASES, ids=lambda p: p.name)
async def test_a_proxyless_grpc_client_accepts_every_resource(case: Path, tmp_path: Path) -> None:
    built = run_case(case).groups[GROUP]
    targets = [f"xds:///{listener.name}" for listener in built[resources.LISTENER]]  # type: ignore[attr-defined]
    if not targets:
        pytest.skip("no service a proxyless client could dial")
    wanted = expected_types(built)
    async for xds in running_harness(ServerOptions()):
        assert xds.cache.set_snapshot(GROUP, snapshot_from_messages(built))
        bootstrap = tmp_path / "grpc-bootstrap.json"
        bootstrap.write_text(json.dumps(grpc_bootstrap(xds.port, "golden-client")))
        with subscribing(bootstrap, targets):
            async with asyncio.timeout(TIMEOUT_S):
                while True:
                    status = answered(xds)
                    nacked = {u: s.error for u, s in status.items() if s.state is SyncState.NACKED}
                    assert not nacked, nacked
                    synced = {u for u, s in status.items() if s.state is SyncState.SYNCED}
                    if wanted <= synced:
                        break
                    await asyncio.sleep(0.05)
