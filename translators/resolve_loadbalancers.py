"""LoadBalancer Services → the load-balancer fleet's TCP listeners.

Each port of a ``type: LoadBalancer`` Service splitplane serves becomes one gateway TCP listener on
that port, forwarding to the service port's cluster (whose endpoints are the ready endpoints on
``targetPort``), or split by weight when a VirtualService has ``tcp`` rules for it. A rule bound to
the fleet wins over a mesh rule for the same port.

Which Services splitplane serves follows ``spec.loadBalancerClass``: with ``only_lb_class`` only
those of class ``splitplane.io/envoy``; otherwise also those without a class (a Service naming
another class belongs to another implementation and is never touched).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from translators.diagnostics import Diagnostic, Severity
from translators.model import Service, TcpListener, TcpRoute, WeightedCluster
from translators.names import cluster_name

LOAD_BALANCER_CLASS = "splitplane.io/envoy"
LOAD_BALANCER = "LoadBalancer"


def serves_load_balancer(service_type: str, load_balancer_class: str, only_lb_class: bool) -> bool:
    """Whether splitplane's fleet serves a Service of this type and ``loadBalancerClass``."""
    if service_type != LOAD_BALANCER:
        return False
    if only_lb_class:
        return load_balancer_class == LOAD_BALANCER_CLASS
    return load_balancer_class in ("", LOAD_BALANCER_CLASS)


def listener_name(namespace: str, name: str, port: int) -> str:
    """``namespace/name:port`` of the Service port a TCP listener serves."""
    return f"{namespace}/{name}:{port}"


@dataclass(frozen=True, slots=True)
class LoadBalancers:
    """The fleet's TCP listeners (sorted by port) and the diagnostics found choosing them."""

    listeners: tuple[TcpListener, ...]
    diagnostics: tuple[Diagnostic, ...]


def resolve_load_balancers(
    services: Iterable[Service],
    tcp_routes: Iterable[TcpRoute] = (),
    *,
    only_lb_class: bool = False,
    created: Mapping[tuple[str, str], str] | None = None,
) -> LoadBalancers:
    """One TCP listener per port of every served LoadBalancer Service.

    ``created`` maps (namespace, name) to the Service's creationTimestamp: when two Services ask
    for the same port the oldest keeps it and the other's port gets a warning.
    """
    ages = created or {}
    routes: dict[tuple[str, int], TcpRoute] = {}
    for route in sorted(tcp_routes, key=lambda r: r.gateway):  # fleet rules overwrite mesh ones
        routes[route.service, route.port] = route
    served = sorted(
        (s for s in services if serves_load_balancer(s.type, s.load_balancer_class, only_lb_class)),
        key=lambda s: (ages.get((s.namespace, s.name), ""), s.namespace, s.name),
    )
    owners: dict[int, Service] = {}
    listeners: list[TcpListener] = []
    diagnostics: list[Diagnostic] = []
    for service in served:
        for port in service.ports:
            owner = owners.setdefault(port.port, service)
            if owner is not service:
                diagnostics.append(
                    Diagnostic(
                        "Service",
                        service.namespace,
                        service.name,
                        "spec.ports",
                        f"port {port.port} is already served by the load balancer for the older"
                        f" Service {owner.namespace}/{owner.name}; this port is left out",
                        Severity.WARNING,
                    )
                )
                continue
            rule = routes.get((service.hostname, port.port))
            destinations = (
                rule.destinations
                if rule is not None
                else (WeightedCluster(cluster_name(port.port, "", service.hostname), 100),)
            )
            listeners.append(
                TcpListener(
                    listener_name(service.namespace, service.name, port.port),
                    port.port,
                    destinations,
                )
            )
    return LoadBalancers(
        listeners=tuple(sorted(listeners, key=lambda t: (t.port, t.name))),
        diagnostics=tuple(sorted(diagnostics)),
    )
