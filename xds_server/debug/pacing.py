"""The debug endpoint's share of the CPU: it yields to the xDS loop.

The debug endpoint runs in threads of its own, but they share the process's interpreter and the
machine's cores with the xDS loop: readers polling a 10 MB snapshot back to back would take
whatever the process has, and a weight flip would wait behind them. A ``Pacer`` measures, over a
short trailing window, the CPU its threads used (``enlist``) and the CPU the rest of the process
used, and makes its threads wait (``pace``, ``wait``) whenever theirs is over their share:

- ``idle_share`` of a core while the rest of the process is quiet (a view renders at nearly full
  speed when nothing else needs the interpreter);
- ``busy_share`` while the rest of the process uses more than ``busy_above`` of a core (a push,
  the ACKs that follow it, a translation), and for a while after the xDS side says it is about to
  work (``hold``: a change arrived), so that a push does not wait for the measure to notice it:
  then the debug endpoint takes little and xDS the rest.

Its threads call it between steps of their work (a resource rendered, a slice of a body
written, a megabyte compressed), so the share holds whatever a client asks for. Probes
(``/healthz``, ``/readyz``) are answered without waiting.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

WINDOW_S = 0.2  # the trailing window the shares are measured over
MAX_WAIT_S = 0.05  # one wait at most, then measure again
HOLD_S = 1.0  # how long ``hold`` keeps the busy share by default


@dataclass(frozen=True)
class Shares:
    """What the debug endpoint may take of a core (1.0 is a whole core)."""

    idle_share: float = 0.8
    busy_share: float = 0.1
    busy_above: float = 0.2  # the rest of the process is busy above this share of a core

    def __post_init__(self) -> None:
        for name in ("idle_share", "busy_share"):
            value = getattr(self, name)
            if not 0 < value <= 1:
                raise ValueError(f"{name} must be in (0, 1], not {value}")
        if self.busy_above < 0:
            raise ValueError(f"busy_above must not be negative, not {self.busy_above}")


def _thread_clock() -> Callable[[], float]:
    """The CPU clock of the calling thread, readable from any thread."""
    clock = time.pthread_getcpuclockid(threading.get_ident())
    return lambda: time.clock_gettime(clock)


class Pacer:
    """Keeps the threads that ``enlist`` to their share of a core (``Shares``).

    Safe to share between threads. ``now``, ``process_cpu`` and ``sleep`` are the clocks and
    the wait (real ones by default; tests give their own)."""

    def __init__(
        self,
        shares: Shares | None = None,
        *,
        window: float = WINDOW_S,
        now: Callable[[], float] = time.monotonic,
        process_cpu: Callable[[], float] = time.process_time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.shares = shares or Shares()
        self._window = window
        self._now = now
        self._process_cpu = process_cpu
        self._sleep = sleep
        self._lock = threading.Lock()
        self._clocks: dict[int, Callable[[], float]] = {}
        self._gone_cpu = 0.0  # of enlisted threads that have ended
        # (wall, process CPU, enlisted threads' CPU), oldest first, spanning about a window
        self._samples: deque[tuple[float, float, float]] = deque()
        self._busy_until = float("-inf")  # ``hold``
        self.waited = 0.0  # seconds its threads waited, in all

    def hold(self, seconds: float = HOLD_S) -> None:
        """Keep the enlisted threads to the busy share for ``seconds`` from now (from any
        thread: the xDS side calls it when a change arrives)."""
        with self._lock:
            self._busy_until = max(self._busy_until, self._now() + seconds)

    def enlist(self, clock: Callable[[], float] | None = None) -> None:
        """Count the calling thread's CPU as the debug endpoint's (``clock``: its CPU clock)."""
        with self._lock:
            self._clocks[threading.get_ident()] = clock or _thread_clock()

    def leave(self) -> None:
        """The calling thread is ending: keep what it used, stop reading its clock."""
        with self._lock:
            clock = self._clocks.pop(threading.get_ident(), None)
            if clock is not None:
                self._gone_cpu += clock()

    def holding(self) -> bool:
        """Whether a ``hold`` is in force now."""
        with self._lock:
            return self._now() < self._busy_until

    def delay(self) -> float:
        """How long the enlisted threads should wait now to be back within their share."""
        with self._lock:
            now, process, mine = self._now(), self._process_cpu(), self._enlisted_cpu()
            samples = self._samples
            samples.append((now, process, mine))
            while len(samples) > 2 and now - samples[1][0] >= self._window:
                samples.popleft()
            then, process_then, mine_then = samples[0]
            held = now < self._busy_until
        elapsed = now - then
        if elapsed <= 0:
            return 0.0
        used = mine - mine_then
        others = max(0.0, (process - process_then) - used) / elapsed
        shares = self.shares
        busy = held or others > shares.busy_above
        share = shares.busy_share if busy else shares.idle_share
        # Waiting w brings the rate to used / (elapsed + w); at the share when w is this:
        return max(0.0, used / share - elapsed)

    def pace(self) -> None:
        """Wait (in a render thread) until the debug endpoint is within its share."""
        while (wait := self.delay()) > 0:
            wait = min(wait, MAX_WAIT_S)
            self.waited += wait
            self._sleep(wait)

    async def wait(self) -> None:
        """Wait (on the debug endpoint's loop) until it is within its share; other requests,
        the probes among them, are answered meanwhile."""
        while (wait := self.delay()) > 0:
            wait = min(wait, MAX_WAIT_S)
            self.waited += wait
            await asyncio.sleep(wait)

    def _enlisted_cpu(self) -> float:
        total = self._gone_cpu
        for ident, clock in list(self._clocks.items()):
            try:
                total += clock()
            except OSError:  # the thread ended without leaving (a pool's worker)
                del self._clocks[ident]
        return total


def no_pacing() -> None:
    """A pace that never waits (renders outside the debug endpoint: CLI, tests)."""
