"""What each connected xDS client was sent and what it made of it.

One model serves CSDS, the debug endpoint and ``splitplane status``. A ``ClientRecord`` is owned
by one stream, which reports every response it sends and every ACK or NACK it receives; readers
take ``ClientView``s, immutable copies that are safe to keep and to print.

Readers may run on other threads (the debug endpoint renders off the xDS loop). Nothing a reader
sees is ever changed in place: each event replaces a type's ``TypeStatus`` (an immutable tuple)
with a new one, and a reader copies the dictionaries that hold them in one C-level call, which no
other thread can interleave. The stream pays one small tuple per event and never waits for a
reader.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from itertools import count
from typing import Any, NamedTuple, Protocol

from envoy.config.core.v3.base_pb2 import Node

from xds_server.xds.cache import Resource


class SyncState(StrEnum):
    """Where a client stands for one resource type."""

    NOT_SENT = "NOT_SENT"  # subscribed, nothing sent yet
    STALE = "STALE"  # the latest response is not acknowledged yet
    SYNCED = "SYNCED"  # the client acknowledged the latest response
    NACKED = "NACKED"  # the client rejected the latest response


class TypeStatus(NamedTuple):
    """One client's state for one type URL (immutable: each event makes a new one)."""

    type_url: str
    sent_version: str = ""
    sent_nonce: str = ""
    sent_at: float | None = None
    responses_sent: int = 0
    acked_version: str = ""
    acked_nonce: str = ""
    acked_at: float | None = None
    nacked_version: str = ""
    nacked_nonce: str = ""
    error: str = ""
    error_at: float | None = None
    # The resources of the latest response (shared objects, never copies).
    sent_resources: tuple[Resource, ...] = ()

    @property
    def state(self) -> SyncState:
        """The sync state derived from what was sent, acknowledged and rejected."""
        if not self.sent_nonce:
            return SyncState.NOT_SENT
        if self.nacked_nonce == self.sent_nonce:
            return SyncState.NACKED
        if self.acked_nonce == self.sent_nonce:
            return SyncState.SYNCED
        return SyncState.STALE

    def as_dict(self) -> dict[str, Any]:
        """Plain data for JSON output."""
        return {
            "type_url": self.type_url,
            "state": self.state.value,
            "sent_version": self.sent_version,
            "acked_version": self.acked_version,
            "last_nonce": self.sent_nonce,
            "responses_sent": self.responses_sent,
            "sent_at": self.sent_at,
            "acked_at": self.acked_at,
            "nacked_version": self.nacked_version,
            "error": self.error,
            "error_at": self.error_at,
        }


@dataclass(frozen=True)
class ClientView:
    """One connected client as plain data."""

    stream_id: int
    node_id: str
    node_cluster: str
    role: str
    group: str
    protocol: str  # "sotw" or "delta"
    connected_since: float
    types: tuple[TypeStatus, ...]
    node: Node
    # The SPIFFE ID the client's certificate proved (mutual TLS); "" when none was required.
    identity: str = ""

    @property
    def state(self) -> SyncState:
        """The worst state across types (NACKED, then STALE, then NOT_SENT, then SYNCED)."""
        states = {t.state for t in self.types}
        for worst in (SyncState.NACKED, SyncState.STALE, SyncState.NOT_SENT):
            if worst in states:
                return worst
        return SyncState.SYNCED

    def type_status(self, type_url: str) -> TypeStatus:
        """The status of one type (NOT_SENT when the client never asked for it)."""
        for status in self.types:
            if status.type_url == type_url:
                return status
        return TypeStatus(type_url)

    def as_dict(self) -> dict[str, Any]:
        """Plain data for JSON output."""
        return {
            "node_id": self.node_id,
            "node_cluster": self.node_cluster,
            "role": self.role,
            "group": self.group,
            "protocol": self.protocol,
            "identity": self.identity,
            "connected_since": self.connected_since,
            "state": self.state.value,
            "types": [t.as_dict() for t in self.types],
        }


class ClientObserver(Protocol):
    """Told of every client event (metrics implement this)."""

    def client_connected(self, protocol: str) -> None: ...

    def client_disconnected(self, protocol: str) -> None: ...

    def response_sent(self, type_url: str, size: int) -> None: ...

    def response_acked(self, type_url: str, seconds_since_sent: float) -> None: ...

    def response_rejected(self, type_url: str) -> None: ...


class _NoObserver:
    def client_connected(self, protocol: str) -> None:
        pass

    def client_disconnected(self, protocol: str) -> None:
        pass

    def response_sent(self, type_url: str, size: int) -> None:
        pass

    def response_acked(self, type_url: str, seconds_since_sent: float) -> None:
        pass

    def response_rejected(self, type_url: str) -> None:
        pass


