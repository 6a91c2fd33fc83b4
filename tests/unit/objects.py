"""Factories for Kubernetes and Istio objects as plain dicts, the way YAML or the API gives them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

Obj = dict[str, Any]
ISTIO_API = "networking.istio.io/v1"


def metadata(
    name: str,
    namespace: str | None = "default",
    labels: Mapping[str, str] | None = None,
    created: str | None = None,
) -> Obj:
    meta: Obj = {"name": name}
    if namespace is not None:
        meta["namespace"] = namespace
    if labels:
        meta["labels"] = dict(labels)
    if created:
        meta["creationTimestamp"] = created
    return meta


def service_port(
    port: int = 80,
    name: str = "http",
    target: int | str | None = None,
    app_protocol: str | None = None,
    protocol: str | None = None,
) -> Obj:
    out: Obj = {"name": name, "port": port}
    if target is not None:
        out["targetPort"] = target
    if app_protocol is not None:
        out["appProtocol"] = app_protocol
    if protocol is not None:
        out["protocol"] = protocol
    return out


def service(
    name: str,
    namespace: str = "default",
    ports: Sequence[Obj] | None = None,
    selector: Mapping[str, str] | None = None,
    **spec: Any,
) -> Obj:
    """A Service; by default one ``http`` port 80 → 8080 selecting ``app: <name>``."""
    body: Obj = {
        "ports": list(ports) if ports is not None else [service_port(80, "http", 8080)],
        "selector": dict(selector) if selector is not None else {"app": name},
    }
    body.update(spec)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(name, namespace),
        "spec": body,
    }


def pod(
    name: str,
    ip: str,
    labels: Mapping[str, str],
    *,
    namespace: str = "default",
    ready: bool = True,
    phase: str = "Running",
    container_ports: Mapping[str, int] | None = None,
    deleting: bool = False,
) -> Obj:
    meta = metadata(name, namespace, labels)
    if deleting:
        meta["deletionTimestamp"] = "2024-01-01T00:00:00Z"
    status: Obj = {
        "phase": phase,
        "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
    }
    if ip:
        status["podIP"] = ip
    ports = [{"name": n, "containerPort": p} for n, p in (container_ports or {}).items()]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": meta,
        "spec": {"containers": [{"name": "app", "image": "app", "ports": ports}]},
        "status": status,
    }


def slice_endpoint(
    ip: str, ready: bool | None = None, pod: str | None = None, zone: str | None = None
) -> Obj:
    out: Obj = {"addresses": [ip]}
    if ready is not None:
        out["conditions"] = {"ready": ready}
    if pod is not None:
        out["targetRef"] = {"kind": "Pod", "name": pod}
    if zone is not None:
        out["zone"] = zone
    return out


def endpoint_slice(
    name: str,
    service: str,
    endpoints: Sequence[Obj],
    *,
    ports: Mapping[str, int] | None = None,
    namespace: str = "default",
    address_type: str = "IPv4",
) -> Obj:
    """An EndpointSlice for ``service``; ``ports`` maps port name → endpoint port."""
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": metadata(name, namespace, {"kubernetes.io/service-name": service}),
        "addressType": address_type,
        "ports": [
            {"name": n, "port": p, "protocol": "TCP"} for n, p in (ports or {"http": 8080}).items()
        ],
        "endpoints": list(endpoints),
    }


def destination(
    host: str, subset: str | None = None, port: int | None = None, weight: int | None = None
) -> Obj:
    dest: Obj = {"host": host}
    if subset is not None:
        dest["subset"] = subset
    if port is not None:
        dest["port"] = {"number": port}
    out: Obj = {"destination": dest}
    if weight is not None:
        out["weight"] = weight
    return out


def http_route(*destinations: Obj, **rule: Any) -> Obj:
    out: Obj = {"route": list(destinations)} if destinations else {}
    out.update(rule)
    return out


def virtual_service(
    name: str,
    hosts: Sequence[str],
    http: Sequence[Obj] | None = None,
    namespace: str | None = "default",
    created: str | None = None,
    **spec: Any,
) -> Obj:
    body: Obj = {"hosts": list(hosts)}
    if http is not None:
        body["http"] = list(http)
    body.update(spec)
    return {
        "apiVersion": ISTIO_API,
        "kind": "VirtualService",
        "metadata": metadata(name, namespace, created=created),
        "spec": body,
    }


def destination_rule(
    name: str,
    host: str,
    subsets: Mapping[str, Mapping[str, str]] | None = None,
    namespace: str | None = "default",
    created: str | None = None,
    **spec: Any,
) -> Obj:
    """A DestinationRule; ``subsets`` maps subset name → labels."""
    body: Obj = {"host": host}
    if subsets:
        body["subsets"] = [{"name": n, "labels": dict(labels)} for n, labels in subsets.items()]
    body.update(spec)
    return {
        "apiVersion": ISTIO_API,
        "kind": "DestinationRule",
        "metadata": metadata(name, namespace, created=created),
        "spec": body,
    }


def versioned_service(
    name: str = "reviews",
    namespace: str = "default",
    versions: Sequence[str] = ("v1", "v2"),
    base_ip: str = "10.0.0",
) -> list[Obj]:
    """A Service with one ready Pod per version and a DestinationRule with a subset per version."""
    objects: list[Obj] = [service(name, namespace)]
    for i, version in enumerate(versions, start=1):
        objects.append(
            pod(
                f"{name}-{version}",
                f"{base_ip}.{i}",
                {"app": name, "version": version},
                namespace=namespace,
            )
        )
    subsets = {v: {"version": v} for v in versions}
    objects.append(destination_rule(name, name, subsets, namespace))
    return objects


def sidecar(
    name: str,
    namespace: str | None = "default",
    hosts: Sequence[str] | None = ("./*",),
    created: str | None = None,
    **spec: Any,
) -> Obj:
    """An Istio Sidecar with one egress listener of ``hosts`` (none when ``hosts`` is None)."""
    body: Obj = {"egress": [{"hosts": list(hosts)}]} if hosts is not None else {}
    body.update(spec)
    return {
        "apiVersion": "networking.istio.io/v1beta1",
        "kind": "Sidecar",
        "metadata": metadata(name, namespace, created=created),
        "spec": body,
    }
