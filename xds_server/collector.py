"""The cyclic garbage collector, tuned for a process that holds large acyclic structures.

A translation allocates millions of small objects that live until a later translation replaces
them: the model, the Envoy messages, the serialized resources. They form no reference cycles,
so reference counting frees them when they are replaced; the cyclic collector only ever finds
them alive, and every pass over them is wasted (10k services: a cold start took 4.5 s with the
default thresholds instead of 2.8 s, before anything else was tuned).

So the thresholds are raised for the whole process, and a cold build (the first translation,
a node group's first snapshot) runs without collections, after which what survived it is moved
out of the collector's sight (`gc.freeze`): the next collections walk only what is new. Frozen
objects are still freed by reference counting when a later change replaces them. Cyclic
garbage alive at the freeze would never be collected, so a cold build starts with a collection
(of what is not frozen yet: cheap), and translation makes none. Without it, every node group a
client's metadata made froze the cyclic garbage of the streams that had come and gone before it
(refused streams, their tasks and exceptions), and the process grew with each. Later changes are
small and run with the collector as usual.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import gc
from collections.abc import Iterator
from contextlib import contextmanager

GC_THRESHOLDS = (100_000, 50, 100)


def tune() -> None:
    """Raise the collector's thresholds for the whole process."""
    gc.set_threshold(*GC_THRESHOLDS)


@contextmanager
def long_lived(cold: bool = True) -> Iterator[None]:
    """Run a cold build without collections, then freeze what survived it; with ``cold``
    false, run the block as usual.

    Without the freeze, the pass a pause saves would only happen right after it, over everything
    the build allocated.
    """
    if not cold:
        yield
        return
    gc.collect()  # what is pending now would be frozen for ever
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
        gc.freeze()  # before collections resume: the first allocation after would trigger one
    finally:
        if enabled:
            gc.enable()


def release_freed_memory() -> None:
    """Collect cyclic garbage, then hand the heap's free memory back to the system.

    glibc keeps freed memory for reuse; after something large went (a node group no client holds
    any more) the process would keep its size for good. Elsewhere than glibc this only collects.
    """
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)
