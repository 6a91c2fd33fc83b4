"""What every source hands the object store.

A source turns some outside truth (a folder of YAML, a Kubernetes API server) into plain object
dicts, exactly as YAML or the Kubernetes API gives them, and reports them to an ``ObjectSink``.
Sources know nothing of translation or xDS.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

KubeObject = Mapping[str, Any]

# (kind, namespace, name); namespace is "default" when an object names none.
ObjectKey = tuple[str, str, str]

# The kinds splitplane reads, by their Kubernetes kind names.
KINDS: tuple[str, ...] = (
    "Service",
    "EndpointSlice",
    "Pod",
    "VirtualService",
    "DestinationRule",
    "Ingress",
    "IngressClass",
)


@dataclass(frozen=True)
class SourceProblem:
    """Something a source could not read: a file that does not parse, an object without a kind.

    The wiring turns it into a diagnostic; ``file`` is empty for objects from an API server.
    """

    message: str
    file: str = ""
    kind: str = ""
    namespace: str = ""
    name: str = ""
    field: str = ""
    warning: bool = False  # True for things that are skipped and may be a mistake (a typo'd kind)
    info: bool = False  # True for things skipped as expected (a Deployment beside the routes)


def object_key(obj: KubeObject) -> ObjectKey:
    """The store key of an object (its namespace defaults to ``default``)."""
    meta = obj.get("metadata") or {}
    return (
        str(obj.get("kind", "")),
        str(meta.get("namespace") or "default"),
        str(meta.get("name", "")),
    )


class ObjectSink(Protocol):
    """Where a source reports what it sees. Calls come from one thread or event loop at a time."""

    def replace_all(self, source: str, objects: Iterable[KubeObject]) -> None:
        """Everything ``source`` currently holds (a first list, a relist, a folder rescan)."""

    def upsert(self, source: str, obj: KubeObject) -> None:
        """One object was added or changed."""

    def delete(self, source: str, key: ObjectKey) -> None:
        """One object is gone."""

    def set_problems(self, source: str, problems: Iterable[SourceProblem]) -> None:
        """The source's current problems (replaces the previous list for ``source``)."""

    def mark_synced(self, source: str) -> None:
        """``source`` has listed everything once; until every source has, nothing is published."""
