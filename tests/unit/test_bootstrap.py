"""Specification of the bootstrap generator and the `splitplane bootstrap` command."""

from __future__ import annotations

import argparse
import json
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from envoy.config.core.v3.base_pb2 import Node
from google.protobuf import json_format

from xds_server.cli import bootstrap
from xds_server.cli.bootstrap import (
    BootstrapTls,
    XdsAddress,
    parse_xds_address,
    render_bootstrap,
    render_grpc_bootstrap,
    render_sds_files,
)
from xds_server.xds.nodes import group_of

REPO = Path(__file__).resolve().parents[2]


def rendered(**overrides: Any) -> dict[str, Any]:
    """A rendered bootstrap, parsed; defaults give a sidecar talking to 127.0.0.1:15010."""
    kwargs: dict[str, Any] = {
        "node_id": "sidecar~10.0.0.1~reviews-v1.default~default.svc.cluster.local",
        "role": "sidecar",
        "namespace": "default",
        "xds_address": "127.0.0.1:15010",
        "admin_port": 15000,
    }
    kwargs.update(overrides)
    document: dict[str, Any] = yaml.safe_load(render_bootstrap(**kwargs))
    return document


def xds_cluster(document: dict[str, Any]) -> dict[str, Any]:
    clusters = document["static_resources"]["clusters"]
    (cluster,) = (c for c in clusters if c["name"] == "xds-grpc")
    found: dict[str, Any] = cluster
    return found


def node_proto(document: dict[str, Any]) -> Node:
    node = Node()
    json_format.ParseDict(document["node"], node)
    return node


@pytest.fixture
def run_cli(capsys: pytest.CaptureFixture[str]) -> Any:
    def invoke(*argv: str) -> tuple[int, str, str]:
        parser = argparse.ArgumentParser(prog="splitplane bootstrap")
        bootstrap.add_arguments(parser)
        code = bootstrap.run(parser.parse_args(list(argv)))
        out, err = capsys.readouterr()
        return code, out, err

    return invoke


# ---------------------------------------------------------------------------------------------
# Envoy bootstraps


@pytest.mark.parametrize(
    ("role", "ports", "expected_metadata", "expected_group"),
    [
        ("sidecar", {}, {"OUTBOUND_PORT": "15001"}, "sidecar:15001/shop"),
        ("sidecar", {"outbound_port": 16001}, {"OUTBOUND_PORT": "16001"}, "sidecar:16001/shop"),
        ("gateway", {}, {"HTTP_PORT": "8080"}, "gateway:8080/shop"),
        ("gateway", {"http_port": 80}, {"HTTP_PORT": "80"}, "gateway:80/shop"),
    ],
    ids=[
        "sidecar-default-outbound-port",
        "sidecar-custom-outbound-port",
        "gateway-default-http-port",
        "gateway-custom-http-port",
    ],
)
def test_node_metadata_names_role_namespace_and_listener_port(
    role: str, ports: dict[str, int], expected_metadata: dict[str, str], expected_group: str
) -> None:
    document = rendered(role=role, namespace="shop", **ports)

    assert document["node"]["metadata"] == {"ROLE": role, "NAMESPACE": "shop", **expected_metadata}
    assert document["node"]["cluster"] == role
    assert group_of(node_proto(document)).key == expected_group


@pytest.mark.parametrize(
    ("delta", "api_type"), [(False, "GRPC"), (True, "DELTA_GRPC")], ids=["sotw", "delta"]
)
@pytest.mark.parametrize("role", ["sidecar", "gateway"])
def test_every_resource_type_comes_over_one_ads_stream_that_names_the_node_once(
    role: str, delta: bool, api_type: str
) -> None:
    dynamic = rendered(role=role, delta=delta)["dynamic_resources"]

    assert dynamic["ads_config"] == {
        "api_type": api_type,
        "transport_api_version": "V3",
        "set_node_on_first_message_only": True,
        "grpc_services": [
            {
                "envoy_grpc": {
                    "cluster_name": "xds-grpc",
                    "retry_policy": {
                        "retry_back_off": {"base_interval": "0.25s", "max_interval": "1s"}
                    },
                }
            }
        ],
    }
    assert dynamic["cds_config"] == {"ads": {}, "resource_api_version": "V3"}
    assert dynamic["lds_config"] == {"ads": {}, "resource_api_version": "V3"}


