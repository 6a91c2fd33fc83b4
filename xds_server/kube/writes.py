"""The few writes splitplane makes to Kubernetes: the load-balancer status of Services and
Ingresses, a leader Lease."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from kubernetes import client

from xds_server.sources.kubernetes import ApiStatusError, request_json

MERGE_PATCH = "application/merge-patch+json"


def patch_service_load_balancer(
    api: client.ApiClient,
    namespace: str,
    name: str,
    ingress: Sequence[Mapping[str, Any]],
) -> dict[str, Any]:
    """Set ``status.loadBalancer.ingress`` of a Service (e.g. ``[{"ip": "10.0.0.7"}]``) through
    the status subresource; returns the updated Service."""
    path = f"/api/v1/namespaces/{namespace}/services/{name}/status"
    return _patch_load_balancer(api, path, ingress)


def patch_ingress_load_balancer(
    api: client.ApiClient,
    namespace: str,
    name: str,
    ingress: Sequence[Mapping[str, Any]],
) -> dict[str, Any]:
    """Set ``status.loadBalancer.ingress`` of a networking.k8s.io/v1 Ingress (entries of
    ``ip`` / ``hostname``) through the status subresource; returns the updated Ingress."""
    path = f"/apis/networking.k8s.io/v1/namespaces/{namespace}/ingresses/{name}/status"
    return _patch_load_balancer(api, path, ingress)


def _patch_load_balancer(
    api: client.ApiClient, path: str, ingress: Sequence[Mapping[str, Any]]
) -> dict[str, Any]:
    """A merge patch of ``status.loadBalancer.ingress``: the list is replaced as a whole."""
    body = {"status": {"loadBalancer": {"ingress": [dict(i) for i in ingress]}}}
    result: dict[str, Any] = request_json(api, "PATCH", path, body=body, content_type=MERGE_PATCH)
    return result


@dataclass(frozen=True)
class LeaseClaim:
    """Who wants to hold which coordination.k8s.io/v1 Lease, and for how long per renewal."""

    namespace: str
    name: str
    holder: str
    duration_seconds: int = 15


def micro_time(moment: datetime) -> str:
    """A Kubernetes MicroTime (RFC 3339 with microseconds, UTC)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_micro_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def lease_expired(spec: Mapping[str, Any], now: datetime) -> bool:
    """True when the lease was never renewed or its last renewal is older than its duration."""
    renewed = spec.get("renewTime")
    if not renewed or not spec.get("holderIdentity"):
        return True
    duration = timedelta(seconds=int(spec.get("leaseDurationSeconds") or 0))
    return parse_micro_time(str(renewed)) + duration <= now


def _lease_path(claim: LeaseClaim, with_name: bool = True) -> str:
    base = f"/apis/coordination.k8s.io/v1/namespaces/{claim.namespace}/leases"
    return f"{base}/{claim.name}" if with_name else base


def acquire_or_renew_lease(
    api: client.ApiClient, claim: LeaseClaim, now: datetime | None = None
) -> bool:
    """Take the Lease if it is free or expired, or renew it if ``claim.holder`` holds it.

    True when ``claim.holder`` holds the Lease afterwards. Writes are optimistic (they carry the
    resourceVersion read), so of two candidates racing for an expired Lease only one wins.
    """
    moment = now or datetime.now(UTC)
    stamp = micro_time(moment)
    try:
        current = request_json(api, "GET", _lease_path(claim))
    except ApiStatusError as err:
        if err.status != 404:
            raise
        lease = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": claim.name, "namespace": claim.namespace},
            "spec": {
                "holderIdentity": claim.holder,
                "leaseDurationSeconds": claim.duration_seconds,
                "acquireTime": stamp,
                "renewTime": stamp,
                "leaseTransitions": 0,
            },
        }
        return _write(api, "POST", _lease_path(claim, with_name=False), lease)
    spec = dict(current.get("spec") or {})
    ours = spec.get("holderIdentity") == claim.holder
    if not ours and not lease_expired(spec, moment):
        return False
    if not ours:
        spec["acquireTime"] = stamp
        spec["leaseTransitions"] = int(spec.get("leaseTransitions") or 0) + 1
    spec.update(
        holderIdentity=claim.holder, leaseDurationSeconds=claim.duration_seconds, renewTime=stamp
    )
    return _write(api, "PUT", _lease_path(claim), {**current, "spec": spec})


def release_lease(api: client.ApiClient, claim: LeaseClaim) -> bool:
    """Give the Lease up if ``claim.holder`` holds it (so another replica takes over at once)."""
    try:
        current = request_json(api, "GET", _lease_path(claim))
    except ApiStatusError as err:
        if err.status == 404:
            return False
        raise
    spec = dict(current.get("spec") or {})
    if spec.get("holderIdentity") != claim.holder:
        return False
    spec.pop("holderIdentity", None)
    spec.pop("renewTime", None)
    return _write(api, "PUT", _lease_path(claim), {**current, "spec": spec})


def _write(api: client.ApiClient, method: str, path: str, body: Mapping[str, Any]) -> bool:
    try:
        request_json(api, method, path, body=dict(body))
    except ApiStatusError as err:
        if err.status == 409:  # someone else wrote first
            return False
        raise
    return True
