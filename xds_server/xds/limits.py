"""What one xDS stream may ask of the server, and how a stream past a limit is refused.

Everything a client controls is bounded: the size of its node id and metadata (kept for as long
as it is connected, shown in status and CSDS), how many types it subscribes to and how many
resource names it holds. A stream past a limit ends with a gRPC status naming the limit; a
well-behaved proxy never comes near one.
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc
from envoy.config.core.v3.base_pb2 import Node

DEFAULT_MAX_NAMES = 200_000

# How much of a client-chosen string (a node id, a type URL) a log line shows.
LOGGED_CHARS = 120


@dataclass(frozen=True)
class StreamLimits:
    """Per-stream caps on what a client may send and subscribe to."""

    max_node_id_bytes: int = 1024
    max_metadata_bytes: int = 64 * 1024
    max_types: int = 64  # type URLs subscribed to (Envoy uses a handful)
    max_names: int = DEFAULT_MAX_NAMES  # resource names held, over every type


class StreamRefusedError(Exception):
    """The stream ends with ``code`` and ``details``."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


def for_log(text: str, limit: int = LOGGED_CHARS) -> str:
    """``text`` cut to ``limit`` characters for a log line, saying how much was left out."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}…({len(text) - limit} more characters)"


def check_node(node: Node, limits: StreamLimits) -> None:
    """Raise ``StreamRefusedError`` for a node whose id or metadata exceeds ``limits``."""
    id_bytes = len(node.id.encode())
    if id_bytes > limits.max_node_id_bytes:
        raise StreamRefusedError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"node id of {id_bytes} bytes exceeds the limit of {limits.max_node_id_bytes} bytes",
        )
    metadata_bytes = node.metadata.ByteSize()
    if metadata_bytes > limits.max_metadata_bytes:
        raise StreamRefusedError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"node metadata of {metadata_bytes} bytes exceeds the limit of"
            f" {limits.max_metadata_bytes} bytes",
        )


def too_many_types(limits: StreamLimits) -> StreamRefusedError:
    return StreamRefusedError(
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        f"more than {limits.max_types} resource types subscribed on one stream"
        f" (the limit is {limits.max_types})",
    )


def too_many_names(limits: StreamLimits) -> StreamRefusedError:
    return StreamRefusedError(
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        f"more than {limits.max_names} resource names subscribed on one stream"
        f" (the limit is {limits.max_names}, max names per stream)",
    )
