"""Configured weights beside the traffic each destination actually got (``/debug/traffic``).

The model says, per VirtualService route, which subset clusters get which weight; the proxies'
load reports (``xds.load_reports``) say how many requests each cluster was sent and how many
failed over the recent window, summed over every proxy. Joined here, off the xDS loop: for every
route, each destination's configured share, observed share (its requests among the route's) and
error rate. A cluster that several routes send to is counted in full for each of them (the
reports are per cluster, not per route).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from translators.model import HttpRoute, MeshModel, VirtualHost
from xds_server.xds.load_reports import Load


@dataclass(frozen=True, slots=True)
class Destination:
    cluster: str
    weight: int
    configured_share: float
    load: Load
    observed_share: float | None  # None: the route's destinations got no request

    def as_dict(self) -> dict[str, Any]:
        return {
            "cluster": self.cluster,
            "weight": self.weight,
            "configured_share": round(self.configured_share, 4),
            "observed_share": _rounded(self.observed_share),
            "requests": self.load.issued,
            "succeeded": self.load.succeeded,
            "errors": self.load.failed,
            "error_rate": _rounded(self.load.error_rate),
        }


@dataclass(frozen=True, slots=True)
class RouteTraffic:
    """One route of one VirtualService on one virtual host."""

    virtual_service: str  # namespace/name
    scope: str  # mesh (sidecars, proxyless clients) or gateway (the load-balancer fleet)
    host: str  # the virtual host: service hostname:port, or a VirtualService host:port
    index: int  # the route's position among the host's routes
    name: str  # the route's name in the VirtualService, if it has one
    destinations: tuple[Destination, ...]

    @property
    def requests(self) -> int:
        return sum(d.load.issued for d in self.destinations)

    def as_dict(self) -> dict[str, Any]:
        return {
            "virtual_service": self.virtual_service,
            "scope": self.scope,
            "host": self.host,
            "route": self.index,
            "name": self.name,
            "requests": self.requests,
            "destinations": [d.as_dict() for d in self.destinations],
        }


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def route_traffic(
    scope: str, host: VirtualHost, index: int, route: HttpRoute, loads: Mapping[str, Load]
) -> RouteTraffic:
    """The configured and observed split of one route."""
    total_weight = sum(d.weight for d in route.destinations)
    observed = {d.cluster: loads.get(d.cluster, Load()) for d in route.destinations}
    requests = sum(load.issued for load in observed.values())
    destinations = tuple(
        Destination(
            cluster=d.cluster,
            weight=d.weight,
            configured_share=d.weight / total_weight if total_weight else 0.0,
            load=observed[d.cluster],
            observed_share=observed[d.cluster].issued / requests if requests else None,
        )
        for d in route.destinations
    )
    return RouteTraffic(host.source, scope, host.name, index, route.name, destinations)


def traffic(model: MeshModel | None, loads: Mapping[str, Load]) -> list[RouteTraffic]:
    """Every route a VirtualService wrote, with its destinations' configured and observed shares,
    ordered by VirtualService, scope, host and route."""
    if model is None:
        return []
    found: list[RouteTraffic] = []
    for scope, hosts in (("mesh", model.mesh_hosts), ("gateway", model.gateway_hosts)):
        for host in hosts:
            if not host.source:
                continue
            for index, route in enumerate(host.routes):
                if route.destinations:
                    found.append(route_traffic(scope, host, index, route, loads))
    found.sort(key=lambda r: (r.virtual_service, r.scope, r.host, r.index))
    return found


def observed_clusters(model: MeshModel | None) -> frozenset[str]:
    """The clusters whose load ``traffic`` shows: every destination of a VirtualService route."""
    if model is None:
        return frozenset()
    return frozenset(
        destination.cluster
        for hosts in (model.mesh_hosts, model.gateway_hosts)
        for host in hosts
        if host.source
        for route in host.routes
        for destination in route.destinations
    )


def traffic_json(
    model: MeshModel | None, loads: Mapping[str, Load], window: float
) -> dict[str, Any]:
    """``/debug/traffic``: the window the observations cover and every route's split."""
    return {
        "window_seconds": window,
        "routes": [r.as_dict() for r in traffic(model, loads)],
    }
