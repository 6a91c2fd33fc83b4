"""docs/messages.md explains every diagnostic code splitplane gives.

The codes come from a corpus of what users write: the golden cases, Istio's own validation cases
and the examples in deploy/, read the way `splitplane validate` reads them.
"""

from __future__ import annotations

import re
from pathlib import Path

from tests.golden.test_istio_validation_cases import CASES, objects_for
from translators.diagnostics import Diagnostic
from translators.translate import translate
from xds_server.cli.validate import check
from xds_server.sources.base import KINDS

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "messages.md"
CODE = re.compile(r"`(SP-[^`]+)`")


def documented_codes() -> set[str]:
    """Every code named in a heading; ``<Kind>`` stands for each kind splitplane reads."""
    codes: set[str] = set()
    for line in PAGE.read_text().splitlines():
        if line.startswith("### "):
            for code in CODE.findall(line):
                names = KINDS if "<Kind>" in code else [""]
                codes.update(code.replace("<Kind>", kind) for kind in names)
    return codes


def corpus_diagnostics() -> list[Diagnostic]:
    found: list[Diagnostic] = []
    for case in sorted((ROOT / "tests" / "golden").glob("*/input.yaml")):
        previous = case.parent / "previous.yaml"
        # A case with a previous state: both files together give the previous' diagnostics too.
        found += check([case, previous] if previous.exists() else [case]).diagnostics
    for istio_case in CASES:
        found += translate(objects_for(istio_case)).diagnostics
    found += check([ROOT / "deploy" / "examples"]).diagnostics
    return found


def test_every_code_the_corpus_gives_is_explained() -> None:
    codes = {diagnostic.code for diagnostic in corpus_diagnostics()}
    assert len(codes) > 50
    assert codes - documented_codes() == set(), "explain these codes in docs/messages.md"


def test_the_codes_are_stable_names_of_a_field() -> None:
    diagnostic = Diagnostic(
        "VirtualService", "shop", "cart", "spec.http[3].route[1].weight", "must not be negative"
    )
    other = Diagnostic("VirtualService", "web", "x", "spec.http[0].route[0].weight", "reworded")

    assert diagnostic.code == other.code == "SP-VirtualService-spec.http.route.weight"
    assert Diagnostic("Service", "a", "b", "", "no ready endpoints").code == "SP-Service"
    assert Diagnostic("", "", "", "", "invalid YAML").code == "SP-File"
    assert (
        Diagnostic("DestinationRule", "a", "b", "spec.trafficPolicy.tsl", "unknown field").code
        == "SP-DestinationRule-unknown-field"
    )


def test_each_documented_code_is_explained_once() -> None:
    headings = [
        code
        for line in PAGE.read_text().splitlines()
        if line.startswith("### ")
        for code in CODE.findall(line)
    ]
    assert len(headings) == len(set(headings))
