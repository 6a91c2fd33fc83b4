"""Per-object results of pure steps, kept from one translation to the next.

Sources hand the store a new dict for every object they read, and the store passes an unchanged
object on as the very same dict. So the result of a step that depends on one object alone
(its envelope, its parsed spec) can be reused while that same object comes back: a change to
one VirtualService re-parses that VirtualService, not the other ten thousand. Objects must not
be mutated after they are handed to `translate`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, ParamSpec, TypeVar

T = TypeVar("T")
P = ParamSpec("P")

# step → id(object) → (object, result); holding the object keeps its id from being reused
MemoEntries = Mapping[str, Mapping[int, tuple[object, Any]]]

_EMPTY: Mapping[int, tuple[object, Any]] = {}


class Memo:
    """Results by step and object identity: the previous translation's, and this one's."""

    def __init__(self, previous: MemoEntries | None = None) -> None:
        self._previous: MemoEntries = previous or {}
        self.entries: dict[str, dict[int, tuple[object, Any]]] = {}

    def get(
        self, step: str, obj: object, compute: Callable[P, T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """``compute(*args, **kwargs)``, or its result from before if ``obj`` is the very same
        object."""
        current, held = self._held(step, obj)
        return _taken(current, obj, held, compute, *args, **kwargs)

    def get_checked(
        self,
        step: str,
        obj: object,
        still_valid: Callable[[T], bool],
        compute: Callable[P, T],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        """Like `get`, for a step that also depends on more than ``obj``: a result from before is
        reused only while ``still_valid(result)``."""
        current, held = self._held(step, obj)
        if held is not None and not still_valid(held[1]):
            held = None
        return _taken(current, obj, held, compute, *args, **kwargs)

    def keep(self, step: str) -> None:
        """Carry the previous results of ``step`` over, for objects this translation did not
        visit because it reused a result that covers them."""
        self.entries[step] = dict(self._previous.get(step, _EMPTY))

    def _held(
        self, step: str, obj: object
    ) -> tuple[dict[int, tuple[object, Any]], tuple[object, Any] | None]:
        """This translation's entries for ``step``, and what is held for ``obj`` (if anything)."""
        current = self.entries.get(step)
        if current is None:
            current = self.entries[step] = {}
        key = id(obj)
        held = current.get(key)
        if held is None and self._previous:
            held = self._previous.get(step, _EMPTY).get(key)
        return current, held if held is not None and held[0] is obj else None


def _taken(
    current: dict[int, tuple[object, Any]],
    obj: object,
    held: tuple[object, Any] | None,
    compute: Callable[P, T],
    *args: P.args,
    **kwargs: P.kwargs,
) -> T:
    """The result ``held`` for ``obj`` (or computed now), noted among this translation's."""
    if held is not None:
        current[id(obj)] = held
        result: T = held[1]
        return result
    value = compute(*args, **kwargs)
    current[id(obj)] = (obj, value)
    return value
