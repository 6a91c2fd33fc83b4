"""The in-process API server follows the real protocol, checked through the real client."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from kubernetes import client

from tests.kube import objects
from tests.kube.apiserver import FakeApiServer
from xds_server.sources.kubernetes import ApiStatusError, open_request, request_json


def watch_lines(api: client.ApiClient, path: str, **query: str) -> list[dict[str, Any]]:
    response = open_request(api, "GET", path, query={"watch": "true", **query})
    try:
        return [json.loads(line) for line in response.read().splitlines() if line.strip()]
    finally:
        response.release_conn()


def test_discovery_lists_groups_and_resources(
    apiserver: FakeApiServer, api: client.ApiClient
) -> None:
    apiserver.set_istio_versions(["v1beta1"])

    groups = client.ApisApi(api).get_api_versions().groups
    istio = next(g for g in groups if g.name == "networking.istio.io")
    core = client.CoreV1Api(api).get_api_resources().resources

    assert [v.version for v in istio.versions] == ["v1beta1"]
    assert {"services", "services/status", "pods"} <= {r.name for r in core}
    assert request_json(api, "GET", "/apis/networking.istio.io/v1beta1")["resources"]
    try:
        request_json(api, "GET", "/apis/networking.istio.io/v1")
    except ApiStatusError as err:
        assert err.status == 404
    else:
        raise AssertionError("an unserved version must be 404")


def test_pages_of_a_list_come_from_one_snapshot(
    apiserver: FakeApiServer, api: client.ApiClient
) -> None:
    for name in ("a", "b", "c"):
        apiserver.create(objects.service(name))
    path = "/api/v1/namespaces/default/services"

    first = request_json(api, "GET", path, query={"limit": 2})
    apiserver.create(objects.service("d"))
    apiserver.delete("Service", "default", "c")
    token = first["metadata"]["continue"]
    second = request_json(api, "GET", path, query={"limit": 2, "continue": token})

    names = [s["metadata"]["name"] for s in first["items"] + second["items"]]
    assert names == ["a", "b", "c"]
    assert second["metadata"]["resourceVersion"] == first["metadata"]["resourceVersion"]
    assert "continue" not in second["metadata"]
    assert "kind" not in first["items"][0]  # like the real server: items carry no kind


def test_a_watch_replays_history_after_its_version_and_ends_at_its_timeout(
    apiserver: FakeApiServer, api: client.ApiClient
) -> None:
    apiserver.create(objects.service("a"))
    start = str(apiserver.resource_version)
    apiserver.create(objects.pod("a-1", "10.0.0.1"))
    apiserver.apply({**objects.service("a"), "spec": {"ports": [{"port": 81}]}})
    apiserver.delete("Service", "default", "a")

    events = watch_lines(api, "/api/v1/services", resourceVersion=start, timeoutSeconds="1")

    assert [e["type"] for e in events] == ["MODIFIED", "DELETED"]
    versions = [int(e["object"]["metadata"]["resourceVersion"]) for e in events]
    assert versions == sorted(versions)
    assert all(e["object"]["kind"] == "Service" for e in events)


def test_a_watch_without_a_version_starts_with_the_current_objects(
    apiserver: FakeApiServer, api: client.ApiClient
) -> None:
    apiserver.create(objects.service("a"))

    events = watch_lines(api, "/api/v1/services", timeoutSeconds="1")

    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [("ADDED", "a")]


def test_a_watch_from_a_compacted_version_gets_a_410_error_event(
    apiserver: FakeApiServer, api: client.ApiClient
) -> None:
    apiserver.create(objects.service("a"))
    old = str(apiserver.resource_version)
    apiserver.create(objects.service("b"))
    apiserver.compact()

    events = watch_lines(api, "/api/v1/services", resourceVersion=old, timeoutSeconds="5")

    assert [e["type"] for e in events] == ["ERROR"]
    assert events[0]["object"]["code"] == 410


def test_bookmarks_are_sent_only_when_allowed(
    apiserver: FakeApiServer, api: client.ApiClient
) -> None:
    apiserver.bookmark_interval = 0.2
    now = str(apiserver.resource_version)

    with_bookmarks = watch_lines(
        api, "/api/v1/pods", resourceVersion=now, timeoutSeconds="1", allowWatchBookmarks="true"
    )
    without = watch_lines(api, "/api/v1/pods", resourceVersion=now, timeoutSeconds="1")

    assert with_bookmarks
    assert {e["type"] for e in with_bookmarks} == {"BOOKMARK"}
    assert with_bookmarks[0]["object"]["metadata"]["resourceVersion"] == now
    assert without == []


def test_writes_to_a_service_keep_its_status_and_status_writes_keep_its_spec(
    apiserver: FakeApiServer, api: client.ApiClient
) -> None:
    core = client.CoreV1Api(api)
    apiserver.create(objects.service("gw"))
    core.patch_namespaced_service_status(
        "gw", "default", {"status": {"loadBalancer": {"ingress": [{"ip": "127.0.0.9"}]}}}
    )

    core.patch_namespaced_service(
        "gw", "default", {"spec": {"ports": [{"port": 8080}]}, "status": {"loadBalancer": {}}}
    )

    stored = apiserver.get("Service", "default", "gw")
    assert stored is not None
    assert stored["status"]["loadBalancer"]["ingress"] == [{"ip": "127.0.0.9"}]
    assert stored["spec"]["ports"] == [{"port": 8080}]


def test_injected_faults_answer_matching_requests_then_expire(
    apiserver: FakeApiServer, api: client.ApiClient
) -> None:
    fault = apiserver.inject_fault(503, count=2, path_contains="/services")
    statuses = []
    for _ in range(3):
        try:
            request_json(api, "GET", "/api/v1/services")
            statuses.append(200)
        except ApiStatusError as err:
            statuses.append(err.status)

    assert statuses == [503, 503, 200]
    assert fault.hits == 2


def test_the_pods_proxy_forwards_to_the_pod_without_the_callers_credentials(
    apiserver: FakeApiServer, api: client.ApiClient
) -> None:
    seen: list[dict[str, str]] = []

    class Echo(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append({"path": self.path, **dict(self.headers)})
            data = json.dumps({"path": self.path}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            return

    with ThreadingHTTPServer(("127.0.0.1", 0), Echo) as pod_server:
        threading.Thread(target=pod_server.serve_forever, daemon=True).start()
        port = pod_server.server_address[1]
        apiserver.create(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": "web", "namespace": "default"},
                "status": {"phase": "Running", "podIP": "127.0.0.1"},
            }
        )
        path = f"/api/v1/namespaces/default/pods/web:{port}/proxy/debug/clients"

        answer = request_json(api, "GET", path, query={"node": "a b"})
        with pytest.raises(ApiStatusError) as missing:
            request_json(api, "GET", "/api/v1/namespaces/default/pods/gone:1/proxy/x")
        pod_server.shutdown()

    assert answer == {"path": "/debug/clients?node=a%20b"}
    assert "Authorization" not in seen[0]
    assert missing.value.status == 404