@pytest.mark.parametrize("role", ["sidecar", "gateway"])
def test_envoy_flushes_its_stats_only_when_its_admin_endpoint_is_read(role: str) -> None:
    # Its periodic flush walks every stat on the main thread (a second at 10k services) and
    # holds back the xDS updates that arrive meanwhile; with no sink it serves no one.
    document = rendered(role=role)
    assert document["stats_flush_on_admin"] is True
    assert "stats_flush_interval" not in document
    assert "stats_sinks" not in document


@pytest.mark.parametrize("role", ["sidecar", "gateway"])
def test_envoy_reports_the_load_of_its_clusters_to_the_xds_server(role: str) -> None:
    load_stats = rendered(role=role)["cluster_manager"]["load_stats_config"]

    assert load_stats == {
        "api_type": "GRPC",
        "transport_api_version": "V3",
        "grpc_services": [{"envoy_grpc": {"cluster_name": "xds-grpc"}}],
    }


@pytest.mark.parametrize("role", ["sidecar", "gateway"])
def test_xds_cluster_speaks_http2_or_envoy_would_never_connect(role: str) -> None:
    cluster = xds_cluster(rendered(role=role))

    options = cluster["typed_extension_protocol_options"][
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
    ]
    assert options["@type"].endswith("envoy.extensions.upstreams.http.v3.HttpProtocolOptions")
    assert "http2_protocol_options" in options["explicit_http_config"]
    assert cluster["connect_timeout"]


@pytest.mark.parametrize(
    ("address", "cluster_type", "host", "port"),
    [
        ("127.0.0.1:15010", "STATIC", "127.0.0.1", 15010),
        ("[::1]:15011", "STATIC", "::1", 15011),
        (
            "splitplane.splitplane-system.svc:15010",
            "STRICT_DNS",
            "splitplane.splitplane-system.svc",
            15010,
        ),
        ("localhost:9000", "STRICT_DNS", "localhost", 9000),
    ],
    ids=["ipv4-is-static", "ipv6-is-static", "service-name-is-dns", "localhost-is-dns"],
)
def test_xds_cluster_points_at_the_server(
    address: str, cluster_type: str, host: str, port: int
) -> None:
    cluster = xds_cluster(rendered(xds_address=address))

    assert cluster["type"] == cluster_type
    (locality,) = cluster["load_assignment"]["endpoints"]
    (endpoint,) = locality["lb_endpoints"]
    assert endpoint["endpoint"]["address"]["socket_address"] == {
        "address": host,
        "port_value": port,
    }


def test_admin_listens_on_loopback_and_discards_its_access_log() -> None:
    admin = rendered(admin_port=15099)["admin"]

    assert admin["address"] == {"socket_address": {"address": "127.0.0.1", "port_value": 15099}}
    (log,) = admin["access_log"]
    assert log["typed_config"]["path"] == "/dev/null"


def test_admin_port_zero_lets_the_kernel_choose() -> None:
    assert rendered(admin_port=0)["admin"]["address"]["socket_address"]["port_value"] == 0


@pytest.mark.parametrize(
    "node_id",
    [
        'quote " and backslash \\',
        "colon: hash # brace {x}",
        "new\nline\ttab",
        "ünïcødé ☃ 𝄞",
        "$HOME ${X}",
    ],
    ids=["quotes", "yaml-syntax", "control-chars", "unicode", "dollar-signs"],
)
def test_any_node_id_survives_rendering_unchanged(node_id: str) -> None:
    assert rendered(node_id=node_id, namespace=node_id)["node"]["id"] == node_id
    assert rendered(node_id=node_id, namespace=node_id)["node"]["metadata"]["NAMESPACE"] == node_id


