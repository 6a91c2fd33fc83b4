"""`splitplane serve` over mutual TLS, end to end: a real Envoy and a real proxyless grpcio client,
each with a SPIFFE workload certificate and a bootstrap from `splitplane bootstrap --tls-*`, get
their configuration and route traffic; the server shows each one's verified identity.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import yaml

from tests.e2e.test_proxyless_grpc import ProxylessClient, grpc_backend
from tests.e2e.test_serve_envoy import (
    FolderMesh,
    answered,
    mesh_objects,
    splitplane_serve,
    virtual_service,
    wait_for,
)
from tests.e2e.test_serve_proxyless import grpc_mesh
from tests.support.backends import count_backends, free_port, http_backend
from tests.support.pki import CertificateAuthority, Leaf, spiffe_id
from xds_server.cli.bootstrap import (
    BootstrapTls,
    render_bootstrap,
    render_grpc_bootstrap,
    render_sds_files,
)
from xds_server.cli.local_envoy import running_envoy

pytestmark = pytest.mark.envoy

SERVER_NAME = "splitplane.splitplane-system.svc"


def mtls_args(server: Leaf) -> list[str]:
    return [
        "--tls-cert-file",
        str(server.cert_file),
        "--tls-key-file",
        str(server.key_file),
        "--client-ca-file",
        str(server.ca_file),
    ]


def serial_in_use(certs_json: str, serial: int) -> bool:
    """Whether Envoy's admin ``/certs`` lists a certificate chain with ``serial``."""
    listed = json.loads(certs_json)
    return any(
        int(cert["serial_number"], 16) == serial
        for entry in listed.get("certificates", [])
        for cert in entry.get("cert_chain", [])
    )


def identities(clients: list[dict[str, object]]) -> dict[str, object]:
    return {str(c["node_id"]): c["identity"] for c in clients}


def test_envoy_over_mutual_tls_gets_its_routes_and_splits_traffic(tmp_path: Path) -> None:
    ca = CertificateAuthority.new("mesh root")
    server_leaf = ca.issue(tmp_path / "server", dns=[SERVER_NAME])
    workload = ca.issue(tmp_path / "workload", uris=[spiffe_id("default", "reviews-client")])
    mesh = FolderMesh(tmp_path / "mesh")
    mesh.root.mkdir()
    with http_backend("v1") as v1, http_backend("v2") as v2:
        for obj in mesh_objects(v1, v2):
            mesh.put(obj)
        mesh.put(virtual_service(90, 10))
        with splitplane_serve(mesh, tmp_path, *mtls_args(server_leaf)) as server:
            tls = BootstrapTls(
                ca_file=str(workload.ca_file),
                cert_file=str(workload.cert_file),
                key_file=str(workload.key_file),
                server_name=SERVER_NAME,
                sds_dir=str(tmp_path / "sds"),
            )
            for path, text in render_sds_files(tls).items():
                Path(path).parent.mkdir(parents=True, exist_ok=True)
                Path(path).write_text(text)
            outbound = free_port()
            node_id = "sidecar~127.0.0.1~client.default~default.svc.cluster.local"
            bootstrap = yaml.safe_load(
                render_bootstrap(
                    node_id,
                    "sidecar",
                    "default",
                    f"127.0.0.1:{server.xds_port}",
                    0,
                    outbound_port=outbound,
                    tls=tls,
                )
            )
            with running_envoy(bootstrap, tmp_path / "envoy") as envoy:
                wait_for(lambda: answered(outbound, 5) == 5, "routes over mutual TLS")
                counts = count_backends(outbound, 200, host="reviews")
                assert counts["v1"] + counts["v2"] == 200, counts
                assert counts["v1"] > counts["v2"] > 0, counts

                clients = server.get("/debug/clients")["clients"]
                assert identities(clients) == {node_id: spiffe_id("default", "reviews-client")}
                status = subprocess.run(
                    [
                        str(Path(sys.executable).with_name("splitplane")),
                        "status",
                        "--debug-address",
                        f"127.0.0.1:{server.debug_port}",
                    ],
                    capture_output=True,
                    text=True,
                    timeout=30,
                    check=False,
                )
                assert spiffe_id("default", "reviews-client") in status.stdout, status

                # The workload certificate is rotated: Envoy reads it again through SDS, with no
                # restart.
                rotated = ca.issue(
                    tmp_path / "workload", uris=[spiffe_id("default", "reviews-client")]
                )
                wait_for(
                    lambda: serial_in_use(envoy.admin_get("/certs"), rotated.serial),
                    "Envoy to take the rotated client certificate",
                )
                assert answered(outbound, 5) == 5


async def test_proxyless_grpc_client_over_mutual_tls_routes_rpcs(tmp_path: Path) -> None:
    ca = CertificateAuthority.new("mesh root")
    # gRPC checks the server's certificate against the host it dials: here an IP address.
    server_leaf = ca.issue(tmp_path / "server", dns=[SERVER_NAME], ips=["127.0.0.1"])
    workload = ca.issue(tmp_path / "workload", uris=[spiffe_id("default", "grpc-client")])
    mesh = FolderMesh(tmp_path / "mesh")
    mesh.root.mkdir()
    with grpc_backend("v1") as v1, grpc_backend("v2") as v2:
        for obj in grpc_mesh({"v1": v1, "v2": v2}):
            mesh.put(obj)
        mesh.put(virtual_service(0, 100))
        with splitplane_serve(mesh, tmp_path, *mtls_args(server_leaf)) as server:
            tls = BootstrapTls(
                ca_file=str(workload.ca_file),
                cert_file=str(workload.cert_file),
                key_file=str(workload.key_file),
            )
            bootstrap = tmp_path / "grpc-bootstrap.json"
            bootstrap.write_text(
                render_grpc_bootstrap("grpc-client", "default", f"127.0.0.1:{server.xds_port}", tls)
            )
            client = ProxylessClient(bootstrap, "xds:///reviews:80")
            try:
                assert await client.calls(50) == Counter({"v2": 50})
                clients = server.get("/debug/clients")["clients"]
                assert identities(clients) == {"grpc-client": spiffe_id("default", "grpc-client")}
            finally:
                client.stop()
