"""Leader election and LoadBalancer status write-back, against the in-process API server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.kube import objects
from tests.kube.apiserver import FakeApiServer
from xds_server.loadbalancer_status import (
    FleetService,
    LoadBalancerStatus,
    StatusSettings,
    current_ingress,
    fleet_addresses,
    parse_fleet_service,
    status_writes,
)
from xds_server.sources.kubernetes import api_client_from_flags
from xds_server.sources.kubernetes_writes import LeaseClaim

FLEET = FleetService("splitplane-system", "splitplane-lb")
TIMEOUT_S = 30.0


def load_balancer(name: str, lb_class: str = "") -> dict[str, Any]:
    obj = objects.service(name)
    obj["spec"]["type"] = "LoadBalancer"
    if lb_class:
        obj["spec"]["loadBalancerClass"] = lb_class
    return obj


def fleet_slice(ips: list[str]) -> dict[str, Any]:
    return objects.endpoint_slice("splitplane-lb-abc", FLEET.name, ips, namespace=FLEET.namespace)


def ingress_of(apiserver: FakeApiServer, name: str) -> list[dict[str, Any]]:
    stored = apiserver.get("Service", "default", name) or {}
    ingress: list[dict[str, Any]] = (
        stored.get("status", {}).get("loadBalancer", {}).get("ingress", [])
    )
    return ingress


async def wait_until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(TIMEOUT_S):
        while not condition():
            await asyncio.sleep(0.02)


@asynccontextmanager
async def replica(
    apiserver: FakeApiServer, kubeconfig: Path, identity: str
) -> AsyncIterator[LoadBalancerStatus]:
    """A replica's status writer on its own client, reading Services from the API server."""
    api = api_client_from_flags(kubeconfig=str(kubeconfig))
    settings = StatusSettings(
        lease=LeaseClaim("splitplane-system", "splitplane-leader", identity, duration_seconds=2),
        fleet=FLEET,
        renew_seconds=0.2,
    )

    def services() -> list[dict[str, Any]]:
        return [s for n in ("web", "cloud") if (s := apiserver.get("Service", "default", n))]

    writer = LoadBalancerStatus(api, settings, services)
    await writer.start()
    try:
        yield writer
    finally:
        await writer.stop()
        api.close()  # type: ignore[no-untyped-call]


async def test_one_replica_writes_and_the_other_takes_over_when_it_dies(
    apiserver: FakeApiServer, kubeconfig: Path
) -> None:
    apiserver.create(load_balancer("web"))
    apiserver.create(load_balancer("cloud", lb_class="example.com/cloud-lb"))
    apiserver.create(fleet_slice(["127.0.0.10", "127.0.0.11"]))

    async with (
        replica(apiserver, kubeconfig, "replica-a") as a,
        replica(apiserver, kubeconfig, "replica-b") as b,
    ):
        await wait_until(lambda: a.is_leader or b.is_leader)
        await wait_until(
            lambda: ingress_of(apiserver, "web") == [{"ip": "127.0.0.10"}, {"ip": "127.0.0.11"}]
        )
        leader, follower = (a, b) if a.is_leader else (b, a)
        assert not follower.is_leader
        assert (leader.writes, follower.writes) == (1, 0)
        assert ingress_of(apiserver, "cloud") == []  # another implementation's Service

        # The leader dies without giving the Lease up; the fleet changes meanwhile.
        await leader.stop(release=False)
        apiserver.apply(fleet_slice(["127.0.0.12"]))

        await wait_until(lambda: follower.is_leader)
        await wait_until(lambda: ingress_of(apiserver, "web") == [{"ip": "127.0.0.12"}])
        assert follower.writes == 1
        lease = apiserver.get("Lease", "splitplane-system", "splitplane-leader")
        assert lease is not None
        assert lease["spec"]["holderIdentity"] == follower.settings.lease.holder


