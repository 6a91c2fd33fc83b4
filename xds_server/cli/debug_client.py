"""Reading the debug endpoint from the command line (`splitplane status`, `splitplane snapshot`)."""

from __future__ import annotations

import argparse
import json
import urllib.error
import urllib.request
from typing import Any

DEFAULT_DEBUG_ADDRESS = "127.0.0.1:15014"


class DebugEndpointError(Exception):
    """The debug endpoint could not be read; the message says why."""


def add_debug_address(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--debug-address",
        default=DEFAULT_DEBUG_ADDRESS,
        metavar="HOST:PORT",
        help=f"the server's debug endpoint (default {DEFAULT_DEBUG_ADDRESS})",
    )


def fetch_json(address: str, path: str, timeout: float = 5.0) -> Any:
    """GET ``path`` from the debug endpoint at ``address`` and decode the JSON body."""
    url = f"http://{address}{path}"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return json.load(response)
    except urllib.error.HTTPError as error:
        try:
            detail = json.load(error).get("error", "")
        except (ValueError, AttributeError):
            detail = ""
        raise DebugEndpointError(f"{url}: HTTP {error.code} {detail}".rstrip()) from error
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise DebugEndpointError(
            f"cannot reach the debug endpoint at {address}: {reason}"
        ) from error
