"""The leader writes each VirtualService's and DestinationRule's status the way Istio does
(observedGeneration, a Reconciled condition, validationMessages with code, level and text), only
when it differs, and leaves a VirtualService bound to another owner's gateway alone; written
against the in-process API server through the real client."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tests.kube import objects
from tests.kube.apiserver import FakeApiServer
from translators.diagnostics import Diagnostic
from translators.translate import translate
from xds_server.kube.config_status import desired_status
from xds_server.kube.loadbalancer_status import FleetService, LoadBalancerStatus, StatusSettings
from xds_server.kube.writes import LeaseClaim
from xds_server.sources.kubernetes import api_client_from_flags

TIMEOUT_S = 30.0
KINDS = ("Service", "Pod", "EndpointSlice", "VirtualService", "DestinationRule")


def mesh(apiserver: FakeApiServer) -> list[dict[str, Any]]:
    return [obj for kind in KINDS for obj in apiserver.objects(kind)]


def config(apiserver: FakeApiServer) -> list[dict[str, Any]]:
    return [*apiserver.objects("VirtualService"), *apiserver.objects("DestinationRule")]


def diagnostics(apiserver: FakeApiServer) -> tuple[Diagnostic, ...]:
    return translate(mesh(apiserver)).diagnostics


@asynccontextmanager
async def leader(apiserver: FakeApiServer, kubeconfig: Path) -> AsyncIterator[LoadBalancerStatus]:
    api = api_client_from_flags(kubeconfig=str(kubeconfig))
    settings = StatusSettings(
        lease=LeaseClaim("splitplane-system", "splitplane-leader", "replica-a", 2),
        fleet=FleetService("splitplane-system", "splitplane-lb"),
        renew_seconds=0.2,
    )
    writer = LoadBalancerStatus(
        api,
        settings,
        services=lambda: (),
        ingresses=lambda: (),
        ingress_classes=lambda: (),
        config=lambda: config(apiserver),
        diagnostics=lambda: diagnostics(apiserver),
    )
    await writer.start()
    try:
        yield writer
    finally:
        await writer.stop()
        api.close()  # type: ignore[no-untyped-call]


async def wait_until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(TIMEOUT_S):
        while not condition():
            await asyncio.sleep(0.02)


def status_of(apiserver: FakeApiServer, kind: str, name: str) -> dict[str, Any]:
    stored = apiserver.get(kind, "default", name) or {}
    status: dict[str, Any] = stored.get("status") or {}
    return status


def status_patches(apiserver: FakeApiServer) -> list[str]:
    return [
        r.path
        for r in apiserver.requests
        if r.method == "PATCH" and "networking.istio.io" in r.path and r.path.endswith("/status")
    ]


def reviews(apiserver: FakeApiServer, weights: dict[str, int]) -> None:
    apiserver.apply(objects.virtual_service("reviews", weights))


async def test_an_accepted_and_a_rejected_object_show_it_in_their_status(
    apiserver: FakeApiServer, kubeconfig: Path
) -> None:
    apiserver.create(objects.service("reviews"))
    apiserver.create(objects.destination_rule("reviews"))
    reviews(apiserver, {"v1": 0, "v2": 0})

    async with leader(apiserver, kubeconfig) as writer:
        await wait_until(lambda: writer.config_writes >= 2)

        rejected = status_of(apiserver, "VirtualService", "reviews")
        text = "spec.http[0].route: weights sum to 0; give at least one destination a weight"
        assert rejected["observedGeneration"] == 1
        (condition,) = rejected["conditions"]
        assert {k: condition[k] for k in ("type", "status", "reason", "message")} == {
            "type": "Reconciled",
            "status": "False",
            "reason": "Rejected",
            "message": text,
        }
        assert rejected["validationMessages"] == [
            {
                "type": {"code": "SP-VirtualService-spec.http.route"},
                "level": "ERROR",
                "message": text,
            }
        ]
        accepted = status_of(apiserver, "DestinationRule", "reviews")
        assert accepted["observedGeneration"] == 1
        assert accepted["conditions"][0]["status"] == "True"
        assert accepted["validationMessages"] == []

        # The fix: a new generation, accepted; its condition moves to True.
        reviews(apiserver, {"v1": 90, "v2": 10})
        await wait_until(
            lambda: status_of(apiserver, "VirtualService", "reviews").get("observedGeneration") == 2
        )
        fixed = status_of(apiserver, "VirtualService", "reviews")
        assert fixed["conditions"][0]["status"] == "True"
        assert fixed["validationMessages"] == []


async def test_a_status_that_is_current_is_not_written_again(
    apiserver: FakeApiServer, kubeconfig: Path
) -> None:
    apiserver.create(objects.service("reviews"))
    apiserver.create(objects.destination_rule("reviews"))
    reviews(apiserver, {"v1": 90, "v2": 10})

    async with leader(apiserver, kubeconfig) as writer:
        await wait_until(lambda: writer.config_writes >= 2)
        await asyncio.sleep(1.0)  # five more rounds

        assert sorted(path.split("/")[-3] for path in status_patches(apiserver)) == [
            "destinationrules",
            "virtualservices",
        ]


async def test_a_virtual_service_of_another_gateways_owner_keeps_its_status(
    apiserver: FakeApiServer, kubeconfig: Path
) -> None:
    theirs = objects.virtual_service("ingress", {"v1": 0, "v2": 0})
    theirs["spec"]["gateways"] = ["istio-system/ingressgateway"]
    apiserver.create(objects.service("reviews"))
    apiserver.create(objects.destination_rule("reviews"))
    apiserver.create(theirs)

    async with leader(apiserver, kubeconfig) as writer:
        await wait_until(lambda: writer.config_writes >= 1)
        await asyncio.sleep(0.6)

        assert status_of(apiserver, "VirtualService", "ingress") == {}
        assert [path.split("/")[-2] for path in status_patches(apiserver)] == ["reviews"]


def test_the_condition_keeps_its_transition_time_while_its_status_stays() -> None:
    obj = objects.destination_rule("reviews")
    obj["metadata"]["generation"] = 4
    first = desired_status(obj, [], datetime(2026, 1, 1, tzinfo=UTC))
    obj["status"] = first

    again = desired_status(obj, [], datetime(2026, 1, 2, tzinfo=UTC))
    error = Diagnostic("DestinationRule", "default", "reviews", "spec.host", "is not a service")
    flipped = desired_status(obj, [error], datetime(2026, 1, 3, tzinfo=UTC))

    assert again == first
    assert first["conditions"][0]["lastTransitionTime"] == "2026-01-01T00:00:00Z"
    assert flipped["conditions"][0]["lastTransitionTime"] == "2026-01-03T00:00:00Z"
    assert flipped["validationMessages"] == [
        {
            "type": {"code": "SP-DestinationRule-spec.host"},
            "level": "ERROR",
            "message": "spec.host: is not a service",
        }
    ]
