"""The debug endpoint over HTTPS (`serve --debug-tls`): a status reader's client certificate is
as good as a bearer token, and `splitplane status --cacert --cert --key` presents one."""

from __future__ import annotations

import asyncio
import socket
import ssl
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509

from tests.support.pki import CertificateAuthority, Leaf, spiffe_id
from xds_server.app import ControlPlane, ServeOptions, serve
from xds_server.cli.main import main
from xds_server.debug.auth import with_client_certificates
from xds_server.debug.http import DebugServer, start_debug_server
from xds_server.xds.identity import DEFAULT_STATUS_READERS
from xds_server.xds.tls import ReloadingSslContext, TlsFiles


@dataclass
class Site:
    server: DebugServer
    ca: CertificateAuthority
    server_leaf: Leaf
    tmp: Path
    certificates: ReloadingSslContext

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server.port}"

    def status(self, *flags: str) -> int:
        return main(
            ["status", "--debug-address", self.address, "--cacert", str(self.ca_file), *flags]
        )

    @property
    def ca_file(self) -> Path:
        return self.server_leaf.ca_file

    def workload(self, name: str, namespace: str, account: str) -> list[str]:
        leaf = self.ca.issue(self.tmp / name, uris=[spiffe_id(namespace, account)])
        return ["--cert", str(leaf.cert_file), "--key", str(leaf.key_file)]


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    ca = CertificateAuthority.new("mesh root")
    server_leaf = ca.issue(tmp_path / "server", ips=["127.0.0.1"])
    certificates = ReloadingSslContext(
        TlsFiles(server_leaf.cert_file, server_leaf.key_file, server_leaf.ca_file)
    )
    auth = with_client_certificates(None, "cluster.local", DEFAULT_STATUS_READERS)
    server = start_debug_server(
        ControlPlane(), "127.0.0.1", 0, auth=auth, ssl_context=certificates.context
    )
    try:
        yield Site(server, ca, server_leaf, tmp_path, certificates)
    finally:
        server.stop()


def test_a_status_readers_certificate_reads_client_status(
    site: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    code = site.status(*site.workload("plane", "splitplane-system", "splitplane"))

    assert code == 0, capsys.readouterr().err
    assert "(no proxies connected)" in capsys.readouterr().out


def test_another_accounts_certificate_is_forbidden(
    site: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    assert site.status(*site.workload("app", "default", "reviews")) == 2
    assert "HTTP 403" in capsys.readouterr().err


def test_without_a_certificate_or_token_authentication_is_required(
    site: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    assert site.status() == 2
    assert "HTTP 401" in capsys.readouterr().err


def test_a_certificate_from_another_ca_does_not_connect(
    site: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    stranger = CertificateAuthority.new("another root")
    leaf = stranger.issue(
        site.tmp / "stranger", uris=[spiffe_id("splitplane-system", "splitplane")]
    )
    code = site.status("--cert", str(leaf.cert_file), "--key", str(leaf.key_file))

    assert code == 2
    assert "cannot reach the debug endpoint" in capsys.readouterr().err


def test_probes_stay_open_over_https(site: Site) -> None:
    context = ssl.create_default_context(cafile=site.ca_file)
    url = f"https://{site.address}/healthz"
    with urllib.request.urlopen(url, context=context, timeout=5) as response:
        assert response.status == 200
    with pytest.raises(OSError):  # the endpoint speaks HTTPS only
        urllib.request.urlopen(f"http://{site.address}/healthz", timeout=5)


def test_a_rotated_server_certificate_is_served_to_new_connections(site: Site) -> None:
    rotated = site.ca.issue(site.tmp / "server", ips=["127.0.0.1"])
    context = ssl.create_default_context(cafile=site.ca_file)
    with urllib.request.urlopen(f"https://{site.address}/healthz", context=context, timeout=5):
        pass
    assert site.certificates.reloads >= 1
    with (
        socket.create_connection(("127.0.0.1", site.server.port)) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    assert x509.load_der_x509_certificate(der).serial_number == rotated.serial


async def test_serve_with_debug_tls_serves_the_debug_endpoint_over_https(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ca = CertificateAuthority.new("mesh root")
    leaf = ca.issue(tmp_path / "server", ips=["127.0.0.1"])
    (tmp_path / "mesh").mkdir()
    options = ServeOptions(
        config_dir=tmp_path / "mesh",
        xds_address="127.0.0.1:0",
        debug_address="127.0.0.1:0",
        drain_seconds=0,
        tls=TlsFiles(leaf.cert_file, leaf.key_file, leaf.ca_file),
        debug_tls=True,
    )
    plane, stop, ready = ControlPlane(), asyncio.Event(), asyncio.Event()
    serving = asyncio.create_task(serve(options, plane, stop, ready))
    await ready.wait()
    try:
        address = f"127.0.0.1:{plane.debug_port}"
        https = ["status", "--debug-address", address, "--cacert", str(leaf.ca_file)]
        assert await asyncio.to_thread(main, https) == 0, capsys.readouterr().err
        assert await asyncio.to_thread(main, ["status", "--debug-address", address]) == 2
    finally:
        stop.set()
        await serving


def test_debug_tls_needs_the_xds_certificate_and_client_ca(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["serve", "--config-dir", str(tmp_path), "--debug-tls"]) == 2
    assert "--debug-tls needs" in capsys.readouterr().err
