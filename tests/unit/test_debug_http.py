"""The debug endpoint: paths, filters, config dumps, errors."""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from envoy.config.cluster.v3.cluster_pb2 import Cluster
from envoy.config.core.v3.base_pb2 import Node
from envoy.config.endpoint.v3.endpoint_pb2 import ClusterLoadAssignment
from envoy.config.route.v3.route_components_pb2 import VirtualHost
from envoy.config.route.v3.route_pb2 import RouteConfiguration

from translators.diagnostics import Diagnostic, Severity
from translators.model import MeshModel, Service
from xds_server.debug import views
from xds_server.debug.http import Response, handle
from xds_server.debug.metrics import Metrics
from xds_server.debug.views import SnapshotRenderer, resource_json, snapshot_json
from xds_server.xds.cache import (
    CLUSTER,
    ENDPOINT,
    ROUTE,
    Resource,
    Snapshot,
    snapshot_from_messages,
)
from xds_server.xds.client_status import ClientRegistry, ClientView
from xds_server.xds.load_reports import Load

CLUSTER_NAME = "outbound|80||reviews.default.svc.cluster.local"


def reviews_snapshot() -> Snapshot:
    cluster = Cluster(name=CLUSTER_NAME, type=Cluster.EDS)
    cluster.eds_cluster_config.service_name = CLUSTER_NAME
    cluster.eds_cluster_config.eds_config.ads.SetInParent()
    return snapshot_from_messages(
        {CLUSTER: [cluster], ENDPOINT: [ClusterLoadAssignment(cluster_name=CLUSTER_NAME)]}
    )


@dataclass
class State:
    metrics: Metrics = field(default_factory=Metrics)
    registry: ClientRegistry = field(default_factory=ClientRegistry)
    groups: dict[str, Snapshot] = field(default_factory=dict)
    mesh: MeshModel | None = None
    found: tuple[Diagnostic, ...] = ()
    ready: bool = True
    loads: dict[str, Load] = field(default_factory=dict)
    traffic_window: float = 60.0

    def snapshots(self) -> Mapping[str, Snapshot]:
        return self.groups

    def clients(self) -> Sequence[ClientView]:
        return self.registry.views()

    def model(self) -> MeshModel | None:
        return self.mesh

    def diagnostics(self) -> Sequence[Diagnostic]:
        return self.found

    def is_ready(self) -> bool:
        return self.ready

    def traffic(self) -> Mapping[str, Load]:
        return self.loads

    def origin(self, kind: str, namespace: str, name: str) -> tuple[str, int] | None:
        return None


def body(response: Response) -> Any:
    return json.loads(response.body)


@pytest.fixture
def state() -> State:
    return State(groups={"sidecar:15001": reviews_snapshot()})


def test_snapshot_lists_every_group_type_version_and_resource(state: State) -> None:
    response = handle(state, "/debug/snapshot")

    assert response.status == 200
    clusters = body(response)["groups"]["sidecar:15001"]["clusters"]
    assert clusters["version"] == state.groups["sidecar:15001"].of_type(CLUSTER).version
    [entry] = clusters["resources"]
    assert entry["name"] == CLUSTER_NAME
    assert entry["resource"]["@type"] == CLUSTER
    assert entry["resource"]["type"] == "EDS"


def test_snapshot_filters_by_group_and_short_type(state: State) -> None:
    state.groups["gateway:8080"] = reviews_snapshot()

    data = body(handle(state, "/debug/snapshot?group=gateway:8080&type=endpoints"))

    assert list(data["groups"]) == ["gateway:8080"]
    assert list(data["groups"]["gateway:8080"]) == ["endpoints"]


def test_snapshot_rejects_an_unknown_type_and_group(state: State) -> None:
    assert handle(state, "/debug/snapshot?type=secrets").status == 400
    missing = handle(state, "/debug/snapshot?group=nope")
    assert missing.status == 404
    assert "nope" in body(missing)["error"]


