"""Which snapshot group a connecting node belongs to.

The bootstrap writes the node's role into its metadata: ``ROLE`` is ``sidecar``, ``gateway`` or
``proxyless``; a sidecar may name its outbound listener port in ``OUTBOUND_PORT`` (default 15001)
and a gateway its HTTP listener port in ``HTTP_PORT`` (default 8080).
A node without ``ROLE`` whose user agent mentions gRPC is a proxyless gRPC client; anything else
is a sidecar.
"""

from __future__ import annotations

from dataclasses import dataclass

from envoy.config.core.v3.base_pb2 import Node

SIDECAR = "sidecar"
GATEWAY = "gateway"
PROXYLESS = "proxyless"
ROLES = (SIDECAR, GATEWAY, PROXYLESS)
DEFAULT_OUTBOUND_PORT = 15001
DEFAULT_HTTP_PORT = 8080


@dataclass(frozen=True)
class NodeGroup:
    """A set of nodes that receive the same snapshot."""

    role: str
    port: int = 0  # a sidecar's outbound port, a gateway's HTTP port; 0 for proxyless

    @property
    def key(self) -> str:
        """The cache key: ``sidecar:15001``, ``gateway:8080`` or ``proxyless``."""
        return f"{self.role}:{self.port}" if self.port else self.role


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
    """The node's ``NAMESPACE`` metadata, or ``default``."""
    return _metadata_string(node, "NAMESPACE") or "default"


def group_of(node: Node) -> NodeGroup:
    """The snapshot group of ``node``."""
    role = node_role(node)
    if role == SIDECAR:
        return NodeGroup(SIDECAR, _port(node, "OUTBOUND_PORT", DEFAULT_OUTBOUND_PORT))
    if role == GATEWAY:
        return NodeGroup(GATEWAY, _port(node, "HTTP_PORT", DEFAULT_HTTP_PORT))
    return NodeGroup(role)
