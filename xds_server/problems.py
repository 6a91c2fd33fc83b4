"""Source problems (files that do not parse, objects without a kind) as diagnostics."""

from __future__ import annotations

from collections.abc import Iterable

from translators.diagnostics import Diagnostic, Severity
from xds_server.sources.base import SourceProblem


def diagnostic_from_problem(problem: SourceProblem) -> Diagnostic:
    return Diagnostic(
        kind=problem.kind,
        namespace=problem.namespace,
        name=problem.name,
        field=problem.field,
        message=problem.message,
        severity=(
            Severity.INFO
            if problem.info
            else Severity.WARNING
            if problem.warning
            else Severity.ERROR
        ),
        file=problem.file,
        line=problem.line,
    )


def diagnostics_from_problems(problems: Iterable[SourceProblem]) -> list[Diagnostic]:
    return [diagnostic_from_problem(problem) for problem in problems]
