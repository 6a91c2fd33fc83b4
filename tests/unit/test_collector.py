"""The collector is paused around a cold build, always resumed, and what survives is frozen."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from xds_server import collector


@pytest.fixture(autouse=True)
def unfrozen() -> Iterator[None]:
    yield
    gc.unfreeze()


def test_collections_are_paused_in_the_block_and_resumed_after() -> None:
    assert gc.isenabled()
    with collector.paused():
        assert not gc.isenabled()
        with collector.paused():  # nested: the outer block resumes
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert gc.isenabled()


def test_an_error_in_the_block_still_resumes_collections() -> None:
    with pytest.raises(RuntimeError), collector.paused():
        raise RuntimeError("translation failed")
    assert gc.isenabled()


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
