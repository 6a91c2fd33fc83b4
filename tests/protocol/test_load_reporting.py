"""The load reporting service, driven by a real grpcio client: a proxy is told which clusters to
report and how often, told again when that set changes, and its reports are kept."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
from envoy.config.core.v3.base_pb2 import Node
from envoy.config.endpoint.v3.load_report_pb2 import ClusterStats, UpstreamLocalityStats
from envoy.service.load_stats.v3 import lrs_pb2, lrs_pb2_grpc

from xds_server.xds.cache import SnapshotCache
from xds_server.xds.client_status import ClientRegistry
from xds_server.xds.grpc_server import start_xds_server
from xds_server.xds.load_reports import Load, LoadReportingService, LoadWindows

V1 = "outbound|80|v1|reviews.default.svc.cluster.local"
V2 = "outbound|80|v2|reviews.default.svc.cluster.local"


def report(cluster: str, issued: int, failed: int) -> lrs_pb2.LoadStatsRequest:
    locality = UpstreamLocalityStats(
        total_issued_requests=issued,
        total_successful_requests=issued - failed,
        total_error_requests=failed,
    )
    return lrs_pb2.LoadStatsRequest(
        cluster_stats=[ClusterStats(cluster_name=cluster, upstream_locality_stats=[locality])]
    )


async def test_a_proxy_is_told_what_to_report_and_told_again_when_it_changes() -> None:
    windows = LoadWindows()
    service = LoadReportingService(windows, interval=2.5)
    service.want(frozenset({V1, V2}))
    server, port = await start_xds_server(
        SnapshotCache(), ClientRegistry(), "127.0.0.1:0", load_reporting=service
    )
    outgoing: asyncio.Queue[lrs_pb2.LoadStatsRequest | None] = asyncio.Queue()

    async def requests() -> AsyncIterator[lrs_pb2.LoadStatsRequest]:
        while (request := await outgoing.get()) is not None:
            yield request

    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stream = lrs_pb2_grpc.LoadReportingServiceStub(channel).StreamLoadStats(requests())
            await outgoing.put(lrs_pb2.LoadStatsRequest(node=Node(id="sidecar-1")))

            first = await asyncio.wait_for(stream.read(), 10)
            assert list(first.clusters) == [V1, V2]
            assert not first.send_all_clusters
            assert first.load_reporting_interval.ToMilliseconds() == 2500

            await outgoing.put(report(V2, issued=10, failed=1))
            await outgoing.put(report(V1, issued=40, failed=0))
            while windows.totals().get(V1) is None:
                await asyncio.sleep(0.01)
            assert windows.totals() == {V1: Load(40, 40, 0), V2: Load(10, 9, 1)}
            assert (service.streams, service.reports) == (1, 3)

            service.want(frozenset({V1}))  # the VirtualService lost its v2 destination
            again = await asyncio.wait_for(stream.read(), 10)
            assert list(again.clusters) == [V1]

            await outgoing.put(None)
            await asyncio.wait_for(stream.wait_for_connection(), 10)
        while service.streams:
            await asyncio.sleep(0.01)
    finally:
        await server.stop(None)
