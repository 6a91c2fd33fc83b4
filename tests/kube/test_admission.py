"""The validating admission webhook: `serve --admission-address` answers AdmissionReview v1
requests over HTTPS, allowing a good VirtualService and refusing a bad one with the message
`splitplane validate` prints for it."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import ipaddress
import json
import shutil
import ssl
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.kube import objects
from tests.support.backends import free_port
from xds_server.app import ServeOptions, serve
from xds_server.cli.validate import validate_paths
from xds_server.kube.admission import AdmissionServer

LOCAL = Path(__file__).resolve().parents[2] / "deploy" / "examples" / "local"


def mint(folder: Path) -> tuple[Path, Path, Path]:
    """A CA, and a server certificate it signed for 127.0.0.1 (what cert-manager would issue)."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test webhook CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "splitplane")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = folder / "ca.pem", folder / "tls.crt", folder / "tls.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return paths


@pytest.fixture
async def webhook(tmp_path: Path) -> AsyncIterator[tuple[str, ssl.SSLContext, Path]]:
    """`serve` of the local canary with the webhook on; yields its URL, a client TLS context that
    trusts the CA, and the mesh folder."""
    ca, cert, key = mint(tmp_path)
    mesh = tmp_path / "mesh"
    shutil.copytree(LOCAL, mesh)
    port = free_port()
    options = ServeOptions(
        config_dir=mesh,
        xds_address="127.0.0.1:0",
        debug_address="127.0.0.1:0",
        drain_seconds=0,
        admission_address=f"127.0.0.1:{port}",
        admission_cert=str(cert),
        admission_key=str(key),
    )
    stop, ready = asyncio.Event(), asyncio.Event()
    server = asyncio.create_task(serve(options, stop=stop, ready=ready))
    try:
        await ready.wait()
        yield f"https://127.0.0.1:{port}/validate", ssl.create_default_context(cafile=ca), mesh
    finally:
        stop.set()
        await server


def admission_review(obj: dict[str, Any], operation: str = "CREATE") -> dict[str, Any]:
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
            "kind": {"group": "networking.istio.io", "version": "v1", "kind": obj["kind"]},
            "resource": {"group": "networking.istio.io", "version": "v1", "resource": "x"},
            "namespace": "default",
            "operation": operation,
            "object": obj,
        },
    }


async def post(url: str, context: ssl.SSLContext, body: dict[str, Any]) -> dict[str, Any]:
    def call() -> dict[str, Any]:
        request = urllib.request.Request(
            url, json.dumps(body).encode(), {"Content-Type": "application/json"}, method="POST"
        )
        with urllib.request.urlopen(request, context=context, timeout=10) as response:
            answer: dict[str, Any] = json.load(response)
            return answer

    return await asyncio.to_thread(call)


async def test_a_good_virtual_service_is_allowed(
    webhook: tuple[str, ssl.SSLContext, Path],
) -> None:
    url, context, _ = webhook
    answer = await post(
        url, context, admission_review(objects.virtual_service("reviews", {"v1": 50, "v2": 50}))
    )

    assert answer == {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "response": {"uid": "705ab4f5-6393-11e8-b7cc-42010a800002", "allowed": True},
    }


async def test_a_bad_virtual_service_is_refused_with_validates_message(
    webhook: tuple[str, ssl.SSLContext, Path], tmp_path: Path
) -> None:
    url, context, mesh = webhook
    bad = objects.virtual_service("reviews", {"v1": 0, "v2": 0})
    del bad["metadata"]["namespace"]  # as `kubectl create` sends it: the namespace is the request's

    answer = await post(url, context, admission_review(bad))

    offline = tmp_path / "offline"
    shutil.copytree(mesh, offline)
    (offline / "canary.yaml").write_text(
        "---\n".join(
            yaml.safe_dump(d)
            for d in yaml.safe_load_all((mesh / "canary.yaml").read_text())
            if d and d["kind"] != "VirtualService"
        )
    )
    (offline / "bad.yaml").write_text(yaml.safe_dump(bad))
    errors = [d for d in validate_paths([offline]) if d.is_error]
    assert errors, "validate finds the error too"
    response = answer["response"]
    assert response["allowed"] is False
    assert response["status"] == {
        "code": 400,
        "message": "\n".join(dataclasses.replace(d, file="").render() for d in errors),
    }
    assert "weights sum to 0" in response["status"]["message"]


