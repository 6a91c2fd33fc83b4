"""Golden suite: ``<case>/input.yaml`` → the Envoy resources every node group receives.

Each case folder holds the objects a user would apply (``input.yaml``, multi-document), optionally
``previous.yaml`` (objects translated first, whose result is the last good state the input is
translated against), and the expected output: ``clusters.yaml``, ``endpoints.yaml``,
``listeners.yaml``, ``scopes.yaml`` (the sidecar's scoped routes), ``routes.yaml`` (each a mapping
of group key → resources, rendered as Envoy YAML) and ``diagnostics.yaml``.
Regenerate with ``pytest tests/golden --update-golden``.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from google.protobuf import json_format
from google.protobuf.message import Message

from translators import resources
from translators.build import build_group
from translators.model import NodeGroup, Role
from translators.translate import Translation, translate

CASES_DIR = Path(__file__).parent
GROUPS = (NodeGroup(Role.SIDECAR, 15001), NodeGroup(Role.GATEWAY, 8080), NodeGroup(Role.PROXYLESS))
OUTPUT_FILES = {
    "clusters.yaml": resources.CLUSTER,
    "endpoints.yaml": resources.ENDPOINT,
    "listeners.yaml": resources.LISTENER,
    "scopes.yaml": resources.SCOPED_ROUTE,
    "routes.yaml": resources.ROUTE,
}
DIAGNOSTICS_FILE = "diagnostics.yaml"
# A case may add node groups in namespaces (a list of {role, port, namespace}), which see what is
# exported to them.
GROUPS_FILE = "groups.yaml"
GroupResources = dict[str, dict[str, tuple[Message, ...]]]


def case_dirs() -> list[Path]:
    return sorted(p.parent for p in CASES_DIR.glob("*/input.yaml"))


def load_objects(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as stream:
        return [doc for doc in yaml.safe_load_all(stream) if doc is not None]


def case_groups(case: Path) -> tuple[NodeGroup, ...]:
    """The groups every case is built for, and those the case adds."""
    path = case / GROUPS_FILE
    if not path.exists():
        return GROUPS
    listed = yaml.safe_load(path.read_text(encoding="utf-8"))
    added = tuple(
        NodeGroup(Role(item["role"]), int(item.get("port", 0)), str(item["namespace"]))
        for item in listed
    )
    return GROUPS + added


@dataclass(frozen=True)
class CaseResult:
    translation: Translation
    groups: GroupResources  # group key → type URL → resources


def run_case(case: Path, reverse: bool = False) -> CaseResult:
    """Translate a case (after its ``previous.yaml``, if any) and build every group."""
    previous = None
    if (case / "previous.yaml").exists():
        previous = translate(load_objects(case / "previous.yaml"))
    objects = load_objects(case / "input.yaml")
    if reverse:
        objects.reverse()
    translation = translate(objects, previous=previous)
    groups = {group.key: build_group(translation.model, group) for group in case_groups(case)}
    return CaseResult(translation, groups)


def as_data(message: Message) -> Any:
    """A resource as plain data, the way Envoy's YAML config spells it (Any expanded)."""
    return json.loads(json_format.MessageToJson(message, preserving_proto_field_name=True))


def _yaml(data: object) -> str:
    return yaml.safe_dump(data, sort_keys=True, default_flow_style=False, allow_unicode=True)


def rendered(result: CaseResult) -> dict[str, str]:
    """Every expected file's text for a case."""
    out = {
        filename: _yaml(
            {
                key: [as_data(m) for m in built[type_url]]
                for key, built in result.groups.items()
                if type_url in built
            }
        )
        for filename, type_url in OUTPUT_FILES.items()
    }
    out[DIAGNOSTICS_FILE] = _yaml([d.as_dict() for d in sorted(result.translation.diagnostics)])
    return out


CASES = case_dirs()


def test_the_suite_has_cases() -> None:
    assert CASES


@pytest.mark.parametrize("case", CASES, ids=lambda p: p.name)
def test_golden_output(case: Path, request: pytest.FixtureRequest) -> None:
    actual = rendered(run_case(case))
    if request.config.getoption("--update-golden"):
        for filename, text in actual.items():
            (case / filename).write_text(text, encoding="utf-8")
        return
    problems = []
    for filename, text in actual.items():
        path = case / filename
        expected = path.read_text(encoding="utf-8") if path.exists() else ""
        if text != expected:
            diff = difflib.unified_diff(
                expected.splitlines(keepends=True),
                text.splitlines(keepends=True),
                fromfile=f"{case.name}/{filename} (expected)",
                tofile=f"{case.name}/{filename} (actual)",
            )
            problems.append("".join(diff))
    if problems:
        pytest.fail(
            "output differs from the golden files (regenerate with --update-golden):\n"
            + "\n".join(problems),
            pytrace=False,
        )


@pytest.mark.parametrize("case", CASES, ids=lambda p: p.name)
def test_object_order_does_not_change_a_byte(case: Path) -> None:
    forward = run_case(case)
    backward = run_case(case, reverse=True)
    assert sorted(forward.translation.diagnostics) == sorted(backward.translation.diagnostics)
    for key, built in forward.groups.items():
        for type_url, items in built.items():
            again = backward.groups[key][type_url]
            assert [resources.serialize(m) for m in items] == [
                resources.serialize(m) for m in again
            ], f"{key} {type_url}"
