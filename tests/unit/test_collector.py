"""A cold build runs without collections, always resumes them, and freezes what survives."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from xds_server import collector


@pytest.fixture(autouse=True)
def unfrozen() -> Iterator[None]:
    yield
    gc.unfreeze()


def test_a_cold_build_inside_another_leaves_resuming_to_the_outer_one() -> None:
    with collector.long_lived():
        with collector.long_lived():
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert gc.isenabled()


def test_a_build_that_is_not_cold_runs_as_usual() -> None:
    frozen_before = gc.get_freeze_count()
    with collector.long_lived(cold=False):
        assert gc.isenabled()
        survivors = [[index] for index in range(1000)]
    assert gc.get_freeze_count() == frozen_before
    assert survivors


def test_what_survives_a_cold_build_is_frozen_and_collections_resume() -> None:
    frozen_before = gc.get_freeze_count()
    with collector.long_lived():
        assert not gc.isenabled()
        survivors = [[index] for index in range(1000)]
    assert gc.isenabled()
    assert gc.get_freeze_count() >= frozen_before + len(survivors)


def test_a_failed_cold_build_freezes_nothing() -> None:
    frozen_before = gc.get_freeze_count()
    with pytest.raises(RuntimeError), collector.long_lived():
        raise RuntimeError("translation failed")
    assert gc.isenabled()
    assert gc.get_freeze_count() == frozen_before


def test_the_thresholds_are_raised_for_the_process() -> None:
    before = gc.get_threshold()
    try:
        collector.tune()
        assert gc.get_threshold() == collector.GC_THRESHOLDS
        assert gc.get_threshold()[0] > before[0]
    finally:
        gc.set_threshold(*before)


def test_cyclic_garbage_left_before_a_cold_build_is_collected_not_frozen() -> None:
    class Node:
        other: object = None

    first, second = Node(), Node()
    first.other, second.other = second, first  # a cycle, as a finished stream's task leaves
    gone = weakref.ref(first)
    del first, second

    with collector.long_lived():
        pass
    gc.unfreeze()
    gc.disable()  # no collection of its own before the check
    try:
        assert gone() is None
    finally:
        gc.enable()
