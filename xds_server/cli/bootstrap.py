"""Bootstraps that point Envoy (or a proxyless gRPC client) at splitplane, and the
``splitplane bootstrap`` command that prints them.

The templates are package data, ``xds_server/cli/templates/`` (``sidecar.yaml``, ``gateway.yaml``,
``grpc-bootstrap.json``), read with ``importlib.resources`` wherever the package is installed.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import posixpath
import sys
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
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
# Inserted into the ``xds-grpc`` cluster when the xDS server is reached over TLS. The client
# certificate and the trusted CA come through SDS from files (path-based SDS), which Envoy reads
# again when their directory changes: a rotated certificate needs no restart. The server must
# present ``SERVER_NAME`` among its DNS SANs.
_XDS_TLS = Template("""\
      # xDS over TLS: the server's certificate must carry the DNS name below. The certificates
      # come through SDS from files, read again when they are rotated.
      transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
          sni: "${SERVER_NAME}"
          common_tls_context:
            alpn_protocols: [h2]
${CLIENT_CERTIFICATE}\
            combined_validation_context:
              default_validation_context:
                match_typed_subject_alt_names:
                  - san_type: DNS
                    matcher:
                      exact: "${SERVER_NAME}"
              validation_context_sds_secret_config:
                name: ${CA_SECRET}
                sds_config:
                  path_config_source:
                    path: "${CA_SDS_FILE}"
                  resource_api_version: V3
""")
_XDS_CLIENT_CERTIFICATE = Template("""\
            tls_certificate_sds_secret_configs:
              - name: ${CERT_SECRET}
                sds_config:
                  path_config_source:
                    path: "${CERT_SDS_FILE}"
                  resource_api_version: V3
""")
CERT_SECRET = "xds-client-certificate"
CA_SECRET = "xds-trusted-ca"
_SECRET_TYPE = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"

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


@dataclass(frozen=True)
class BootstrapTls:
    """How a proxy reaches the xDS server over TLS: the CA that signs the server's certificate,
    the proxy's own certificate and key for mutual TLS (both or neither), and the name the
    server's certificate must carry (default: the host of the xDS address). For Envoy,
    ``sds_dir`` is the folder holding the SDS files that point at the certificate files.
    Paths are written as given: they are paths on the proxy's host."""

    ca_file: str
    cert_file: str = ""
    key_file: str = ""
    server_name: str = ""
    sds_dir: str = ""

    def __post_init__(self) -> None:
        _text(self.ca_file, "--tls-ca-file")
        if bool(self.cert_file) != bool(self.key_file):
            raise ValueError("--tls-cert-file and --tls-key-file go together")

    @property
    def mutual(self) -> bool:
        return bool(self.cert_file)

    def server_name_for(self, address: XdsAddress) -> str:
        """The DNS name the server's certificate must carry."""
        if self.server_name:
            return self.server_name
        if address.is_ip:
            raise ValueError(
                f"--xds-address {address.uri} is an IP address: give --tls-server-name, a DNS"
                " name in the server's certificate"
            )
        return address.host

    def sds_path(self, secret: str) -> str:
        return posixpath.join(self.sds_dir, f"{secret}.yaml")


def _sds_file(secret: dict[str, object]) -> str:
    """An SDS file: a discovery response holding one ``Secret``, as YAML."""
    text: str = yaml.safe_dump(
        {"resources": [{"@type": _SECRET_TYPE, **secret}]}, sort_keys=False, width=1000
    )
    return text


def render_sds_files(tls: BootstrapTls) -> dict[str, str]:
    """The SDS files an Envoy bootstrap with ``tls`` reads, path → YAML text. Each secret names
    the directory of its files as ``watched_directory``: when it changes (a Kubernetes volume
    swaps its files atomically), Envoy reads the files again."""
    files = {
        tls.sds_path(CA_SECRET): _sds_file(
            {
                "name": CA_SECRET,
                "validation_context": {
                    "trusted_ca": {"filename": tls.ca_file},
                    "watched_directory": {"path": posixpath.dirname(tls.ca_file) or "."},
                },
            }
        )
    }
    if tls.mutual:
        files[tls.sds_path(CERT_SECRET)] = _sds_file(
            {
                "name": CERT_SECRET,
                "tls_certificate": {
                    "certificate_chain": {"filename": tls.cert_file},
                    "private_key": {"filename": tls.key_file},
                    "watched_directory": {"path": posixpath.dirname(tls.cert_file) or "."},
                },
            }
        )
    return files