async def test_a_sidecar_is_checked_as_validate_checks_it(
    webhook: tuple[str, ssl.SSLContext, Path],
) -> None:
    url, context, _ = webhook

    good = await post(url, context, admission_review(objects.sidecar("default", ["./*"])))
    bad = await post(url, context, admission_review(objects.sidecar("default", ["reviews"])))

    assert good["response"]["allowed"] is True
    assert bad["response"]["allowed"] is False
    assert bad["response"]["status"]["message"] == (
        "error: Sidecar/default/default spec.egress[0].hosts[0]:"
        " 'reviews' must be of the form namespace/dnsName"
    )


async def test_a_deletion_is_always_allowed(webhook: tuple[str, ssl.SSLContext, Path]) -> None:
    url, context, _ = webhook
    bad = objects.virtual_service("reviews", {"v1": 0, "v2": 0})

    answer = await post(url, context, admission_review(bad, operation="DELETE"))

    assert answer["response"]["allowed"] is True


async def test_the_webhook_starts_once_its_certificate_is_issued(tmp_path: Path) -> None:
    issued = tmp_path / "issued"
    port = free_port()
    server = AdmissionServer(
        "127.0.0.1",
        port,
        str(tmp_path / "secret" / "tls.crt"),
        str(tmp_path / "secret" / "tls.key"),
        list,
        poll_seconds=0.05,
    )
    await server.start()
    try:
        assert not server.serving  # nothing to serve with yet
        issued.mkdir()
        ca, _, _ = mint(issued)
        issued.rename(tmp_path / "secret")  # the Secret volume fills at once, as kubelet does
        context = ssl.create_default_context(cafile=tmp_path / "secret" / ca.name)
        url = f"https://127.0.0.1:{port}/validate"
        async with asyncio.timeout(10):
            while not server.serving:
                await asyncio.sleep(0.02)
        review = admission_review(objects.destination_rule("reviews"))
        assert (await post(url, context, review))["response"]["allowed"] is True
    finally:
        await server.stop()


def issue(secret: Path, version: str) -> Path:
    """A new certificate from a new CA into ``secret``, swapped in at once as kubelet updates a
    mounted Secret (``..data`` points at the new version); returns the CA's file."""
    folder = secret / version
    folder.mkdir()
    ca, _, _ = mint(folder)
    (secret / "..data_tmp").symlink_to(version)
    (secret / "..data_tmp").replace(secret / "..data")
    return ca


async def test_the_webhook_serves_a_renewed_certificate_without_a_restart(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.mkdir()
    first_ca = issue(secret, "first")
    for name in ("tls.crt", "tls.key"):
        (secret / name).symlink_to(f"..data/{name}")
    port = free_port()
    server = AdmissionServer(
        "127.0.0.1", port, str(secret / "tls.crt"), str(secret / "tls.key"), list
    )
    await server.start()
    url = f"https://127.0.0.1:{port}/validate"
    review = admission_review(objects.destination_rule("reviews"))
    try:
        first = await post(url, ssl.create_default_context(cafile=first_ca), review)
        renewed_ca = issue(secret, "renewed")  # cert-manager renews; the Secret volume follows
        renewed = await post(url, ssl.create_default_context(cafile=renewed_ca), review)
    finally:
        await server.stop()

    assert first["response"]["allowed"] is True
    assert renewed["response"]["allowed"] is True
