"""Which snapshot group a node belongs to."""

from __future__ import annotations

import pytest
from envoy.config.core.v3.base_pb2 import Node
from google.protobuf.struct_pb2 import Struct

from xds_server.xds.nodes import group_of


def make_node(user_agent: str = "envoy", **metadata: str | float) -> Node:
    fields = Struct()
    fields.update(metadata)
    return Node(id="n", user_agent_name=user_agent, metadata=fields)


@pytest.mark.parametrize(
    ("node", "key"),
    [
        (make_node(ROLE="sidecar"), "sidecar:15001"),
        (make_node(ROLE="sidecar", OUTBOUND_PORT="15006"), "sidecar:15006"),
        (make_node(ROLE="sidecar", OUTBOUND_PORT=15007.0), "sidecar:15007"),
        (make_node(ROLE="sidecar", OUTBOUND_PORT="not-a-port"), "sidecar:15001"),
        (make_node(ROLE="gateway"), "gateway:8080"),
        (make_node(ROLE="GATEWAY", HTTP_PORT="80"), "gateway:80"),
        (make_node(ROLE="gateway", OUTBOUND_PORT="15006"), "gateway:8080"),
        (make_node(ROLE="proxyless"), "proxyless"),
        (make_node(user_agent="gRPC Python"), "proxyless"),
        (make_node(user_agent="gRPC Python", ROLE="sidecar"), "sidecar:15001"),
        (make_node(), "sidecar:15001"),
        (make_node(ROLE="unknown"), "sidecar:15001"),
        (make_node(ROLE="sidecar", NAMESPACE="shop"), "sidecar:15001/shop"),
        (
            make_node(ROLE="gateway", NAMESPACE="splitplane-system"),
            "gateway:8080/splitplane-system",
        ),
        (make_node(ROLE="proxyless", NAMESPACE="shop"), "proxyless/shop"),
        (make_node(ROLE="sidecar", NAMESPACE=" shop "), "sidecar:15001/shop"),
        (make_node(ROLE="sidecar", NAMESPACE="Shop/../web"), "sidecar:15001"),
        (make_node(ROLE="sidecar", NAMESPACE="x" * 64), "sidecar:15001"),
        (make_node(ROLE="sidecar", NAMESPACE=""), "sidecar:15001"),
    ],
)
def test_group_key(node: Node, key: str) -> None:
    """Role, listener port and namespace; a namespace that is no namespace name counts as none
    (the node sees only what is exported everywhere)."""
    assert group_of(node).key == key


def test_a_verified_namespace_overrides_the_metadata() -> None:
    node = make_node(ROLE="sidecar", NAMESPACE="shop")
    assert group_of(node, namespace="web").key == "sidecar:15001/web"
    assert group_of(node, namespace="").key == "sidecar:15001"
