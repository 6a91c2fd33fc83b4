"""`splitplane validate PATH...`: every diagnostic for a set of YAML files, offline.

Like `istioctl analyze`: the same reading and translation `serve` does, with no server and no
cluster. Exit 1 when any diagnostic is an error, 0 otherwise.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from translators.diagnostics import Diagnostic, Severity
from translators.translate import translate
from xds_server.problems import diagnostics_from_problems
from xds_server.sources.directory import load_directory


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "paths",
        nargs="+",
        type=Path,
        metavar="PATH",
        help="YAML files or folders (read recursively; multi-document files allowed)",
    )
    parser.add_argument(
        "-o",
        "--output",
        choices=("text", "json"),
        default="text",
        help="text: one line per diagnostic (default); json: a list of objects",
    )
    parser.add_argument(
        "--output-threshold",
        choices=("info", "warning", "error"),
        default="warning",
        help="the least severe diagnostics shown (default warning; info also shows what is"
        " skipped as expected, like istioctl analyze)",
    )


_RANK = {Severity.ERROR: 0, Severity.WARNING: 1, Severity.INFO: 2}


def validate_paths(paths: list[Path]) -> list[Diagnostic]:
    """Every diagnostic for the objects in ``paths``, sorted."""
    objects, problems = load_directory(paths)
    translation = translate(objects)
    return sorted([*diagnostics_from_problems(problems), *translation.diagnostics])


def run(args: argparse.Namespace) -> int:
    threshold = _RANK[Severity(args.output_threshold)]
    diagnostics = [d for d in validate_paths(list(args.paths)) if _RANK[d.severity] <= threshold]
    errors = sum(d.is_error for d in diagnostics)
    if args.output == "json":
        print(json.dumps([d.as_dict() for d in diagnostics], indent=2))
    else:
        for diagnostic in diagnostics:
            print(diagnostic.render())
        warnings = sum(d.severity is Severity.WARNING for d in diagnostics)
        print(f"{errors} error(s), {warnings} warning(s)")
    return 1 if errors else 0
