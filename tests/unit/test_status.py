"""`splitplane status`: the proxy-status table and its exit code."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from xds_server.cli.status import table

NOW = 1_800_000_000.0


def iso(seconds_ago: float) -> str:
    return datetime.fromtimestamp(NOW - seconds_ago, UTC).isoformat()


def client(node: str, **states: dict[str, Any]) -> dict[str, Any]:
    return {
        "node_id": node,
        "role": "sidecar",
        "group": "sidecar:15001",
        "protocol": "sotw",
        "types": [{"type": short, **entry} for short, entry in states.items()],
    }


SYNCED = {"state": "SYNCED", "acked_version": "0123456789abcdef"}


def test_one_row_per_proxy_one_column_per_type() -> None:
    text, failing = table([client("a", clusters=SYNCED, endpoints=SYNCED)], NOW, grace=5)

    header, row = text.splitlines()
    assert header.split() == [
        "NAME", "ROLE", "GROUP", "PROTOCOL", "CDS", "EDS", "LDS", "SRDS", "RDS", "IDENTITY",
    ]  # fmt: skip
    assert row.split() == [
        "a", "sidecar", "sidecar:15001", "sotw",
        "SYNCED", "(01234567)", "SYNCED", "(01234567)", "NOT_SENT", "NOT_SENT", "NOT_SENT", "-",
    ]  # fmt: skip
    assert not failing


def test_each_proxy_shows_the_identity_its_certificate_proved() -> None:
    verified = {**client("a", clusters=SYNCED), "identity": "spiffe://cluster.local/ns/a/sa/web"}
    text, _ = table([verified, client("b")], NOW, grace=5)

    _, row_a, row_b = text.splitlines()
    assert row_a.split()[-1] == "spiffe://cluster.local/ns/a/sa/web"
    assert row_b.split()[-1] == "-"


def test_a_nacked_proxy_fails() -> None:
    nacked = {"state": "NACKED", "nacked_version": "deadbeef00"}
    text, failing = table([client("a", clusters=nacked)], NOW, grace=5)

    assert "NACKED (deadbeef)" in text
    assert failing


def test_stale_fails_only_after_the_grace_period() -> None:
    fresh = {"state": "STALE", "sent_at": iso(1)}
    old = {"state": "STALE", "sent_at": iso(30)}

    assert table([client("a", routes=fresh)], NOW, grace=5)[1] is False
    text, failing = table([client("a", routes=old)], NOW, grace=5)
    assert "STALE (30s)" in text
    assert failing
