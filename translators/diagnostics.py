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
file that names no kind is ``SP-File``. A field splitplane does not know is named by the user, so
its code is the one for every unknown field of that kind, ``SP-<kind>-unknown-field``.
``docs/messages.md`` explains each code.

Where an object was written (``file``, ``line``) is not known here: the source that read it knows,
and the command line joins it in.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

# The warning for an object that is invalid now and translated from its last accepted version.
STILL_SERVING = "invalid; still serving the last accepted version"
# ``[0]``, ``[name]`` or ``["a.b"]`` steps of a field path: the code is the same for every element.
_INDEX = re.compile(r"\[[^\]]*\]")
UNKNOWN_FIELD = "unknown field"  # how the message of a field splitplane does not know begins


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
    line: int = 0  # the line its object's document starts on in ``file`` (0: not known)

    @property
    def is_error(self) -> bool:
        return self.severity is Severity.ERROR

    @property
    def code(self) -> str:
        """The stable code of this kind of problem (see the module docstring)."""
        if self.message.startswith(UNKNOWN_FIELD):
            return f"SP-{self.kind or 'File'}-unknown-field"
        field = _INDEX.sub("", self.field).strip(".")
        return "-".join(part for part in ("SP", self.kind or "File", field) if part)

    def render(self, *, coded: bool = False) -> str:
        """One line, the way the logs print it; ``coded`` adds the code, as `splitplane validate`
        prints it."""
        where = f"{self.file}:{self.line}:" if self.file and self.line else f"{self.file}:"
        severity = f"{self.severity.value} [{self.code}]:" if coded else f"{self.severity.value}:"
        parts = [where if self.file else "", severity]
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

    def as_record(self) -> dict[str, str | int]:
        """Everything about it, for machine-readable output: ``as_dict`` with the code and the
        line."""
        record: dict[str, str | int] = {"code": self.code, **self.as_dict()}
        if self.line:
            record["line"] = self.line
        return record
