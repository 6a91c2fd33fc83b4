"""What every source hands the object store.

A source turns some outside truth (a folder of YAML, a Kubernetes API server) into plain object
dicts, exactly as YAML or the Kubernetes API gives them, and reports them to an ``ObjectSink``.
Sources know nothing of translation or xDS.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

KubeObject = Mapping[str, Any]

# What a diagnostic says of an object whose current version is refused and whose last accepted
# version stays in effect (the translators say the same of objects that fail validation).
STILL_SERVING = "still serving the last accepted version"

# (kind, namespace, name); namespace is "default" when an object names none.
ObjectKey = tuple[str, str, str]

# The kinds splitplane reads, by their Kubernetes kind names.
KINDS: tuple[str, ...] = (
    "Service",
    "EndpointSlice",
    "Pod",
    "VirtualService",
    "DestinationRule",
    "Sidecar",
    "Ingress",
    "IngressClass",
)

# The API versions splitplane knows, each with the kinds that exist in it. A document of a known
# version whose kind is not there is a typo Kubernetes would refuse (``kind: Servce`` in ``v1``);
# one of a version not listed here belongs to some other API and is skipped.
_CORE_KINDS = frozenset(
    {
        "Binding",
        "ComponentStatus",
        "ConfigMap",
        "Endpoints",
        "Event",
        "LimitRange",
        "Namespace",
        "Node",
        "PersistentVolume",
        "PersistentVolumeClaim",
        "Pod",
        "PodTemplate",
        "ReplicationController",
        "ResourceQuota",
        "Secret",
        "Service",
        "ServiceAccount",
    }
)
_ISTIO_KINDS = frozenset(
    {
        "DestinationRule",
        "Gateway",
        "ServiceEntry",
        "Sidecar",
        "VirtualService",
        "WorkloadEntry",
        "WorkloadGroup",
    }
)
API_KINDS: Mapping[str, frozenset[str]] = {
    "v1": _CORE_KINDS,
    "discovery.k8s.io/v1": frozenset({"EndpointSlice"}),
    "discovery.k8s.io/v1beta1": frozenset({"EndpointSlice"}),
    "networking.k8s.io/v1": frozenset(
        {"Ingress", "IngressClass", "NetworkPolicy", "IPAddress", "ServiceCIDR"}
    ),
    "networking.k8s.io/v1beta1": frozenset({"Ingress", "IngressClass", "IPAddress", "ServiceCIDR"}),
    "networking.k8s.io/v1alpha1": frozenset({"IPAddress", "ServiceCIDR", "ClusterCIDR"}),
    "networking.istio.io/v1": _ISTIO_KINDS,
    "networking.istio.io/v1beta1": _ISTIO_KINDS | {"ProxyConfig"},
    "networking.istio.io/v1alpha3": _ISTIO_KINDS | {"EnvoyFilter"},
}
# The API versions each kind is read from (the others that have the kind are refused).
READ_VERSIONS: Mapping[str, tuple[str, ...]] = {
    "Service": ("v1",),
    "Pod": ("v1",),
    "EndpointSlice": ("discovery.k8s.io/v1",),
    "VirtualService": (
        "networking.istio.io/v1",
        "networking.istio.io/v1beta1",
        "networking.istio.io/v1alpha3",
    ),
    "DestinationRule": (
        "networking.istio.io/v1",
        "networking.istio.io/v1beta1",
        "networking.istio.io/v1alpha3",
    ),
    "Sidecar": (
        "networking.istio.io/v1",
        "networking.istio.io/v1beta1",
        "networking.istio.io/v1alpha3",
    ),
    "Ingress": ("networking.k8s.io/v1", "networking.k8s.io/v1beta1"),
    "IngressClass": ("networking.k8s.io/v1", "networking.k8s.io/v1beta1"),
}
_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_API_VERSION = re.compile(rf"({_LABEL}(\.{_LABEL})*/)?{_LABEL}")
_KNOWN_GROUPS = frozenset(version.rpartition("/")[0] for version in API_KINDS)


@dataclass(frozen=True)
class KindVerdict:
    """Why a document is not read: an error (Kubernetes would refuse it) or a kind skipped."""

    field: str
    message: str
    error: bool


def kind_verdict(api_version: object, kind: str) -> KindVerdict | None:
    """None when splitplane reads objects of ``kind`` at ``api_version``; else why not.

    An error for what no Kubernetes API server would take: no apiVersion, a version of a known
    API group that does not exist, a kind that does not exist in a known version (``List`` and
    ``<Kind>List`` exist wherever the kind does), or a kind splitplane reads given in the wrong
    version. A kind of another API (a group splitplane does not know) is skipped.
    """
    if not isinstance(api_version, str) or not api_version:
        return KindVerdict("apiVersion", "has no apiVersion", True)
    if api_version in READ_VERSIONS.get(kind, ()):  # each of them is a group/version
        return None
    if not _API_VERSION.fullmatch(api_version):
        return KindVerdict(
            "apiVersion", f"apiVersion {api_version[:64]!r} is not a lowercase group/version", True
        )
    kinds = API_KINDS.get(api_version)
    if kinds is None:
        if api_version.rpartition("/")[0] in _KNOWN_GROUPS:
            known = sorted(
                v for v in API_KINDS if v.rpartition("/")[0] == api_version.rpartition("/")[0]
            )
            return KindVerdict(
                "apiVersion",
                f"apiVersion {api_version!r} does not exist (known: {', '.join(known)})",
                True,
            )
        return KindVerdict(
            "kind", f"kind {kind!r} of {api_version} is not one splitplane reads; skipped", False
        )
    listed = kind.removesuffix("List")
    if kind not in kinds and kind != "List" and listed not in kinds:
        return KindVerdict("kind", f"{api_version} has no kind {kind!r}", True)
    if kind in READ_VERSIONS:
        wanted = " or ".join(READ_VERSIONS[kind])
        return KindVerdict("apiVersion", f"{kind} is read as {wanted}, not {api_version}", True)
    return KindVerdict("kind", f"kind {kind!r} is not one splitplane reads; skipped", False)


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
    line: int = 0  # the line in ``file`` the problem is at (its document's first line); 0: unknown


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
