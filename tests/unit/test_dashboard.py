"""The dashboard's views: paged and filtered on the server, every proxy's state with Envoy's
error text, the page itself self-contained, and a live event when what a view shows changes."""

from __future__ import annotations

import json
import re
import socket
import time
from dataclasses import replace

from envoy.config.core.v3.base_pb2 import Node

from tests.unit.test_debug_http import State, reviews_snapshot
from tests.unit.test_debug_server import debug_server
from translators.diagnostics import Diagnostic, Severity
from translators.model import HttpRoute, MeshModel, Redirect, VirtualHost, WeightedCluster
from xds_server.debug import dashboard
from xds_server.debug.dashboard import PageQuery, page_query, proxies_page, services_page
from xds_server.debug.http import handle
from xds_server.xds.cache import CLUSTER
from xds_server.xds.client_status import ClientRegistry
from xds_server.xds.load_reports import Load


def service_host(n: int, v2: int = 10) -> VirtualHost:
    hostname = f"svc{n:05d}.default.svc.cluster.local"
    route = HttpRoute(
        destinations=(
            WeightedCluster(f"outbound|80|v1|{hostname}", 100 - v2),
            WeightedCluster(f"outbound|80|v2|{hostname}", v2),
        )
    )
    return VirtualHost(f"{hostname}:80", 80, (f"svc{n:05d}",), (route,), f"default/svc{n:05d}")


def mesh(count: int) -> MeshModel:
    plain = VirtualHost("plain.default.svc.cluster.local:80", 80, ("plain",), ())
    return MeshModel(mesh_hosts=(plain, *(service_host(n) for n in range(count))))


def test_the_server_sends_one_page_of_ten_thousand_services() -> None:
    page = services_page(mesh(10_000), {}, 60.0, PageQuery(page=3, size=50))

    assert (page["total"], page["pages"], page["page"], len(page["items"])) == (10_000, 200, 3, 50)
    assert page["items"][0]["virtual_service"] == "default/svc00100"
    assert page["items"][0]["origin"] == "VirtualService default/svc00100"


def test_a_virtual_service_from_a_folder_names_its_file_and_line() -> None:
    read = {("VirtualService", "default", "svc00001"): ("team-a/routes.yaml", 42)}

    page = services_page(mesh(3), {}, 60.0, PageQuery(), lambda *key: read.get(key))

    first, second, _ = page["items"]
    assert first["origin"] == "VirtualService default/svc00000"  # not from a folder: its name
    assert "file" not in first
    assert (second["origin"], second["file"], second["line"]) == (
        "team-a/routes.yaml:42",
        "team-a/routes.yaml",
        42,
    )


def test_the_filter_matches_any_part_of_a_service_and_paging_follows_it() -> None:
    page = services_page(mesh(10_000), {}, 60.0, page_query({"q": "SVC0999", "size": "4"}))

    assert page["total"] == 10  # svc09990 .. svc09999
    assert [item["virtual_service"] for item in page["items"]] == [
        f"default/svc0999{n}" for n in range(4)
    ]
    by_cluster = services_page(mesh(100), {}, 60.0, page_query({"q": "outbound|80|v2|svc00042"}))
    assert [item["host"] for item in by_cluster["items"]] == [
        "svc00042.default.svc.cluster.local:80"
    ]


def test_a_page_past_the_end_is_the_last_page_and_sizes_are_clamped() -> None:
    assert page_query({"page": "0", "size": "100000"}) == PageQuery("", 1, dashboard.MAX_PAGE_SIZE)
    assert page_query({"page": "x", "size": "-3"}) == PageQuery("", 1, dashboard.DEFAULT_PAGE_SIZE)
    page = services_page(mesh(7), {}, 60.0, PageQuery(page=99, size=5))
    assert (page["page"], len(page["items"])) == (2, 2)


def test_routes_show_configured_and_observed_shares_and_their_other_actions() -> None:
    host = service_host(1, v2=25)
    redirect = HttpRoute(redirect=Redirect(uri="/elsewhere"))
    host = replace(host, routes=(redirect, *host.routes))
    v2 = "outbound|80|v2|svc00001.default.svc.cluster.local"
    loads = {v2: Load(issued=30, succeeded=27, failed=3)}

    [item] = services_page(MeshModel(mesh_hosts=(host,)), loads, 60.0, PageQuery())["items"]

    assert item["routes"][0] == {"route": 0, "name": "", "action": "redirect"}
    v1_entry, v2_entry = item["routes"][1]["destinations"]
    assert (v1_entry["configured_share"], v1_entry["observed_share"]) == (0.75, 0.0)
    assert (v2_entry["configured_share"], v2_entry["observed_share"]) == (0.25, 1.0)
    assert v2_entry["error_rate"] == 0.1


