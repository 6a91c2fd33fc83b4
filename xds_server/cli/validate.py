"""`splitplane validate [-f] PATH...`: every diagnostic for a set of YAML files, offline.

Like `istioctl analyze`: the same reading and translation `serve` does, with no server and no
cluster. Each diagnostic has its code (explained in docs/messages.md) and the file and line of
the document it is about. ``-`` reads standard input. What a folder of manifests holds besides
what splitplane reads (Deployments, RBAC, ...) is counted in one line; a Service without ready
endpoints is only reported when the input holds endpoints at all (a git repository holds none).
The exit code is 1 when a diagnostic reaches ``--failure-threshold`` (error by default).
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import BinaryIO

import yaml

from translators.diagnostics import Diagnostic, Severity
from translators.resolve_services import NO_READY_ENDPOINTS
from translators.translate import Translation, translate
from xds_server.problems import diagnostics_from_problems
from xds_server.sources.base import KINDS, KubeObject, SourceProblem
from xds_server.sources.directory import Loaded, load_files

SEVERITIES = ("error", "warning", "info")
_RANK = {Severity.ERROR: 0, Severity.WARNING: 1, Severity.INFO: 2}
ENDPOINT_KINDS = frozenset({"EndpointSlice", "Pod"})
UNREAD_KINDS_FIELD = "unreadKinds"


def add_input_arguments(parser: argparse.ArgumentParser) -> None:
    """The input flags `validate` and `translate` share."""
    parser.add_argument(
        "paths",
        nargs="*",
        type=Path,
        metavar="PATH",
        help="YAML files or folders (read recursively; multi-document files allowed); - for stdin",
    )
    parser.add_argument(
        "-f",
        "--filename",
        action="append",
        default=[],
        type=Path,
        metavar="PATH",
        help="a file or folder to read, as a PATH (repeatable); -f - reads standard input",
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_input_arguments(parser)
    parser.add_argument(
        "-o",
        "--output",
        choices=("text", "json", "yaml"),
        default="text",
        help="text: one line per diagnostic (default); json or yaml: a list of objects",
    )
    parser.add_argument(
        "--output-threshold",
        choices=SEVERITIES,
        default="warning",
        help="the least severe diagnostics shown (default warning; info also shows what is"
        " skipped as expected, like istioctl analyze; infos are counted either way)",
    )
    parser.add_argument(
        "--failure-threshold",
        choices=SEVERITIES,
        default="error",
        help="exit 1 when a diagnostic is this severe or more (default error)",
    )


def input_paths(args: argparse.Namespace) -> list[Path]:
    """The paths given as arguments and with -f; an error when there are none."""
    paths = [*args.paths, *args.filename]
    if not paths:
        raise SystemExit("splitplane: give at least one PATH or -f PATH (- reads stdin)")
    return paths


@dataclass(frozen=True)
class Checked:
    """What `validate` found: the objects read, their translation, and the diagnostics."""

    loaded: Loaded
    translation: Translation
    diagnostics: list[Diagnostic]


def _unread_kinds_line(problems: Sequence[SourceProblem]) -> Diagnostic | None:
    counts = Counter(problem.kind for problem in problems)
    if not counts:
        return None
    total = sum(counts.values())
    each = ", ".join(f"{kind} {counts[kind]}" for kind in sorted(counts))
    return Diagnostic(
        "",
        "",
        "",
        UNREAD_KINDS_FIELD,
        f"{total} object(s) of kinds splitplane does not read were skipped: {each}",
        Severity.INFO,
    )


def _is_unread_kind(problem: SourceProblem) -> bool:
    """A document skipped because splitplane does not read its kind (not a misspelt one)."""
    known = problem.kind in KINDS
    return problem.info and problem.field == "kind" and bool(problem.kind) and not known


def _holds_endpoints(objects: Iterable[KubeObject]) -> bool:
    return any(obj.get("kind") in ENDPOINT_KINDS for obj in objects)


def check(paths: Sequence[str | Path], *, stdin: BinaryIO | None = None) -> Checked:
    """Read ``paths`` and translate them; every diagnostic with its file and line, sorted."""
    loaded = load_files(paths, stdin=stdin)
    translation = translate(loaded.objects)
    unread = [p for p in loaded.problems if _is_unread_kind(p)]
    problems = [p for p in loaded.problems if not _is_unread_kind(p)]
    found = list(translation.diagnostics)
    if not _holds_endpoints(loaded.objects):  # e.g. a git repository: no endpoints to judge
        found = [d for d in found if not (d.kind == "Service" and d.message == NO_READY_ENDPOINTS)]
    placed = [_placed(diagnostic, loaded) for diagnostic in found]
    summary = _unread_kinds_line(unread)
    diagnostics = [*diagnostics_from_problems(problems), *placed]
    if summary is not None:
        diagnostics.append(summary)
    return Checked(loaded, translation, sorted(diagnostics, key=_reading_order))


def _placed(diagnostic: Diagnostic, loaded: Loaded) -> Diagnostic:
    """``diagnostic`` with the file and line of its object's document, when it was read here."""
    position = loaded.positions.get((diagnostic.kind, diagnostic.namespace, diagnostic.name))
    if position is None or diagnostic.file:
        return diagnostic
    return replace(diagnostic, file=position[0], line=position[1])


def _reading_order(diagnostic: Diagnostic) -> tuple[str, int, Diagnostic]:
    return (diagnostic.file, diagnostic.line, diagnostic)


def validate_paths(paths: Sequence[str | Path]) -> list[Diagnostic]:
    """Every diagnostic for the objects in ``paths``, in file and line order."""
    return check(paths).diagnostics


def at_least(diagnostics: Iterable[Diagnostic], threshold: str) -> list[Diagnostic]:
    """The diagnostics as severe as ``threshold`` (error, warning, info) or more."""
    rank = _RANK[Severity(threshold)]
    return [d for d in diagnostics if _RANK[d.severity] <= rank]


def run(args: argparse.Namespace) -> int:
    diagnostics = validate_paths(input_paths(args))
    shown = at_least(diagnostics, args.output_threshold)
    if args.output == "json":
        print(json.dumps([d.as_record() for d in shown], indent=2))
    elif args.output == "yaml":
        print(yaml.safe_dump([d.as_record() for d in shown], sort_keys=False), end="")
    else:
        for diagnostic in shown:
            print(diagnostic.render(coded=True))
        counts = Counter(d.severity for d in diagnostics)
        print(
            f"{counts[Severity.ERROR]} error(s), {counts[Severity.WARNING]} warning(s),"
            f" {counts[Severity.INFO]} info(s)"
        )
    return 1 if at_least(diagnostics, args.failure_threshold) else 0
