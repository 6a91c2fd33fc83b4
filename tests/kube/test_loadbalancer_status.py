"""Leader election and the load-balancer status of LoadBalancer Services and Ingresses, written
back against the in-process API server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.kube import objects
from tests.kube.apiserver import FakeApiServer
from translators.resolve_ingress import (
    DEFAULT_CLASS_ANNOTATION,
    INGRESS_CONTROLLER,
    LEGACY_CLASS_ANNOTATION,
)
from xds_server.kube.loadbalancer_status import (
    FleetService,
    LoadBalancerStatus,
    StatusSettings,
    current_ingress,
    fleet_addresses,
    ingress_status_writes,
    parse_fleet_service,
    status_writes,
)
from xds_server.kube.writes import LeaseClaim, micro_time
from xds_server.sources.kubernetes import api_client_from_flags

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


def ingress(
    name: str, class_name: str | None = "splitplane", *, legacy_class: str | None = None
) -> dict[str, Any]:
    """An Ingress of ``class_name`` (None: no class), or of the legacy annotation's class."""
    obj = objects.ingress(name, "web")
    if class_name is None:
        del obj["spec"]["ingressClassName"]
    else:
        obj["spec"]["ingressClassName"] = class_name
    if legacy_class is not None:
        obj["metadata"]["annotations"] = {LEGACY_CLASS_ANNOTATION: legacy_class}
    return obj


def ingress_class(name: str, controller: str, default: bool = False) -> dict[str, Any]:
    obj = objects.ingress_class(name)
    obj["spec"]["controller"] = controller
    if default:
        obj["metadata"]["annotations"] = {DEFAULT_CLASS_ANNOTATION: "true"}
    return obj


def ingress_of(apiserver: FakeApiServer, name: str, kind: str = "Service") -> list[dict[str, Any]]:
    stored = apiserver.get(kind, "default", name) or {}
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
    apiserver: FakeApiServer,
    kubeconfig: Path,
    identity: str,
    ingresses: Callable[[], list[dict[str, Any]]] | None = None,
) -> AsyncIterator[LoadBalancerStatus]:
    """A replica's status writer on its own client, reading Services, Ingresses and
    IngressClasses from the API server."""
    api = api_client_from_flags(kubeconfig=str(kubeconfig))
    settings = StatusSettings(
        lease=LeaseClaim("splitplane-system", "splitplane-leader", identity, duration_seconds=2),
        fleet=FLEET,
        renew_seconds=0.2,
    )

    def services() -> list[dict[str, Any]]:
        return [s for n in ("web", "cloud") if (s := apiserver.get("Service", "default", n))]

    writer = LoadBalancerStatus(
        api,
        settings,
        services=services,
        ingresses=ingresses or (lambda: apiserver.objects("Ingress")),
        ingress_classes=lambda: apiserver.objects("IngressClass"),
    )
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
        await wait_until(lambda: follower.writes >= 1)  # counted after the write lands
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


def lease_reads(apiserver: FakeApiServer) -> int:
    """How many times the Lease was read: every replica reads it once a round."""
    return sum(1 for r in apiserver.requests if r.method == "GET" and "/leases/" in r.path)


def ingress_status_patches(apiserver: FakeApiServer) -> list[str]:
    """The names of the Ingresses whose status was patched, one per write."""
    return [
        r.path.split("/")[-2]
        for r in apiserver.requests
        if r.method == "PATCH" and "/ingresses/" in r.path and r.path.endswith("/status")
    ]


# ------------------------------------------------------------------------------------------------
# Ingresses


FLEET_INGRESS = [{"ip": "127.0.0.10"}, {"ip": "127.0.0.11"}]


async def test_the_leader_writes_the_fleet_addresses_into_every_ingress_splitplane_serves(
    apiserver: FakeApiServer, kubeconfig: Path
) -> None:
    served = {
        "by-name": ingress("by-name"),
        "by-annotation": ingress("by-annotation", class_name=None, legacy_class="splitplane"),
        "by-class": ingress("by-class", class_name="edge"),
    }
    apiserver.create(ingress_class("edge", INGRESS_CONTROLLER))
    for obj in served.values():
        apiserver.create(obj)
    apiserver.create(load_balancer("web"))
    apiserver.create(fleet_slice(["127.0.0.11", "127.0.0.10"]))

    async with replica(apiserver, kubeconfig, "replica-a") as a:
        await wait_until(
            lambda: all(ingress_of(apiserver, n, "Ingress") == FLEET_INGRESS for n in served)
        )
        await wait_until(lambda: ingress_of(apiserver, "web") == FLEET_INGRESS)
        await wait_until(lambda: a.writes >= 4)  # counted after the write lands
        assert a.writes == 4  # three Ingresses and the Service, once each
        assert sorted(ingress_status_patches(apiserver)) == sorted(served)
        for name, obj in served.items():
            stored = apiserver.get("Ingress", "default", name)
            assert stored is not None
            assert stored["spec"] == obj["spec"]


