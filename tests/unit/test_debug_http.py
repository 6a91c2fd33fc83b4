"""The debug endpoint: paths, filters, config dumps, errors."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from envoy.config.cluster.v3.cluster_pb2 import Cluster
from envoy.config.core.v3.base_pb2 import Node
from envoy.config.endpoint.v3.endpoint_pb2 import ClusterLoadAssignment

from translators.diagnostics import Diagnostic, Severity
from translators.model import MeshModel, Service
from xds_server.debug import views
from xds_server.debug.http import Response, handle
from xds_server.debug.metrics import Metrics
from xds_server.debug.views import SnapshotRenderer, resource_json, snapshot_json
from xds_server.xds.cache import CLUSTER, ENDPOINT, Resource, Snapshot, snapshot_from_messages
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
