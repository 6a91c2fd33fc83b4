"""Which snapshot group a connecting node belongs to.

The bootstrap writes the node's role into its metadata: ``ROLE`` is ``sidecar``, ``gateway`` or
``proxyless``; a sidecar may name its outbound listener port in ``OUTBOUND_PORT`` (default 15001)
and a gateway its HTTP listener port in ``HTTP_PORT`` (default 8080).
A node without ``ROLE`` whose user agent mentions gRPC is a proxyless gRPC client; anything else
is a sidecar.

The node's namespace decides what it sees (``exportTo``): `group_of` takes it from the
``NAMESPACE`` metadata unless the caller passes one it has verified (from the transport), which
wins. A node that names no namespace, or not a namespace name, sees only what is exported to
every namespace.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from envoy.config.core.v3.base_pb2 import Node

SIDECAR = "sidecar"
GATEWAY = "gateway"
PROXYLESS = "proxyless"
ROLES = (SIDECAR, GATEWAY, PROXYLESS)
DEFAULT_OUTBOUND_PORT = 15001
DEFAULT_HTTP_PORT = 8080
_NAMESPACE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")  # a DNS-1123 label


@dataclass(frozen=True)
class NodeGroup:
    """A set of nodes that receive the same snapshot."""

    role: str
    port: int = 0  # a sidecar's outbound port, a gateway's HTTP port; 0 for proxyless
    namespace: str = ""  # what the nodes see is what is exported to it ("" for none)

    @property
    def key(self) -> str:
        """The cache key: ``sidecar:15001``, ``gateway:8080`` or ``proxyless``, then
        ``/namespace`` for a node in a namespace (``sidecar:15001/shop``)."""
        base = f"{self.role}:{self.port}" if self.port else self.role
        return f"{base}/{self.namespace}" if self.namespace else base


def _metadata_string(node: Node, key: str) -> str:
    fields = node.metadata.fields
    if key not in fields:
        return ""
    value = fields[key]
    kind = value.WhichOneof("kind")
    if kind == "string_value":
        return str(value.string_value).strip()
    if kind == "number_value":
        number = value.number_value
        return str(int(number)) if number.is_integer() else str(number)
    return ""


def _port(node: Node, key: str, default: int) -> int:
    text = _metadata_string(node, key)
    if text.isdigit() and 0 < int(text) < 65536:
        return int(text)
    return default


def node_role(node: Node) -> str:
    """The node's role; an unknown ``ROLE`` value counts as a sidecar."""
    role = _metadata_string(node, "ROLE").lower()
    if role in ROLES:
        return role
    if not role and "grpc" in node.user_agent_name.lower():
        return PROXYLESS
    return SIDECAR


def node_namespace(node: Node) -> str:
    """The node's ``NAMESPACE`` metadata if it is a namespace name, else ""."""
    namespace = _metadata_string(node, "NAMESPACE")
    return namespace if _NAMESPACE.match(namespace) else ""


def group_of(node: Node, namespace: str | None = None) -> NodeGroup:
    """The snapshot group of ``node``, in ``namespace`` when the caller verified one (it
    overrides the metadata), else in the namespace its metadata names."""
    scope = node_namespace(node) if namespace is None else namespace
    role = node_role(node)
    if role == SIDECAR:
        return NodeGroup(SIDECAR, _port(node, "OUTBOUND_PORT", DEFAULT_OUTBOUND_PORT), scope)
    if role == GATEWAY:
        return NodeGroup(GATEWAY, _port(node, "HTTP_PORT", DEFAULT_HTTP_PORT), scope)
    return NodeGroup(role, 0, scope)
