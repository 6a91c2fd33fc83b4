"""`splitplane status`: one row per connected proxy, a column per xDS type.

Like `istioctl proxy-status`; the last column is the identity the proxy's client certificate
proved (mutual TLS), ``-`` without one. Exit 1 when any proxy has NACKed a type, or has left a
response unacknowledged (STALE) for longer than the grace period.

`splitplane status --traffic` shows instead, per VirtualService route and destination, the
configured weight beside the share of requests and the error rate the proxies reported
(`/debug/traffic`).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from xds_server.cli.debug_client import (
    DebugEndpointError,
    add_debug_address,
    fetch_json,
    tls_from_args,
    token_from_args,
)

TYPE_COLUMNS = (("CDS", "clusters"), ("EDS", "endpoints"), ("LDS", "listeners"), ("RDS", "routes"))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_debug_address(parser)
    parser.add_argument(
        "--grace",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="how long a proxy may be STALE before it counts as a failure (default 5)",
    )
    parser.add_argument(
        "--traffic",
        action="store_true",
        help="per VirtualService route: configured weight, observed share and error rate of each"
        " destination, from the proxies' load reports",
    )
    parser.add_argument(
        "-o",
        "--output",
        choices=("table", "json"),
        default="table",
        help="table (default) or the raw JSON (/debug/clients, or /debug/traffic with --traffic)",
    )


def cell(entry: Mapping[str, Any] | None, now: float, grace: float) -> tuple[str, bool]:
    """The text of one type column and whether it is a failure."""
    if entry is None:
        return "NOT_SENT", False
    state = str(entry["state"])
    if state == "NACKED":
        return f"NACKED ({str(entry.get('nacked_version', ''))[:8]})", True
    if state == "STALE":
        sent_at = entry.get("sent_at")
        age = now - datetime.fromisoformat(sent_at).timestamp() if sent_at else 0.0
        return f"STALE ({age:.0f}s)", age > grace
    if state == "SYNCED":
        return f"SYNCED ({str(entry.get('acked_version', ''))[:8]})", False
    return state, False


def table(clients: Sequence[Mapping[str, Any]], now: float, grace: float) -> tuple[str, bool]:
    """The status table and whether any proxy is failing."""
    header = [
        "NAME",
        "ROLE",
        "GROUP",
        "PROTOCOL",
        *(column for column, _ in TYPE_COLUMNS),
        "IDENTITY",
    ]
    rows = [header]
    failing = False
    for client in clients:
        by_type = {entry["type"]: entry for entry in client["types"]}
        cells = []
        for _, short in TYPE_COLUMNS:
            text, failed = cell(by_type.get(short), now, grace)
            failing |= failed
            cells.append(text)
        # The SPIFFE ID the proxy's certificate proved; "-" when the server did not ask for one.
        identity = client.get("identity") or "-"
        rows.append(
            [
                client["node_id"],
                client["role"],
                client["group"],
                client["protocol"],
                *cells,
                identity,
            ]
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = [
        "  ".join(value.ljust(width) for value, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
    return "\n".join(lines), failing


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def traffic_table(document: Mapping[str, Any]) -> str:
    """One row per destination of every VirtualService route: configured weight and share,
    observed share, requests and error rate over the window."""
    header = ["VIRTUALSERVICE", "HOST", "ROUTE", "DESTINATION", "WEIGHT", "OBSERVED"]
    header += ["REQUESTS", "ERRORS"]
    rows = [header]
    for route in document["routes"]:
        label = str(route["route"]) + (f" ({route['name']})" if route.get("name") else "")
        for destination in route["destinations"]:
            weight = f"{destination['weight']} ({_percent(destination['configured_share'])})"
            rows.append(
                [
                    route["virtual_service"],
                    route["host"] + ("" if route["scope"] == "mesh" else " (gateway)"),
                    label,
                    destination["cluster"],
                    weight,
                    _percent(destination["observed_share"]),
                    str(destination["requests"]),
                    _percent(destination["error_rate"]),
                ]
            )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = [
        "  ".join(value.ljust(width) for value, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
    return "\n".join(lines)


def run_traffic(args: argparse.Namespace) -> int:
    try:
        data = fetch_json(
            args.debug_address,
            "/debug/traffic",
            token=token_from_args(args),
            tls=tls_from_args(args),
        )
    except DebugEndpointError as error:
        print(f"splitplane status: {error}", file=sys.stderr)
        return 2
    if args.output == "json":
        print(json.dumps(data, indent=2))
        return 0
    print(traffic_table(data))
    if not data["routes"]:
        print("(no VirtualService routes)")
    else:
        print(f"(observed over the last {data['window_seconds']:g} s of load reports)")
    return 0


def run(args: argparse.Namespace) -> int:
    if args.traffic:
        return run_traffic(args)
    try:
        data = fetch_json(
            args.debug_address,
            "/debug/clients",
            token=token_from_args(args),
            tls=tls_from_args(args),
        )
    except DebugEndpointError as error:
        print(f"splitplane status: {error}", file=sys.stderr)
        return 2
    clients = data["clients"]
    text, failing = table(clients, time.time(), args.grace)
    if args.output == "json":
        print(json.dumps(data, indent=2))
    else:
        print(text)
        if not clients:
            print("(no proxies connected)")
    return 1 if failing else 0