class ClientRecord:
    """The mutable status of one stream; only its stream writes to it."""

    def __init__(
        self,
        stream_id: int,
        node: Node,
        role: str,
        group: str,
        protocol: str,
        *,
        observer: ClientObserver | None = None,
        identity: str = "",
    ) -> None:
        self.observer: ClientObserver = observer or _NoObserver()
        self.stream_id = stream_id
        self.node = node
        self.role = role
        self.group = group
        self.protocol = protocol
        self.identity = identity
        self.connected_since = time.time()
        # Replaced, never changed in place, so that readers on other threads see whole states.
        self._types: dict[str, TypeStatus] = {}

    def _state(self, type_url: str) -> TypeStatus:
        state = self._types.get(type_url)
        if state is None:
            state = self._types[type_url] = TypeStatus(type_url)
        return state

    def subscribed(self, type_url: str) -> None:
        """The client asked for ``type_url``."""
        self._state(type_url)

    def sent(
        self,
        type_url: str,
        version: str,
        nonce: str,
        resources: tuple[Resource, ...],
        size: int = 0,
    ) -> None:
        """A response of ``size`` bytes of resource entries went out; the client now holds
        ``resources``."""
        old = self._state(type_url)
        self._types[type_url] = TypeStatus(
            type_url,
            version,
            nonce,
            time.time(),
            old.responses_sent + 1,
            old.acked_version,
            old.acked_nonce,
            old.acked_at,
            old.nacked_version,
            old.nacked_nonce,
            old.error,
            old.error_at,
            resources,
        )
        self.observer.response_sent(type_url, size)

    def acked(self, type_url: str, nonce: str) -> None:
        """The client accepted the response with ``nonce`` (the latest one sent)."""
        old = self._state(type_url)
        now = time.time()
        if old.acked_nonce != nonce and old.sent_at is not None:
            self.observer.response_acked(type_url, now - old.sent_at)
        self._types[type_url] = TypeStatus(
            type_url,
            old.sent_version,
            old.sent_nonce,
            old.sent_at,
            old.responses_sent,
            old.sent_version,
            nonce,
            now,
            "",
            "",
            "",
            None,
            old.sent_resources,
        )

    def nacked(self, type_url: str, nonce: str, error: str) -> None:
        """The client rejected the response with ``nonce`` (the latest one sent)."""
        old = self._state(type_url)
        if old.nacked_nonce != nonce:
            self.observer.response_rejected(type_url)
        self._types[type_url] = TypeStatus(
            type_url,
            old.sent_version,
            old.sent_nonce,
            old.sent_at,
            old.responses_sent,
            old.acked_version,
            old.acked_nonce,
            old.acked_at,
            old.sent_version,
            nonce,
            error,
            time.time(),
            old.sent_resources,
        )

    def type_status(self, type_url: str) -> TypeStatus:
        """The status of one type (NOT_SENT when the client never asked for it)."""
        return self._types.get(type_url) or TypeStatus(type_url)

    def view(self) -> ClientView:
        """An immutable copy."""
        return ClientView(
            stream_id=self.stream_id,
            node_id=str(self.node.id),
            node_cluster=str(self.node.cluster),
            role=self.role,
            group=self.group,
            protocol=self.protocol,
            connected_since=self.connected_since,
            types=tuple(sorted(self._types.copy().values(), key=_by_type_url)),
            node=self.node,
            identity=self.identity,
        )


class ClientRegistry:
    """Every connected stream's record."""

    def __init__(self, observer: ClientObserver | None = None) -> None:
        self._records: dict[int, ClientRecord] = {}
        self._ids = count(1)
        self._observer: ClientObserver = observer or _NoObserver()

    def connect(
        self, node: Node, role: str, group: str, protocol: str, *, identity: str = ""
    ) -> ClientRecord:
        """A stream identified its node (``identity``: its verified SPIFFE ID, if any); it
        reports to the returned record until it ends."""
        record = ClientRecord(
            next(self._ids),
            node,
            role,
            group,
            protocol,
            observer=self._observer,
            identity=identity,
        )
        self._records[record.stream_id] = record
        self._observer.client_connected(protocol)
        return record

    def disconnect(self, record: ClientRecord) -> None:
        """The stream ended."""
        if self._records.pop(record.stream_id, None) is not None:
            self._observer.client_disconnected(record.protocol)

    def __iter__(self) -> Iterator[ClientRecord]:
        return iter(list(self._records.values()))

    def views(self) -> list[ClientView]:
        """Every connected client, ordered by node id then connection (from any thread)."""
        records = list(self._records.values())  # one C-level copy: no thread interleaves it
        return sorted((r.view() for r in records), key=lambda v: (v.node_id, v.stream_id))


def _by_type_url(status: TypeStatus) -> str:
    return status.type_url
