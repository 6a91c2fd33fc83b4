"""A node group's Envoy resources: model → {type URL: resources sorted by name}.

Clusters, endpoints and the per-port route tables do not depend on the group, so they are built
once per model and shared by every group built from it.
"""

from __future__ import annotations

from functools import cached_property

from google.protobuf.message import Message

from translators import resources
from translators.build_clusters import build_clusters
from translators.build_endpoints import build_load_assignments
from translators.build_listeners import api_listeners, gateway_listeners, sidecar_listeners
from translators.build_routes import (
    VirtualHostRoutes,
    gateway_route_table,
    port_route_tables,
    sidecar_route_table,
)
from translators.model import ClusterEndpoints, MeshModel, NodeGroup, Role

Resources = dict[str, tuple[Message, ...]]

DEFAULT_SIDECAR_PORT = 15001
DEFAULT_GATEWAY_PORT = 8080


class SharedResources:
    """The group-independent resources of one model, each built on first use."""

    def __init__(self, model: MeshModel) -> None:
        self.model = model

    @cached_property
    def routes(self) -> VirtualHostRoutes:
        return VirtualHostRoutes(self.model)

    @cached_property
    def clusters(self) -> tuple[Message, ...]:
        return build_clusters(self.model.clusters)

    @cached_property
    def endpoints(self) -> tuple[Message, ...]:
        """A load assignment for every cluster (empty when the model has none for it)."""
        given = {e.cluster: e for e in self.model.endpoints}
        return build_load_assignments(
            given.get(c.name) or ClusterEndpoints(cluster=c.name) for c in self.model.clusters
        )

    @cached_property
    def port_tables(self) -> tuple[Message, ...]:
        return port_route_tables(self.model, self.routes)

    @cached_property
    def api_listeners(self) -> tuple[Message, ...]:
        return api_listeners(self.model.mesh_hosts)


_last: SharedResources | None = None


def shared_resources(model: MeshModel) -> SharedResources:
    """The shared resources of ``model``, reused while the same model object is built again."""
    global _last
    last = _last
    if last is not None and last.model is model:
        return last
    shared = SharedResources(model)
    _last = shared
    return shared


def build_group(model: MeshModel, group: NodeGroup) -> Resources:
    """Every resource a node of ``group`` receives, keyed by type URL, sorted by name.

    Every EDS name a cluster uses has a load assignment, and every route table a listener names
    is present (possibly empty).
    """
    shared = shared_resources(model)
    listeners: tuple[Message, ...]
    routes: tuple[Message, ...]
    if group.role is Role.SIDECAR:
        port = group.port or DEFAULT_SIDECAR_PORT
        listeners = sidecar_listeners(port)
        routes = (sidecar_route_table(model, port, shared.routes),)
    elif group.role is Role.GATEWAY:
        port = group.port or DEFAULT_GATEWAY_PORT
        listeners = gateway_listeners(port, model.gateway_tcp)
        routes = (gateway_route_table(model, port, shared.routes),)
    else:
        listeners = shared.api_listeners
        routes = shared.port_tables
    return {
        resources.CLUSTER: shared.clusters,
        resources.ENDPOINT: shared.endpoints,
        resources.LISTENER: listeners,
        resources.ROUTE: routes,
    }
