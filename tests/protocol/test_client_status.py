"""The client-status model: states derived from what was sent, acknowledged and rejected."""

from __future__ import annotations

import json

import pytest
from envoy.config.core.v3.base_pb2 import Node

from xds_server.xds.cache import CLUSTER, ROUTE
from xds_server.xds.client_status import ClientRecord, ClientRegistry, SyncState


def record_after(*events: tuple[str, str]) -> ClientRecord:
    record = ClientRegistry().connect(Node(id="n"), "sidecar", "sidecar:15001", "sotw")
    record.subscribed(CLUSTER)
    for event, nonce in events:
        if event == "sent":
            record.sent(CLUSTER, f"v{nonce}", nonce, ())
        elif event == "ack":
            record.acked(CLUSTER, nonce)
        else:
            record.nacked(CLUSTER, nonce, "bad cluster")
    return record


@pytest.mark.parametrize(
    ("events", "state"),
    [
        ((), SyncState.NOT_SENT),
        ((("sent", "1"),), SyncState.STALE),
        ((("sent", "1"), ("ack", "1")), SyncState.SYNCED),
        ((("sent", "1"), ("ack", "1"), ("sent", "2")), SyncState.STALE),
        ((("sent", "1"), ("nack", "1")), SyncState.NACKED),
        ((("sent", "1"), ("nack", "1"), ("sent", "2")), SyncState.STALE),
        ((("sent", "1"), ("nack", "1"), ("sent", "2"), ("ack", "2")), SyncState.SYNCED),
    ],
)
def test_state_per_type(events: tuple[tuple[str, str], ...], state: SyncState) -> None:
    assert record_after(*events).type_status(CLUSTER).state is state


def test_a_client_is_as_bad_as_its_worst_type() -> None:
    record = record_after(("sent", "1"), ("nack", "1"))
    record.subscribed(ROUTE)
    assert record.view().state is SyncState.NACKED


def test_the_view_is_plain_json_ready_data() -> None:
    record = record_after(("sent", "1"), ("nack", "1"))
    data = record.view().as_dict()
    json.dumps(data)
    assert data["node_id"] == "n"
    assert data["group"] == "sidecar:15001"
    (cluster,) = data["types"]
    assert (cluster["state"], cluster["nacked_version"], cluster["error"]) == (
        "NACKED",
        "v1",
        "bad cluster",
    )


def test_a_disconnected_client_is_no_longer_listed() -> None:
    registry = ClientRegistry()
    record = registry.connect(Node(id="gone"), "sidecar", "sidecar:15001", "sotw")
    registry.disconnect(record)
    assert registry.views() == []
