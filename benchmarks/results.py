"""`benchmarks/RESULTS.md`: each benchmark owns one `## name` section and rewrites only that."""

from __future__ import annotations

from pathlib import Path

RESULTS = Path(__file__).with_name("RESULTS.md")


def record_section(heading: str, text: str) -> None:
    """Replace the section that starts with ``heading`` by ``text`` (or append it)."""
    existing = RESULTS.read_text(encoding="utf-8") if RESULTS.exists() else "# Benchmarks\n"
    head, found, rest = existing.partition(heading + "\n")
    if found:
        following = rest.find("\n## ")
        tail = rest[following + 1 :] if following >= 0 else ""
        existing = head + text + ("\n" + tail if tail else "")
    else:
        existing = existing.rstrip("\n") + "\n\n" + text
    RESULTS.write_text(existing, encoding="utf-8")
