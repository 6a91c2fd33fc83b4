"""Envoy resource type URLs, deterministic serialization and content versions."""

from __future__ import annotations

import hashlib

from google.protobuf.message import Message

CLUSTER = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
ENDPOINT = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
LISTENER = "type.googleapis.com/envoy.config.listener.v3.Listener"
ROUTE = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"

# The order in which a snapshot is pushed: CDS, EDS, LDS, RDS.
PUSH_ORDER = (CLUSTER, ENDPOINT, LISTENER, ROUTE)


def serialize(message: Message) -> bytes:
    """The canonical bytes of a resource: equal messages give equal bytes."""
    return message.SerializeToString(deterministic=True)


def content_version(data: bytes) -> str:
    """A short content hash: the same bytes give the same version on every replica."""
    return hashlib.sha256(data).hexdigest()[:16]


def resource_name(message: Message) -> str:
    """The xDS name of a resource (``cluster_name`` for a load assignment, else ``name``)."""
    name: str = getattr(message, "cluster_name", "") or getattr(message, "name", "")
    return name