def test_health_port_adds_a_ready_listener_on_all_interfaces() -> None:
    (listener,) = rendered(role="gateway", health_port=15021)["static_resources"]["listeners"]

    assert listener["address"]["socket_address"] == {"address": "0.0.0.0", "port_value": 15021}
    manager = listener["filter_chains"][0]["filters"][0]["typed_config"]
    (virtual_host,) = manager["route_config"]["virtual_hosts"]
    (route,) = virtual_host["routes"]
    assert route["match"] == {"path": "/healthz/ready"}
    assert route["direct_response"]["status"] == 200


def test_without_health_port_envoy_has_no_static_listener() -> None:
    assert "listeners" not in rendered(role="gateway")["static_resources"]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"role": "proxyless"}, "role must be one of"),
        ({"role": "ingress"}, "role must be one of"),
        ({"node_id": " "}, "node id must not be empty"),
        ({"namespace": ""}, "namespace must not be empty"),
        ({"admin_port": 65536}, "admin port"),
        ({"admin_port": -1}, "admin port"),
        ({"outbound_port": 0}, "outbound port"),
        ({"http_port": 70000}, "HTTP port"),
        ({"health_port": 0}, "health port"),
        ({"xds_address": "15010"}, "is not HOST:PORT"),
    ],
    ids=[
        "proxyless-is-not-an-envoy-role",
        "unknown-role",
        "blank-node-id",
        "empty-namespace",
        "admin-port-too-big",
        "admin-port-negative",
        "outbound-port-zero",
        "http-port-too-big",
        "health-port-zero",
        "address-without-host",
    ],
)
def test_bad_arguments_are_refused_with_a_reason(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        rendered(**overrides)


# ---------------------------------------------------------------------------------------------
# xDS addresses


@pytest.mark.parametrize(
    ("text", "expected", "uri"),
    [
        ("127.0.0.1:15010", XdsAddress("127.0.0.1", 15010), "127.0.0.1:15010"),
        (" splitplane:15010 ", XdsAddress("splitplane", 15010), "splitplane:15010"),
        ("[::1]:15010", XdsAddress("::1", 15010), "[::1]:15010"),
        ("[2001:db8::2]:1", XdsAddress("2001:db8::2", 1), "[2001:db8::2]:1"),
    ],
    ids=["ipv4", "name-with-spaces-around", "ipv6-loopback", "ipv6"],
)
def test_xds_address_parses_host_and_port(text: str, expected: XdsAddress, uri: str) -> None:
    address = parse_xds_address(text)

    assert address == expected
    assert address.uri == uri


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "is not HOST:PORT"),
        ("splitplane", "is not HOST:PORT"),
        (":15010", "is not HOST:PORT"),
        ("splitplane:", "port must be a number"),
        ("splitplane:http", "port must be a number"),
        ("splitplane:0", "port must be a number"),
        ("splitplane:99999", "port must be a number"),
        ("::1:15010", "IPv6 host in brackets"),
        ("[not-ip]:15010", "is not an IPv6 address"),
        ("http://splitplane:15010", "without a scheme"),
        ("split plane:15010", "is not a host name"),
    ],
    ids=[
        "empty",
        "no-port",
        "no-host",
        "empty-port",
        "named-port",
        "port-zero",
        "port-too-big",
        "ipv6-without-brackets",
        "bracketed-non-ipv6",
        "url-not-address",
        "space-in-host",
    ],
)
def test_bad_xds_addresses_are_refused(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_xds_address(text)


# ---------------------------------------------------------------------------------------------
# Proxyless gRPC bootstrap


def test_grpc_bootstrap_has_every_field_grpc_reads() -> None:
    document = json.loads(render_grpc_bootstrap("client-1", "shop", "[::1]:15010"))

    assert document["xds_servers"] == [
        {
            "server_uri": "[::1]:15010",
            "channel_creds": [{"type": "insecure"}],
            "server_features": ["xds_v3"],
        }
    ]
    assert document["node"]["id"] == "client-1"
    assert document["node"]["metadata"] == {"ROLE": "proxyless", "NAMESPACE": "shop"}
    assert group_of(json_format.ParseDict(document["node"], Node())).key == "proxyless/shop"


def test_grpc_bootstrap_escapes_the_node_id() -> None:
    node_id = 'a "quoted"\nid'
    assert json.loads(render_grpc_bootstrap(node_id, "default", "x:1"))["node"]["id"] == node_id


# ---------------------------------------------------------------------------------------------
# Template lookup


def test_templates_are_package_data_beside_the_bootstrap_module() -> None:
    package = REPO / "xds_server" / "cli" / "templates"
    for role, name in bootstrap.TEMPLATE_FILES.items():
        assert Path(str(bootstrap.template_path(role))) == package / name
        assert bootstrap.template_text(role) == (package / name).read_text()


def test_the_wheel_declares_the_templates_as_package_data() -> None:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    setuptools = pyproject["tool"]["setuptools"]

    assert setuptools["package-data"]["xds_server.cli"] == ["templates/*"]
    assert "data-files" not in setuptools


# ---------------------------------------------------------------------------------------------
# The command


def test_command_prints_the_same_bootstrap_as_the_function(run_cli: Any) -> None:
    code, out, err = run_cli(
        "--node-id", "lb-0", "--role", "gateway", "--namespace", "splitplane-system",
        "--xds-address", "splitplane:15010", "--admin-port", "15000", "--http-port", "80",
        "--health-port", "15021", "--delta",
    )  # fmt: skip

    assert (code, err) == (0, "")
    assert out == render_bootstrap(
        "lb-0",
        "gateway",
        "splitplane-system",
        "splitplane:15010",
        15000,
        http_port=80,
        health_port=15021,
        delta=True,
    )


def test_command_defaults_to_namespace_default_and_port_15001(run_cli: Any) -> None:
    code, out, _ = run_cli(
        "--node-id", "n", "--role", "sidecar", "--xds-address", "127.0.0.1:1", "--admin-port", "2"
    )

    assert code == 0
    metadata = yaml.safe_load(out)["node"]["metadata"]
    assert metadata == {"ROLE": "sidecar", "NAMESPACE": "default", "OUTBOUND_PORT": "15001"}


def test_command_with_grpc_prints_json(run_cli: Any) -> None:
    code, out, _ = run_cli("--grpc", "--node-id", "c", "--xds-address", "127.0.0.1:15010")

    assert code == 0
    assert json.loads(out) == json.loads(render_grpc_bootstrap("c", "default", "127.0.0.1:15010"))


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--xds-address", "a:1", "--admin-port", "1"], "--role required"),
        (["--xds-address", "a:1", "--role", "sidecar"], "--admin-port required"),
        (["--xds-address", "a:1"], "--role and --admin-port required"),
        (["--xds-address", "a:1", "--grpc", "--role", "sidecar"], "--grpc does not take --role"),
        (["--xds-address", "a:1", "--grpc", "--delta"], "--grpc does not take --delta"),
        (
            ["--xds-address", "a:1", "--role", "sidecar", "--admin-port", "1", "--http-port", "80"],
            "--http-port applies to --role gateway only",
        ),
        (
            [
                "--xds-address",
                "a:1",
                "--role",
                "gateway",
                "--admin-port",
                "1",
                "--outbound-port",
                "1",
            ],
            "--outbound-port applies to --role sidecar only",
        ),
        (["--xds-address", "nonsense", "--role", "sidecar", "--admin-port", "1"], "HOST:PORT"),
    ],
    ids=[
        "envoy-needs-a-role",
        "envoy-needs-an-admin-port",
        "both-missing",
        "grpc-has-no-role",
        "grpc-has-no-delta",
        "sidecar-has-no-http-port",
        "gateway-has-no-outbound-port",
        "bad-address",
    ],
)
def test_command_refuses_contradictions_with_exit_2(
    run_cli: Any, argv: list[str], message: str
) -> None:
    code, out, err = run_cli("--node-id", "n", *argv)

    assert code == 2
    assert out == ""
    assert message in err


