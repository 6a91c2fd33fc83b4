"""Diagnostics: what is wrong with a user's object, where, and why.

Every resolver returns diagnostics instead of raising. A diagnostic names the object
(kind/namespace/name), the field path inside it (``spec.http[0].route[1].weight``) and the reason,
so a user can find and fix the line.

Every diagnostic has a stable code, derived rather than assigned, so that a diagnostic anyone adds
has one without a registry to update: ``SP-`` + the kind + the field path with its list indices
and map keys taken out, e.g. ``SP-VirtualService-spec.http.route.weight`` for a problem at
``spec.http[0].route[1].weight`` of any VirtualService. The code names the field a rule is about,
so it stays the same when the message is reworded or the object changes; the message says what
is wrong with it. A problem with the object as a whole (no field) is ``SP-<kind>``; one with a
file that names no kind is ``SP-File``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

# The warning for an object that is invalid now and translated from its last accepted version.
STILL_SERVING = "invalid; still serving the last accepted version"
# ``[0]``, ``[name]`` or ``["a.b"]`` steps of a field path: the code is the same for every element.
_INDEX = re.compile(r"\[[^\]]*\]")


class Severity(StrEnum):
    ERROR = "error"
    WARNING = "warning"
    INFO = "info"  # a fact worth knowing, nothing to fix (e.g. an object left to another owner)


@dataclass(frozen=True, order=True, slots=True)
class Diagnostic:
    kind: str
    namespace: str
    name: str
    field: str
    message: str
    severity: Severity = Severity.ERROR
    file: str = ""

    @property
    def is_error(self) -> bool:
        return self.severity is Severity.ERROR

    @property
    def code(self) -> str:
        """The stable code of this kind of problem (see the module docstring)."""
        field = _INDEX.sub("", self.field).strip(".")
        return "-".join(part for part in ("SP", self.kind or "File", field) if part)

    def render(self) -> str:
        """One line, the way `splitplane validate` and the logs print it."""
        parts = [f"{self.file}:" if self.file else "", f"{self.severity.value}:"]
        if self.kind:
            parts.append(f"{self.kind}/{self.namespace}/{self.name}" if self.name else self.kind)
        if self.field:
            parts.append(f"{self.field}:")
        parts.append(self.message)
        return " ".join(part for part in parts if part)

    def as_dict(self) -> dict[str, str]:
        out = {
            "severity": self.severity.value,
            "kind": self.kind,
            "namespace": self.namespace,
            "name": self.name,
            "field": self.field,
            "message": self.message,
        }
        if self.file:
            out["file"] = self.file
        return out
