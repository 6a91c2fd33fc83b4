"""Which namespaces see an object: Istio's ``exportTo``, as Istio reads and applies it.

A VirtualService and a DestinationRule name them in ``spec.exportTo``, a Service in its
``networking.istio.io/exportTo`` annotation (comma-separated). Each entry is ``*`` (every
namespace), ``.`` (the object's own namespace) or a namespace name; a Service may also say ``~``
(no namespace). Nothing given means every namespace (Istio's default ``exportTo``).

Istio refuses a VirtualService or DestinationRule whose ``exportTo`` has ``~``, ``*`` beside
other entries, an entry twice (``.`` and the own namespace count as the same) or an entry that
is not a DNS-1123 label; so does splitplane. It reads a Service annotation as Istio does, without
refusing the Service: an entry that is not a namespace name is left out, with a warning.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

PUBLIC = "*"
PRIVATE = "."
NONE = "~"
EXPORT_TO_ANNOTATION = "networking.istio.io/exportTo"

_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def is_namespace_name(text: str) -> bool:
    """Whether ``text`` is a DNS-1123 label, the form of a namespace name."""
    return len(text) <= 63 and _LABEL.match(text) is not None


@dataclass(frozen=True, slots=True)
class ExportTo:
    """The namespaces an object is visible to: every one, or those named."""

    everywhere: bool = True
    namespaces: frozenset[str] = frozenset()

    def visible_to(self, namespace: str) -> bool:
        return self.everywhere or namespace in self.namespaces


EVERYWHERE = ExportTo()
NOWHERE = ExportTo(everywhere=False)

Report = Callable[[str], None]


def config_export_to(entries: Sequence[str], namespace: str, problem: Report) -> ExportTo:
    """A VirtualService's or DestinationRule's ``exportTo`` (written in ``namespace``); each
    reason Istio would refuse it is handed to ``problem``."""
    if not entries:
        return EVERYWHERE
    seen: set[str] = set()
    for entry in entries:
        key = namespace if entry == PRIVATE else entry
        if key in seen:
            both = key == namespace and PRIVATE in entries and namespace in entries
            problem(
                f"'.' and {namespace} are the same namespace"
                if both
                else f"{entry!r} is given twice"
            )
            continue
        seen.add(key)
        if entry == NONE:
            problem("~ (no namespace) is only allowed for services; remove the object instead")
        elif entry not in (PUBLIC, PRIVATE) and not is_namespace_name(entry):
            problem(f"{entry!r} is not '*', '.' or a namespace name")
    if PUBLIC in seen:
        if len(entries) > 1:
            problem("'*' (every namespace) cannot be given with other entries")
        return EVERYWHERE
    return ExportTo(everywhere=False, namespaces=frozenset(seen - {NONE}))


def service_export_to(
    annotations: Mapping[str, object] | None, namespace: str, problem: Report
) -> ExportTo:
    """A Service's ``networking.istio.io/exportTo`` annotation, as Istio reads it."""
    value = annotations.get(EXPORT_TO_ANNOTATION) if annotations else None
    if value is None or value == "":
        return EVERYWHERE
    if not isinstance(value, str):
        problem("must be a comma-separated string; the Service is exported to every namespace")
        return EVERYWHERE
    names: set[str] = set()
    for raw in value.split(","):
        entry = raw.strip()
        if entry == PUBLIC:
            return EVERYWHERE
        if entry == PRIVATE:
            names.add(namespace)
        elif entry == NONE:
            continue
        elif is_namespace_name(entry):
            names.add(entry)
        else:
            problem(f"{entry!r} is not '*', '.', '~' or a namespace name; it is left out")
    return ExportTo(everywhere=False, namespaces=frozenset(names))


def named_namespaces(exports: Iterable[ExportTo]) -> frozenset[str]:
    """Every namespace some of ``exports`` names (the others see only what is exported
    everywhere)."""
    found: set[str] = set()
    for export in exports:
        if not export.everywhere:
            found.update(export.namespaces)
    return frozenset(found)
