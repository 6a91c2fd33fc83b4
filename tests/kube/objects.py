"""Small builders for the Kubernetes objects the tests store in the fake API server."""

from __future__ import annotations

from typing import Any

from translators.resolve_ingress import INGRESS_CONTROLLER

Obj = dict[str, Any]


def service(name: str, namespace: str = "default", port: int = 80) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"selector": {"app": name}, "ports": [{"name": "http", "port": port}]},
    }


def pod(name: str, ip: str, namespace: str = "default", version: str = "v1") -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"app": name.split("-", maxsplit=1)[0], "version": version},
            "annotations": {"big": "x" * 100},
        },
        "spec": {
            "nodeName": "node-1",
            "containers": [{"name": "app", "image": "example/app:1"}],
        },
        "status": {
            "phase": "Running",
            "podIP": ip,
            "podIPs": [{"ip": ip}],
            "conditions": [{"type": "Ready", "status": "True"}],
            "containerStatuses": [{"name": "app", "ready": True}],
        },
    }


def endpoint_slice(name: str, service_name: str, ips: list[str], namespace: str = "default") -> Obj:
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"kubernetes.io/service-name": service_name},
        },
        "addressType": "IPv4",
        "endpoints": [{"addresses": [ip], "conditions": {"ready": True}} for ip in ips],
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
    }


def virtual_service(
    name: str, weights: dict[str, int], namespace: str = "default", version: str = "v1"
) -> Obj:
    return {
        "apiVersion": f"networking.istio.io/{version}",
        "kind": "VirtualService",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "hosts": [name],
            "http": [
                {
                    "route": [
                        {"destination": {"host": name, "subset": subset}, "weight": weight}
                        for subset, weight in weights.items()
                    ]
                }
            ],
        },
    }


def destination_rule(name: str, namespace: str = "default", version: str = "v1") -> Obj:
    return {
        "apiVersion": f"networking.istio.io/{version}",
        "kind": "DestinationRule",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "host": name,
            "subsets": [
                {"name": "v1", "labels": {"version": "v1"}},
                {"name": "v2", "labels": {"version": "v2"}},
            ],
        },
    }


def sidecar(
    name: str, hosts: list[str], namespace: str = "default", version: str = "v1beta1"
) -> Obj:
    return {
        "apiVersion": f"networking.istio.io/{version}",
        "kind": "Sidecar",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"egress": [{"hosts": hosts}]},
    }


def ingress_class(name: str = "splitplane") -> Obj:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "IngressClass",
        "metadata": {"name": name},
        "spec": {"controller": INGRESS_CONTROLLER},
    }


def ingress(name: str, service_name: str, namespace: str = "default") -> Obj:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "ingressClassName": "splitplane",
            "rules": [
                {
                    "host": f"{service_name}.example.com",
                    "http": {
                        "paths": [
                            {
                                "path": "/",
                                "pathType": "Prefix",
                                "backend": {
                                    "service": {"name": service_name, "port": {"number": 80}}
                                },
                            }
                        ]
                    },
                }
            ],
        },
    }
