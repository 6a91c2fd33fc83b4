"""Each response is measured by the resource entries it carries (the config-size metric)."""

from __future__ import annotations

from tests.protocol.conftest import running_harness
from tests.protocol.test_sotw import GROUP, mesh
from tests.protocol.xds_client import node
from xds_server.debug.metrics import Metrics
from xds_server.xds.cache import CLUSTER, Snapshot
from xds_server.xds.grpc_server import ServerOptions


class SizesSeen(Metrics):
    """Metrics that also keep each response's size, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.sizes: list[int] = []

    def response_sent(self, type_url: str, size: int) -> None:
        super().response_sent(type_url, size)
        self.sizes.append(size)


def sotw_entries(snapshot: Snapshot) -> bytes:
    return snapshot.of_type(CLUSTER).select(None).sotw_entries


async def test_a_sotw_response_counts_every_resource_and_a_delta_one_only_the_changed() -> None:
    first, second = mesh("a"), mesh("a", "b")
    sotw_seen, delta_seen = SizesSeen(), SizesSeen()
    for seen, protocol in ((sotw_seen, "sotw"), (delta_seen, "delta")):
        async for xds in running_harness(ServerOptions(), seen):
            xds.cache.set_snapshot(GROUP, first)
            client = xds.sotw(node("s")) if protocol == "sotw" else xds.delta(node("d"))
            client.request(CLUSTER)
            client.ack(await client.response())
            xds.cache.set_snapshot(GROUP, second)
            await client.response()
            await client.close()

    by_name = second.of_type(CLUSTER).by_name
    assert sotw_seen.sizes == [len(sotw_entries(first)), len(sotw_entries(second))]
    assert delta_seen.sizes == [len(by_name["a"].delta_entry), len(by_name["b"].delta_entry)]
    assert sum(sotw_seen.config_size.sums.values()) == sum(sotw_seen.sizes)
