"""The debug endpoint yields the CPU to xDS: its threads keep to a share of a core, a small one
while the rest of the process is busy or a change is under way, and every large view waits for
that share between steps of its work."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Mapping

import pytest
from envoy.config.cluster.v3.cluster_pb2 import Cluster
from envoy.config.core.v3.base_pb2 import Node

from tests.protocol.conftest import wait_until
from tests.unit.objects import versioned_service
from xds_server.app import ControlPlane
from xds_server.debug.http import SlicedBody, _gzipped
from xds_server.debug.pacing import Pacer, Shares
from xds_server.debug.views import ClientsRenderer, SnapshotRenderer
from xds_server.xds.cache import CLUSTER, LISTENER, snapshot_from_messages
from xds_server.xds.client_status import ClientRegistry


class Clocks:
    """Wall time, the process's CPU and one enlisted thread's CPU, moved by the test; a sleep
    moves the wall clock only."""

    def __init__(self) -> None:
        self.wall = 100.0
        self.process = 0.0
        self.mine = 0.0
        self.slept: list[float] = []

    def run(self, wall: float, mine: float = 0.0, others: float = 0.0) -> None:
        """``wall`` seconds pass; the enlisted thread uses ``mine`` of CPU, the rest ``others``."""
        self.wall += wall
        self.mine += mine
        self.process += mine + others

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.wall += seconds

    def pacer(self, shares: Shares | None = None) -> Pacer:
        pacer = Pacer(
            shares, now=lambda: self.wall, process_cpu=lambda: self.process, sleep=self.sleep
        )
        pacer.enlist(clock=lambda: self.mine)
        return pacer


SHARES = Shares(idle_share=0.5, busy_share=0.1, busy_above=0.2)


def test_within_its_share_a_thread_never_waits() -> None:
    clocks = Clocks()
    pacer = clocks.pacer(SHARES)
    assert pacer.delay() == 0
    clocks.run(wall=0.2, mine=0.1)  # half a core, its idle share
    assert pacer.delay() == 0


def test_over_its_share_a_thread_waits_until_its_rate_is_back_at_the_share() -> None:
    clocks = Clocks()
    pacer = clocks.pacer(SHARES)
    pacer.delay()
    clocks.run(wall=0.2, mine=0.2)  # a whole core for 0.2 s
    assert pacer.delay() == pytest.approx(0.2)  # 0.2 s of CPU in 0.4 s is half a core

    pacer.pace()
    assert sum(clocks.slept) == pytest.approx(0.2)
    assert pacer.waited == pytest.approx(0.2)
    assert pacer.delay() == 0


def test_while_the_rest_of_the_process_is_busy_the_share_is_the_small_one() -> None:
    clocks = Clocks()
    pacer = clocks.pacer(SHARES)
    pacer.delay()
    clocks.run(wall=0.2, mine=0.05, others=0.1)  # the xDS loop at half a core
    assert pacer.delay() == pytest.approx(0.05 / 0.1 - 0.2)

    quiet = clocks.pacer(SHARES)
    quiet.delay()
    clocks.run(wall=0.2, mine=0.05, others=0.02)  # the xDS loop at a tenth of a core
    assert quiet.delay() == 0


def test_a_change_under_way_holds_the_debug_endpoint_to_the_small_share_at_once() -> None:
    clocks = Clocks()
    pacer = clocks.pacer(SHARES)
    pacer.delay()
    clocks.run(wall=0.2, mine=0.05)
    assert pacer.delay() == 0

    pacer.hold(1.0)  # before the translation has used any CPU
    assert pacer.delay() == pytest.approx(0.05 / 0.1 - 0.2)
    clocks.run(wall=1.0)
    clocks.run(wall=0.2, mine=0.05)
    assert pacer.delay() == 0  # the hold is over, and a quarter of a core is within 0.5


def test_the_share_is_measured_over_a_trailing_window() -> None:
    clocks = Clocks()
    pacer = clocks.pacer(SHARES)
    pacer.delay()
    clocks.run(wall=0.1, mine=0.1)
    assert pacer.delay() > 0
    for _ in range(10):  # long after, quiet: the burst has left the window
        clocks.run(wall=0.1)
        pacer.delay()
    clocks.run(wall=0.05, mine=0.02)
    assert pacer.delay() == 0


async def test_a_change_to_the_mesh_holds_the_servers_debug_endpoint_to_the_small_share() -> None:
    plane = ControlPlane(quiet=0.01, max_delay=0.05)
    assert not plane.debug_pacer.holding()
    plane.store.replace_all("test", versioned_service("reviews"))
    plane.store.mark_synced("test")
    await wait_until(plane.is_ready)
    assert plane.debug_pacer.holding()


def test_shares_must_be_parts_of_a_core() -> None:
    for bad in ({"idle_share": 0.0}, {"busy_share": 1.5}, {"busy_above": -0.1}):
        with pytest.raises(ValueError):
            Shares(**bad)


def test_the_cpu_an_enlisted_thread_burns_is_measured_and_paced() -> None:
    pacer = Pacer(Shares(idle_share=0.01, busy_share=0.01))
    delays: list[float] = []

    def burn() -> None:
        pacer.enlist()
        pacer.delay()
        started = time.thread_time()
        while time.thread_time() - started < 0.05:
            sum(range(1000))
        delays.append(pacer.delay())
        pacer.leave()

    worker = threading.Thread(target=burn)
    worker.start()
    worker.join()
    # 50 ms of CPU at a hundredth of a core: seconds of waiting, whatever the machine's load
    assert delays[0] > 1.0
    assert pacer.delay() > 1.0  # a thread that left still counts for what it used


class CountingPacer(Pacer):
    def __init__(self) -> None:
        super().__init__()
        self.waits = 0

    async def wait(self) -> None:
        self.waits += 1


class Writer:
    def __init__(self) -> None:
        self.parts: list[bytes] = []

    async def write(self, data: bytes | memoryview) -> None:
        self.parts.append(bytes(data))


def test_a_large_body_waits_for_the_share_before_each_slice() -> None:
    pacer = CountingPacer()
    value = bytes(range(256)) * 4096  # 1 MiB: four slices
    body = SlicedBody(value, "application/json", pacer)
    writer = Writer()
    asyncio.run(body.write(writer))  # type: ignore[arg-type]
    assert b"".join(writer.parts) == value
    assert pacer.waits == len(writer.parts) == 4


def test_compression_paces_a_megabyte_at_a_time() -> None:
    import gzip

    paced: list[None] = []
    body = b'{"resource": "reviews"}\n' * 200_000  # 4.8 MB
    zipped = _gzipped(body, lambda: paced.append(None))
    assert gzip.decompress(zipped) == body
    assert len(paced) == 5


def snapshots(count: int) -> Mapping[str, object]:
    clusters = [Cluster(name=f"c{index}", type=Cluster.STATIC) for index in range(count)]
    return {"sidecar:15001": snapshot_from_messages({CLUSTER: clusters, LISTENER: []})}


def test_the_snapshot_view_paces_between_the_resources_it_renders_and_not_for_kept_ones() -> None:
    paced: list[None] = []
    renderer = SnapshotRenderer()
    held = snapshots(30)
    renderer.render(held, pace=lambda: paced.append(None))  # type: ignore[arg-type]
    assert len(paced) == 30
    paced.clear()
    renderer.render(held, pace=lambda: paced.append(None))  # type: ignore[arg-type]
    assert paced == []


def test_the_clients_view_paces_between_the_clients_it_renders() -> None:
    registry = ClientRegistry()
    for index in range(4):
        registry.connect(Node(id=f"envoy-{index}"), "sidecar", "sidecar:15001", "sotw")
    paced: list[None] = []
    ClientsRenderer().render(registry.views(), lambda: paced.append(None))
    assert len(paced) == 4
