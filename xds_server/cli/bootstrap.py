"""Bootstraps that point Envoy (or a proxyless gRPC client) at splitplane, and the
``splitplane bootstrap`` command that prints them.

The templates live in ``envoy/`` (``sidecar.yaml``, ``gateway.yaml``, ``grpc-bootstrap.json``);
an installed (non-editable) copy is looked up under ``<sys.prefix>/share/splitplane/envoy``.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from string import Template

import yaml

from xds_server.xds.nodes import DEFAULT_OUTBOUND_PORT, GATEWAY, PROXYLESS, SIDECAR

DEFAULT_HTTP_PORT = 8080
DEFAULT_NAMESPACE = "default"
ENVOY_ROLES = (SIDECAR, GATEWAY)
TEMPLATE_FILES = {
    SIDECAR: "sidecar.yaml",
    GATEWAY: "gateway.yaml",
    PROXYLESS: "grpc-bootstrap.json",
}

# Appended under ``static_resources`` when a health port is asked for: Kubernetes probes
# GET /healthz/ready here. Envoy opens listeners only after its initial configuration from the
# control plane has arrived (or the initial fetch timed out), so a 200 means it is serving.
_HEALTH_LISTENER = Template("""\
  listeners:
    - name: health
      address:
        socket_address:
          address: 0.0.0.0
          port_value: ${HEALTH_PORT}
      filter_chains:
        - filters:
            - name: envoy.filters.network.http_connection_manager
              typed_config:
                "@type": ${HCM_TYPE}
                stat_prefix: health
                route_config:
                  name: health
                  virtual_hosts:
                    - name: health
                      domains: ["*"]
                      routes:
                        - match:
                            path: /healthz/ready
                          direct_response:
                            status: 200
                            body:
                              inline_string: "ready\\n"
                http_filters:
                  - name: envoy.filters.http.router
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
""")
_HCM_TYPE = (
    "type.googleapis.com/"
    "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
)


@dataclass(frozen=True)
class XdsAddress:
    """Where the xDS server listens: a DNS name or an IP literal, and a port."""

    host: str
    port: int

    @property
    def is_ip(self) -> bool:
        """Whether ``host`` is an IP literal (the bootstrap then needs no DNS)."""
        try:
            ipaddress.ip_address(self.host)
        except ValueError:
            return False
        return True

    @property
    def uri(self) -> str:
        """``host:port``, with brackets around an IPv6 literal."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def parse_xds_address(text: str) -> XdsAddress:
    """``HOST:PORT`` or ``[IPV6]:PORT`` → ``XdsAddress``; ``ValueError`` says what is wrong."""
    if "://" in text:
        raise ValueError(f"xDS address {text!r}: write HOST:PORT, without a scheme")
    host, sep, port_text = text.strip().rpartition(":")
    if not sep or not host:
        raise ValueError(f"xDS address {text!r} is not HOST:PORT")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"xDS address {text!r}: {host!r} is not an IPv6 address") from None
    elif ":" in host:
        raise ValueError(f"xDS address {text!r}: write an IPv6 host in brackets, [::1]:15010")
    if not host or any(ch.isspace() or ch in "/[]" for ch in host):
        raise ValueError(f"xDS address {text!r}: {host!r} is not a host name or IP address")
    port = _port(port_text, f"xDS address {text!r}")
    return XdsAddress(host, port)


def _port(text: str | int, what: str, *, allow_zero: bool = False) -> int:
    value = text if isinstance(text, int) else int(text) if text.isdigit() else -1
    low = 0 if allow_zero else 1
    if not low <= value <= 65535:
        raise ValueError(f"{what}: port must be a number from {low} to 65535, got {text!r}")
    return value


def template_dirs() -> tuple[Path, ...]:
    """Where templates are looked up, in order: the source tree, then the installed data files."""
    return (
        Path(__file__).resolve().parents[2] / "envoy",
        Path(sys.prefix) / "share" / "splitplane" / "envoy",
    )


def template_path(role: str) -> Path:
    """The template file for ``role`` (sidecar, gateway or proxyless)."""
    name = TEMPLATE_FILES[role]
    for directory in template_dirs():
        candidate = directory / name
        if candidate.is_file():
            return candidate
    searched = ", ".join(str(d) for d in template_dirs())
    raise FileNotFoundError(f"bootstrap template {name} not found in {searched}")


