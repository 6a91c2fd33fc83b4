"""An ObjectSink that keeps what it was told, for assertions, and lets tests wait for it."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from xds_server.sources.base import KubeObject, ObjectKey, SourceProblem, object_key


@dataclass(frozen=True)
class SinkCall:
    """One call the sink received: its method, the object key (if any) and its resourceVersion."""

    method: str
    key: ObjectKey | None = None
    resource_version: str = ""
    count: int = 0


class RecordingSink:
    """Applies calls like the store would (one source) and records them in order."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.calls: list[SinkCall] = []
        self.objects: dict[ObjectKey, KubeObject] = {}
        self.problems: list[SourceProblem] = []
        self.synced = False
        self.sources: set[str] = set()
        self.threads: set[str] = set()

    def _note(self, source: str, call: SinkCall) -> None:
        self.sources.add(source)
        self.threads.add(threading.current_thread().name)
        self.calls.append(call)
        self._cond.notify_all()

    def replace_all(self, source: str, objects: Iterable[KubeObject]) -> None:
        with self._cond:
            self.objects = {object_key(o): o for o in objects}
            self._note(source, SinkCall("replace_all", count=len(self.objects)))

    def upsert(self, source: str, obj: KubeObject) -> None:
        with self._cond:
            key = object_key(obj)
            self.objects[key] = obj
            rv = str(obj["metadata"].get("resourceVersion", ""))
            self._note(source, SinkCall("upsert", key, rv))

    def delete(self, source: str, key: ObjectKey) -> None:
        with self._cond:
            self.objects.pop(key, None)
            self._note(source, SinkCall("delete", key))

    def set_problems(self, source: str, problems: Iterable[SourceProblem]) -> None:
        with self._cond:
            self.problems = list(problems)
            self._note(source, SinkCall("set_problems", count=len(self.problems)))

    def mark_synced(self, source: str) -> None:
        with self._cond:
            self.synced = True
            self._note(source, SinkCall("mark_synced"))

    def wait_for(self, predicate: Callable[[RecordingSink], bool], timeout: float = 20.0) -> None:
        """Block until ``predicate(self)`` holds; fail the test if it never does."""
        with self._cond:
            if not self._cond.wait_for(lambda: predicate(self), timeout):
                raise AssertionError(f"sink never satisfied the condition; calls: {self.calls}")

    def names(self, kind: str) -> set[str]:
        with self._cond:
            return {name for (k, _, name) in self.objects if k == kind}

    def get(self, kind: str, namespace: str, name: str) -> KubeObject | None:
        with self._cond:
            return self.objects.get((kind, namespace, name))

    def calls_of(self, method: str) -> list[SinkCall]:
        with self._cond:
            return [c for c in self.calls if c.method == method]

    def snapshot(self) -> dict[str, Any]:
        with self._cond:
            return {"objects": dict(self.objects), "calls": list(self.calls)}
