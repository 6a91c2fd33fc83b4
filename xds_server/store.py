"""The latest objects from every source, and when to hand them on.

Sources report into an ``ObjectStore`` (it is their ``ObjectSink``). The store keeps each source's
objects by kind/namespace/name, drops reports that change nothing, holds everything back until
every source has listed once (the sync gate), and then calls its consumer through a ``Debouncer``
with the keys that changed since the consumer last ran.

Everything here runs on one asyncio event loop: sources must call the store from the loop's thread.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from xds_server.sources.base import KubeObject, ObjectKey, SourceProblem, object_key

# Kinds that only decide which endpoints a cluster has: a change to them never alters clusters,
# listeners or routes.
ENDPOINT_KINDS: frozenset[str] = frozenset({"EndpointSlice", "Pod"})

# Kinds whose ``status`` is part of what translation reads (pod IP and readiness).
STATUS_KINDS: frozenset[str] = frozenset({"Pod", "EndpointSlice"})

# Metadata that changes on every write to the API server without changing the object's meaning.
VOLATILE_METADATA: frozenset[str] = frozenset({"resourceVersion", "managedFields", "generation"})

DEFAULT_QUIET = 0.1
DEFAULT_MAX_DELAY = 1.0


def comparable(obj: KubeObject) -> dict[str, Any]:
    """The part of ``obj`` that counts when deciding whether it changed.

    Leaves out volatile metadata and, except for Pods and EndpointSlices, ``status``.
    """
    kind = obj.get("kind")
    out = {k: v for k, v in obj.items() if k != "status" or kind in STATUS_KINDS}
    meta = obj.get("metadata")
    if isinstance(meta, Mapping):
        out["metadata"] = {k: v for k, v in meta.items() if k not in VOLATILE_METADATA}
    return out


def same_content(a: KubeObject | None, b: KubeObject | None) -> bool:
    """Whether ``a`` and ``b`` mean the same to translation (``None`` is "absent")."""
    if a is b:
        return True
    if a is None or b is None:
        return False
    return comparable(a) == comparable(b)


@dataclass(frozen=True)
class StoreChange:
    """What changed since the consumer last ran.

    ``initial`` is set on the first call after the sync gate opens: everything is new.
    ``keys`` holds every object added, changed or removed; ``problems_changed`` says whether the
    sources' problems differ from those at the last call.
    """

    keys: frozenset[ObjectKey] = frozenset()
    initial: bool = False
    problems_changed: bool = False

    @property
    def kinds(self) -> frozenset[str]:
        """The kinds of the changed objects."""
        return frozenset(key[0] for key in self.keys)

    @property
    def endpoints_only(self) -> bool:
        """Only Pods and EndpointSlices changed: endpoints need rebuilding, routes do not."""
        return (
            not self.initial
            and bool(self.keys)
            and all(key[0] in ENDPOINT_KINDS for key in self.keys)
        )


class Cancellable(Protocol):
    def cancel(self) -> None: ...


class Timer(Protocol):
    """A clock and a way to run a callback later (the asyncio loop, or a fake one in tests)."""

    def now(self) -> float: ...

    def call_later(self, delay: float, callback: Callable[[], None]) -> Cancellable: ...


class LoopTimer:
    """The running asyncio loop's clock. A delay of zero runs the callback on the next turn."""

    def now(self) -> float:
        return asyncio.get_running_loop().time()

    def call_later(self, delay: float, callback: Callable[[], None]) -> Cancellable:
        loop = asyncio.get_running_loop()
        if delay <= 0:
            return loop.call_soon(callback)
        return loop.call_later(delay, callback)


# asyncio may run a timer up to its clock resolution early: within this margin it counts as due.
_DUE_MARGIN = 1e-3


