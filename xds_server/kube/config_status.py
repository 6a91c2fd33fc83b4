"""The ``status`` of VirtualServices and DestinationRules, written the way Istio writes it, so
``kubectl get vs -o yaml`` (and Kiali, Argo CD) show whether splitplane took an object and why not.

For each object the leader writes::

    status:
      observedGeneration: 3                 # the metadata.generation the status is about
      conditions:
      - type: Reconciled                    # True: accepted and served; False: rejected, the
        status: "False"                     # last accepted version keeps serving
        reason: Rejected
        message: "spec.http[0].route: weights sum to 0; give at least one destination a weight"
        lastTransitionTime: "2026-01-01T00:00:00Z"
      validationMessages:                   # every diagnostic (Istio's AnalysisMessageBase, plus
      - type: {code: SP-VirtualService-spec.http.route}   # the text)
        level: ERROR                        # ERROR, WARNING or INFO
        message: "spec.http[0].route: weights sum to 0; give at least one destination a weight"

A VirtualService bound only to gateways that are not splitplane's (``--gateway-name``) is left
alone: its status belongs to the owner of its gateway. Only objects whose status differs are
written (pure functions here; the leader's writer in ``loadbalancer_status`` does the writing).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from translators.diagnostics import Diagnostic, Severity
from translators.resolve_routing import MESH_GATEWAY, gateway_reference

PLURALS = {"VirtualService": "virtualservices", "DestinationRule": "destinationrules"}
CONDITION = "Reconciled"
_LEVELS = {Severity.ERROR: "ERROR", Severity.WARNING: "WARNING", Severity.INFO: "INFO"}


def _text(diagnostic: Diagnostic) -> str:
    return f"{diagnostic.field}: {diagnostic.message}" if diagnostic.field else diagnostic.message


def validation_message(diagnostic: Diagnostic) -> dict[str, Any]:
    """A diagnostic as an entry of Istio's ``status.validationMessages``."""
    return {
        "type": {"code": diagnostic.code},
        "level": _LEVELS[diagnostic.severity],
        "message": _text(diagnostic),
    }


def _reconciled(diagnostics: Sequence[Diagnostic]) -> dict[str, str]:
    errors = [d for d in diagnostics if d.is_error]
    if errors:
        message = _text(errors[0])
        if len(errors) > 1:
            message += f" (and {len(errors) - 1} more error(s))"
        return {"status": "False", "reason": "Rejected", "message": message}
    return {"status": "True", "reason": "Accepted", "message": "accepted and served"}


def desired_status(
    obj: Mapping[str, Any], diagnostics: Sequence[Diagnostic], now: datetime
) -> dict[str, Any]:
    """The status ``obj`` should have, given its diagnostics. The condition keeps its
    ``lastTransitionTime`` while its status stays the same."""
    metadata = obj.get("metadata") or {}
    reconciled = _reconciled(diagnostics)
    since = now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    for condition in _conditions(obj):
        if condition.get("type") == CONDITION and condition.get("status") == reconciled["status"]:
            since = str(condition.get("lastTransitionTime") or since)
    return {
        "observedGeneration": int(metadata.get("generation") or 0),
        "conditions": [{"type": CONDITION, **reconciled, "lastTransitionTime": since}],
        "validationMessages": [validation_message(d) for d in sorted(diagnostics)],
    }


def _conditions(obj: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    status = obj.get("status")
    conditions = status.get("conditions") if isinstance(status, Mapping) else None
    return [c for c in conditions if isinstance(c, Mapping)] if isinstance(conditions, list) else []


def left_to_another_owner(obj: Mapping[str, Any], gateway_names: frozenset[str]) -> bool:
    """Whether ``obj`` is a VirtualService bound only to gateways that are not splitplane's."""
    if obj.get("kind") != "VirtualService":
        return False
    spec = obj.get("spec")
    gateways = spec.get("gateways") if isinstance(spec, Mapping) else None
    if not isinstance(gateways, list) or not gateways:
        return False
    namespace = str((obj.get("metadata") or {}).get("namespace") or "default")
    names = [g.strip() for g in gateways if isinstance(g, str) and g.strip()]
    return bool(names) and all(
        name != MESH_GATEWAY and gateway_reference(name, namespace) not in gateway_names
        for name in names
    )


@dataclass(frozen=True)
class ConfigStatusWrite:
    """One object whose status must change: where to write it, what, and the version compared."""

    path: str  # the status subresource
    status: dict[str, Any]
    key: tuple[str, str, str]  # kind, namespace, name
    resource_version: str


def config_status_writes(
    objects: Iterable[Mapping[str, Any]],
    diagnostics: Iterable[Diagnostic],
    gateway_names: frozenset[str],
    now: datetime,
) -> list[ConfigStatusWrite]:
    """The VirtualServices and DestinationRules among ``objects`` whose status differs from what
    their diagnostics say."""
    by_object: dict[tuple[str, str, str], list[Diagnostic]] = {}
    for diagnostic in diagnostics:
        key = (diagnostic.kind, diagnostic.namespace, diagnostic.name)
        by_object.setdefault(key, []).append(diagnostic)
    writes: list[ConfigStatusWrite] = []
    for obj in objects:
        kind, metadata = obj.get("kind"), obj.get("metadata")
        if kind not in PLURALS or not isinstance(metadata, Mapping):
            continue
        name, namespace = metadata.get("name"), metadata.get("namespace") or "default"
        api_version = obj.get("apiVersion")
        if not isinstance(name, str) or not isinstance(api_version, str) or "/" not in api_version:
            continue
        if left_to_another_owner(obj, gateway_names):
            continue
        key = (str(kind), str(namespace), name)
        status = desired_status(obj, by_object.get(key, []), now)
        if obj.get("status") == status:
            continue
        path = f"/apis/{api_version}/namespaces/{namespace}/{PLURALS[str(kind)]}/{name}/status"
        writes.append(
            ConfigStatusWrite(path, status, key, str(metadata.get("resourceVersion", "")))
        )
    return sorted(writes, key=lambda w: w.key)
