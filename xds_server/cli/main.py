"""The `splitplane` command line.

Each subcommand lives in its own module, which provides ``add_arguments(parser)`` and
``run(args) -> int`` (the exit code).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# subcommand → (module that implements it, one-line summary)
COMMANDS: dict[str, tuple[str, str]] = {
    "serve": (
        "xds_server.app",
        "run the xDS control plane on a folder of YAML or a Kubernetes cluster",
    ),
    "validate": ("xds_server.cli.validate", "check YAML files offline and print every diagnostic"),
    "status": (
        "xds_server.cli.status",
        "show every connected proxy's sync state (like proxy-status)",
    ),
    "snapshot": ("xds_server.cli.snapshot", "print the resources the server holds for a node"),
    "proxy-config": (
        "xds_server.cli.proxy_config",
        "show what one proxy was sent as a short table (like istioctl proxy-config)",
    ),
    "translate": (
        "xds_server.cli.translate",
        "print what a proxy would receive for YAML files, offline (no server)",
    ),
    "bootstrap": ("xds_server.cli.bootstrap", "print an Envoy (or proxyless gRPC) bootstrap"),
    "demo": (
        "xds_server.cli.demo",
        "walk a canary 100/0 → 0/100 with real Envoy and local backends",
    ),
    "version": ("xds_server.cli.version", "print splitplane's version"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="splitplane",
        description="splitplane: an xDS control plane for service-mesh traffic splitting.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module_name, summary) in COMMANDS.items():
        module = importlib.import_module(module_name)
        command = sub.add_parser(name, help=summary, description=summary)
        module.add_arguments(command)
        command.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args._run(args)
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