class Debouncer:
    """Turns a stream of ``poke()`` calls into calls of ``action``.

    The first poke after ``quiet`` seconds without one runs ``action`` on the loop's next turn
    (so pokes made in the same turn share that call). Pokes that follow closely are coalesced:
    ``action`` runs once no poke has come for ``quiet`` seconds, or ``max_delay`` seconds after the
    first poke it has not yet answered, whichever is sooner.
    """

    def __init__(
        self,
        action: Callable[[], None],
        *,
        quiet: float = DEFAULT_QUIET,
        max_delay: float = DEFAULT_MAX_DELAY,
        timer: Timer | None = None,
    ) -> None:
        if quiet < 0 or max_delay < 0:
            raise ValueError("quiet and max_delay must not be negative")
        self._action = action
        self._quiet = quiet
        self._max_delay = max_delay
        self._timer: Timer = timer if timer is not None else LoopTimer()
        self._last_poke: float | None = None
        self._pending_since: float | None = None
        self._immediate = False
        self._due = 0.0
        self._handle: Cancellable | None = None

    @property
    def pending(self) -> bool:
        """Whether a poke is waiting for ``action`` to run."""
        return self._pending_since is not None

    def poke(self) -> None:
        """Something changed: make sure ``action`` runs, at once or when the burst ends."""
        now = self._timer.now()
        after_quiet = self._last_poke is None or now - self._last_poke >= self._quiet
        self._last_poke = now
        if self._pending_since is not None:
            if not self._immediate:
                self._due = min(now + self._quiet, self._pending_since + self._max_delay)
            return
        self._pending_since = now
        self._immediate = after_quiet
        self._due = now if after_quiet else now + min(self._quiet, self._max_delay)
        self._arm(self._due - now)

    def cancel(self) -> None:
        """Forget any pending call."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._pending_since = None

    def _arm(self, delay: float) -> None:
        self._handle = self._timer.call_later(max(delay, 0.0), self._on_timer)

    def _on_timer(self) -> None:
        self._handle = None
        if self._pending_since is None:
            return
        remaining = self._due - self._timer.now()
        if not self._immediate and remaining > _DUE_MARGIN:
            self._arm(remaining)
            return
        self._pending_since = None
        self._action()


class ObjectStore:
    """The objects every source currently holds, handed to ``consumer`` as they change.

    Implements ``ObjectSink``. Each source's objects are kept apart; when two sources hold the same
    key, the one registered first wins. Nothing reaches ``consumer`` until every registered source
    has called ``mark_synced``; the first call after that is ``initial``. A source that reports
    before it was registered is registered then (and, while the gate is still closed, the gate
    waits for it too).

    ``consumer`` runs on the event loop, never inside a source's call. Keys whose content is back to
    what the consumer last saw are left out of a change, and a change left empty is not delivered.
    If ``consumer`` raises, the change it was given is merged into the next one.
    """

    def __init__(
        self,
        consumer: Callable[[StoreChange], None],
        *,
        sources: Iterable[str] = (),
        quiet: float = DEFAULT_QUIET,
        max_delay: float = DEFAULT_MAX_DELAY,
        timer: Timer | None = None,
    ) -> None:
        self._consumer = consumer
        self._by_source: dict[str, dict[ObjectKey, KubeObject]] = {}
        self._problems: dict[str, tuple[SourceProblem, ...]] = {}
        self._synced: set[str] = set()
        self._effective: dict[ObjectKey, KubeObject] = {}
        self._ordered_keys: list[ObjectKey] | None = None  # sorted keys of _effective, kept
        self._by_kind: dict[str, dict[ObjectKey, KubeObject]] = {}
        # Each key changed since the consumer last ran, with its content at that time.
        self._changed: dict[ObjectKey, KubeObject | None] = {}
        self._delivered_problems: list[SourceProblem] = []
        self._gate_open = False
        self._released = False
        self._debouncer = Debouncer(self._deliver, quiet=quiet, max_delay=max_delay, timer=timer)
        for source in sources:
            self.register_source(source)

    # -- registration and the sync gate ---------------------------------------------------------

    def register_source(self, source: str) -> None:
        """Make the sync gate wait for ``source`` (a no-op once the gate is open)."""
        self._by_source.setdefault(source, {})
        self._problems.setdefault(source, ())

    @property
    def synced(self) -> bool:
        """Whether every registered source has listed once, so changes are being released."""
        return self._gate_open

    def mark_synced(self, source: str) -> None:
        self.register_source(source)
        self._synced.add(source)
        if not self._gate_open and all(s in self._synced for s in self._by_source):
            self._gate_open = True
            self._debouncer.poke()

    # -- ObjectSink -----------------------------------------------------------------------------

    def replace_all(self, source: str, objects: Iterable[KubeObject]) -> None:
        self.register_source(source)
        held = self._by_source[source]
        fresh = {object_key(obj): obj for obj in objects}
        # In the source's order, not a set's: objects come in as a source made them (a folder's
        # file by file), and translation reads them in the order they are held. In a set's
        # order (a hash of the keys, another in each process) its reads are scattered over
        # memory: a cold translation of 10k services took about 5 % longer.
        touched = [*fresh, *(key for key in held if key not in fresh)]
        self._by_source[source] = fresh
        self._refresh(touched)

    def upsert(self, source: str, obj: KubeObject) -> None:
        self.register_source(source)
        key = object_key(obj)
        self._by_source[source][key] = obj
        self._refresh((key,))

    def delete(self, source: str, key: ObjectKey) -> None:
        self.register_source(source)
        if self._by_source[source].pop(key, None) is not None:
            self._refresh((key,))

    def set_problems(self, source: str, problems: Iterable[SourceProblem]) -> None:
        self.register_source(source)
        fresh = tuple(problems)
        if fresh == self._problems[source]:
            return
        self._problems[source] = fresh
        self._poke()

    # -- reading --------------------------------------------------------------------------------

    def objects(self) -> list[KubeObject]:
        """Every current object, ordered by key."""
        if self._ordered_keys is None:  # sorted again only after a key came or went
            self._ordered_keys = sorted(self._effective)
        effective = self._effective
        return [effective[key] for key in self._ordered_keys]

    def by_key(self) -> dict[ObjectKey, KubeObject]:
        """Every current object by key (a copy)."""
        return dict(self._effective)

    def size(self) -> int:
        """How many objects there are."""
        return len(self._effective)

    def objects_of(self, kind: str) -> list[KubeObject]:
        """The current objects of one kind, ordered by key."""
        of_kind = self._by_kind.get(kind, {})
        return [of_kind[key] for key in sorted(of_kind)]

    def get(self, key: ObjectKey) -> KubeObject | None:
        """The current object under ``key``, if any."""
        return self._effective.get(key)

    def problems(self) -> list[SourceProblem]:
        """Every source's current problems, sources in registration order."""
        return [problem for problems in self._problems.values() for problem in problems]

    def close(self) -> None:
        """Drop any pending call of the consumer."""
        self._debouncer.cancel()

    # -- internals ------------------------------------------------------------------------------

    def _winner(self, key: ObjectKey) -> KubeObject | None:
        for held in self._by_source.values():
            obj = held.get(key)
            if obj is not None:
                return obj
        return None

    def _refresh(self, keys: Iterable[ObjectKey]) -> None:
        changed = False
        for key in keys:
            before = self._effective.get(key)
            after = self._winner(key)
            if after is before:
                continue
            of_kind = self._by_kind.setdefault(key[0], {})
            if after is None:
                del self._effective[key]
                del of_kind[key]
                self._ordered_keys = None
            else:
                if before is None:
                    self._ordered_keys = None
                self._effective[key] = after
                of_kind[key] = after
            if not same_content(before, after):
                self._changed.setdefault(key, before)
                changed = True
        if changed:
            self._poke()

    def _poke(self) -> None:
        if self._gate_open:
            self._debouncer.poke()

    def _deliver(self) -> None:
        changed = self._changed
        keys = frozenset(
            key for key, before in changed.items() if not same_content(before, self.get(key))
        )
        problems = self.problems()
        change = StoreChange(
            keys=keys,
            initial=not self._released,
            problems_changed=problems != self._delivered_problems,
        )
        if not (change.initial or change.keys or change.problems_changed):
            self._changed = {}  # every change was undone
            return
        delivered_problems = self._delivered_problems
        self._changed = {}
        self._delivered_problems = problems
        self._released = True
        try:
            self._consumer(change)
        except BaseException:
            for key, before in changed.items():
                self._changed.setdefault(key, before)
            self._delivered_problems = delivered_problems
            self._released = not change.initial
            raise