def _quoted(value: str) -> str:
    """``value`` escaped for the inside of a double-quoted JSON or YAML string."""
    escaped: str = json.dumps(value, ensure_ascii=False)
    return escaped[1:-1]


def _without_leading_comments(text: str) -> str:
    """``text`` without the template's header comment (it describes the template itself)."""
    lines = text.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if not line.startswith("#")), len(lines))
    return "".join(lines[start:])


def _text(value: str, what: str) -> str:
    if not value.strip():
        raise ValueError(f"{what} must not be empty")
    return value


def render_bootstrap(
    node_id: str,
    role: str,
    namespace: str,
    xds_address: str,
    admin_port: int,
    *,
    outbound_port: int = DEFAULT_OUTBOUND_PORT,
    http_port: int = DEFAULT_HTTP_PORT,
    delta: bool = False,
    health_port: int | None = None,
) -> str:
    """An Envoy bootstrap (YAML) for a ``sidecar`` or ``gateway`` node fed over ADS.

    ``delta`` selects incremental xDS (``DELTA_GRPC``) instead of state-of-the-world.
    ``admin_port`` 0 lets the kernel pick one. ``health_port`` adds a static listener answering
    ``GET /healthz/ready`` for Kubernetes probes (the admin interface stays on loopback).
    """
    if role not in ENVOY_ROLES:
        raise ValueError(f"role must be one of {', '.join(ENVOY_ROLES)}, got {role!r}")
    address = parse_xds_address(xds_address)
    fields = {
        "NODE_ID": _quoted(_text(node_id, "node id")),
        "NODE_CLUSTER": _quoted(role),
        "NAMESPACE": _quoted(_text(namespace, "namespace")),
        "ADMIN_PORT": str(_port(admin_port, "admin port", allow_zero=True)),
        "OUTBOUND_PORT": str(_port(outbound_port, "outbound port")),
        "HTTP_PORT": str(_port(http_port, "HTTP port")),
        "API_TYPE": "DELTA_GRPC" if delta else "GRPC",
        "XDS_CLUSTER_TYPE": "STATIC" if address.is_ip else "STRICT_DNS",
        "XDS_HOST": _quoted(address.host),
        "XDS_PORT": str(address.port),
    }
    template = template_path(role)
    text = _without_leading_comments(
        Template(template.read_text(encoding="utf-8")).substitute(fields)
    )
    text = f"# splitplane {role} bootstrap, rendered from envoy/{template.name}.\n{text}"
    if health_port is not None:
        port = str(_port(health_port, "health port"))
        text = (
            text.rstrip("\n")
            + "\n"
            + _HEALTH_LISTENER.substitute(HEALTH_PORT=port, HCM_TYPE=_HCM_TYPE)
        )
    yaml.safe_load(text)  # a template that renders to broken YAML fails here, not in Envoy
    return text


def render_grpc_bootstrap(node_id: str, namespace: str, xds_address: str) -> str:
    """A proxyless gRPC xDS bootstrap (JSON), for ``GRPC_XDS_BOOTSTRAP`` or
    ``GRPC_XDS_BOOTSTRAP_CONFIG``."""
    address = parse_xds_address(xds_address)
    fields = {
        "NODE_ID": _quoted(_text(node_id, "node id")),
        "NODE_CLUSTER": PROXYLESS,
        "NAMESPACE": _quoted(_text(namespace, "namespace")),
        "XDS_ADDRESS": _quoted(address.uri),
    }
    text = Template(template_path(PROXYLESS).read_text(encoding="utf-8")).substitute(fields)
    json.loads(text)
    return text


