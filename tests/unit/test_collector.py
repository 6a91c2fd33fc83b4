"""The collector is paused around a block and always resumed, also after an error."""

from __future__ import annotations

import gc

import pytest

from xds_server import collector


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


def test_the_thresholds_are_raised_for_the_process() -> None:
    before = gc.get_threshold()
    try:
        collector.tune()
        assert gc.get_threshold() == collector.GC_THRESHOLDS
        assert gc.get_threshold()[0] > before[0]
    finally:
        gc.set_threshold(*before)