def _with_xds_tls(text: str, tls: BootstrapTls, address: XdsAddress) -> str:
    """``text`` with the TLS transport socket inserted into its ``xds-grpc`` cluster."""
    server_name = _quoted(tls.server_name_for(address))
    client = ""
    if tls.mutual:
        client = _XDS_CLIENT_CERTIFICATE.substitute(
            CERT_SECRET=CERT_SECRET, CERT_SDS_FILE=_quoted(tls.sds_path(CERT_SECRET))
        )
    block = _XDS_TLS.substitute(
        SERVER_NAME=server_name,
        CLIENT_CERTIFICATE=client,
        CA_SECRET=CA_SECRET,
        CA_SDS_FILE=_quoted(tls.sds_path(CA_SECRET)),
    )
    anchor = "    - name: xds-grpc\n"
    if text.count(anchor) != 1:
        raise ValueError("the bootstrap template has no single xds-grpc cluster to secure")
    return text.replace(anchor, anchor + block)


def template_path(role: str) -> Traversable:
    """The template file for ``role`` (sidecar, gateway or proxyless), inside the package."""
    return resources.files(__package__ or "xds_server.cli").joinpath(
        "templates", TEMPLATE_FILES[role]
    )


def template_text(role: str) -> str:
    """The text of ``role``'s template."""
    return template_path(role).read_text(encoding="utf-8")


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
    tls: BootstrapTls | None = None,
) -> str:
    """An Envoy bootstrap (YAML) for a ``sidecar`` or ``gateway`` node fed over ADS.

    ``delta`` selects incremental xDS (``DELTA_GRPC``) instead of state-of-the-world.
    ``admin_port`` 0 lets the kernel pick one. ``health_port`` adds a static listener answering
    ``GET /healthz/ready`` for Kubernetes probes (the admin interface stays on loopback).
    ``tls`` connects to the xDS server over TLS (the SDS files it reads are
    ``render_sds_files(tls)``).
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
    text = _without_leading_comments(Template(template_text(role)).substitute(fields))
    text = f"# splitplane {role} bootstrap, rendered from template {TEMPLATE_FILES[role]}.\n{text}"
    if tls is not None:
        text = _with_xds_tls(text, tls, address)
    if health_port is not None:
        port = str(_port(health_port, "health port"))
        text = (
            text.rstrip("\n")
            + "\n"
            + _HEALTH_LISTENER.substitute(HEALTH_PORT=port, HCM_TYPE=_HCM_TYPE)
        )
    yaml.safe_load(text)  # a template that renders to broken YAML fails here, not in Envoy
    return text


def render_grpc_bootstrap(
    node_id: str, namespace: str, xds_address: str, tls: BootstrapTls | None = None
) -> str:
    """A proxyless gRPC xDS bootstrap (JSON), for ``GRPC_XDS_BOOTSTRAP`` or
    ``GRPC_XDS_BOOTSTRAP_CONFIG``.

    With ``tls`` the channel credentials are gRFC A65's ``tls``: gRPC reads the files again
    every ``refresh_interval`` and checks the server's certificate against the xDS address's
    host (so ``tls.server_name`` cannot apply).
    """
    address = parse_xds_address(xds_address)
    fields = {
        "NODE_ID": _quoted(_text(node_id, "node id")),
        "NODE_CLUSTER": PROXYLESS,
        "NAMESPACE": _quoted(_text(namespace, "namespace")),
        "XDS_ADDRESS": _quoted(address.uri),
    }
    text = Template(template_text(PROXYLESS)).substitute(fields)
    bootstrap = json.loads(text)
    if tls is None:
        return text
    if tls.server_name:
        raise ValueError(
            "--grpc checks the server's certificate against the host of --xds-address:"
            " --tls-server-name does not apply"
        )
    config = {"ca_certificate_file": tls.ca_file, "refresh_interval": "60s"}
    if tls.mutual:
        config |= {"certificate_file": tls.cert_file, "private_key_file": tls.key_file}
    for server in bootstrap["xds_servers"]:
        server["channel_creds"] = [{"type": "tls", "config": config}]
    return json.dumps(bootstrap, indent=2) + "\n"


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
        help="the splitplane xDS server, e.g. splitplane.splitplane-system.svc:15012 (TLS) or "
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
    tls = parser.add_argument_group(
        "xDS over TLS",
        "Connect to the xDS server over TLS (with --tls-cert-file, mutual TLS). Envoy reads the "
        "certificates through SDS files, written into --sds-dir, and reads them again when they "
        "are rotated; gRPC (--grpc) re-reads them every minute.",
    )
    tls.add_argument(
        "--tls-ca-file",
        metavar="FILE",
        help="CA bundle (PEM) that signs the xDS server's certificate; turns TLS on",
    )
    tls.add_argument(
        "--tls-cert-file",
        metavar="FILE",
        help="the proxy's certificate chain (PEM), e.g. a SPIFFE workload certificate",
    )
    tls.add_argument("--tls-key-file", metavar="FILE", help="the key of --tls-cert-file (PEM)")
    tls.add_argument(
        "--tls-server-name",
        metavar="NAME",
        help="DNS name the server's certificate must carry (default: the host of --xds-address)",
    )
    tls.add_argument(
        "--sds-dir",
        metavar="DIR",
        help="Envoy only: the folder the SDS files are written to and read from (required with "
        "--tls-ca-file)",
    )
    parser.add_argument(
        "--grpc",
        action="store_true",
        help="print a proxyless gRPC bootstrap (JSON, for GRPC_XDS_BOOTSTRAP) instead; takes "
        "only --node-id, --namespace, --xds-address and the --tls-*-file flags",
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
        "--sds-dir": args.sds_dir,
    }
    tls = _tls(args)
    if args.grpc:
        given = [flag for flag, value in envoy_only.items() if value is not None]
        if given:
            raise ValueError(f"--grpc does not take {', '.join(given)}")
        return render_grpc_bootstrap(args.node_id, args.namespace, args.xds_address, tls)
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
        tls=tls,
    )


def _tls(args: argparse.Namespace) -> BootstrapTls | None:
    """The TLS settings the flags ask for; ``ValueError`` for an incomplete set."""
    given = [
        flag
        for flag, value in (
            ("--tls-cert-file", args.tls_cert_file),
            ("--tls-key-file", args.tls_key_file),
            ("--tls-server-name", args.tls_server_name),
            ("--sds-dir", args.sds_dir),
        )
        if value is not None
    ]
    if args.tls_ca_file is None:
        if given:
            raise ValueError(f"{', '.join(given)} need --tls-ca-file")
        return None
    if not args.grpc and not args.sds_dir:
        raise ValueError("--tls-ca-file needs --sds-dir, where Envoy reads the SDS files")
    return BootstrapTls(
        ca_file=args.tls_ca_file,
        cert_file=args.tls_cert_file or "",
        key_file=args.tls_key_file or "",
        server_name=args.tls_server_name or "",
        sds_dir=args.sds_dir or "",
    )


def run(args: argparse.Namespace) -> int:
    """``splitplane bootstrap``: print the bootstrap (and write the SDS files it reads); exit 2
    on a bad command line."""
    try:
        text = _render(args)
        tls = _tls(args)
        if tls is not None and not args.grpc:
            for path, content in render_sds_files(tls).items():
                Path(path).parent.mkdir(parents=True, exist_ok=True)
                Path(path).write_text(content, encoding="utf-8")
                print(f"splitplane bootstrap: wrote {path}", file=sys.stderr)
    except (ValueError, OSError) as err:
        print(f"splitplane bootstrap: error: {err}", file=sys.stderr)
        return 2
    sys.stdout.write(text if text.endswith("\n") else text + "\n")
    return 0