async def test_an_ingress_of_another_class_is_left_alone(
    apiserver: FakeApiServer, kubeconfig: Path
) -> None:
    theirs = {"loadBalancer": {"ingress": [{"hostname": "nginx.example"}]}}
    apiserver.create(ingress_class("nginx", "k8s.io/ingress-nginx", default=True))
    apiserver.create(ingress("ours"))
    apiserver.create({**ingress("by-name", class_name="nginx"), "status": theirs})
    apiserver.create(ingress("by-annotation", class_name=None, legacy_class="nginx"))
    apiserver.create(ingress("unknown-class", class_name="traefik"))
    apiserver.create(ingress("without-class", class_name=None))
    apiserver.create(fleet_slice(["127.0.0.10", "127.0.0.11"]))

    async with replica(apiserver, kubeconfig, "replica-a") as a:
        await wait_until(lambda: ingress_of(apiserver, "ours", "Ingress") == FLEET_INGRESS)
        renewals = lease_renewals(apiserver)
        await wait_until(lambda: lease_renewals(apiserver) >= renewals + 3)
        assert a.writes == 1
        assert ingress_status_patches(apiserver) == ["ours"]
        by_name = apiserver.get("Ingress", "default", "by-name")
        assert by_name is not None
        assert by_name["status"] == theirs
        for name in ("by-annotation", "unknown-class", "without-class"):
            assert ingress_of(apiserver, name, "Ingress") == []


async def test_an_ingress_whose_status_is_the_fleet_addresses_is_not_written_again(
    apiserver: FakeApiServer, kubeconfig: Path
) -> None:
    # The same addresses in another order, one with a port status: nothing to change.
    current = [
        {"ip": "127.0.0.11", "ports": [{"port": 80, "protocol": "TCP"}]},
        {"ip": "127.0.0.10"},
    ]
    apiserver.create({**ingress("current"), "status": {"loadBalancer": {"ingress": current}}})
    apiserver.create(ingress("fresh"))
    apiserver.create(fleet_slice(["127.0.0.10", "127.0.0.11"]))

    async with replica(apiserver, kubeconfig, "replica-a") as a:
        await wait_until(lambda: ingress_of(apiserver, "fresh", "Ingress") == FLEET_INGRESS)
        renewals = lease_renewals(apiserver)
        await wait_until(lambda: lease_renewals(apiserver) >= renewals + 5)
        assert a.writes == 1  # "fresh", once; neither is written again
        assert ingress_status_patches(apiserver) == ["fresh"]
        assert ingress_of(apiserver, "current", "Ingress") == current


async def test_an_ingress_written_is_not_written_again_while_the_watch_lags_behind(
    apiserver: FakeApiServer, kubeconfig: Path
) -> None:
    created = apiserver.create(ingress("web"))
    apiserver.create(fleet_slice(["127.0.0.10", "127.0.0.11"]))

    # The control plane's view still holds the Ingress as created, without the status written.
    async with replica(apiserver, kubeconfig, "replica-a", ingresses=lambda: [created]) as a:
        await wait_until(lambda: ingress_of(apiserver, "web", "Ingress") == FLEET_INGRESS)
        renewals = lease_renewals(apiserver)
        await wait_until(lambda: lease_renewals(apiserver) >= renewals + 5)
        assert a.writes == 1
        assert ingress_status_patches(apiserver) == ["web"]


async def test_an_object_that_cannot_be_written_does_not_hold_up_the_others(
    apiserver: FakeApiServer, kubeconfig: Path
) -> None:
    gone = apiserver.create(ingress("a-gone"))
    apiserver.delete("Ingress", "default", "a-gone")  # the control plane has not seen it go
    present = apiserver.create(ingress("web"))
    apiserver.create(fleet_slice(["127.0.0.10", "127.0.0.11"]))

    async with replica(apiserver, kubeconfig, "replica-a", ingresses=lambda: [gone, present]) as a:
        await wait_until(lambda: ingress_of(apiserver, "web", "Ingress") == FLEET_INGRESS)
        await wait_until(lambda: a.writes >= 1)  # counted after the write lands
        assert a.writes == 1


