"""The serve pipeline in-process: store → translate → build → cache, and what it skips."""

from __future__ import annotations

import asyncio
import copy
import gc
import logging
import threading
from collections.abc import Callable
from typing import Any

import pytest
from envoy.config.route.v3.route_pb2 import RouteConfiguration

from tests.protocol.conftest import wait_until
from tests.unit.objects import (
    destination,
    endpoint_slice,
    http_route,
    slice_endpoint,
    versioned_service,
    virtual_service,
)
from translators.build import ResourceBuilder
from translators.incremental import Translator
from translators.model import NodeGroup, Role
from xds_server.app import ControlPlane, parse_group
from xds_server.xds.cache import ENDPOINT, ROUTE

SOURCE = "test"


def canary(v1: int, v2: int) -> dict[str, object]:
    route = http_route(
        destination("reviews", "v1", weight=v1), destination("reviews", "v2", weight=v2)
    )
    return virtual_service("reviews", ["reviews"], [route])


def reviews_slice(ip: str) -> dict[str, object]:
    return endpoint_slice("reviews-abc", "reviews", [slice_endpoint(ip, pod="reviews-v1")])


async def settle(plane: ControlPlane) -> None:
    """Let the store's debounce and the consumer run."""
    for _ in range(3):
        await asyncio.sleep(plane.quiet * 1.5)


GROUPS = ("sidecar:15001", "gateway:8080", "proxyless")


async def started(objects: list[dict[str, object]]) -> ControlPlane:
    """A plane that has synced ``objects`` and has a node of each default group connected."""
    plane = ControlPlane(quiet=0.01, max_delay=0.05)
    for group in GROUPS:
        plane.cache.watch(group, lambda: None)
    plane.store.replace_all(SOURCE, objects)
    plane.store.mark_synced(SOURCE)
    await settle(plane)
    return plane


async def test_nothing_is_published_before_every_source_has_synced() -> None:
    plane = ControlPlane(quiet=0.01, max_delay=0.05)
    plane.cache.watch("sidecar:15001", lambda: None)
    plane.store.register_source("other")
    plane.store.replace_all(SOURCE, [*versioned_service(), canary(90, 10)])
    plane.store.mark_synced(SOURCE)
    await settle(plane)
    assert plane.snapshots() == {}
    assert not plane.is_ready()

    plane.store.mark_synced("other")
    await settle(plane)

    assert set(plane.snapshots()) == {"sidecar:15001"}
    assert plane.is_ready()


async def test_groups_are_built_only_once_a_node_asks_for_them() -> None:
    plane = ControlPlane(quiet=0.01, max_delay=0.05)
    plane.store.replace_all(SOURCE, [*versioned_service(), canary(90, 10)])
    plane.store.mark_synced(SOURCE)
    await settle(plane)
    assert plane.is_ready()
    assert plane.snapshots() == {}

    plane.cache.watch("gateway:8080", lambda: None)

    assert set(plane.snapshots()) == {"gateway:8080"}


async def test_an_endpoint_only_change_rebuilds_load_assignments_and_nothing_else() -> None:
    plane = await started([*versioned_service(), canary(90, 10), reviews_slice("10.0.0.1")])
    routes_before = plane.cache.snapshot("sidecar:15001").of_type(ROUTE)  # type: ignore[union-attr]
    builds_before = dict(plane.builder.builds)

    plane.store.upsert(SOURCE, reviews_slice("10.0.0.7"))
    await settle(plane)

    snapshot = plane.cache.snapshot("sidecar:15001")
    assert snapshot is not None
    assert snapshot.of_type(ROUTE) == routes_before
    assert any("10.0.0.7" in str(r.as_any()) or b"10.0.0.7" in r.body
               for r in snapshot.of_type(ENDPOINT).resources)  # fmt: skip
    rebuilt = {part for part, n in plane.builder.builds.items() if n != builds_before.get(part)}
    assert rebuilt == {"endpoints"}


async def test_a_change_that_does_not_alter_the_model_publishes_nothing() -> None:
    plane = await started([*versioned_service(), canary(90, 10)])
    published = dict(plane.metrics.snapshots.values)
    relabelled = copy.deepcopy(canary(90, 10))
    relabelled["metadata"]["labels"] = {"team": "reviews"}  # type: ignore[index]

    plane.store.upsert(SOURCE, relabelled)
    await settle(plane)

    assert plane.metrics.snapshots.values == published