def test_proxies_show_state_per_type_with_envoys_whole_error_and_troubled_ones_first() -> None:
    registry = ClientRegistry()
    clusters = reviews_snapshot().of_type(CLUSTER)
    fine = registry.connect(Node(id="a-fine"), "sidecar", "sidecar:15001", "sotw")
    fine.sent(CLUSTER, clusters.version, "1", clusters.resources)
    fine.acked(CLUSTER, "1")
    lb = "spiffe://cluster.local/ns/splitplane-system/sa/splitplane-lb"
    broken = registry.connect(Node(id="z-broken"), "gateway", "gateway:8080", "delta", identity=lb)
    error = "Proto constraint validation failed (ClusterValidationError.Name: " + "x" * 500 + ")"
    broken.sent(CLUSTER, "v2", "2", clusters.resources)
    broken.nacked(CLUSTER, "2", error)

    page = proxies_page(registry.views(), PageQuery())

    first, second = page["items"]
    assert (first["node_id"], first["state"], first["identity"]) == ("z-broken", "NACKED", lb)
    assert second["identity"] == ""
    [cds] = [t for t in first["types"] if t["type"] == "clusters"]
    assert (cds["state"], cds["error"], cds["nacked_version"]) == ("NACKED", error, "v2")
    assert (second["node_id"], second["state"]) == ("a-fine", "SYNCED")
    assert [t["state"] for t in second["types"]] == [
        "SYNCED", "NOT_SENT", "NOT_SENT", "NOT_SENT", "NOT_SENT",
    ]  # fmt: skip
    assert [p["node_id"] for p in proxies_page(registry.views(), PageQuery("nacked"))["items"]] == [
        "z-broken"
    ]


def test_diagnostics_are_paged_errors_first_and_filtered() -> None:
    warnings = [
        Diagnostic("VirtualService", "default", f"w{n}", "spec", "a warning", Severity.WARNING)
        for n in range(3)
    ]
    error = Diagnostic("VirtualService", "default", "bad", "spec.http", "weights sum to 0")
    found = (*warnings, error)
    state = State(found=found)

    page = json.loads(handle(state, "/dashboard/diagnostics?size=2").body)

    assert page["total"] == 4
    assert [d["name"] for d in page["items"]] == ["bad", "w0"]
    filtered = json.loads(handle(state, "/dashboard/diagnostics?q=sum+to").body)
    assert [d["name"] for d in filtered["items"]] == ["bad"]


def test_the_page_is_self_contained_html() -> None:
    response = handle(State(), "/")

    assert response.status == 200
    assert response.content_type.startswith("text/html")
    page = response.body.decode()
    assert "<script>" in page and "<style>" in page
    assert not re.search(r"""(src|href)=["'](https?:)?//""", page)
    assert "@import" not in page and "url(" not in page


def read_event(sock: socket.socket, deadline: float) -> list[str]:
    """The views named by the next change event on the stream."""
    data = b""
    while (found := re.search(rb"event: change\ndata: (\[.*?\])\n\n", data)) is None:
        if time.monotonic() > deadline:
            raise AssertionError(f"no change event; got {data!r}")
        data += sock.recv(4096)
    views: list[str] = json.loads(found.group(1))
    return views


def test_a_browser_listening_to_events_hears_which_view_changed() -> None:
    state = State(mesh=mesh(3))
    with debug_server(state=state) as server:
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        sock.sendall(b"GET /dashboard/events HTTP/1.1\r\nHost: x\r\n\r\n")
        head = sock.recv(4096)
        assert b"200 OK" in head and b"text/event-stream" in head
        time.sleep(2 * dashboard.POLL_SECONDS)  # the first fingerprints are taken

        state.mesh = mesh(4)  # a new translation

        assert read_event(sock, time.monotonic() + 10) == ["services"]

        state.found = (Diagnostic("Service", "default", "x", "spec", "bad"),)
        assert read_event(sock, time.monotonic() + 10) == ["diagnostics"]
        sock.close()