async def test_a_leader_that_stops_hands_over_at_once_and_nothing_is_rewritten(
    apiserver: FakeApiServer, kubeconfig: Path
) -> None:
    apiserver.create(load_balancer("web"))
    apiserver.create(fleet_slice(["127.0.0.10"]))

    async with replica(apiserver, kubeconfig, "replica-a") as a:
        await wait_until(lambda: ingress_of(apiserver, "web") == [{"ip": "127.0.0.10"}])
        renewals = lease_renewals(apiserver)
        await wait_until(lambda: lease_renewals(apiserver) >= renewals + 5)
        assert a.writes == 1  # the status already matches: no further writes

        async with replica(apiserver, kubeconfig, "replica-b") as b:
            await a.stop()
            await wait_until(lambda: b.is_leader)
            assert b.writes == 0  # the status it finds is already right


def lease_renewals(apiserver: FakeApiServer) -> int:
    """How many times the Lease was written (its resourceVersion moves on each renewal)."""
    return sum(1 for r in apiserver.requests if r.method == "PUT" and "/leases/" in r.path)


# ------------------------------------------------------------------------------------------------
# What is written


def test_fleet_addresses_are_the_ready_endpoints_sorted() -> None:
    item = objects.endpoint_slice("s", FLEET.name, ["127.0.0.9", "127.0.0.2"])
    item["endpoints"].append({"addresses": ["127.0.0.5"], "conditions": {"ready": False}})
    assert fleet_addresses([item]) == ((("ip", "127.0.0.2"),), (("ip", "127.0.0.9"),))


@pytest.mark.parametrize(
    ("status", "needs_write"),
    [
        ({}, True),
        ({"loadBalancer": {"ingress": [{"ip": "127.0.0.1"}]}}, False),
        ({"loadBalancer": {"ingress": [{"ip": "127.0.0.1", "ipMode": "VIP"}]}}, False),
        ({"loadBalancer": {"ingress": [{"ip": "127.0.0.2"}]}}, True),
        ({"loadBalancer": {"ingress": [{"hostname": "lb.example"}]}}, True),
    ],
    ids=["empty", "same", "same-with-ip-mode", "other-ip", "hostname"],
)
def test_a_service_is_written_only_when_its_status_differs(
    status: dict[str, Any], needs_write: bool
) -> None:
    service = {**load_balancer("web"), "status": status}
    writes = status_writes([service], [(("ip", "127.0.0.1"),)], only_lb_class=False)
    assert bool(writes) is needs_write


def test_the_current_status_is_compared_by_ip_and_hostname_only() -> None:
    service = {
        **load_balancer("web"),
        "status": {"loadBalancer": {"ingress": [{"ip": "127.0.0.1", "ipMode": "VIP"}]}},
    }
    assert current_ingress(service) == ((("ip", "127.0.0.1"),),)


def test_only_served_load_balancers_are_written() -> None:
    services = [
        load_balancer("plain"),
        load_balancer("ours", lb_class="splitplane.io/envoy"),
        load_balancer("theirs", lb_class="example.com/cloud-lb"),
        objects.service("cluster-ip"),
    ]
    addresses = [(("ip", "127.0.0.1"),)]
    assert [w.name for w in status_writes(services, addresses, only_lb_class=False)] == [
        "ours",
        "plain",
    ]
    assert [w.name for w in status_writes(services, addresses, only_lb_class=True)] == ["ours"]


@pytest.mark.parametrize("text", ["splitplane-lb", "/x", "a/", "a/b/c"])
def test_a_fleet_service_is_namespace_slash_name(text: str) -> None:
    with pytest.raises(ValueError, match="NAMESPACE/NAME"):
        parse_fleet_service(text)


def test_the_renew_period_must_be_shorter_than_the_lease() -> None:
    with pytest.raises(ValueError, match="shorter"):
        StatusSettings(LeaseClaim("ns", "lease", "me", duration_seconds=2), FLEET, renew_seconds=2)
