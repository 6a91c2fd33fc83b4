"""`splitplane status`: one row per connected proxy, a column per xDS type.

Like `istioctl proxy-status`. Exit 1 when any proxy has NACKed a type, or has left a response
unacknowledged (STALE) for longer than the grace period.
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

TYPE_COLUMNS = (("CDS", "clusters"), ("EDS", "endpoints"), ("LDS", "listeners"), ("RDS", "routes"))


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
        "-o",
        "--output",
        choices=("table", "wide", "json", "yaml"),
        default="table",
        help="table (default), wide (whole versions), or the /debug/clients"
        " JSON (or YAML) of every replica, each client naming its replica",
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


def run(args: argparse.Namespace) -> int:
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