def test_config_dump_shows_what_the_node_was_sent_and_rejected(state: State) -> None:
    record = state.registry.connect(Node(id="envoy-1"), "sidecar", "sidecar:15001", "sotw")
    clusters = state.groups["sidecar:15001"].of_type(CLUSTER)
    record.sent(CLUSTER, clusters.version, "1", clusters.resources)
    record.acked(CLUSTER, "1")
    record.sent(CLUSTER, "v2", "2", clusters.resources)
    record.nacked(CLUSTER, "2", "duplicate cluster name")

    dump = body(handle(state, "/debug/config_dump?node=envoy-1"))

    cluster_dump = next(c for c in dump["configs"] if c["@type"].endswith("ClustersConfigDump"))
    assert cluster_dump["dynamic_active_clusters"][0]["cluster"]["name"] == CLUSTER_NAME
    assert dump["node"]["id"] == "envoy-1"
    assert dump["rejected"]["clusters"]["details"] == "duplicate cluster name"
    assert dump["rejected"]["clusters"]["version_info"] == "v2"


def test_config_dump_of_a_node_that_is_not_connected_is_404_naming_it(state: State) -> None:
    response = handle(state, "/debug/config_dump?node=ghost")

    assert response.status == 404
    assert "ghost" in body(response)["error"]


def test_clients_show_per_type_state(state: State) -> None:
    record = state.registry.connect(Node(id="envoy-1"), "sidecar", "sidecar:15001", "delta")
    record.subscribed(ENDPOINT)
    record.sent(CLUSTER, "abc", "1", ())

    [client] = body(handle(state, "/debug/clients"))["clients"]

    assert client["node_id"] == "envoy-1"
    assert client["protocol"] == "delta"
    states = {entry["type"]: entry["state"] for entry in client["types"]}
    assert states == {"clusters": "STALE", "endpoints": "NOT_SENT"}


def test_model_and_diagnostics_render_as_json(state: State) -> None:
    state.mesh = MeshModel(services=(Service("reviews", "default", "reviews.default.svc"),))
    state.found = (
        Diagnostic("VirtualService", "default", "r", "spec.hosts[0]", "bad", Severity.ERROR),
    )

    model = body(handle(state, "/debug/model"))["model"]
    diagnostics = body(handle(state, "/debug/diagnostics"))["diagnostics"]

    assert model["services"][0]["name"] == "reviews"
    assert diagnostics == [
        {
            "severity": "error",
            "kind": "VirtualService",
            "namespace": "default",
            "name": "r",
            "field": "spec.hosts[0]",
            "message": "bad",
        }
    ]


def test_probes_and_metrics(state: State) -> None:
    assert handle(state, "/healthz").status == 200
    assert handle(state, "/readyz").status == 200
    state.ready = False
    assert handle(state, "/readyz").status == 503
    metrics = handle(state, "/metrics")
    assert metrics.content_type.startswith("text/plain")
    assert b"splitplane_xds_pushes_total" in metrics.body


def test_unknown_path_is_404_json(state: State) -> None:
    response = handle(state, "/debug/nothing")

    assert response.status == 404
    assert body(response) == {"error": "no such path '/debug/nothing'"}


def test_snapshot_text_is_the_json_of_every_group_type_and_resource(state: State) -> None:
    state.groups["gateway:8080"] = reviews_snapshot()

    for query in ("", "?type=clusters", "?group=gateway:8080"):
        response = handle(state, "/debug/snapshot" + query)

        params = dict(p.split("=") for p in query[1:].split("&") if p)
        expected = snapshot_json(state.groups, params.get("group"), params.get("type"))
        assert response.body == (json.dumps(expected, indent=2) + "\n").encode()