async def test_the_ingress_is_written_again_when_the_fleet_addresses_change(
    apiserver: FakeApiServer, kubeconfig: Path
) -> None:
    apiserver.create(ingress("web"))
    apiserver.create(fleet_slice(["127.0.0.10", "127.0.0.11"]))

    async with replica(apiserver, kubeconfig, "replica-a") as a:
        await wait_until(lambda: ingress_of(apiserver, "web", "Ingress") == FLEET_INGRESS)

        apiserver.apply(fleet_slice(["127.0.0.12"]))

        await wait_until(lambda: ingress_of(apiserver, "web", "Ingress") == [{"ip": "127.0.0.12"}])
        await wait_until(lambda: a.writes >= 2)  # counted after the write lands
        assert a.writes == 2
        assert ingress_status_patches(apiserver) == ["web", "web"]


async def test_a_replica_that_does_not_hold_the_lease_writes_no_ingress_status(
    apiserver: FakeApiServer, kubeconfig: Path
) -> None:
    apiserver.create(ingress("web"))
    apiserver.create(fleet_slice(["127.0.0.10", "127.0.0.11"]))
    apiserver.create(
        {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": "splitplane-leader", "namespace": "splitplane-system"},
            "spec": {
                "holderIdentity": "replica-elsewhere",
                "leaseDurationSeconds": 3600,
                "renewTime": micro_time(datetime.now(UTC)),
            },
        }
    )

    async with replica(apiserver, kubeconfig, "replica-a") as a:
        await wait_until(lambda: lease_reads(apiserver) >= 5)
        assert not a.is_leader
        assert a.writes == 0
        assert ingress_status_patches(apiserver) == []
        assert ingress_of(apiserver, "web", "Ingress") == []

        # The holder gives the Lease up: this replica takes over and writes.
        apiserver.delete("Lease", "splitplane-system", "splitplane-leader")

        await wait_until(lambda: ingress_of(apiserver, "web", "Ingress") == FLEET_INGRESS)
        assert a.is_leader
        await wait_until(lambda: a.writes >= 1)  # counted after the write lands
        assert a.writes == 1


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


@pytest.mark.parametrize(
    ("obj", "classes", "needs_write"),
    [
        (ingress("web"), [], True),
        (ingress("web", class_name=None, legacy_class="splitplane"), [], True),
        (ingress("web", class_name="edge"), [ingress_class("edge", INGRESS_CONTROLLER)], True),
        (
            ingress("web", class_name=None),
            [ingress_class("edge", INGRESS_CONTROLLER, default=True)],
            True,
        ),
        (
            {**ingress("web"), "status": {"loadBalancer": {"ingress": [{"ip": "127.0.0.1"}]}}},
            [],
            False,
        ),
        (
            ingress("web", class_name="nginx"),
            [ingress_class("nginx", "k8s.io/ingress-nginx")],
            False,
        ),
        (ingress("web", class_name=None, legacy_class="nginx"), [], False),
        (ingress("web", class_name="edge"), [ingress_class("edge", "example.com/other")], False),
        (ingress("web", class_name=None), [ingress_class("edge", INGRESS_CONTROLLER)], False),
    ],
    ids=[
        "class-name",
        "legacy-annotation",
        "ingress-class-of-splitplane",
        "no-class-splitplane-default",
        "status-already-right",
        "other-class",
        "other-legacy-annotation",
        "ingress-class-of-another-controller",
        "no-class-no-default",
    ],
)
def test_an_ingress_is_written_when_splitplane_serves_it_and_its_status_differs(
    obj: dict[str, Any], classes: list[dict[str, Any]], needs_write: bool
) -> None:
    writes = ingress_status_writes([obj], classes, [(("ip", "127.0.0.1"),)])
    assert [(w.kind, w.namespace, w.name) for w in writes] == (
        [("Ingress", "default", "web")] if needs_write else []
    )


@pytest.mark.parametrize("text", ["splitplane-lb", "/x", "a/", "a/b/c"])
def test_a_fleet_service_is_namespace_slash_name(text: str) -> None:
    with pytest.raises(ValueError, match="NAMESPACE/NAME"):
        parse_fleet_service(text)


def test_the_renew_period_must_be_shorter_than_the_lease() -> None:
    with pytest.raises(ValueError, match="shorter"):
        StatusSettings(LeaseClaim("ns", "lease", "me", duration_seconds=2), FLEET, renew_seconds=2)
