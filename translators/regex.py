"""Regular expressions as Envoy runs them.

Envoy compiles every ``safe_regex`` with RE2, which has no lookaround and no backreferences, and
by default refuses a pattern whose compiled program is larger than 100 instructions. Envoy rejects
a whole route table for one such pattern, so a VirtualService that uses one is invalid here, with
RE2's own reason.
"""

from __future__ import annotations

import re2

# Envoy's runtime default for re2.max_program_size.error_level.
MAX_PROGRAM_SIZE = 100

_OPTIONS = re2.Options()
_OPTIONS.log_errors = False


def regex_problem(pattern: str) -> str | None:
    """Why Envoy would reject ``pattern``, or None when it accepts it."""
    try:
        compiled = re2.compile(pattern, _OPTIONS)
    except re2.error as error:
        reason = error.args[0] if error.args else error
        if isinstance(reason, bytes):
            reason = reason.decode(errors="replace")
        return f"not a valid RE2 regular expression: {reason}"
    if compiled.programsize > MAX_PROGRAM_SIZE:
        return (
            f"too complex for Envoy: RE2 program size {compiled.programsize} is over"
            f" {MAX_PROGRAM_SIZE}"
        )
    return None
