"""Service load-balancer status and leader Leases, written to the in-process API server."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from kubernetes import client

from tests.kube import objects
from tests.kube.apiserver import FakeApiServer
from xds_server.sources.kubernetes_writes import (
    LeaseClaim,
    acquire_or_renew_lease,
    patch_service_load_balancer,
    release_lease,
)

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
