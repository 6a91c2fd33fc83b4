"""Load-balancer status of Services and Ingresses, and leader Leases, written to the in-process API
server."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from kubernetes import client

from tests.kube import objects
from tests.kube.apiserver import FakeApiServer
from xds_server.kube.writes import (
    LeaseClaim,
    acquire_or_renew_lease,
    patch_ingress_load_balancer,
    patch_service_load_balancer,
    release_lease,
)
from xds_server.sources.kubernetes import open_request

T0 = datetime(2030, 1, 1, tzinfo=UTC)


def test_load_balancer_ingress_is_written_through_the_status_subresource(
    apiserver: FakeApiServer, api: client.ApiClient
) -> None:
    apiserver.create(objects.service("gateway"))

    updated = patch_service_load_balancer(api, "default", "gateway", [{"ip": "127.0.0.7"}])

    assert updated["status"]["loadBalancer"]["ingress"] == [{"ip": "127.0.0.7"}]
    stored = apiserver.get("Service", "default", "gateway")
    assert stored is not None
    assert stored["status"]["loadBalancer"]["ingress"] == [{"ip": "127.0.0.7"}]
    assert stored["spec"] == objects.service("gateway")["spec"]
    assert any(r.path.endswith("/services/gateway/status") for r in apiserver.requests)


def test_a_new_load_balancer_address_replaces_the_old_list(
    apiserver: FakeApiServer, api: client.ApiClient
) -> None:
    apiserver.create(objects.service("gateway"))
    patch_service_load_balancer(api, "default", "gateway", [{"ip": "127.0.0.7"}, {"ip": "::1"}])

    patch_service_load_balancer(api, "default", "gateway", [{"hostname": "lb.example"}])

    stored = apiserver.get("Service", "default", "gateway")
    assert stored is not None
    assert stored["status"]["loadBalancer"]["ingress"] == [{"hostname": "lb.example"}]


def test_ingress_load_balancer_status_is_written_through_the_status_subresource(
    apiserver: FakeApiServer, api: client.ApiClient
) -> None:
    created = apiserver.create(objects.ingress("web", "web"))
    before = created["metadata"]["resourceVersion"]

    updated = patch_ingress_load_balancer(
        api, "default", "web", [{"ip": "127.0.0.7"}, {"hostname": "lb.example"}]
    )

    written = [{"ip": "127.0.0.7"}, {"hostname": "lb.example"}]
    assert updated["status"]["loadBalancer"]["ingress"] == written
    stored = apiserver.get("Ingress", "default", "web")
    assert stored is not None
    assert stored["status"]["loadBalancer"]["ingress"] == written
    assert stored["spec"] == objects.ingress("web", "web")["spec"]
    assert int(stored["metadata"]["resourceVersion"]) > int(before)
    assert any(
        r.method == "PATCH"
        and r.path == "/apis/networking.k8s.io/v1/namespaces/default/ingresses/web/status"
        for r in apiserver.requests
    )
    # Watchers of Ingresses see the new status.
    response = open_request(
        api,
        "GET",
        "/apis/networking.k8s.io/v1/ingresses",
        query={"watch": "true", "resourceVersion": before, "timeoutSeconds": "1"},
    )
    try:
        events = [json.loads(line) for line in response.read().splitlines() if line.strip()]
    finally:
        response.release_conn()
    assert [(e["type"], e["object"]["status"]["loadBalancer"]["ingress"]) for e in events] == [
        ("MODIFIED", written)
    ]


def test_the_first_candidate_takes_a_free_lease_and_others_wait(
    apiserver: FakeApiServer, api: client.ApiClient
) -> None:
    a = LeaseClaim("default", "splitplane-leader", "replica-a", duration_seconds=15)
    b = LeaseClaim("default", "splitplane-leader", "replica-b", duration_seconds=15)

    assert acquire_or_renew_lease(api, a, T0)
    assert not acquire_or_renew_lease(api, b, T0 + timedelta(seconds=5))
    assert acquire_or_renew_lease(api, a, T0 + timedelta(seconds=10))  # renew
    assert not acquire_or_renew_lease(api, b, T0 + timedelta(seconds=20))  # renewed at 10

    lease = apiserver.get("Lease", "default", "splitplane-leader")
    assert lease is not None
    assert lease["spec"]["holderIdentity"] == "replica-a"
    assert lease["spec"]["leaseTransitions"] == 0


def test_an_expired_lease_passes_to_another_candidate(
    apiserver: FakeApiServer, api: client.ApiClient
) -> None:
    a = LeaseClaim("default", "splitplane-leader", "replica-a", duration_seconds=15)
    b = LeaseClaim("default", "splitplane-leader", "replica-b", duration_seconds=15)
    assert acquire_or_renew_lease(api, a, T0)

    assert acquire_or_renew_lease(api, b, T0 + timedelta(seconds=16))
    assert not acquire_or_renew_lease(api, a, T0 + timedelta(seconds=17))

    lease = apiserver.get("Lease", "default", "splitplane-leader")
    assert lease is not None
    assert lease["spec"]["holderIdentity"] == "replica-b"
    assert lease["spec"]["leaseTransitions"] == 1


def test_a_released_lease_is_free_at_once(apiserver: FakeApiServer, api: client.ApiClient) -> None:
    a = LeaseClaim("default", "splitplane-leader", "replica-a")
    b = LeaseClaim("default", "splitplane-leader", "replica-b")
    assert acquire_or_renew_lease(api, a, T0)

    assert not release_lease(api, b)
    assert release_lease(api, a)

    assert acquire_or_renew_lease(api, b, T0 + timedelta(seconds=1))


def test_a_stale_lease_write_loses_to_the_one_that_came_first(
    apiserver: FakeApiServer, api: client.ApiClient
) -> None:
    a = LeaseClaim("default", "splitplane-leader", "replica-a", duration_seconds=15)
    assert acquire_or_renew_lease(api, a, T0)
    coordination = client.CoordinationV1Api(api)
    stale = coordination.read_namespaced_lease("splitplane-leader", "default")
    assert acquire_or_renew_lease(api, a, T0 + timedelta(seconds=5))

    assert stale.spec is not None
    stale.spec.holder_identity = "replica-b"
    try:
        coordination.replace_namespaced_lease("splitplane-leader", "default", stale)
    except client.ApiException as err:
        assert err.status == 409
    else:
        raise AssertionError("a write with an old resourceVersion must conflict")
