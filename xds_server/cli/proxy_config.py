"""`splitplane proxy-config routes|clusters|endpoints|listeners NODE`: what one connected proxy
was sent, as a short table (like `istioctl proxy-config`).

Read from the debug endpoint's ``/debug/config_dump?node=NODE`` (with cluster flags, from the
replica the node is connected to); ``-o json|yaml`` prints that
whole document, ``-o wide`` adds columns.
"""

from __future__ import annotations

import argparse
import json
import sys

import yaml

from xds_server.cli import config_tables, replicas
from xds_server.cli.debug_client import DebugEndpointError, add_debug_address


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("kind", choices=config_tables.KINDS, help="what to show")
    parser.add_argument("node", metavar="NODE", help="the node id of a connected proxy")
    add_debug_address(parser)
    replicas.add_arguments(parser)
    parser.add_argument(
        "-o",
        "--output",
        choices=("table", "wide", "json", "yaml"),
        default="table",
        help="table (default), wide (more columns), or the whole config dump as json or yaml",
    )


def run(args: argparse.Namespace) -> int:
    try:
        found = replicas.replicas(args)
        _, data = replicas.first_answer(found, "/debug/config_dump", {"node": args.node})
    except DebugEndpointError as error:
        print(f"splitplane proxy-config: {error}", file=sys.stderr)
        return 1
    if args.output == "json":
        print(json.dumps(data, indent=2))
    elif args.output == "yaml":
        print(yaml.safe_dump(data, sort_keys=False, width=100), end="")
    else:
        dump = config_tables.parse_config_dump(data)
        table = config_tables.TABLES[args.kind](dump, wide=args.output == "wide")
        print(config_tables.render(table, colour=config_tables.use_colour(sys.stdout)))
    return 0