@pytest.mark.parametrize(
    "flag", ["--admin-port", "--outbound-port", "--http-port", "--health-port"]
)
def test_command_line_rejects_ports_out_of_range(flag: str) -> None:
    parser = argparse.ArgumentParser()
    bootstrap.add_arguments(parser)
    with pytest.raises(SystemExit):
        parser.parse_args(["--node-id", "n", "--xds-address", "a:1", flag, "65536"])


def test_every_flag_has_help_text() -> None:
    parser = argparse.ArgumentParser()
    bootstrap.add_arguments(parser)
    flags = {
        option: action.help
        for action in parser._actions
        for option in action.option_strings
        if option.startswith("--") and option != "--help"
    }

    assert set(flags) == {
        "--node-id", "--role", "--namespace", "--xds-address", "--admin-port",
        "--outbound-port", "--http-port", "--health-port", "--delta", "--grpc",
        "--tls-ca-file", "--tls-cert-file", "--tls-key-file", "--tls-server-name", "--sds-dir",
    }  # fmt: skip
    assert all(text and len(text) > 20 for text in flags.values())


# ---------------------------------------------------------------------------------------------
# xDS over TLS

TLS = BootstrapTls(
    ca_file="/var/run/secrets/spiffe.io/ca.crt",
    cert_file="/var/run/secrets/spiffe.io/tls.crt",
    key_file="/var/run/secrets/spiffe.io/tls.key",
    sds_dir="/etc/envoy",
)


