"""The xDS port's transport (plaintext only on loopback or when asked, TLS files re-read when they
change) and the parsing of identities."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.pki import CertificateAuthority, spiffe_id
from xds_server.app import ServeOptions, xds_transport
from xds_server.cli.main import main
from xds_server.xds.identity import (
    ServiceAccount,
    SpiffeId,
    is_loopback_peer,
    parse_service_account,
    parse_spiffe_id,
)
from xds_server.xds.tls import ReloadingCertificates, TlsFiles, TlsFilesError


@pytest.fixture
def server_files(tmp_path: Path) -> TlsFiles:
    leaf = CertificateAuthority.new().issue(tmp_path / "server", dns=["splitplane"])
    return TlsFiles(leaf.cert_file, leaf.key_file, leaf.ca_file)


@pytest.mark.parametrize(
    "address", ["127.0.0.1:15010", "127.0.0.2:0", "[::1]:15010", "localhost:1"]
)
def test_plaintext_is_served_on_loopback_without_asking(address: str) -> None:
    credentials, policy, sentence = xds_transport(ServeOptions(xds_address=address))
    assert credentials is None
    assert not policy.mtls
    assert "loopback" in sentence


@pytest.mark.parametrize("address", ["0.0.0.0:15010", "10.0.0.5:15010", "[::]:15010"])
def test_plaintext_elsewhere_needs_insecure_xds(address: str) -> None:
    with pytest.raises(ValueError, match="--insecure-xds"):
        xds_transport(ServeOptions(xds_address=address))
    credentials, _, sentence = xds_transport(ServeOptions(xds_address=address, insecure_xds=True))
    assert credentials is None
    assert "--insecure-xds" in sentence


def test_tls_with_a_client_ca_is_mutual_tls(server_files: TlsFiles) -> None:
    credentials, policy, sentence = xds_transport(
        ServeOptions(xds_address="0.0.0.0:15012", tls=server_files)
    )
    assert credentials is not None
    assert policy.mtls
    assert "mutual TLS" in sentence
    without_ca = TlsFiles(server_files.cert_file, server_files.key_file)
    _, policy, sentence = xds_transport(ServeOptions(xds_address="0.0.0.0:15012", tls=without_ca))
    assert not policy.mtls
    assert "not identified" in sentence


def test_tls_and_insecure_xds_contradict(server_files: TlsFiles) -> None:
    with pytest.raises(ValueError, match="contradicts"):
        xds_transport(ServeOptions(tls=server_files, insecure_xds=True))


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--xds-address", "0.0.0.0:15010"], "--insecure-xds"),
        (["--tls-cert-file", "cert.pem"], "go together"),
        (["--client-ca-file", "ca.pem"], "--client-ca-file needs"),
        (["--gateway-service-account", "splitplane-lb"], "NAMESPACE/SERVICE_ACCOUNT"),
        (["--tls-cert-file", "missing.pem", "--tls-key-file", "missing.key"], "missing"),
    ],
)
def test_serve_refuses_an_unsafe_or_broken_transport_before_starting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: list[str], message: str
) -> None:
    code = main(["serve", "--config-dir", str(tmp_path), *flags])
    assert code == 2
    assert message in capsys.readouterr().err


def test_a_key_that_does_not_match_the_certificate_is_not_taken(server_files: TlsFiles) -> None:
    other = CertificateAuthority.new().issue(server_files.cert_file.parent.parent / "other")
    server_files.key_file.write_bytes(other.key_pem)
    with pytest.raises(TlsFilesError):
        ReloadingCertificates(server_files)


def test_changed_files_are_read_again_and_a_bad_change_keeps_the_last_good(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ca = CertificateAuthority.new()
    leaf = ca.issue(tmp_path / "server", dns=["splitplane"])
    certificates = ReloadingCertificates(TlsFiles(leaf.cert_file, leaf.key_file, leaf.ca_file))
    assert certificates.fetch() is None  # nothing changed

    other = ca.issue(tmp_path / "other", dns=["splitplane"])
    leaf.key_file.write_bytes(other.key_pem)  # half a rotation: the key no longer matches
    assert certificates.fetch() is None
    assert "keeping the last good certificate" in caplog.text
    assert certificates.fetch() is None  # the same bad files are not read again

    leaf.cert_file.write_bytes(other.cert_pem)  # the rotation completes
    assert certificates.fetch() is not None
    assert certificates.reloads == 1
    assert certificates.fetch() is None


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        (
            "spiffe://cluster.local/ns/default/sa/reviews",
            SpiffeId("cluster.local", "default", "reviews"),
        ),
        ("spiffe://td/ns/a/sa/b.c", SpiffeId("td", "a", "b.c")),
        ("spiffe://cluster.local/ns/default", None),
        ("spiffe://cluster.local/ns/Default/sa/x", None),
        ("spiffe:///ns/default/sa/x", None),
        ("https://cluster.local/ns/default/sa/x", None),
        ("spiffe://cluster.local/sa/x/ns/default", None),
    ],
)
def test_spiffe_ids_parse_only_in_the_kubernetes_form(uri: str, expected: SpiffeId | None) -> None:
    assert parse_spiffe_id(uri) == expected
    if expected is not None:
        assert expected.uri == uri


def test_spiffe_id_helper_writes_the_kubernetes_form() -> None:
    assert parse_spiffe_id(spiffe_id("ns1", "sa1")) == SpiffeId("cluster.local", "ns1", "sa1")


def test_service_accounts_are_namespace_slash_name() -> None:
    assert parse_service_account("splitplane-system/splitplane-lb") == ServiceAccount(
        "splitplane-system", "splitplane-lb"
    )
    for bad in ("splitplane-lb", "/x", "x/", "A/b", "a/b/c"):
        with pytest.raises(ValueError):
            parse_service_account(bad)


@pytest.mark.parametrize(
    ("peer", "loopback"),
    [
        ("ipv4:127.0.0.1:5000", True),
        ("ipv6:[::1]:5000", True),
        ("ipv4:10.0.0.1:5000", False),
        ("ipv6:[fe80::1]:5000", False),
        ("unix:/tmp/socket", True),
        ("", False),
    ],
)
def test_loopback_peers(peer: str, loopback: bool) -> None:
    assert is_loopback_peer(peer) is loopback
