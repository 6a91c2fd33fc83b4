"""Per-object results reused across translations while the very same object comes back."""

from __future__ import annotations

from typing import Any

import pytest

import translators.resolve_services as resolve_services_module
import translators.translate as translate_module
from tests.unit.objects import (
    destination,
    endpoint_slice,
    http_route,
    service,
    service_port,
    slice_endpoint,
    versioned_service,
    virtual_service,
)
from tests.unit.test_translate import canary, without_reuse
from translators.incremental import Translator
from translators.memo import Memo
from translators.resolve_routing import compile_virtual_service
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


# --- a VirtualService's compiled rules, reused while the mesh it reads is the same -------------


@pytest.fixture
def compiled(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the VirtualServices compiled, in order."""
    names: list[str] = []
    real = compile_virtual_service

    def counting(source: Any, spec: Any, context: Any) -> Any:
        names.append(source.name)
        return real(source, spec, context)

    monkeypatch.setattr(translate_module, "compile_virtual_service", counting)
    return names


def test_an_unchanged_virtual_service_is_not_compiled_again_while_its_mesh_is_unchanged(
    compiled: list[str],
) -> None:
    vs = canary()
    ratings = versioned_service("ratings", base_ip="10.0.1")
    first = translate([*versioned_service("reviews"), *ratings, vs])
    # ratings' pods move and its rule gains a subset: nothing the canary reads
    moved = versioned_service("ratings", versions=("v1", "v2", "v3"), base_ip="10.0.2")

    second = translate([*versioned_service("reviews"), *moved, vs], previous=first)

    assert compiled == ["reviews"]
    assert second.model == translate([*versioned_service("reviews"), *moved, vs]).model


def test_a_subset_defined_later_makes_the_same_virtual_service_valid(compiled: list[str]) -> None:
    vs = virtual_service("reviews", ["reviews"], [http_route(destination("reviews", "v3"))])
    first = translate([*versioned_service("reviews"), vs])
    assert first.has_errors

    second = translate([*versioned_service("reviews", versions=("v1", "v3")), vs], previous=first)

    assert not second.has_errors
    assert compiled == ["reviews", "reviews"]
    host = next(v for v in second.model.mesh_hosts if v.name.startswith("reviews."))
    assert host.routes[0].destinations[0].cluster == "outbound|80|v3|" + host.name.split(":")[0]


def test_the_same_virtual_service_is_compiled_again_when_what_it_reads_changes(
    compiled: list[str],
) -> None:
    vs = canary()
    base = versioned_service("reviews")
    first = translate([*base, vs])
    without_v2 = versioned_service("reviews", versions=("v1",))
    two_ports = [
        service("reviews", ports=[service_port(80, "http"), service_port(9090, "admin")]),
        *base[1:],
    ]

    second = translate([*without_v2, vs], previous=first)  # a subset it names is gone
    third = translate([*base, vs], previous=second)  # back
    fourth = translate([*two_ports, vs], previous=third)  # its service gains a port
    fifth = translate([vs], previous=fourth)  # its service is gone

    # Compiled for each change of what it reads; when the subset went, the rule and the
    # DestinationRule were kept at their last accepted versions (the result kept for the return
    # of the subset). Its service gone, its rule answers 503 (as in Istio), with a warning.
    assert second.has_errors and not third.has_errors and not fifth.has_errors
    assert any("not a known service" in d.message for d in fifth.diagnostics)
    assert compiled == ["reviews"] * 4
    for translation, objects, previous in [
        (second, [*without_v2, vs], first),
        (third, [*base, vs], second),
        (fourth, [*two_ports, vs], third),
        (fifth, [vs], fourth),
    ]:
        fresh = translate(objects, previous=without_reuse(previous))
        assert translation.model == fresh.model
        assert translation.diagnostics == fresh.diagnostics


def test_endpoint_slices_are_parsed_once_across_changes_that_reuse_the_services(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    parsed: list[str] = []
    real = resolve_services_module._parse_slice

    def counting(obj: Any) -> Any:
        parsed.append(obj["metadata"]["name"])
        return real(obj)

    monkeypatch.setattr(resolve_services_module, "_parse_slice", counting)
    slices = [
        endpoint_slice("reviews-a", "reviews", [slice_endpoint("10.0.0.1", pod="reviews-v1")]),
        endpoint_slice("reviews-b", "reviews", [slice_endpoint("10.0.0.2", pod="reviews-v2")]),
    ]
    objects = [*versioned_service("reviews"), *slices]
    translator = Translator()
    translator.reset({key_of(obj): obj for obj in [*objects, canary()]})
    routes_only = canary(50, 50)
    translator.apply({key_of(routes_only): routes_only})  # routes only: reused
    moved = endpoint_slice("reviews-b", "reviews", [slice_endpoint("10.0.0.3", pod="reviews-v2")])

    third = translator.apply({key_of(moved): moved})

    assert parsed == ["reviews-a", "reviews-b", "reviews-b"]
    assert third.model == translate([*objects[:-1], moved, canary(50, 50)]).model


def key_of(obj: Any) -> tuple[str, str, str]:
    meta = obj["metadata"]
    return (obj["kind"], meta.get("namespace") or "default", meta["name"])
