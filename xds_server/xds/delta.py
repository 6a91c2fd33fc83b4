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

from xds_server.xds.ads import Write, XdsStream, identity, run_admitted, shared_names
from xds_server.xds.cache import (
    CLUSTER,
    ENDPOINT,
    Resource,
    Selection,
    Snapshot,
    SnapshotCache,
    length_delimited,
)
from xds_server.xds.client_status import ClientRegistry
from xds_server.xds.identity import AccessControl
from xds_server.xds.limits import StreamLimits, for_log

log = logging.getLogger(__name__)


@dataclass
class _DeltaSubscription:
    """One type on one delta stream."""

    names: set[str] = field(default_factory=set)
    shared: frozenset[str] | None = None  # ``names``, shared across streams; None after a change
    wildcard: bool = False
    held: dict[str, str] = field(default_factory=dict)  # name -> version the client holds
    # The selection the client holds exactly (``held`` is its names and versions), while
    # nothing else changed what it holds: the next push sends what changed since.
    taken: Selection | None = None
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

    def __init__(
        self,
        cache: SnapshotCache,
        registry: ClientRegistry,
        write: Write,
        limits: StreamLimits | None = None,
    ) -> None:
        super().__init__(cache, registry, write, limits)
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
        if request.resource_names_subscribe or request.resource_names_unsubscribe:
            sub.taken = None
        nonce = str(request.response_nonce)
        if nonce and nonce == sub.nonce:
            if request.HasField("error_detail"):
                error = str(request.error_detail.message)
                log.warning(
                    "%s rejected %s: %s",
                    for_log(self.record.node.id),
                    for_log(type_url),
                    for_log(error, 2000),
                )
                self.record.nacked(type_url, nonce, error)
            else:
                self.record.acked(type_url, nonce)
        added: list[str] = []
        for name in request.resource_names_subscribe:
            if name == "*":
                sub.wildcard = True
            else:
                added.append(str(name))
        if added:
            sub.names.update(added)
            sub.shared = None
        dropped: list[str] = []
        for name in request.resource_names_unsubscribe:
            if name == "*":
                sub.wildcard = False
            else:
                dropped.append(str(name))
                sub.names.discard(str(name))
                sub.held.pop(str(name), None)
                sub.shared = None
        self.hold(type_url, added, dropped)
        # An ACK or NACK names nothing: nothing new to send.
        return (
            first
            or len(request.resource_names_subscribe) > 0
            or len(request.resource_names_unsubscribe) > 0
        )

    async def push(self, snapshot: Snapshot) -> None:
        for type_url in self.types_to_push(snapshot):
            sub = self._subscriptions[type_url]
            resources = snapshot.of_type(type_url)
            if sub.wildcard:
                selection = resources.select(None)
            else:
                if sub.shared is None:
                    sub.shared = shared_names(sub.names)
                # Streams subscribed to the same names share one selection and its version.
                selection = resources.select(sub.shared)
            held, by_name = sub.held, resources.by_name
            if sub.taken is not None:
                since = selection.changed_since(sub.taken)
                changed, removed = list(since.resources), list(since.removed)
            else:
                changed = [r for r in selection.resources if held.get(r.name) != r.version]
                removed = sorted(
                    n for n in held if n not in by_name or not (sub.wildcard or n in sub.names)
                )
            sub.taken = selection
            if not changed and not removed and (sub.responded or not sub.wildcard):
                continue
            for resource in changed:
                held[resource.name] = resource.version
            if type_url == CLUSTER:
                self._rewarm(changed)
            for name in removed:
                del held[name]
            nonce = self.next_nonce()
            sub.nonce, sub.responded = nonce, True
            entries = b"".join(r.delta_entry for r in changed)
            # What the client holds now is exactly the selection.
            self.record.sent(type_url, selection.version, nonce, selection.resources, len(entries))
            await self._write(delta_response(type_url, selection.version, entries, removed, nonce))

    def _rewarm(self, clusters: list[Resource]) -> None:
        """Send the endpoints of ``clusters`` again after them, changed or not.

        Envoy re-warms a changed cluster: it waits for the cluster's endpoints (15 s at most)
        before using it, and in delta xDS does not ask for them, as it already holds them. An
        EDS cluster's endpoints are named after the cluster.
        """
        endpoints = self._subscriptions.get(ENDPOINT)
        if endpoints is not None:
            for cluster in clusters:
                endpoints.held.pop(cluster.name, None)
            if clusters:
                endpoints.taken = None


def delta_method_handler(
    cache: SnapshotCache,
    registry: ClientRegistry,
    access: AccessControl | None = None,
    limits: StreamLimits | None = None,
) -> grpc.RpcMethodHandler[DeltaDiscoveryRequest, bytes]:
    """The ``DeltaAggregatedResources`` handler; ``access`` decides who may open a stream."""
    gate = access or AccessControl()

    async def stream(
        requests: AsyncIterator[DeltaDiscoveryRequest],
        context: grpc.aio.ServicerContext[bytes, bytes],
    ) -> None:
        await run_admitted(
            DeltaStream(cache, registry, context.write, limits), gate, requests, context
        )

    return grpc.stream_stream_rpc_method_handler(
        stream,
        request_deserializer=DeltaDiscoveryRequest.FromString,
        response_serializer=identity,
    )