def test_polling_the_snapshot_renders_each_resource_once_per_version(
    state: State, monkeypatch: pytest.MonkeyPatch
) -> None:
    rendered: list[str] = []

    def counting(resource: Resource) -> dict[str, Any]:
        rendered.append(resource.name)
        return resource_json(resource)

    monkeypatch.setattr(views, "resource_json", counting)
    renderer = SnapshotRenderer()
    first = handle(state, "/debug/snapshot", renderer).body
    assert handle(state, "/debug/snapshot", renderer).body == first
    assert sorted(rendered) == sorted([CLUSTER_NAME, CLUSTER_NAME])  # the cluster, its endpoints

    cluster = Cluster(name=CLUSTER_NAME, type=Cluster.EDS)
    cluster.eds_cluster_config.service_name = CLUSTER_NAME
    cluster.eds_cluster_config.eds_config.ads.SetInParent()
    cluster.connect_timeout.seconds = 3  # a new cluster version, the same endpoints
    state.groups["sidecar:15001"] = snapshot_from_messages(
        {CLUSTER: [cluster], ENDPOINT: [ClusterLoadAssignment(cluster_name=CLUSTER_NAME)]}
    )
    rendered.clear()
    changed = body(handle(state, "/debug/snapshot", renderer))

    assert rendered == [CLUSTER_NAME]
    assert (
        changed["groups"]["sidecar:15001"]["clusters"]["resources"][0]["resource"][
            "connect_timeout"
        ]
        == "3s"
    )


def test_a_type_whose_version_did_not_change_keeps_its_rendered_text(
    state: State, monkeypatch: pytest.MonkeyPatch
) -> None:
    sections: list[str] = []
    section_text = views._section_text

    def counting(version: str, entries: Sequence[str]) -> str:
        sections.append(version)
        return section_text(version, entries)

    monkeypatch.setattr(views, "_section_text", counting)
    renderer = SnapshotRenderer()
    handle(state, "/debug/snapshot", renderer)
    assert len(sections) == 5  # clusters, endpoints, listeners, scopes, routes

    snapshot = state.groups["sidecar:15001"]
    cluster = Cluster(name=CLUSTER_NAME, type=Cluster.EDS)
    cluster.eds_cluster_config.service_name = CLUSTER_NAME
    cluster.eds_cluster_config.eds_config.ads.SetInParent()
    cluster.connect_timeout.seconds = 3
    state.groups["sidecar:15001"] = changed = snapshot_from_messages(
        {CLUSTER: [cluster], ENDPOINT: [ClusterLoadAssignment(cluster_name=CLUSTER_NAME)]}
    )
    sections.clear()
    text = handle(state, "/debug/snapshot", renderer).body

    assert sections == [changed.of_type(CLUSTER).version]  # the clusters only
    assert text == (json.dumps(snapshot_json(state.groups), indent=2) + "\n").encode()
    assert snapshot.of_type(ENDPOINT).version == changed.of_type(ENDPOINT).version


def test_readers_asking_at_once_share_one_render(
    state: State, monkeypatch: pytest.MonkeyPatch
) -> None:
    rendered: list[str] = []
    release = threading.Event()

    def slow(resource: Resource) -> dict[str, Any]:
        rendered.append(resource.name)
        release.wait(10)
        return resource_json(resource)

    monkeypatch.setattr(views, "resource_json", slow)
    renderer = SnapshotRenderer()
    looked = threading.Semaphore(0)
    kept = renderer._kept

    def looking(*args: Any) -> bytes | None:
        found = kept(*args)
        looked.release()
        return found

    monkeypatch.setattr(renderer, "_kept", looking)
    results: list[bytes] = []
    readers = [
        threading.Thread(target=lambda: results.append(renderer.render(state.groups)))
        for _ in range(3)
    ]
    readers[0].start()
    looked.acquire(timeout=10)
    while not rendered:  # the first reader is rendering
        release.wait(0.01)
    for reader in readers[1:]:
        reader.start()
    for _ in range(2):  # both found nothing rendered yet
        looked.acquire(timeout=10)
    release.set()
    for reader in readers:
        reader.join(10)

    assert len(results) == 3 and results[0] is results[1] is results[2]
    assert renderer.renders == 1
    assert sorted(rendered) == [CLUSTER_NAME, CLUSTER_NAME]  # the cluster and its endpoints


