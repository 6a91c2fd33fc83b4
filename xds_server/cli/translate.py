"""`splitplane translate -f FILE... --role ROLE`: what a proxy would receive, offline.

Like `egctl x translate`: the files are read and checked as `splitplane validate` reads them, the
mesh is translated and the node group's resources built as `serve` builds them, with no server and
no proxy. The output is shaped like Envoy's ``/config_dump`` (what `splitplane snapshot --node`
gives for a connected proxy), or one short table per resource type (``-o table|wide``, as
`splitplane proxy-config` prints). Diagnostics go to standard error; an object with an error is
left out, as `serve` leaves it out.
"""

from __future__ import annotations

import argparse
import json
import sys

import yaml

from translators.build import DEFAULT_GATEWAY_PORT, DEFAULT_SIDECAR_PORT, build_group
from translators.model import NodeGroup, Role
from xds_server.cli import config_tables
from xds_server.cli.validate import add_input_arguments, at_least, check, input_paths

ROLES = {
    "sidecar": NodeGroup(Role.SIDECAR, DEFAULT_SIDECAR_PORT),
    "gateway": NodeGroup(Role.GATEWAY, DEFAULT_GATEWAY_PORT),
    "proxyless": NodeGroup(Role.PROXYLESS),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_input_arguments(parser)
    parser.add_argument(
        "--role",
        choices=tuple(ROLES),
        default="sidecar",
        help="the proxy: a sidecar (default), the load-balancer fleet or a proxyless gRPC client",
    )
    parser.add_argument(
        "--port",
        type=int,
        metavar="PORT",
        help=f"the sidecar's outbound port (default {DEFAULT_SIDECAR_PORT}) or the gateway's HTTP"
        f" port (default {DEFAULT_GATEWAY_PORT})",
    )
    parser.add_argument(
        "--namespace",
        default="",
        metavar="NS",
        help="the namespace the proxy runs in: it sees what is exported to it (default none:"
        " only what is exported to every namespace)",
    )
    parser.add_argument(
        "--type",
        choices=config_tables.KINDS,
        action="append",
        help="only this resource type (repeatable; default all)",
    )
    parser.add_argument(
        "-o",
        "--output",
        choices=("yaml", "json", "table", "wide"),
        default="yaml",
        help="yaml (default) or json: the config dump; table or wide: short tables",
    )


def group_for(role: str, port: int | None, namespace: str = "") -> NodeGroup:
    """The node group of a proxy of ``role`` on ``port`` (its default when None) in
    ``namespace``."""
    group = ROLES[role]
    chosen = port if port is not None and group.port else group.port
    return NodeGroup(group.role, chosen, namespace)


def run(args: argparse.Namespace) -> int:
    checked = check(input_paths(args))
    for diagnostic in at_least(checked.diagnostics, "warning"):
        print(diagnostic.render(coded=True), file=sys.stderr)
    group = group_for(args.role, args.port, args.namespace)
    resources = build_group(checked.translation.model, group)
    dump = config_tables.config_dump(resources)
    kinds = args.type or list(config_tables.KINDS)
    if args.output in {"table", "wide"}:
        colour = config_tables.use_colour(sys.stdout)
        blocks = [
            config_tables.render(
                config_tables.TABLES[kind](dump, wide=args.output == "wide"), colour=colour
            )
            for kind in kinds
        ]
        print("\n\n".join(blocks))
        return 0
    data = config_tables.as_data(config_tables.narrow(dump, kinds))
    if args.output == "json":
        print(json.dumps(data, indent=2))
    else:
        print(yaml.safe_dump(data, sort_keys=False, width=100), end="")
    return 0
