"""`splitplane status`: one row per connected proxy, a column per xDS type.

Like `istioctl proxy-status`; the IDENTITY column is the identity the proxy's client
certificate proved (mutual TLS), ``-`` without one. Exit 1 when any proxy has NACKed a type, or
has left a response unacknowledged (STALE) for longer than the grace period.

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

import yaml

from xds_server.cli import replicas
from xds_server.cli.config_tables import render, use_colour
from xds_server.cli.debug_client import DebugEndpointError, add_debug_address

TYPE_COLUMNS = (
    ("CDS", "clusters"),
    ("EDS", "endpoints"),
    ("LDS", "listeners"),
    ("SRDS", "scopes"),
    ("RDS", "routes"),
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_debug_address(parser)
    replicas.add_arguments(parser)
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
        choices=("table", "wide", "json", "yaml"),
        default="table",
        help="table (default), wide (whole versions), or the /debug/clients JSON (or YAML) of"
        " every replica, each client naming its replica (/debug/traffic with --traffic)",
    )


def cell(
    entry: Mapping[str, Any] | None, now: float, grace: float, *, wide: bool = False
) -> tuple[str, bool]:
    """The text of one type column and whether it is a failure; ``wide`` gives whole versions."""
    cut = None if wide else 8
    if entry is None:
        return "NOT_SENT", False
    state = str(entry["state"])
    if state == "NACKED":
        return f"NACKED ({str(entry.get('nacked_version', ''))[:cut]})", True
    if state == "STALE":
        sent_at = entry.get("sent_at")
        age = now - datetime.fromisoformat(sent_at).timestamp() if sent_at else 0.0
        return f"STALE ({age:.0f}s)", age > grace
    if state == "SYNCED":
        return f"SYNCED ({str(entry.get('acked_version', ''))[:cut]})", False
    return state, False


def table(
    clients: Sequence[Mapping[str, Any]],
    now: float,
    grace: float,
    *,
    replica_column: bool = False,
    wide: bool = False,
    colour: bool = False,
) -> tuple[str, bool]:
    """The status table and whether any proxy is failing. ``replica_column`` names the
    control-plane replica each proxy is connected to (like istioctl's ISTIOD column)."""
    header = [
        "NAME",
        "ROLE",
        "GROUP",
        "PROTOCOL",
        *(column for column, _ in TYPE_COLUMNS),
        "IDENTITY",
    ]
    if replica_column:
        header.append("REPLICA")
    rows = []
    failing = False
    for client in clients:
        by_type = {entry["type"]: entry for entry in client["types"]}
        cells = []
        for _, short in TYPE_COLUMNS:
            text, failed = cell(by_type.get(short), now, grace, wide=wide)
            failing |= failed
            cells.append(text)
        # The SPIFFE ID the proxy's certificate proved; "-" when the server did not ask for one.
        identity = client.get("identity") or "-"
        row = [
            client["node_id"],
            client["role"],
            client["group"],
            client["protocol"],
            *cells,
            identity,
        ]
        if replica_column:
            row.append(str(client.get("replica", "")))
        rows.append(row)
    return render((header, rows), colour=colour), failing


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
    """``status --traffic``: each replica's ``/debug/traffic`` (a proxy reports its load to the
    replica it is connected to, so each replica shows its own proxies' traffic)."""
    try:
        found = replicas.replicas(args)
    except DebugEndpointError as error:
        print(f"splitplane status: {error}", file=sys.stderr)
        return 2
    documents: list[tuple[str, Any]] = []
    for replica in found:
        try:
            documents.append((replica.name, replica.get_json("/debug/traffic")))
        except DebugEndpointError as error:
            print(f"splitplane status: {error}", file=sys.stderr)
    if not documents:
        return 2
    if args.output in ("json", "yaml"):
        merged = {"replicas": [{"replica": name, **data} for name, data in documents]}
        if len(documents) == 1:
            merged = documents[0][1]
        if args.output == "json":
            print(json.dumps(merged, indent=2))
        else:
            print(yaml.safe_dump(merged, sort_keys=False, width=100), end="")
        return 0 if len(documents) == len(found) else 2
    for name, data in documents:
        if len(documents) > 1:
            print(f"replica {name}:")
        print(traffic_table(data))
        if not data["routes"]:
            print("(no VirtualService routes)")
        else:
            print(f"(observed over the last {data['window_seconds']:g} s of load reports)")
    return 0 if len(documents) == len(found) else 2


def run(args: argparse.Namespace) -> int:
    if args.traffic:
        return run_traffic(args)
    try:
        found = replicas.replicas(args)
    except DebugEndpointError as error:
        print(f"splitplane status: {error}", file=sys.stderr)
        return 2
    clients: list[dict[str, Any]] = []
    reached = 0
    for replica in found:
        try:
            data = replica.get_json("/debug/clients")
        except DebugEndpointError as error:
            print(f"splitplane status: {error}", file=sys.stderr)
            continue
        reached += 1
        clients += [{**client, "replica": replica.name} for client in data["clients"]]
    if not reached:
        return 2
    cluster = replicas.in_cluster_mode(args)
    text, failing = table(
        clients,
        time.time(),
        args.grace,
        replica_column=cluster,
        wide=args.output == "wide",
        colour=use_colour(sys.stdout),
    )
    if args.output == "json":
        print(json.dumps({"clients": clients}, indent=2))
    elif args.output == "yaml":
        print(yaml.safe_dump({"clients": clients}, sort_keys=False, width=100), end="")
    else:
        print(text)
        if not clients:
            print("(no proxies connected)")
    if reached < len(found):
        return 2
    return 1 if failing else 0
