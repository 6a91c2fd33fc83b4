"""The Kubernetes source against an in-process API server speaking the real list/watch protocol."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from kubernetes import client

from tests.kube import objects
from tests.kube.apiserver import FakeApiServer, RequestRecord, write_kubeconfig
from tests.kube.conftest import FAST, SourceFactory
from tests.kube.recording_sink import RecordingSink
from xds_server.sources.kubernetes import (
    Backoff,
    KubernetesSource,
    api_client_from_flags,
    backoff_delay,
)

ALL_KINDS = {
    "Service",
    "EndpointSlice",
    "Pod",
    "VirtualService",
    "DestinationRule",
    "Sidecar",
    "Ingress",
    "IngressClass",
}


def wait_until(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition never held")
        time.sleep(0.01)


def watches(server: FakeApiServer, path: str) -> list[RequestRecord]:
    return [r for r in server.requests if r.path == path and r.is_watch]


def lists(server: FakeApiServer, path: str) -> list[RequestRecord]:
    return [r for r in server.requests if r.path == path and not r.is_watch]


def synced(sink: RecordingSink) -> bool:
    return sink.synced


def test_first_list_delivers_every_kind_then_marks_synced_once(
    apiserver: FakeApiServer, sink: RecordingSink, start_source: SourceFactory
) -> None:
    for obj in (
        objects.service("reviews"),
        objects.pod("reviews-1", "10.0.0.1"),
        objects.endpoint_slice("reviews-abc", "reviews", ["10.0.0.1"]),
        objects.virtual_service("reviews", {"v1": 90, "v2": 10}),
        objects.destination_rule("reviews"),
        objects.sidecar("default", ["./*"]),
        objects.ingress("web", "reviews"),
        objects.ingress_class(),
    ):
        apiserver.create(obj)

    start_source()
    sink.wait_for(synced)

    assert {kind for kind, _, _ in sink.objects} == ALL_KINDS
    assert [c.method for c in sink.calls][-2:] == ["replace_all", "mark_synced"]
    assert len(sink.calls_of("mark_synced")) == 1
    assert sink.sources == {"kubernetes"}
    for (kind, _, _), delivered in sink.objects.items():
        assert delivered["kind"] == kind
        assert delivered["apiVersion"]
    assert sink.objects["IngressClass", "default", "splitplane"]["spec"]["controller"]


def test_list_is_paginated_with_limit_and_continue(
    apiserver: FakeApiServer, sink: RecordingSink, start_source: SourceFactory
) -> None:
    for i in range(5):
        apiserver.create(objects.service(f"svc-{i}"))

    start_source()  # page size 2
    sink.wait_for(synced)

    pages = lists(apiserver, "/api/v1/services")
    assert [p.query.get("limit") for p in pages] == ["2", "2", "2"]
    assert ["continue" in p.query for p in pages] == [False, True, True]
    assert sink.names("Service") == {f"svc-{i}" for i in range(5)}


def test_watch_starts_from_the_list_resource_version_with_bookmarks_and_a_timeout(
    apiserver: FakeApiServer, sink: RecordingSink, start_source: SourceFactory
) -> None:
    apiserver.create(objects.service("reviews"))
    listed_at = str(apiserver.resource_version)

    start_source()
    wait_until(lambda: bool(watches(apiserver, "/api/v1/services")))

    first = watches(apiserver, "/api/v1/services")[0]
    assert first.query["resourceVersion"] == listed_at
    assert first.query["allowWatchBookmarks"] == "true"
    assert first.query["timeoutSeconds"] == "30"


def test_changes_made_through_the_kubernetes_client_propagate(
    api: client.ApiClient, sink: RecordingSink, start_source: SourceFactory
) -> None:
    start_source()
    sink.wait_for(synced)
    core = client.CoreV1Api(api)
    custom = client.CustomObjectsApi(api)

    body = client.V1Service.from_dict(objects.service("ratings"))
    assert body is not None
    core.create_namespaced_service("default", body)
    sink.wait_for(lambda s: s.get("Service", "default", "ratings") is not None)

    core.patch_namespaced_service(
        "ratings", "default", {"metadata": {"labels": {"tier": "backend"}}}
    )
    sink.wait_for(
        lambda s: (
            (s.get("Service", "default", "ratings") or {}).get("metadata", {}).get("labels")
            == {"tier": "backend"}
        )
    )

    core.delete_namespaced_service("ratings", "default")
    sink.wait_for(lambda s: s.get("Service", "default", "ratings") is None)

    vs = objects.virtual_service("ratings", {"v1": 50, "v2": 50})
    custom.create_namespaced_custom_object(
        "networking.istio.io", "v1", "default", "virtualservices", vs
    )
    sink.wait_for(lambda s: s.get("VirtualService", "default", "ratings") is not None)
    custom.delete_namespaced_custom_object(
        "networking.istio.io", "v1", "default", "virtualservices", "ratings"
    )
    sink.wait_for(lambda s: s.get("VirtualService", "default", "ratings") is None)

    assert [c.method for c in sink.calls if c.key and c.key[2] == "ratings"] == [
        "upsert",
        "upsert",
        "delete",
        "upsert",
        "delete",
    ]


def test_sidecars_are_listed_and_watched_through_the_kubernetes_client(
    api: client.ApiClient,
    apiserver: FakeApiServer,
    sink: RecordingSink,
    start_source: SourceFactory,
) -> None:
    apiserver.create(objects.sidecar("default", ["*/*"], namespace="istio-system"))
    start_source()
    sink.wait_for(synced)
    assert sink.get("Sidecar", "istio-system", "default") is not None
    wait_until(lambda: bool(watches(apiserver, "/apis/networking.istio.io/v1/sidecars")))
    custom = client.CustomObjectsApi(api)

    body = objects.sidecar("scope", ["./*"], namespace="shop", version="v1alpha3")
    custom.create_namespaced_custom_object(
        "networking.istio.io", "v1alpha3", "shop", "sidecars", body
    )
    sink.wait_for(lambda s: s.get("Sidecar", "shop", "scope") is not None)
    custom.patch_namespaced_custom_object(
        "networking.istio.io",
        "v1",
        "shop",
        "sidecars",
        "scope",
        {"spec": {"egress": [{"hosts": ["./*", "books/*"]}]}},
    )
    sink.wait_for(
        lambda s: (
            (s.get("Sidecar", "shop", "scope") or {}).get("spec", {}).get("egress")
            == [{"hosts": ["./*", "books/*"]}]
        )
    )
    custom.delete_namespaced_custom_object("networking.istio.io", "v1", "shop", "sidecars", "scope")
    sink.wait_for(lambda s: s.get("Sidecar", "shop", "scope") is None)


def test_pods_keep_only_what_translation_needs(
    apiserver: FakeApiServer, sink: RecordingSink, start_source: SourceFactory
) -> None:
    apiserver.create(objects.pod("reviews-1", "10.0.0.1", version="v2"))

    start_source()
    sink.wait_for(synced)

    pod = sink.get("Pod", "default", "reviews-1")
    assert pod is not None
    assert pod["kind"] == "Pod"
    assert pod["apiVersion"] == "v1"
    assert set(pod["metadata"]) == {
        "name",
        "namespace",
        "labels",
        "uid",
        "creationTimestamp",
        "resourceVersion",
    }
    assert pod["metadata"]["labels"] == {"app": "reviews", "version": "v2"}
    assert pod["spec"] == {"nodeName": "node-1"}
    assert pod["status"] == {
        "phase": "Running",
        "podIP": "10.0.0.1",
        "podIPs": [{"ip": "10.0.0.1"}],
        "conditions": [{"type": "Ready", "status": "True"}],
    }


def test_a_bookmark_advances_the_version_a_watch_resumes_from(
    apiserver: FakeApiServer, sink: RecordingSink, start_source: SourceFactory
) -> None:
    start_source()
    sink.wait_for(synced)
    wait_until(lambda: apiserver.active_watches("services") == 1)

    apiserver.create(objects.pod("reviews-1", "10.0.0.1"))  # moves the version, not services
    after_pod = str(apiserver.resource_version)
    apiserver.send_bookmarks()
    wait_until(lambda: apiserver.bookmarks_sent("services") >= 1)
    apiserver.drop_watches()

    wait_until(lambda: len(watches(apiserver, "/api/v1/services")) >= 2)
    assert watches(apiserver, "/api/v1/services")[1].query["resourceVersion"] == after_pod


def test_a_dropped_watch_resumes_from_the_last_seen_version_without_duplicates(
    apiserver: FakeApiServer, sink: RecordingSink, start_source: SourceFactory
) -> None:
    start_source()
    sink.wait_for(synced)
    apiserver.create(objects.service("a"))
    sink.wait_for(lambda s: "a" in s.names("Service"))
    last_seen = str(apiserver.resource_version)

    blocked = apiserver.inject_fault(500, count=None, watch=True, path_contains="/services")
    apiserver.drop_watches()
    wait_until(lambda: blocked.hits >= 1)
    apiserver.create(objects.service("b"))  # made while the watch is down
    apiserver.apply({**objects.service("a"), "metadata": {"name": "a", "labels": {"x": "1"}}})
    apiserver.remove_fault(blocked)

    sink.wait_for(lambda s: s.names("Service") == {"a", "b"})
    sink.wait_for(
        lambda s: (s.get("Service", "default", "a") or {})["metadata"].get("labels") == {"x": "1"}
    )
    resumed = [
        w for w in watches(apiserver, "/api/v1/services") if w.query["resourceVersion"] == last_seen
    ]
    assert len(resumed) >= 2  # the first watch after the drop resumed where the last one stopped
    upserts = [(c.key, c.resource_version) for c in sink.calls_of("upsert")]
    assert len(upserts) == len(set(upserts)) == 3
    assert len(lists(apiserver, "/api/v1/services")) == 1  # no relist was needed


@pytest.mark.parametrize("gone", ["error event in the stream", "http status"])
def test_gone_relists_and_sees_deletions_made_while_disconnected(
    apiserver: FakeApiServer, sink: RecordingSink, start_source: SourceFactory, gone: str
) -> None:
    apiserver.create(objects.service("a"))
    apiserver.create(objects.service("b"))
    start_source()
    sink.wait_for(synced)

    blocked = apiserver.inject_fault(500, count=None, watch=True, path_contains="/services")
    apiserver.drop_watches()
    wait_until(lambda: blocked.hits >= 1)
    apiserver.delete("Service", "default", "a")
    apiserver.create(objects.service("c"))
    if gone == "http status":
        apiserver.inject_fault(410, watch=True, path_contains="/services")
    else:
        apiserver.compact()
    apiserver.remove_fault(blocked)

    sink.wait_for(lambda s: s.names("Service") == {"b", "c"})
    after_sync = [c.method for c in sink.calls][sink.calls.index(sink.calls_of("mark_synced")[0]) :]
    assert "replace_all" in after_sync  # the relist handed over the full state
    assert "delete" not in after_sync  # the deletion was found by the store's diff, not an event
    assert len(lists(apiserver, "/api/v1/services")) == 2


def test_server_errors_are_retried_with_backoff_until_the_list_succeeds(
    apiserver: FakeApiServer, sink: RecordingSink, start_source: SourceFactory
) -> None:
    apiserver.create(objects.service("reviews"))
    failing = apiserver.inject_fault(500, count=3, watch=False, path_contains="/api/v1/services")

    start_source()
    sink.wait_for(synced)

    assert failing.hits == 3
    assert len(lists(apiserver, "/api/v1/services")) == 4
    assert "reviews" in sink.names("Service")
    reported = [c.count for c in sink.calls_of("set_problems")]
    assert reported[0] == 1
    assert reported[-1] == 0
    assert sink.problems == []


@pytest.mark.parametrize(
    ("attempt", "rand", "expected"),
    [
        (0, 0.0, 0.5),
        (1, 0.0, 1.0),
        (3, 0.0, 4.0),
        (10, 0.0, 30.0),  # capped
        (1000, 0.0, 30.0),
        (2, 0.999999, 1.0),  # jitter takes off up to half
        (2, 0.5, 1.5),
    ],
)
def test_backoff_doubles_up_to_a_cap_less_a_random_part(
    attempt: int, rand: float, expected: float
) -> None:
    assert backoff_delay(Backoff(), attempt, rand) == pytest.approx(expected, abs=1e-5)


def test_nothing_is_synced_until_every_kind_has_listed(
    apiserver: FakeApiServer, sink: RecordingSink, start_source: SourceFactory
) -> None:
    apiserver.create(objects.service("reviews"))
    apiserver.create(objects.pod("reviews-1", "10.0.0.1"))
    failing = apiserver.inject_fault(500, count=None, watch=False, path_contains="/api/v1/pods")

    start_source()
    sink.wait_for(lambda s: bool(s.problems))
    wait_until(lambda: failing.hits >= 2)
    assert not sink.synced
    assert [p.kind for p in sink.problems] == ["Pod"]
    assert not sink.calls_of("replace_all")  # the kinds listed so far wait for the others

    apiserver.remove_fault(failing)
    sink.wait_for(synced)
    assert sink.get("Pod", "default", "reviews-1") is not None
    assert sink.calls[-2].method == "replace_all"
    assert sink.calls[-2].count == 2  # the gate opens on the full state
    assert len(sink.calls_of("mark_synced")) == 1


def test_namespaces_limit_what_is_listed_and_watched(
    apiserver: FakeApiServer, sink: RecordingSink, start_source: SourceFactory
) -> None:
    for ns in ("a", "b", "c"):
        apiserver.create(objects.service("reviews", namespace=ns))
    apiserver.create(objects.ingress_class())

    start_source(namespaces=["a", "b"])
    sink.wait_for(synced)
    assert {(k, ns) for k, ns, _ in sink.objects} == {
        ("Service", "a"),
        ("Service", "b"),
        ("IngressClass", "default"),
    }

    apiserver.create(objects.service("late", namespace="c"))
    apiserver.create(objects.service("late", namespace="b"))
    sink.wait_for(lambda s: s.get("Service", "b", "late") is not None)
    assert sink.get("Service", "c", "late") is None
    paths = {r.path for r in apiserver.requests if r.path.endswith("/services")}
    assert paths == {"/api/v1/namespaces/a/services", "/api/v1/namespaces/b/services"}


@pytest.mark.parametrize(
    ("served", "chosen"),
    [
        (["v1alpha3"], "v1alpha3"),
        (["v1beta1", "v1alpha3"], "v1beta1"),
        (["v1alpha3", "v1beta1", "v1"], "v1"),  # v1 is preferred whatever the server prefers
    ],
)
def test_istio_kinds_are_read_at_the_best_version_the_server_serves(
    apiserver: FakeApiServer,
    sink: RecordingSink,
    start_source: SourceFactory,
    served: list[str],
    chosen: str,
) -> None:
    apiserver.set_istio_versions(served)
    apiserver.create(objects.virtual_service("reviews", {"v1": 1}, version="v1alpha3"))

    start_source()
    sink.wait_for(synced)
    vs = sink.get("VirtualService", "default", "reviews")
    assert vs is not None
    assert vs["apiVersion"] == f"networking.istio.io/{chosen}"
    wait_until(
        lambda: bool(watches(apiserver, f"/apis/networking.istio.io/{chosen}/virtualservices"))
    )
    assert sink.problems == []


def test_unserved_istio_kinds_are_a_problem_that_does_not_block_sync(
    apiserver: FakeApiServer, sink: RecordingSink, start_source: SourceFactory
) -> None:
    apiserver.set_istio_versions([])
    apiserver.create(objects.service("reviews"))

    start_source()
    sink.wait_for(synced)
    assert sorted(p.kind for p in sink.problems) == ["DestinationRule", "Sidecar", "VirtualService"]
    assert "not served" in sink.problems[0].message
    assert "reviews" in sink.names("Service")

    apiserver.set_istio_versions(["v1"])  # the CRDs get installed later
    apiserver.create(objects.virtual_service("reviews", {"v1": 1}))
    sink.wait_for(lambda s: s.get("VirtualService", "default", "reviews") is not None)
    sink.wait_for(lambda s: s.problems == [])


def test_a_kind_that_stops_being_served_is_emptied_and_reported(
    apiserver: FakeApiServer, sink: RecordingSink, start_source: SourceFactory
) -> None:
    apiserver.create(objects.virtual_service("reviews", {"v1": 1}))
    start_source()
    sink.wait_for(synced)
    assert sink.get("VirtualService", "default", "reviews") is not None

    apiserver.set_istio_versions([])  # the CRDs are removed
    apiserver.drop_watches()

    sink.wait_for(lambda s: s.get("VirtualService", "default", "reviews") is None)
    sink.wait_for(lambda s: any(p.kind == "VirtualService" for p in s.problems))
    assert "reviews" not in sink.names("VirtualService")


async def test_sink_calls_are_delivered_through_call_soon_on_the_event_loop(
    apiserver: FakeApiServer, sink: RecordingSink, start_source: SourceFactory
) -> None:
    loop = asyncio.get_running_loop()
    apiserver.create(objects.service("reviews"))

    start_source(call_soon=loop.call_soon_threadsafe)
    deadline = time.monotonic() + 20
    while not sink.synced:
        assert time.monotonic() < deadline, "never synced"
        await asyncio.sleep(0.01)

    apiserver.delete("Service", "default", "reviews")
    while "reviews" in sink.names("Service"):
        assert time.monotonic() < deadline, "delete never arrived"
        await asyncio.sleep(0.01)
    assert sink.threads == {threading.current_thread().name}


def test_wrong_credentials_are_reported_and_nothing_is_synced(
    apiserver: FakeApiServer, sink: RecordingSink, tmp_path: Path
) -> None:
    kubeconfig = write_kubeconfig(tmp_path / "bad", apiserver.url, token="wrong")
    source = KubernetesSource(api_client_from_flags(str(kubeconfig)), sink, settings=FAST)
    source.start()
    try:
        sink.wait_for(lambda s: any("401" in p.message for p in s.problems))
        assert not sink.synced
    finally:
        source.stop()
    assert not source.running


def test_stop_ends_every_informer_thread(sink: RecordingSink, start_source: SourceFactory) -> None:
    source = start_source()
    sink.wait_for(synced)
    assert source.running

    source.stop()

    assert not source.running