def _port_arg(text: str) -> int:
    try:
        return _port(text, "port")
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _admin_port_arg(text: str) -> int:
    try:
        return _port(text, "admin port", allow_zero=True)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``splitplane bootstrap``."""
    parser.description = (
        "Print an Envoy bootstrap (YAML) that connects a sidecar or a load-balancer (gateway) "
        "Envoy to splitplane over ADS, or with --grpc a proxyless gRPC xDS bootstrap (JSON). "
        "Save it and start Envoy with `envoy -c FILE`."
    )
    parser.add_argument(
        "--node-id",
        required=True,
        metavar="ID",
        help="the node id Envoy reports, e.g. sidecar~10.0.0.1~reviews-v1.default~"
        "default.svc.cluster.local; it names the proxy in `splitplane status`",
    )
    parser.add_argument(
        "--role",
        choices=ENVOY_ROLES,
        help="sidecar: outbound mesh routes; gateway: the load-balancer fleet (Ingress, "
        "LoadBalancer Services, VirtualServices bound to it). Required unless --grpc",
    )
    parser.add_argument(
        "--namespace",
        default=DEFAULT_NAMESPACE,
        metavar="NS",
        help="the namespace the proxy runs in (default: %(default)s)",
    )
    parser.add_argument(
        "--xds-address",
        required=True,
        metavar="HOST:PORT",
        help="the splitplane xDS server, e.g. splitplane.splitplane-system.svc:15010 or "
        "127.0.0.1:15010 ([::1]:15010 for IPv6)",
    )
    parser.add_argument(
        "--admin-port",
        type=_admin_port_arg,
        metavar="N",
        help="port of Envoy's admin interface, bound to 127.0.0.1 (0: any free port). "
        "Required unless --grpc",
    )
    parser.add_argument(
        "--outbound-port",
        type=_port_arg,
        metavar="N",
        help=f"sidecar only: port of the outbound listener splitplane sends "
        f"(default: {DEFAULT_OUTBOUND_PORT})",
    )
    parser.add_argument(
        "--http-port",
        type=_port_arg,
        metavar="N",
        help=f"gateway only: port of the HTTP listener for Ingress rules and bound "
        f"VirtualServices (default: {DEFAULT_HTTP_PORT})",
    )
    parser.add_argument(
        "--health-port",
        type=_port_arg,
        metavar="N",
        help="also serve GET /healthz/ready on 0.0.0.0:N for Kubernetes probes (default: none)",
    )
    parser.add_argument(
        "--delta",
        action="store_true",
        help="use incremental (delta) xDS, DELTA_GRPC, instead of state-of-the-world GRPC",
    )
    parser.add_argument(
        "--grpc",
        action="store_true",
        help="print a proxyless gRPC bootstrap (JSON, for GRPC_XDS_BOOTSTRAP) instead; takes "
        "only --node-id, --namespace and --xds-address",
    )


def _render(args: argparse.Namespace) -> str:
    """The bootstrap text ``args`` ask for; ``ValueError`` for a contradictory command line."""
    envoy_only = {
        "--role": args.role,
        "--admin-port": args.admin_port,
        "--outbound-port": args.outbound_port,
        "--http-port": args.http_port,
        "--health-port": args.health_port,
        "--delta": args.delta or None,
    }
    if args.grpc:
        given = [flag for flag, value in envoy_only.items() if value is not None]
        if given:
            raise ValueError(f"--grpc does not take {', '.join(given)}")
        return render_grpc_bootstrap(args.node_id, args.namespace, args.xds_address)
    missing = [flag for flag in ("--role", "--admin-port") if envoy_only[flag] is None]
    if missing:
        raise ValueError(f"{' and '.join(missing)} required (or --grpc)")
    if args.role == SIDECAR and args.http_port is not None:
        raise ValueError("--http-port applies to --role gateway only")
    if args.role == GATEWAY and args.outbound_port is not None:
        raise ValueError("--outbound-port applies to --role sidecar only")
    return render_bootstrap(
        args.node_id,
        args.role,
        args.namespace,
        args.xds_address,
        args.admin_port,
        outbound_port=args.outbound_port or DEFAULT_OUTBOUND_PORT,
        http_port=args.http_port or DEFAULT_HTTP_PORT,
        delta=args.delta,
        health_port=args.health_port,
    )


def run(args: argparse.Namespace) -> int:
    """``splitplane bootstrap``: print the bootstrap; exit 2 on a bad command line."""
    try:
        text = _render(args)
    except ValueError as err:
        print(f"splitplane bootstrap: error: {err}", file=sys.stderr)
        return 2
    sys.stdout.write(text if text.endswith("\n") else text + "\n")
    return 0
