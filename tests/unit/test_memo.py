"""Per-object results reused across translations while the very same object comes back."""

from __future__ import annotations

from typing import Any

import pytest

import translators.translate as translate_module
from tests.unit.objects import versioned_service
from tests.unit.test_translate import canary
from translators.memo import Memo
from translators.spec import parse_virtual_service
from translators.translate import translate


def test_a_result_is_reused_for_the_same_object_only() -> None:
    calls: list[str] = []

    def compute(label: str, value: int) -> int:
        calls.append(label)
        return value

    obj, twin = {"kind": "Service"}, {"kind": "Service"}
    first = Memo()
    assert first.get("step", obj, lambda: compute("obj", 1)) == 1
    second = Memo(first.entries)

    assert second.get("step", obj, lambda: compute("again", 2)) == 1
    assert second.get("step", twin, lambda: compute("twin", 3)) == 3
    assert calls == ["obj", "twin"]


def test_entries_hold_only_what_the_last_translation_used() -> None:
    obj, gone = {"kind": "Service"}, {"kind": "Pod"}
    first = Memo()
    first.get("step", obj, lambda: 1)
    first.get("step", gone, lambda: 2)
    second = Memo(first.entries)
    second.get("step", obj, lambda: 3)

    assert [held for held, _ in second.entries["step"].values()] == [obj]


def test_an_unchanged_virtual_service_is_not_parsed_again(monkeypatch: pytest.MonkeyPatch) -> None:
    parsed: list[str] = []

    def counting(obj: Any) -> Any:
        parsed.append(obj["metadata"]["name"])
        return parse_virtual_service(obj)

    monkeypatch.setattr(translate_module, "parse_virtual_service", counting)
    objects = [*versioned_service("reviews"), canary()]
    first = translate(objects)
    changed = canary(50, 50)

    second = translate([*objects[:-1], changed], previous=first)
    third = translate([*objects[:-1], changed], previous=second)

    assert parsed == ["reviews", "reviews"]  # the first time, and once more after the change
    assert third.model == translate([*objects[:-1], changed]).model