async def test_a_new_mesh_weight_reaches_sidecars_and_proxyless_clients_not_gateways() -> None:
    plane = await started([*versioned_service(), canary(90, 10)])
    before = {g: s.versions for g, s in plane.snapshots().items()}

    plane.store.upsert(SOURCE, canary(0, 100))
    await settle(plane)

    after = {g: s.versions for g, s in plane.snapshots().items()}
    changed = {g for g in before if after[g][ROUTE] != before[g][ROUTE]}
    assert changed == {"sidecar:15001", "proxyless"}


async def test_a_group_a_node_asks_for_is_built_on_demand() -> None:
    plane = await started([*versioned_service(), canary(90, 10)])

    plane.cache.watch("sidecar:16001", lambda: None)

    snapshot = plane.cache.snapshot("sidecar:16001")
    assert snapshot is not None
    assert list(snapshot.of_type(ROUTE).by_name) == ["16001/reviews.default.svc.cluster.local"]


def test_group_keys_parse_to_node_groups() -> None:
    assert parse_group("sidecar:15001") == NodeGroup(Role.SIDECAR, 15001)
    assert parse_group("gateway:8080") == NodeGroup(Role.GATEWAY, 8080)
    assert parse_group("proxyless") == NodeGroup(Role.PROXYLESS)
    assert parse_group("mystery") is None
    assert parse_group("sidecar:99999") is None
    assert parse_group("sidecar:15001/shop") == NodeGroup(Role.SIDECAR, 15001, "shop")
    assert parse_group("proxyless/shop") == NodeGroup(Role.PROXYLESS, 0, "shop")
    assert parse_group("sidecar:15001/Not_A_Namespace") is None


async def test_a_weight_change_rebuilds_routes_but_not_clusters_or_endpoints() -> None:
    plane = await started([*versioned_service(), canary(90, 10), reviews_slice("10.0.0.1")])
    builds_before = dict(plane.builder.builds)
    serialized_before = plane.serializer.serialized

    plane.store.upsert(SOURCE, canary(50, 50))
    await settle(plane)

    rebuilt = {part for part, n in plane.builder.builds.items() if n != builds_before.get(part)}
    assert rebuilt == {"sidecar:15001/routes", "service-routes"}
    # the sidecar table and the proxyless per-port table: nothing else was serialized again
    assert plane.serializer.serialized - serialized_before == 2


