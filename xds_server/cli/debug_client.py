"""Reading the debug endpoint from the command line (`splitplane status`, `splitplane snapshot`)."""

from __future__ import annotations

import argparse
import json
import ssl
import urllib.error
import urllib.request
from pathlib import Path
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
    credentials = parser.add_mutually_exclusive_group()
    credentials.add_argument(
        "--token",
        metavar="TOKEN",
        help="bearer token for a debug endpoint off loopback (checked with a TokenReview)",
    )
    credentials.add_argument(
        "--token-file",
        type=Path,
        metavar="PATH",
        help="read the bearer token from this file, e.g."
        " /var/run/secrets/kubernetes.io/serviceaccount/token",
    )

    tls = parser.add_argument_group(
        "HTTPS (serve --debug-tls)",
        "Read the debug endpoint over HTTPS, checking its certificate against --cacert and the"
        " host of --debug-address; --cert/--key present a client certificate instead of a token.",
    )
    tls.add_argument("--cacert", type=Path, metavar="FILE", help="CA bundle (PEM); turns HTTPS on")
    tls.add_argument(
        "--cert",
        type=Path,
        metavar="FILE",
        help="client certificate (PEM) whose SPIFFE ID may read status",
    )
    tls.add_argument("--key", type=Path, metavar="FILE", help="the key of --cert (PEM)")


def tls_from_args(args: argparse.Namespace) -> ssl.SSLContext | None:
    """The HTTPS client context ``--cacert`` (and ``--cert``/``--key``) ask for, if any."""
    if args.cacert is None:
        if args.cert is not None or args.key is not None:
            raise DebugEndpointError("--cert and --key need --cacert")
        return None
    if (args.cert is None) != (args.key is None):
        raise DebugEndpointError("--cert and --key go together")
    try:
        context = ssl.create_default_context(cafile=args.cacert)
        if args.cert is not None:
            context.load_cert_chain(args.cert, args.key)
    except (OSError, ssl.SSLError) as error:
        raise DebugEndpointError(f"--cacert/--cert/--key: {error}") from error
    return context


def token_from_args(args: argparse.Namespace) -> str | None:
    """The bearer token ``--token`` or ``--token-file`` gives, if any."""
    if args.token:
        return str(args.token)
    if args.token_file is not None:
        try:
            return Path(args.token_file).read_text().strip() or None
        except OSError as error:
            raise DebugEndpointError(f"--token-file: {error}") from error
    return None


def fetch_json(
    address: str,
    path: str,
    timeout: float = 5.0,
    token: str | None = None,
    tls: ssl.SSLContext | None = None,
) -> Any:
    """GET ``path`` from the debug endpoint at ``address`` (with ``token`` as a bearer token;
    over HTTPS with ``tls``) and decode the JSON body."""
    url = f"{'https' if tls is not None else 'http'}://{address}{path}"
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=tls) as response:
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