def tls_context(document: dict[str, Any]) -> dict[str, Any]:
    socket = xds_cluster(document)["transport_socket"]
    assert socket["name"] == "envoy.transport_sockets.tls"
    context: dict[str, Any] = socket["typed_config"]
    return context


@pytest.mark.parametrize("role", ["sidecar", "gateway"])
def test_tls_verifies_the_servers_name_and_reads_certificates_through_sds(role: str) -> None:
    document = rendered(role=role, xds_address="splitplane.splitplane-system.svc:15012", tls=TLS)
    context = tls_context(document)

    assert context["sni"] == "splitplane.splitplane-system.svc"
    common = context["common_tls_context"]
    assert common["alpn_protocols"] == ["h2"]
    validation = common["combined_validation_context"]
    assert validation["default_validation_context"]["match_typed_subject_alt_names"] == [
        {"san_type": "DNS", "matcher": {"exact": "splitplane.splitplane-system.svc"}}
    ]
    ca_source = validation["validation_context_sds_secret_config"]
    assert ca_source["sds_config"]["path_config_source"]["path"] == "/etc/envoy/xds-trusted-ca.yaml"
    (cert_source,) = common["tls_certificate_sds_secret_configs"]
    assert cert_source["sds_config"]["path_config_source"]["path"] == (
        "/etc/envoy/xds-client-certificate.yaml"
    )


def test_sds_files_point_at_the_certificate_files_and_watch_their_folder() -> None:
    files = {path: yaml.safe_load(text) for path, text in render_sds_files(TLS).items()}

    (ca,) = files["/etc/envoy/xds-trusted-ca.yaml"]["resources"]
    assert ca["name"] == "xds-trusted-ca"
    assert ca["validation_context"] == {
        "trusted_ca": {"filename": "/var/run/secrets/spiffe.io/ca.crt"},
        "watched_directory": {"path": "/var/run/secrets/spiffe.io"},
    }
    (cert,) = files["/etc/envoy/xds-client-certificate.yaml"]["resources"]
    assert cert["@type"].endswith("envoy.extensions.transport_sockets.tls.v3.Secret")
    assert cert["tls_certificate"]["certificate_chain"] == {
        "filename": "/var/run/secrets/spiffe.io/tls.crt"
    }
    assert cert["tls_certificate"]["watched_directory"] == {"path": "/var/run/secrets/spiffe.io"}


