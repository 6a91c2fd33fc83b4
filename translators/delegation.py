"""VirtualService delegation, as Istio implements it: a root's ``http`` rule with ``delegate``
takes the rules of another VirtualService, one without ``hosts``, under its own match.

Each delegate rule's matches are combined with each of the root rule's (a combination whose
conditions contradict each other is left out, and a rule left with none is dropped); the rule's
name becomes ``<root name>-<delegate name>``; what the delegate rule leaves unset of rewrite,
timeout, retries, fault, mirrors, CORS policy and headers comes from the root rule. A delegate
may not delegate again, a root rule with ``delegate`` may not also route or redirect, and a
VirtualService without hosts is used only through a root. Short destination hosts of a delegate
resolve in the delegate's namespace.

This works on the objects as written, before they are parsed: a root comes out with its
delegated rules in place, so every rule goes through the same checks as any other.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from translators.diagnostics import Diagnostic, Severity
from translators.objects import is_mapping
from translators.resolve_services import ObjectKey, ObjectMeta

KIND = "VirtualService"
Entries = Mapping[ObjectKey, tuple[ObjectMeta, Any]]

# What a delegate rule takes from its root rule when it leaves it unset (Istio's list).
_INHERITED = (
    "rewrite",
    "timeout",
    "retries",
    "fault",
    "mirror",
    "mirrorPercent",
    "mirrorPercentage",
    "corsPolicy",
    "mirrors",
    "headers",
)
_STRING_MATCHES = ("uri", "scheme", "method", "authority")
_MAP_MATCHES = ("headers", "withoutHeaders", "queryParams")


def _spec(obj: Any) -> Mapping[str, Any]:
    spec = obj.get("spec") if is_mapping(obj) else None
    return spec if is_mapping(spec) else {}


def _rules(spec: Mapping[str, Any]) -> list[Any]:
    http = spec.get("http")
    return list(http) if isinstance(http, list) else []


def is_delegate(obj: Any) -> bool:
    """A VirtualService without hosts: used only through a root that delegates to it."""
    spec = obj.get("spec") if is_mapping(obj) else None
    return is_mapping(spec) and not spec.get("hosts")


def _delegate_of(rule: Any) -> Mapping[str, Any] | None:
    if not is_mapping(rule):
        return None
    found = rule.get("delegate")
    return found if is_mapping(found) else None


def expand_delegation(
    entries: Entries,
) -> tuple[dict[ObjectKey, tuple[ObjectMeta, Any]], list[Diagnostic]]:
    """The VirtualServices to compile: roots with their delegates' rules in place, delegates
    left out (they have no hosts of their own); and what was wrong on the way."""
    diagnostics: list[Diagnostic] = []
    out: dict[ObjectKey, tuple[ObjectMeta, Any]] = {}
    used: set[ObjectKey] = set()
    for key, (meta, obj) in entries.items():
        if is_delegate(obj):
            continue
        rules = _rules(_spec(obj))
        if not any(_delegate_of(rule) is not None for rule in rules):
            out[key] = (meta, obj)
            continue
        expanded: list[Any] = []
        for i, rule in enumerate(rules):
            target = _delegate_of(rule)
            if target is None:
                expanded.append(rule)
                continue
            at = f"spec.http[{i}]"
            for action in ("route", "redirect"):
                if rule.get(action):
                    diagnostics.append(
                        Diagnostic(
                            KIND,
                            meta.namespace,
                            meta.name,
                            f"{at}.{action}",
                            f"a rule with delegate must not have {action} (as in Istio)",
                        )
                    )
            name, namespace = target.get("name"), target.get("namespace") or meta.namespace
            delegate_key = ObjectKey(KIND, str(namespace), str(name))
            found = entries.get(delegate_key)
            if not isinstance(name, str) or found is None or not is_delegate(found[1]):
                diagnostics.append(
                    Diagnostic(
                        KIND,
                        meta.namespace,
                        meta.name,
                        f"{at}.delegate",
                        f"{namespace}/{name} is not a VirtualService without hosts; this rule is"
                        " left out",
                        Severity.WARNING,
                    )
                )
                continue
            used.add(delegate_key)
            delegate_meta, delegate_obj = found
            for j, leaf in enumerate(_rules(_spec(delegate_obj))):
                if not is_mapping(leaf):
                    continue
                if _delegate_of(leaf) is not None:
                    diagnostics.append(
                        Diagnostic(
                            KIND,
                            delegate_meta.namespace,
                            delegate_meta.name,
                            f"spec.http[{j}].delegate",
                            "a delegate VirtualService may not delegate again (as in Istio);"
                            " this rule is left out",
                        )
                    )
                    continue
                merged = merged_rule(rule, leaf, delegate_meta.namespace)
                if merged is not None:
                    expanded.append(merged)
        merged_obj = dict(obj)
        merged_obj["spec"] = {**_spec(obj), "http": expanded}
        out[key] = (meta, merged_obj)
    for key, (meta, obj) in entries.items():
        if is_delegate(obj) and key not in used:
            diagnostics.append(
                Diagnostic(
                    KIND,
                    meta.namespace,
                    meta.name,
                    "spec.hosts",
                    "no hosts: a delegate, used only through a root VirtualService, and none"
                    " delegates to this one",
                    Severity.WARNING,
                )
            )
    return out, diagnostics


def merged_rule(root: Mapping[str, Any], leaf: Mapping[str, Any], namespace: str) -> Any:
    """A delegate rule under its root rule (see the module); None when no match combines."""
    matches = _merged_matches(root.get("match"), leaf.get("match"))
    if matches is None:
        return None
    out = copy.deepcopy(dict(leaf))
    if matches:
        out["match"] = matches
    else:
        out.pop("match", None)
    root_name, leaf_name = root.get("name") or "", leaf.get("name") or ""
    if root_name and leaf_name:
        out["name"] = f"{root_name}-{leaf_name}"
    elif root_name:
        out["name"] = root_name
    for field in _INHERITED:
        if out.get(field) is None and root.get(field) is not None:
            out[field] = copy.deepcopy(root[field])
    for destination in _destinations(out):
        host = destination.get("host")
        if isinstance(host, str) and host and "." not in host:
            destination["host"] = f"{host}.{namespace}"
    return out


def _destinations(rule: Mapping[str, Any]) -> list[dict[str, Any]]:
    found: list[Any] = []
    for entry in rule.get("route") or []:
        if is_mapping(entry):
            found.append(entry.get("destination"))
    found.append(rule.get("mirror"))
    for mirror in rule.get("mirrors") or []:
        if is_mapping(mirror):
            found.append(mirror.get("destination"))
    return [d for d in found if isinstance(d, dict)]


def _merged_matches(root: Any, leaf: Any) -> list[Any] | None:
    roots = [m for m in root if is_mapping(m)] if isinstance(root, list) else []
    leaves = [m for m in leaf if is_mapping(m)] if isinstance(leaf, list) else []
    if not roots:
        return copy.deepcopy(leaves)
    if not leaves:
        return copy.deepcopy(roots)
    merged = [
        _merged_match(given, wanted)
        for given in roots
        for wanted in leaves
        if not _conflict(given, wanted)
    ]
    return merged or None


def _merged_match(root: Mapping[str, Any], leaf: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(dict(leaf))
    if root.get("name") and leaf.get("name"):
        out["name"] = f"{root['name']}-{leaf['name']}"
    elif root.get("name"):
        out["name"] = root["name"]
    for field in (*_STRING_MATCHES, "port", "sourceNamespace"):
        if not out.get(field) and root.get(field):
            out[field] = copy.deepcopy(root[field])
    for field in (*_MAP_MATCHES, "sourceLabels"):
        given = root.get(field)
        if is_mapping(given):
            out[field] = {**copy.deepcopy(dict(given)), **(out.get(field) or {})}
    if not out.get("gateways") and root.get("gateways"):
        out["gateways"] = list(root["gateways"])
    return out


def _conflict(root: Mapping[str, Any], leaf: Mapping[str, Any]) -> bool:
    """Whether a delegate match contradicts a root match (Istio's rules)."""
    for field in _STRING_MATCHES:
        if _string_conflict(root.get(field), leaf.get(field)):
            return True
    for field in _MAP_MATCHES:
        given, wanted = root.get(field), leaf.get(field)
        if (
            is_mapping(given)
            and is_mapping(wanted)
            and any(_string_conflict(given.get(k), v) for k, v in wanted.items())
        ):
            return True
    if bool(root.get("ignoreUriCase")) != bool(leaf.get("ignoreUriCase")):
        return True
    if root.get("port") and leaf.get("port") and root["port"] != leaf["port"]:
        return True
    if root.get("sourceNamespace") and leaf.get("sourceNamespace") != root["sourceNamespace"]:
        return True
    given, wanted = root.get("sourceLabels"), leaf.get("sourceLabels")
    return (
        is_mapping(given)
        and is_mapping(wanted)
        and any(k in given and given[k] != v for k, v in wanted.items())
    )


def _string_conflict(root: Any, leaf: Any) -> bool:
    if not is_mapping(root) or not is_mapping(leaf):
        return False
    if root.get("regex"):
        return True  # Istio: a root rule may not match by regex when it delegates
    if root.get("exact") and leaf.get("exact") != root["exact"]:
        return True
    prefix = root.get("prefix")
    if prefix:
        if leaf.get("regex"):
            return True
        for kind in ("prefix", "exact"):
            value = leaf.get(kind)
            if isinstance(value, str) and not value.startswith(prefix):
                return True
    return False
