"""`splitplane snapshot`: the resources the server holds, or what one node was sent."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import yaml

from xds_server.cli import replicas
from xds_server.cli.debug_client import DebugEndpointError, add_debug_address
from xds_server.debug.views import SHORT_TYPES

DUMP_TYPES = {
    "clusters": "ClustersConfigDump",
    "endpoints": "EndpointsConfigDump",
    "listeners": "ListenersConfigDump",
    "scopes": "ScopedRoutesConfigDump",
    "routes": "RoutesConfigDump",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_debug_address(parser)
    replicas.add_arguments(parser)
    parser.add_argument(
        "--node", metavar="ID", help="show what this connected node was sent (its config dump)"
    )
    parser.add_argument(
        "--group",
        metavar="GROUP",
        help="only this node group (e.g. sidecar:15001/shop: the sidecars in namespace shop)",
    )
    parser.add_argument("--type", choices=tuple(SHORT_TYPES), help="only this resource type")
    parser.add_argument(
        "-o", "--output", choices=("yaml", "json"), default="yaml", help="yaml (default) or json"
    )


def narrow_config_dump(dump: dict[str, Any], type_name: str | None) -> dict[str, Any]:
    """Keep only the config dump section of ``type_name`` (all when None)."""
    if type_name is None:
        return dump
    wanted = DUMP_TYPES[type_name]
    configs = [c for c in dump.get("configs", []) if str(c.get("@type", "")).endswith("." + wanted)]
    return {**dump, "configs": configs}


def run(args: argparse.Namespace) -> int:
    """Print the snapshot (the same on every replica: versions are content hashes, so the first
    replica that answers gives it) or what a node was sent (by the replica it is connected to)."""
    try:
        found = replicas.replicas(args)
        if args.node:
            replica, dump = replicas.first_answer(found, "/debug/config_dump", {"node": args.node})
            data = narrow_config_dump(dump, args.type)
        else:
            params = {"group": args.group, "type": args.type}
            query = {key: value for key, value in params.items() if value}
            replica, data = replicas.first_answer(found, "/debug/snapshot", query)
    except DebugEndpointError as error:
        print(f"splitplane snapshot: {error}", file=sys.stderr)
        return 1
    if replicas.in_cluster_mode(args):
        data = {"replica": replica.name, **data}
    if args.output == "json":
        print(json.dumps(data, indent=2))
    else:
        print(yaml.safe_dump(data, sort_keys=False, width=100), end="")
    return 0