def test_tls_without_a_client_certificate_sends_none() -> None:
    server_only = BootstrapTls(ca_file="/certs/ca.crt", sds_dir="/etc/envoy")
    context = tls_context(rendered(xds_address="splitplane:15012", tls=server_only))

    assert "tls_certificate_sds_secret_configs" not in context["common_tls_context"]
    assert list(render_sds_files(server_only)) == ["/etc/envoy/xds-trusted-ca.yaml"]


def test_an_ip_address_needs_a_server_name_to_verify() -> None:
    with pytest.raises(ValueError, match="--tls-server-name"):
        rendered(xds_address="10.0.0.1:15012", tls=TLS)
    named = BootstrapTls(ca_file="/c/ca.crt", server_name="splitplane.svc", sds_dir="/e")
    assert tls_context(rendered(xds_address="10.0.0.1:15012", tls=named))["sni"] == (
        "splitplane.svc"
    )


def test_plaintext_bootstraps_have_no_transport_socket() -> None:
    assert "transport_socket" not in xds_cluster(rendered())


def test_grpc_bootstrap_uses_a65_tls_channel_credentials() -> None:
    document = json.loads(render_grpc_bootstrap("c", "default", "splitplane:15012", TLS))

    (server,) = document["xds_servers"]
    assert server["channel_creds"] == [
        {
            "type": "tls",
            "config": {
                "ca_certificate_file": "/var/run/secrets/spiffe.io/ca.crt",
                "refresh_interval": "60s",
                "certificate_file": "/var/run/secrets/spiffe.io/tls.crt",
                "private_key_file": "/var/run/secrets/spiffe.io/tls.key",
            },
        }
    ]
    named = BootstrapTls(ca_file="/c/ca.crt", server_name="other")
    with pytest.raises(ValueError, match="does not apply"):
        render_grpc_bootstrap("c", "default", "splitplane:15012", named)


def test_command_writes_the_sds_files_and_prints_the_bootstrap(
    run_cli: Any, tmp_path: Path
) -> None:
    sds = tmp_path / "sds"
    code, out, err = run_cli(
        "--node-id", "n", "--role", "sidecar", "--admin-port", "0",
        "--xds-address", "splitplane.splitplane-system.svc:15012",
        "--tls-ca-file", "/certs/ca.crt", "--tls-cert-file", "/certs/tls.crt",
        "--tls-key-file", "/certs/tls.key", "--sds-dir", str(sds),
    )  # fmt: skip

    assert code == 0, err
    tls = BootstrapTls("/certs/ca.crt", "/certs/tls.crt", "/certs/tls.key", sds_dir=str(sds))
    assert out == render_bootstrap(
        "n", "sidecar", "default", "splitplane.splitplane-system.svc:15012", 0, tls=tls
    )
    for path, text in render_sds_files(tls).items():
        assert Path(path).read_text() == text


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--tls-cert-file", "c", "--tls-key-file", "k"], "need --tls-ca-file"),
        (["--tls-ca-file", "ca"], "needs --sds-dir"),
        (["--tls-ca-file", "ca", "--sds-dir", "d", "--tls-cert-file", "c"], "go together"),
    ],
)
def test_command_refuses_incomplete_tls_flags(run_cli: Any, argv: list[str], message: str) -> None:
    code, _, err = run_cli(
        "--node-id", "n", "--role", "sidecar", "--admin-port", "0", "--xds-address", "a:1", *argv
    )

    assert code == 2
    assert message in err
