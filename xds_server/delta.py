"""ADS, incremental: ``DeltaAggregatedResources``.

Per type, a stream keeps the names the client subscribed to and the version of every resource
the client holds (seeded from ``initial_resource_versions`` on reconnect). A push sends the
resources whose version differs and names the ones that are gone. What was sent counts as held,
so a rejected version is not sent again; the next new version is.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import grpc
from envoy.service.discovery.v3.discovery_pb2 import DeltaDiscoveryRequest

from xds_server.ads import Write, XdsStream, identity
from xds_server.cache import Resource, Snapshot, SnapshotCache, length_delimited, set_version
from xds_server.client_status import ClientRegistry

log = logging.getLogger(__name__)


@dataclass
class _DeltaSubscription:
    """One type on one delta stream."""

    names: set[str] = field(default_factory=set)
    wildcard: bool = False
    held: dict[str, str] = field(default_factory=dict)  # name -> version the client holds
    nonce: str = ""
    responded: bool = False


def delta_response(
    type_url: str, version: str, entries: bytes, removed: list[str], nonce: str
) -> bytes:
    """A serialized ``DeltaDiscoveryResponse`` from pre-serialized resource entries."""
    return (
        length_delimited(1, version.encode())
        + entries
        + length_delimited(4, type_url.encode())
        + length_delimited(5, nonce.encode())
        + b"".join(length_delimited(6, name.encode()) for name in removed)
    )


class DeltaStream(XdsStream[DeltaDiscoveryRequest]):
    """An incremental ADS stream."""

    protocol = "delta"

    def __init__(self, cache: SnapshotCache, registry: ClientRegistry, write: Write) -> None:
        super().__init__(cache, registry, write)
        self._subscriptions: dict[str, _DeltaSubscription] = {}

    def handle(self, request: DeltaDiscoveryRequest) -> bool:
        type_url = str(request.type_url)
        sub = self._subscriptions.get(type_url)
        first = sub is None
        if sub is None:
            sub = self._subscriptions[type_url] = _DeltaSubscription()
            self.subscribe(type_url)
            sub.held = {str(k): str(v) for k, v in request.initial_resource_versions.items()}
            sub.wildcard = not request.resource_names_subscribe
        nonce = str(request.response_nonce)
        if nonce and nonce == sub.nonce:
            if request.HasField("error_detail"):
                error = str(request.error_detail.message)
                log.warning("%s rejected %s: %s", self.record.node.id, type_url, error)
                self.record.nacked(type_url, nonce, error)
            else:
                self.record.acked(type_url, nonce)
        for name in request.resource_names_subscribe:
            if name == "*":
                sub.wildcard = True
            else:
                sub.names.add(str(name))
        for name in request.resource_names_unsubscribe:
            if name == "*":
                sub.wildcard = False
            else:
                sub.names.discard(str(name))
                sub.held.pop(str(name), None)
        # An ACK or NACK names nothing: nothing new to send.
        return (
            first
            or len(request.resource_names_subscribe) > 0
            or len(request.resource_names_unsubscribe) > 0
        )

    async def push(self, snapshot: Snapshot) -> None:
        for type_url in self._order:
            sub = self._subscriptions[type_url]
            resources = snapshot.of_type(type_url)
            if sub.wildcard:
                wanted = dict(resources.by_name)
                version = resources.version
            else:
                wanted = {n: resources.by_name[n] for n in sub.names if n in resources.by_name}
                version = set_version(wanted.values())
            changed = [r for n, r in sorted(wanted.items()) if sub.held.get(n) != r.version]
            removed = sorted(n for n in sub.held if n not in wanted)
            if not changed and not removed and (sub.responded or not sub.wildcard):
                continue
            for resource in changed:
                sub.held[resource.name] = resource.version
            for name in removed:
                del sub.held[name]
            nonce = self.next_nonce()
            sub.nonce, sub.responded = nonce, True
            held: tuple[Resource, ...] = tuple(wanted[n] for n in sorted(sub.held))
            entries = b"".join(r.delta_entry for r in changed)
            self.record.sent(type_url, version, nonce, held, len(entries))
            await self._write(delta_response(type_url, version, entries, removed, nonce))


def delta_method_handler(
    cache: SnapshotCache, registry: ClientRegistry
) -> grpc.RpcMethodHandler[DeltaDiscoveryRequest, bytes]:
    """The ``DeltaAggregatedResources`` handler."""

    async def stream(
        requests: AsyncIterator[DeltaDiscoveryRequest],
        context: grpc.aio.ServicerContext[bytes, bytes],
    ) -> None:
        await DeltaStream(cache, registry, context.write).run(requests)

    return grpc.stream_stream_rpc_method_handler(
        stream,
        request_deserializer=DeltaDiscoveryRequest.FromString,
        response_serializer=identity,
    )