def clients_state() -> State:
    state = State()
    synced = state.registry.connect(Node(id="envoy-1"), "sidecar", "sidecar:15001", "sotw")
    synced.sent(CLUSTER, "abc", "1", ())
    synced.acked(CLUSTER, "1")
    rejected = state.registry.connect(Node(id="envoy-2"), "gateway", "gateway:8080", "delta")
    rejected.sent(CLUSTER, "abc", "7", ())
    rejected.nacked(CLUSTER, "7", "bad cluster")
    state.registry.connect(Node(id="envoy-3"), "sidecar", "sidecar:15001", "sotw")
    return state


def test_clients_text_is_the_json_of_every_client() -> None:
    state = clients_state()
    renderer = views.ClientsRenderer()

    text = handle(state, "/debug/clients", clients_renderer=renderer).body

    expected = views.clients_json(state.clients())
    assert text == (json.dumps(expected, indent=2) + "\n").encode()
    assert renderer.render([]) == b'{\n  "clients": []\n}\n'
    assert json.loads(renderer.render([])) == {"clients": []}


def test_polling_the_clients_renders_each_client_once_per_state() -> None:
    state = clients_state()
    renderer = views.ClientsRenderer()
    first = renderer.render(state.clients())
    assert renderer.rendered == 3

    assert renderer.render(state.clients()) is first  # nothing changed: the same document
    assert renderer.rendered == 3

    [record] = [r for r in state.registry if r.node.id == "envoy-3"]
    record.sent(CLUSTER, "def", "2", ())
    changed = json.loads(renderer.render(state.clients()))

    assert renderer.rendered == 4  # envoy-3 alone
    states = {
        c["node_id"]: c["types"][0]["state"] if c["types"] else None for c in changed["clients"]
    }
    assert states == {"envoy-1": "SYNCED", "envoy-2": "NACKED", "envoy-3": "STALE"}
    state.registry.disconnect(record)
    assert [c["node_id"] for c in json.loads(renderer.render(state.clients()))["clients"]] == [
        "envoy-1",
        "envoy-2",
    ]


def route_table(weights: tuple[int, int], hosts: int = 3) -> RouteConfiguration:
    table = RouteConfiguration(name="15001")
    table.validate_clusters.value = False  # a field after the virtual hosts
    for index in range(hosts):
        host = table.virtual_hosts.add(name=f"svc-{index}.default:80", domains=[f"svc-{index}"])
        route = host.routes.add()
        route.match.prefix = "/"
        split = route.route.weighted_clusters
        split.clusters.add(name=f"outbound|80|v1|svc-{index}", weight={"value": weights[0]})
        split.clusters.add(name=f"outbound|80|v2|svc-{index}", weight={"value": weights[1]})
    return table


def test_a_route_tables_virtual_hosts_are_rendered_once_per_version(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rendered: list[str] = []
    virtual_host_text = views.virtual_host_text

    def counting(body: bytes) -> str:
        rendered.append(VirtualHost.FromString(body).name)
        return virtual_host_text(body)

    monkeypatch.setattr(views, "virtual_host_text", counting)
    table = route_table((90, 10))
    state = State(groups={"sidecar:15001": snapshot_from_messages({ROUTE: [table]})})
    renderer = SnapshotRenderer()
    first = handle(state, "/debug/snapshot", renderer).body
    assert first == (json.dumps(snapshot_json(state.groups), indent=2) + "\n").encode()
    assert len(rendered) == 3

    flipped = RouteConfiguration()
    flipped.CopyFrom(table)
    split = flipped.virtual_hosts[1].routes[0].route.weighted_clusters
    split.clusters[0].weight.value, split.clusters[1].weight.value = 10, 90
    empty = RouteConfiguration(name="15002")
    state.groups["sidecar:15001"] = snapshot_from_messages({ROUTE: [flipped, empty]})
    rendered.clear()
    text = handle(state, "/debug/snapshot", renderer).body

    assert rendered == ["svc-1.default:80"]  # the flipped host alone
    assert text == (json.dumps(snapshot_json(state.groups), indent=2) + "\n").encode()
