"""A test xDS client on the raw generated stubs: it sends exactly the requests a test writes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Generic, TypeVar

import grpc
from envoy.config.core.v3.base_pb2 import Node
from envoy.service.discovery.v3 import ads_pb2_grpc
from envoy.service.discovery.v3.discovery_pb2 import (
    DeltaDiscoveryRequest,
    DeltaDiscoveryResponse,
    DiscoveryRequest,
    DiscoveryResponse,
)
from google.protobuf.struct_pb2 import Struct

Req = TypeVar("Req", DiscoveryRequest, DeltaDiscoveryRequest)

RESPONSE_TIMEOUT_S = 10.0


def node(node_id: str, **metadata: str) -> Node:
    """A node with string metadata (``ROLE`` defaults to sidecar)."""
    fields = Struct()
    fields.update({"ROLE": "sidecar", **metadata})
    return Node(id=node_id, cluster="test", metadata=fields)


class _Outbox(Generic[Req]):
    def __init__(self) -> None:
        self.queue: asyncio.Queue[Req | None] = asyncio.Queue()

    async def requests(self) -> AsyncIterator[Req]:
        while (request := await self.queue.get()) is not None:
            yield request


class SotwClient:
    """One ``StreamAggregatedResources`` stream."""

    def __init__(self, channel: grpc.aio.Channel, client_node: Node) -> None:
        self._node: Node | None = client_node
        self._outbox: _Outbox[DiscoveryRequest] = _Outbox()
        stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)
        self.call = stub.StreamAggregatedResources(self._outbox.requests())
        self.names: dict[str, list[str]] = {}

    def request(
        self,
        type_url: str,
        names: Iterable[str] = (),
        nonce: str = "",
        version: str = "",
        *,
        error: str | None = None,
    ) -> None:
        """Send one request; the first one carries the node."""
        self.names[type_url] = list(names)
        request = DiscoveryRequest(
            type_url=type_url,
            resource_names=self.names[type_url],
            response_nonce=nonce,
            version_info=version,
        )
        if error is not None:
            request.error_detail.code = 3
            request.error_detail.message = error
        if self._node is not None:
            request.node.CopyFrom(self._node)
            self._node = None
        self._outbox.queue.put_nowait(request)

    def ack(self, response: DiscoveryResponse, names: Iterable[str] | None = None) -> None:
        """Accept ``response``, keeping (or changing to) a name set."""
        type_url = response.type_url
        chosen = self.names.get(type_url, []) if names is None else names
        self.request(type_url, chosen, response.nonce, response.version_info)

    def nack(self, response: DiscoveryResponse, error: str, accepted_version: str = "") -> None:
        """Reject ``response``."""
        type_url = response.type_url
        names = self.names.get(type_url, [])
        self.request(type_url, names, response.nonce, accepted_version, error=error)

    async def response(self) -> DiscoveryResponse:
        """The next response (fails the test after a generous timeout)."""
        message = await asyncio.wait_for(self.call.read(), RESPONSE_TIMEOUT_S)
        assert isinstance(message, DiscoveryResponse), f"stream ended: {message!r}"
        return message

    async def close(self) -> None:
        """Half-close and cancel the stream."""
        self._outbox.queue.put_nowait(None)
        self.call.cancel()


class DeltaClient:
    """One ``DeltaAggregatedResources`` stream."""

    def __init__(self, channel: grpc.aio.Channel, client_node: Node) -> None:
        self._node: Node | None = client_node
        self._outbox: _Outbox[DeltaDiscoveryRequest] = _Outbox()
        stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)
        self.call = stub.DeltaAggregatedResources(self._outbox.requests())

    def request(
        self,
        type_url: str,
        subscribe: Iterable[str] = (),
        *,
        unsubscribe: Iterable[str] = (),
        initial_versions: Mapping[str, str] | None = None,
        nonce: str = "",
        error: str | None = None,
    ) -> None:
        """Send one request; the first one carries the node."""
        request = DeltaDiscoveryRequest(
            type_url=type_url,
            resource_names_subscribe=list(subscribe),
            resource_names_unsubscribe=list(unsubscribe),
            initial_resource_versions=dict(initial_versions or {}),
            response_nonce=nonce,
        )
        if error is not None:
            request.error_detail.code = 3
            request.error_detail.message = error
        if self._node is not None:
            request.node.CopyFrom(self._node)
            self._node = None
        self._outbox.queue.put_nowait(request)

    def ack(self, response: DeltaDiscoveryResponse) -> None:
        """Accept ``response``."""
        self.request(response.type_url, nonce=response.nonce)

    def nack(self, response: DeltaDiscoveryResponse, error: str) -> None:
        """Reject ``response``."""
        self.request(response.type_url, nonce=response.nonce, error=error)

    async def response(self) -> DeltaDiscoveryResponse:
        """The next response (fails the test after a generous timeout)."""
        message = await asyncio.wait_for(self.call.read(), RESPONSE_TIMEOUT_S)
        assert isinstance(message, DeltaDiscoveryResponse), f"stream ended: {message!r}"
        return message

    async def close(self) -> None:
        """Half-close and cancel the stream."""
        self._outbox.queue.put_nowait(None)
        self.call.cancel()