async def test_a_woken_stream_runs_before_the_change_is_logged() -> None:
    order: list[str] = []

    class Recorder(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            order.append(record.getMessage())

    plane = ControlPlane(quiet=0.01, max_delay=0.05)
    woken = asyncio.Event()
    plane.cache.watch("sidecar:15001", woken.set)

    async def stream() -> None:
        await woken.wait()
        order.append("stream woken")

    task = asyncio.create_task(stream())
    logger = logging.getLogger("splitplane")
    recorder, level = Recorder(), logger.level
    logger.addHandler(recorder)
    logger.setLevel(logging.INFO)
    try:
        plane.store.replace_all(SOURCE, [*versioned_service(), canary(90, 10)])
        plane.store.mark_synced(SOURCE)
        await settle(plane)
    finally:
        logger.removeHandler(recorder)
        logger.setLevel(level)
    await task

    assert order == ["stream woken", "published snapshot"]


async def test_a_cold_build_runs_without_collections_and_later_changes_run_as_usual(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    collecting: list[bool] = []  # whether the collector ran while translating or building
    real_reset, real_apply = Translator.reset, Translator.apply
    real_build = ResourceBuilder.build_group

    def reset(self: Translator, *args: Any) -> Any:
        collecting.append(gc.isenabled())
        return real_reset(self, *args)

    def apply(self: Translator, *args: Any) -> Any:
        collecting.append(gc.isenabled())
        return real_apply(self, *args)

    def build_group(self: ResourceBuilder, *args: Any) -> Any:
        collecting.append(gc.isenabled())
        return real_build(self, *args)

    monkeypatch.setattr(Translator, "reset", reset)
    monkeypatch.setattr(Translator, "apply", apply)
    monkeypatch.setattr(ResourceBuilder, "build_group", build_group)
    frozen_before = gc.get_freeze_count()
    try:
        plane = await started([*versioned_service(), canary(90, 10)])
        cold, collecting[:] = list(collecting), []
        frozen_after_cold = gc.get_freeze_count()
        plane.store.upsert(SOURCE, canary(50, 50))
        await settle(plane)
    finally:
        gc.unfreeze()

    assert cold == [False] * (1 + len(GROUPS))  # the first translation, each group's build
    assert frozen_after_cold > frozen_before
    assert collecting and all(collecting)
    assert gc.isenabled()


@pytest.mark.parametrize("offload_objects", [5_000, 1], ids=["on the loop", "in the worker"])
async def test_a_group_a_client_asks_for_later_freezes_nothing(
    monkeypatch: pytest.MonkeyPatch, offload_objects: int
) -> None:
    collecting: list[bool] = []
    real_build = ResourceBuilder.build_group

    def build_group(self: ResourceBuilder, *args: Any) -> Any:
        collecting.append(gc.isenabled())
        return real_build(self, *args)

    plane = ControlPlane(quiet=0.01, max_delay=0.05, offload_objects=offload_objects)
    plane.cache.watch("sidecar:15001", lambda: None)
    plane.store.replace_all(SOURCE, [*versioned_service(), canary(90, 10)])
    plane.store.mark_synced(SOURCE)
    try:
        await wait_until(plane.is_ready)
        monkeypatch.setattr(ResourceBuilder, "build_group", build_group)
        frozen_before = gc.get_freeze_count()

        # Clients decide when groups come: building one must not freeze what the loop left.
        plane.cache.watch("sidecar:20001", lambda: None)
        await wait_until(lambda: plane.cache.snapshot("sidecar:20001") is not None)

        assert collecting == [True]
        assert gc.get_freeze_count() <= frozen_before  # frozen objects may have gone meanwhile
    finally:
        gc.unfreeze()


def reviews_weights(plane: ControlPlane) -> list[tuple[str, int]]:
    """The weighted clusters of the reviews virtual host the sidecar group was last sent."""
    snapshot = plane.cache.snapshot("sidecar:15001")
    assert snapshot is not None
    (table,) = snapshot.of_type(ROUTE).resources
    config = RouteConfiguration.FromString(table.body)
    host = next(v for v in config.virtual_hosts if v.name.startswith("reviews."))
    action = host.routes[0].route
    if action.cluster:  # one destination: no weights
        return [(action.cluster.split("|")[2], 100)]
    return [(c.name.split("|")[2], c.weight.value) for c in action.weighted_clusters.clusters]


def syncing_with_a_worker() -> ControlPlane:
    """A plane that translates in its worker thread whatever the size, given a canary mesh and
    a sidecar node; its first translation is under way once the loop runs."""
    plane = ControlPlane(quiet=0.01, max_delay=0.05, offload_objects=1)
    plane.cache.watch("sidecar:15001", lambda: None)
    plane.store.replace_all(SOURCE, [*versioned_service(), canary(90, 10)])
    plane.store.mark_synced(SOURCE)
    return plane


async def test_a_large_translation_runs_beside_the_loop_and_changes_meanwhile_follow_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    release = threading.Event()
    calls: list[str] = []  # the thread each translation ran on

    def translate(then: Callable[[], Any]) -> Any:
        calls.append(threading.current_thread().name)
        if len(calls) == 1:
            release.wait(timeout=10)  # the first one runs until the test lets it finish
        return then()

    around_translation(monkeypatch, translate)
    plane = syncing_with_a_worker()
    await settle(plane)  # the loop keeps running while the first translation is held

    assert calls and calls[0] != threading.current_thread().name
    assert plane.cache.snapshot("sidecar:15001") is None
    plane.store.upsert(SOURCE, canary(50, 50))
    await settle(plane)
    plane.store.upsert(SOURCE, canary(0, 100))
    await settle(plane)
    assert len(calls) == 1  # changes wait for the running translation
    release.set()
    async with asyncio.timeout(10):
        while len(calls) < 2 or plane.cache.snapshot("sidecar:15001") is None:
            await asyncio.sleep(0.01)
        while reviews_weights(plane) != [("v2", 100)]:
            await asyncio.sleep(0.01)

    await settle(plane)
    assert len(calls) == 2  # one more, with everything that came in meanwhile


async def test_a_translation_that_fails_in_the_worker_leaves_the_plane_ready_for_the_next(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[int] = []

    def translate(then: Callable[[], Any]) -> Any:
        calls.append(len(calls))
        if len(calls) == 1:
            raise RuntimeError("a bug in translation")
        return then()

    around_translation(monkeypatch, translate)
    plane = syncing_with_a_worker()
    await settle(plane)
    assert plane.cache.snapshot("sidecar:15001") is None
    assert "translation failed" in caplog.text

    plane.store.upsert(SOURCE, canary(0, 100))
    async with asyncio.timeout(10):
        while plane.cache.snapshot("sidecar:15001") is None:
            await asyncio.sleep(0.01)
    assert reviews_weights(plane) == [("v2", 100)]


def around_translation(
    monkeypatch: pytest.MonkeyPatch, around: Callable[[Callable[[], Any]], Any]
) -> None:
    """Run every translation the plane makes (the first, and each change's) through
    ``around``, which calls what it is given to translate."""
    real_reset, real_apply = Translator.reset, Translator.apply

    def reset(self: Translator, *args: Any) -> Any:
        return around(lambda: real_reset(self, *args))

    def apply(self: Translator, *args: Any) -> Any:
        return around(lambda: real_apply(self, *args))

    monkeypatch.setattr(Translator, "reset", reset)
    monkeypatch.setattr(Translator, "apply", apply)


def building_threads(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """Records (group, thread name) for every group the plane's builder builds."""
    built: list[tuple[str, str]] = []
    real_build = ResourceBuilder.build_group

    def build_group(self: ResourceBuilder, model: Any, group: NodeGroup, *names: Any) -> Any:
        built.append((group.key, threading.current_thread().name))
        return real_build(self, model, group, *names)

    monkeypatch.setattr(ResourceBuilder, "build_group", build_group)
    return built


async def snapshot_of(plane: ControlPlane, group: str) -> None:
    async with asyncio.timeout(10):
        while plane.cache.snapshot(group) is None:
            await asyncio.sleep(0.01)


@pytest.mark.parametrize("offload_objects", [5_000, 1], ids=["on the loop", "in the worker"])
async def test_the_first_change_finds_the_objects_indexed(offload_objects: int) -> None:
    # Indexing waits for the first snapshots (a cold start publishes sooner), then is done
    # before any change needs it, so the first change costs what the next ones do.
    plane = ControlPlane(quiet=0.01, max_delay=0.05, offload_objects=offload_objects)
    plane.cache.watch("sidecar:15001", lambda: None)
    plane.store.replace_all(SOURCE, [*versioned_service(), canary(90, 10)])
    plane.store.mark_synced(SOURCE)
    await snapshot_of(plane, "sidecar:15001")
    await wait_until(lambda: plane.translator.prepared)

    plane.store.upsert(SOURCE, canary(50, 50))
    async with asyncio.timeout(10):
        while reviews_weights(plane) != [("v1", 50), ("v2", 50)]:
            await asyncio.sleep(0.01)
    assert plane.translator.paths == {"full": 1, "routes": 1}


async def test_a_large_mesh_is_built_in_the_worker_too_and_so_is_a_group_asked_for_later(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    built = building_threads(monkeypatch)
    plane = syncing_with_a_worker()
    await snapshot_of(plane, "sidecar:15001")

    plane.cache.watch("gateway:8080", lambda: None)  # a gateway connects later
    assert plane.cache.snapshot("gateway:8080") is None  # not built on the loop
    await snapshot_of(plane, "gateway:8080")

    loop_thread = threading.current_thread().name
    assert [group for group, _ in built] == ["sidecar:15001", "gateway:8080"]
    assert all(thread != loop_thread for _, thread in built)


async def test_a_group_asked_for_during_a_run_is_built_once_the_run_is_done(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    release = threading.Event()

    def translate(then: Callable[[], Any]) -> Any:
        release.wait(timeout=10)
        return then()

    around_translation(monkeypatch, translate)
    plane = syncing_with_a_worker()
    await settle(plane)  # the first run is held in translate

    plane.cache.watch("gateway:8080", lambda: None)
    await settle(plane)
    assert plane.snapshots() == {}
    release.set()

    await snapshot_of(plane, "sidecar:15001")
    await snapshot_of(plane, "gateway:8080")


async def test_a_group_asked_for_during_a_run_is_built_by_the_next_even_if_the_model_stays(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    plane = syncing_with_a_worker()
    await snapshot_of(plane, "sidecar:15001")
    published = dict(plane.metrics.snapshots.values)
    release = threading.Event()
    calls: list[int] = []

    def translate(then: Callable[[], Any]) -> Any:
        calls.append(len(calls))
        release.wait(timeout=10)
        return then()

    def relabelled(team: str) -> dict[str, object]:
        changed = copy.deepcopy(canary(90, 10))
        changed["metadata"]["labels"] = {"team": team}  # type: ignore[index]
        return changed  # the same model

    around_translation(monkeypatch, translate)
    plane.store.upsert(SOURCE, relabelled("a"))
    await settle(plane)  # that run is held
    plane.cache.watch("gateway:8080", lambda: None)
    plane.store.upsert(SOURCE, relabelled("b"))  # waits for the held run, then builds the gateway
    await settle(plane)
    release.set()

    await snapshot_of(plane, "gateway:8080")
    await settle(plane)
    assert len(calls) == 2
    assert plane.metrics.snapshots.values == {**published, ("gateway:8080",): 1}
