"""ADS, state of the world: ``StreamAggregatedResources``.

A stream holds, per type, what the client subscribed to and what it was last sent; nothing
else. When the snapshot changes or a request changes the subscription, the stream compares the
two and sends what differs, in push order (an ACK that changes nothing wakes nothing). A stream
whose client does not read waits in its own write while the snapshot moves on; when it resumes
it sends only the latest state (latest wins, no queue).

Responses are assembled from the resources' pre-serialized bytes; the gRPC method serializes
with the identity function, so no stream ever re-serializes a resource.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from itertools import count
from typing import Generic, Protocol, TypeVar

import grpc
from envoy.config.core.v3.base_pb2 import Node
from envoy.service.discovery.v3.discovery_pb2 import DiscoveryRequest

from xds_server.xds.cache import (
    CHANGES_ONLY_TYPES,
    PUSH_ORDER,
    GroupLimitError,
    Selection,
    Snapshot,
    SnapshotCache,
    length_delimited,
    short_hash,
)
from xds_server.xds.client_status import ClientRecord, ClientRegistry
from xds_server.xds.identity import AccessControl
from xds_server.xds.limits import (
    StreamLimits,
    StreamRefusedError,
    check_node,
    for_log,
    too_many_names,
    too_many_types,
)
from xds_server.xds.nodes import group_of, node_role

log = logging.getLogger(__name__)

ADS_SERVICE = "envoy.service.discovery.v3.AggregatedDiscoveryService"

Write = Callable[[bytes], Awaitable[None]]


class XdsRequest(Protocol):
    """What the stream base reads from either request type."""

    node: Node
    type_url: str

    def HasField(self, field_name: str) -> bool: ...  # noqa: N802 (protobuf's name)


RequestT = TypeVar("RequestT", bound=XdsRequest)


_name_sets: weakref.WeakValueDictionary[str, frozenset[str]] = weakref.WeakValueDictionary()


def shared_names(names: set[str]) -> frozenset[str]:
    """``names`` as a frozenset shared with every stream subscribed to the same names.

    Sidecars of one group mostly subscribe to the same long list of names; sharing one set
    keeps a stream's memory independent of the list's length.
    """
    key = short_hash("\0".join(sorted(names)).encode())
    found = _name_sets.get(key)
    if found is None or found != names:
        found = frozenset(names)
        _name_sets[key] = found
    return found


def identity(body: bytes) -> bytes:
    """The response serializer: responses are already bytes."""
    return body


def push_order(type_urls: Iterable[str]) -> list[str]:
    """Type URLs in push order: CDS, EDS, LDS, RDS, then any others by name."""
    urls = set(type_urls)
    return [u for u in PUSH_ORDER if u in urls] + sorted(urls - set(PUSH_ORDER))


class XdsStream(ABC, Generic[RequestT]):
    """One ADS stream: reads requests in a task, pushes on every request or snapshot change.

    A push looks only at the types that may have changed: those a request touched, and, when
    the group's snapshot moved, the types a snapshot serves. A type no snapshot serves is
    answered when it is asked for and never looked at again, so a client subscribing to many
    unknown types costs one step each, not a pass over all of them per request.
    """

    protocol = ""

    def __init__(
        self,
        cache: SnapshotCache,
        registry: ClientRegistry,
        write: Write,
        limits: StreamLimits | None = None,
    ) -> None:
        self._cache = cache
        self._registry = registry
        self._write = write
        self._limits = limits or StreamLimits()
        self._wake = asyncio.Event()
        self._nonces = count(1)
        self._record: ClientRecord | None = None
        self._unwatch: Callable[[], None] | None = None
        self._types: set[str] = set()  # subscribed type URLs
        self._touched: set[str] = set()  # types a request changed since the last push
        self._moved = True  # the group's snapshot changed since the last push
        self._served: frozenset[str] = frozenset(PUSH_ORDER)  # types the last snapshot served
        self._names: dict[str, set[str]] = {}  # type URL -> the names this stream holds
        self.identity = ""  # the verified SPIFFE ID of the client, "" without mutual TLS
        self.namespace: str | None = None  # its namespace, which overrides the node metadata
        self._held = 0  # names held over every type

    @property
    def record(self) -> ClientRecord:
        """The status record (exists once the first request named the node)."""
        assert self._record is not None
        return self._record

    def next_nonce(self) -> str:
        """A nonce unique within this stream."""
        return str(next(self._nonces))

    async def run(self, requests: AsyncIterator[RequestT]) -> None:
        """Serve the stream until the client closes it; raises ``StreamRefusedError`` when the
        client went past a limit."""
        reader = asyncio.create_task(self._read(requests))
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                if reader.done():
                    refused = None if reader.cancelled() else reader.exception()
                    if isinstance(refused, StreamRefusedError):
                        raise refused
                    return
                if self._record is None:
                    continue
                snapshot = self._cache.snapshot(self._record.group)
                if snapshot is not None:
                    await self.push(snapshot)
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, grpc.RpcError):
                await reader
            if self._unwatch is not None:
                self._unwatch()
            if self._record is not None:
                for type_url, names in self._names.items():
                    self._cache.subscribed(self._record.group, type_url, (), names)
                self._registry.disconnect(self._record)

    async def _read(self, requests: AsyncIterator[RequestT]) -> None:
        try:
            async for request in requests:
                first = self._record is None
                if first:
                    self._identify(request.node)
                if self.handle(request) or first:
                    self._touched.add(str(request.type_url))
                    self._wake.set()
                del request  # a request can be large; keep none while idle
        finally:
            self._wake.set()

    def _identify(self, node: Node) -> None:
        check_node(node, self._limits)
        group = group_of(node, self.namespace)
        try:
            self._unwatch = self._cache.watch(group.key, self._snapshot_moved)
        except GroupLimitError as refused:
            log.warning("%s stream from %s refused: %s", self.protocol, for_log(node.id), refused)
            raise StreamRefusedError(grpc.StatusCode.RESOURCE_EXHAUSTED, str(refused)) from None
        self._record = self._registry.connect(
            node, node_role(node), group.key, self.protocol, identity=self.identity
        )
        log.info(
            "%s stream from %s (group %s)",
            self.protocol,
            for_log(node.id),
            group.key,
            extra={"identity": self.identity} if self.identity else None,
        )

    def _snapshot_moved(self) -> None:
        self._moved = True
        self._wake.set()

    def types_to_push(self, snapshot: Snapshot) -> list[str]:
        """The subscribed types whose response may differ from what was sent, in push order:
        those requests touched and, if the snapshot moved, those it (or the last one) serves."""
        types, self._touched = self._touched, set()
        if self._moved:
            self._moved = False
            served = frozenset(snapshot.types)
            types.update(t for t in self._served | served if t in self._types)
            self._served = served | frozenset(PUSH_ORDER)
        return push_order(types)

    def subscribe(self, type_url: str) -> None:
        """Note a type the client asks for the first time."""
        if len(self._types) >= self._limits.max_types:
            raise too_many_types(self._limits)
        self._types.add(type_url)
        self.record.subscribed(type_url)

    def hold(self, type_url: str, added: Iterable[str], removed: Iterable[str]) -> None:
        """Tell the cache which names of ``type_url`` this stream now holds and lets go of (it
        builds proxyless clients' listeners for the names held)."""
        held = self._names.setdefault(type_url, set())
        added = [name for name in added if name not in held]
        removed = [name for name in removed if name in held]
        self._held += len(added) - len(removed)
        if self._held > self._limits.max_names:
            raise too_many_names(self._limits)
        held.update(added)
        held.difference_update(removed)
        if added or removed:
            self._cache.subscribed(self.record.group, type_url, added, removed)

    @abstractmethod
    def handle(self, request: RequestT) -> bool:
        """Apply one request to the stream's subscription state; return whether the
        subscription changed (only then may the client be owed a response)."""

    @abstractmethod
    async def push(self, snapshot: Snapshot) -> None:
        """Send whatever the client lacks from ``snapshot``."""


@dataclass
class _Subscription:
    """One type on one SotW stream: what the client asked for and what it was last sent."""

    names: frozenset[str] = frozenset()
    legacy_wildcard: bool = False
    wildcard: bool = False
    nonce: str = ""
    sent_version: str | None = None
    answered: bool = False  # the client has ACKed or NACKed the response ``nonce`` names
    # What the client holds of a type it names resources of (EDS, RDS): the last selection
    # sent, unless it was rejected or asked for again. The next response carries only what
    # changed since (leaving a resource out of such a response means "unchanged").
    held: Selection | None = None


def sotw_response(type_url: str, version: str, entries: bytes, nonce: str) -> bytes:
    """A serialized ``DiscoveryResponse`` from pre-serialized resource entries."""
    return (
        length_delimited(1, version.encode())
        + entries
        + length_delimited(4, type_url.encode())
        + length_delimited(5, nonce.encode())
    )


class SotwStream(XdsStream[DiscoveryRequest]):
    """A state-of-the-world ADS stream."""

    protocol = "sotw"

    def __init__(
        self,
        cache: SnapshotCache,
        registry: ClientRegistry,
        write: Write,
        limits: StreamLimits | None = None,
    ) -> None:
        super().__init__(cache, registry, write, limits)
        self._subscriptions: dict[str, _Subscription] = {}

    def handle(self, request: DiscoveryRequest) -> bool:
        type_url = str(request.type_url)
        sub = self._subscriptions.get(type_url)
        first = sub is None
        if sub is None:
            sub = self._subscriptions[type_url] = _Subscription()
            self.subscribe(type_url)
        nonce = str(request.response_nonce)
        if nonce and not sub.nonce:
            # Nothing of this type was sent on this stream: the nonce is from an earlier stream
            # (a proxy reconnecting). Take the request as a subscription, as go-control-plane
            # does; treating it as stale would leave the client waiting for ever.
            nonce = ""
        elif nonce and nonce != sub.nonce:
            log.debug("stale %s request (nonce %s, latest %s) ignored", type_url, nonce, sub.nonce)
            return first
        again = False
        if nonce and sub.answered:
            # The response was answered already: the client asks for the resources again.
            # Envoy does when it re-warms a changed cluster (or listener), with the very same
            # names and nonce, and waits for an answer (15 s) even if nothing else changed.
            again = sub.sent_version is not None
            sub.sent_version = sub.held = None
        elif nonce:
            sub.answered = True
            if request.HasField("error_detail"):
                error = str(request.error_detail.message)
                log.warning(
                    "%s rejected %s: %s",
                    for_log(self.record.node.id),
                    for_log(type_url),
                    for_log(error, 2000),
                )
                self.record.nacked(type_url, nonce, error)
                sub.held = None  # what it holds is unknown: send everything next time
            else:
                self.record.acked(type_url, nonce)
        names = set(request.resource_names)
        if first and not names:
            sub.legacy_wildcard = True
        elif names:
            sub.legacy_wildcard = False
        wildcard = sub.legacy_wildcard or "*" in names
        names.discard("*")
        changed = first or again or wildcard != sub.wildcard
        sub.wildcard = wildcard
        if names != sub.names:  # an ACK usually repeats the names: keep the shared set
            self.hold(type_url, names - sub.names, sub.names - names)
            sub.names = shared_names(names)
            changed = True
        return changed

    async def push(self, snapshot: Snapshot) -> None:
        for type_url in self.types_to_push(snapshot):
            sub = self._subscriptions[type_url]
            selection = snapshot.of_type(type_url).select(None if sub.wildcard else sub.names)
            if selection.version == sub.sent_version:
                continue
            if sub.sent_version is None and not selection.resources and not sub.wildcard:
                continue
            nonce = self.next_nonce()
            sub.sent_version, sub.nonce, sub.answered = selection.version, nonce, False
            if sub.held is None:
                entries = selection.sotw_entries
            else:
                entries = selection.changed_since(sub.held).sotw_entries
            partial = type_url in CHANGES_ONLY_TYPES and not sub.wildcard
            sub.held = selection if partial else None
            self.record.sent(type_url, selection.version, nonce, selection.resources, len(entries))
            await self._write(sotw_response(type_url, selection.version, entries, nonce))


async def run_admitted(
    stream: XdsStream[RequestT],
    access: AccessControl,
    requests: AsyncIterator[RequestT],
    context: grpc.aio.ServicerContext[bytes, bytes],
) -> None:
    """Serve ``stream`` once ``access`` has admitted its first request's node (a refused stream
    ends with PERMISSION_DENIED before it is registered anywhere)."""
    admitted = await access.admit(requests, context)
    if admitted is None:
        return
    checked, identity = admitted
    if identity is not None:
        stream.identity, stream.namespace = identity.uri, identity.namespace
    await serve_stream(stream, checked, context)


async def serve_stream(
    stream: XdsStream[RequestT],
    requests: AsyncIterator[RequestT],
    context: grpc.aio.ServicerContext[bytes, bytes],
) -> None:
    """Run ``stream``; a client past a limit gets the status that names it.

    A stream cancelled because the client left or the server is stopping just ends: that is how
    every stream of a server shutting down ends, not an error to log.
    """
    try:
        await stream.run(requests)
    except StreamRefusedError as refused:
        await context.abort(refused.code, refused.details)
    except asyncio.CancelledError:
        log.debug("%s stream cancelled", stream.protocol)


def sotw_method_handler(
    cache: SnapshotCache,
    registry: ClientRegistry,
    access: AccessControl | None = None,
    limits: StreamLimits | None = None,
) -> grpc.RpcMethodHandler[DiscoveryRequest, bytes]:
    """The ``StreamAggregatedResources`` handler; ``access`` decides who may open a stream."""
    gate = access or AccessControl()

    async def stream(
        requests: AsyncIterator[DiscoveryRequest], context: grpc.aio.ServicerContext[bytes, bytes]
    ) -> None:
        await run_admitted(
            SotwStream(cache, registry, context.write, limits), gate, requests, context
        )

    return grpc.stream_stream_rpc_method_handler(
        stream,
        request_deserializer=DiscoveryRequest.FromString,
        response_serializer=identity,
    )
