"""The debouncer: the first change after quiet goes at once, bursts are coalesced, a steady stream
still goes out every ``max_delay``."""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Callable

import pytest

from xds_server.store import Debouncer, LoopTimer

QUIET = 0.1
MAX_DELAY = 1.0


class FakeHandle:
    def __init__(self) -> None:
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeTimer:
    """A clock that only moves when told; callbacks run in due order as it moves."""

    def __init__(self) -> None:
        self.time = 0.0
        self.delays: list[float] = []
        self._queue: list[tuple[float, int, FakeHandle, Callable[[], None]]] = []
        self._order = itertools.count()

    def now(self) -> float:
        return self.time

    def call_later(self, delay: float, callback: Callable[[], None]) -> FakeHandle:
        handle = FakeHandle()
        self.delays.append(delay)
        heapq.heappush(self._queue, (self.time + delay, next(self._order), handle, callback))
        return handle

    def run_due(self) -> None:
        """Run every callback due by now (what the loop's next turn does)."""
        while self._queue and self._queue[0][0] <= self.time:
            _, _, handle, callback = heapq.heappop(self._queue)
            if not handle.cancelled:
                callback()

    def advance_to(self, when: float) -> None:
        """Move the clock to ``when``, running callbacks as their time comes."""
        while self._queue and self._queue[0][0] <= when:
            self.time = max(self.time, self._queue[0][0])
            self.run_due()
        self.time = when
        self.run_due()


@pytest.fixture
def timer() -> FakeTimer:
    return FakeTimer()


def make_debouncer(timer: FakeTimer) -> tuple[Debouncer, list[float]]:
    fired: list[float] = []
    debouncer = Debouncer(
        lambda: fired.append(timer.now()), quiet=QUIET, max_delay=MAX_DELAY, timer=timer
    )
    return debouncer, fired


def test_first_change_after_quiet_fires_on_the_next_turn_without_delay(timer: FakeTimer) -> None:
    debouncer, fired = make_debouncer(timer)
    debouncer.poke()
    assert timer.delays == [0.0]
    assert fired == []  # not inside the caller's stack
    timer.run_due()
    assert fired == [0.0]


def test_changes_in_the_same_turn_share_one_immediate_call(timer: FakeTimer) -> None:
    debouncer, fired = make_debouncer(timer)
    for _ in range(5):
        debouncer.poke()
    timer.run_due()
    assert fired == [0.0]
    assert not debouncer.pending


def test_burst_is_coalesced_into_one_call_after_the_quiet_period(timer: FakeTimer) -> None:
    debouncer, fired = make_debouncer(timer)
    debouncer.poke()
    timer.run_due()
    for when in (0.01, 0.02, 0.03, 0.04):
        timer.advance_to(when)
        debouncer.poke()
    timer.advance_to(0.04 + QUIET - 0.001)
    assert fired == [0.0]
    timer.advance_to(0.04 + QUIET)
    assert fired == [0.0, pytest.approx(0.04 + QUIET)]


def test_quiet_period_restarts_with_each_change_of_a_burst(timer: FakeTimer) -> None:
    debouncer, fired = make_debouncer(timer)
    debouncer.poke()
    timer.run_due()
    timer.advance_to(0.05)
    debouncer.poke()
    timer.advance_to(0.12)
    debouncer.poke()
    timer.advance_to(0.2)
    assert fired == [0.0]
    timer.advance_to(0.3)
    assert fired == [0.0, pytest.approx(0.22)]


def test_max_delay_is_honoured_under_a_steady_stream(timer: FakeTimer) -> None:
    log: list[tuple[str, float]] = []
    debouncer = Debouncer(
        lambda: log.append(("fire", timer.now())), quiet=QUIET, max_delay=MAX_DELAY, timer=timer
    )
    for tick in range(70):  # a change every half quiet period, for 3.5 s
        timer.advance_to(tick * QUIET / 2)
        log.append(("poke", timer.now()))
        debouncer.poke()
    timer.advance_to(10.0)

    fires = [when for event, when in log if event == "fire"]
    assert fires[0] == 0.0
    assert 4 <= len(fires) <= 6
    for position, (event, poked_at) in enumerate(log):
        if event == "poke":
            answered_at = next(when for later, when in log[position:] if later == "fire")
            assert answered_at - poked_at <= MAX_DELAY + 1e-9


def test_change_after_a_quiet_period_fires_at_once_again(timer: FakeTimer) -> None:
    debouncer, fired = make_debouncer(timer)
    debouncer.poke()
    timer.run_due()
    timer.advance_to(0.05)
    debouncer.poke()
    timer.advance_to(1.0)
    assert fired == [0.0, pytest.approx(0.15)]
    debouncer.poke()
    timer.run_due()
    assert fired == [0.0, pytest.approx(0.15), 1.0]


def test_a_single_change_during_a_burst_window_still_fires(timer: FakeTimer) -> None:
    debouncer, fired = make_debouncer(timer)
    debouncer.poke()
    timer.run_due()
    timer.advance_to(0.01)
    debouncer.poke()
    assert debouncer.pending
    timer.advance_to(5.0)
    assert fired == [0.0, pytest.approx(0.11)]
    assert not debouncer.pending


def test_cancel_drops_the_pending_call(timer: FakeTimer) -> None:
    debouncer, fired = make_debouncer(timer)
    debouncer.poke()
    debouncer.cancel()
    timer.advance_to(5.0)
    assert fired == []


@pytest.mark.parametrize(
    ("quiet", "max_delay"),
    [(-0.1, 1.0), (0.1, -1.0)],
)
def test_negative_periods_are_refused(quiet: float, max_delay: float) -> None:
    with pytest.raises(ValueError, match="must not be negative"):
        Debouncer(lambda: None, quiet=quiet, max_delay=max_delay)


async def test_on_the_asyncio_loop_the_first_change_runs_on_the_very_next_turn() -> None:
    fired: list[int] = []
    debouncer = Debouncer(lambda: fired.append(1), quiet=QUIET, max_delay=MAX_DELAY)
    debouncer.poke()
    debouncer.poke()
    assert fired == []
    await asyncio.sleep(0)
    assert fired == [1]


async def test_on_the_asyncio_loop_a_burst_fires_once_more_after_quiet() -> None:
    done = asyncio.Event()
    fired: list[int] = []

    def action() -> None:
        fired.append(1)
        if len(fired) == 2:
            done.set()

    debouncer = Debouncer(action, quiet=0.01, max_delay=MAX_DELAY, timer=LoopTimer())
    debouncer.poke()
    await asyncio.sleep(0)
    debouncer.poke()
    debouncer.poke()
    await asyncio.wait_for(done.wait(), timeout=10)
    assert fired == [1, 1]
