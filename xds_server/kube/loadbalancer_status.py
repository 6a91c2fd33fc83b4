"""Leader election and the load-balancer status writer.

Every replica serves xDS; exactly one, the holder of a coordination.k8s.io/v1 Lease, writes
``status.loadBalancer.ingress`` of every LoadBalancer Service and every Ingress splitplane serves
(what ``kubectl get`` shows as the address, and what external-dns or Argo CD read). The addresses
are the fleet's own: the ready endpoints of its headless Service's EndpointSlices
(``splitplane-system/splitplane-lb`` by default). An object is written only when its status
differs; Services and Ingresses of other implementations are never touched.

Each replica tries to take or renew the Lease every ``renew_seconds`` (less than the Lease's
duration), so when the leader dies another replica takes over within the duration; a leader that
stops gives the Lease up at once. The Kubernetes client blocks, so every call runs in a thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kubernetes import client

from translators.diagnostics import Diagnostic
from translators.resolve_ingress import ingress_classes
from translators.resolve_loadbalancers import serves_load_balancer
from translators.resolve_routing import DEFAULT_GATEWAY
from translators.resolve_services import SERVICE_NAME_LABEL
from xds_server.kube.config_status import config_status_writes
from xds_server.kube.settings import FleetService as FleetService  # noqa: PLC0414 (re-exported)
from xds_server.kube.settings import parse_fleet_service as parse_fleet_service  # noqa: PLC0414
from xds_server.kube.writes import (
    MERGE_PATCH,
    LeaseClaim,
    acquire_or_renew_lease,
    patch_ingress_load_balancer,
    patch_service_load_balancer,
    release_lease,
)
from xds_server.sources.kubernetes import ApiStatusError, request_json

log = logging.getLogger("splitplane.leader")

_ADDRESS_KEYS = ("ip", "hostname")

Ingress = tuple[tuple[str, str], ...]  # one status.loadBalancer.ingress entry, as sorted pairs


@dataclass(frozen=True)
class StatusSettings:
    """Who this replica is, which Lease it competes for, and where the fleet is."""

    lease: LeaseClaim
    fleet: FleetService
    renew_seconds: float = 5.0
    only_lb_class: bool = False
    # The gateways whose VirtualServices splitplane serves; one bound only to others is left alone.
    gateway_names: frozenset[str] = frozenset({DEFAULT_GATEWAY})

    def __post_init__(self) -> None:
        if not 0 < self.renew_seconds < self.lease.duration_seconds:
            raise ValueError("the renew period must be positive and shorter than the lease")


# ------------------------------------------------------------------------------------------------
# What to write (pure)


def fleet_addresses(slices: Iterable[Mapping[str, Any]]) -> tuple[Ingress, ...]:
    """The ready addresses of EndpointSlices as ``status.loadBalancer.ingress`` entries, sorted."""
    found: set[Ingress] = set()
    for item in slices:
        endpoints = item.get("endpoints")
        for endpoint in endpoints if isinstance(endpoints, list) else ():
            if not isinstance(endpoint, Mapping):
                continue
            conditions = endpoint.get("conditions")
            if isinstance(conditions, Mapping) and conditions.get("ready") is False:
                continue
            addresses = endpoint.get("addresses")
            if isinstance(addresses, list) and addresses and isinstance(addresses[0], str):
                found.add((("ip", addresses[0]),))
    return tuple(sorted(found))


def current_ingress(obj: Mapping[str, Any]) -> tuple[Ingress, ...]:
    """A Service's or an Ingress's ``status.loadBalancer.ingress``, reduced to its ip/hostname
    (sorted)."""
    status = obj.get("status")
    balancer = status.get("loadBalancer") if isinstance(status, Mapping) else None
    entries = balancer.get("ingress") if isinstance(balancer, Mapping) else None
    found: set[Ingress] = set()
    for entry in entries if isinstance(entries, list) else ():
        if isinstance(entry, Mapping):
            pairs = tuple((k, str(entry[k])) for k in _ADDRESS_KEYS if entry.get(k))
            if pairs:
                found.add(pairs)
    return tuple(sorted(found))


@dataclass(frozen=True)
class StatusWrite:
    """One object (``kind`` Service or Ingress) whose status must change, and the version of it
    that was compared."""

    kind: str
    namespace: str
    name: str
    resource_version: str


def _status_write(kind: str, obj: Mapping[str, Any]) -> StatusWrite | None:
    metadata = obj.get("metadata")
    if not isinstance(metadata, Mapping):
        return None
    name, namespace = metadata.get("name"), metadata.get("namespace") or "default"
    if not isinstance(name, str) or not isinstance(namespace, str):
        return None
    return StatusWrite(kind, namespace, name, str(metadata.get("resourceVersion", "")))


def status_writes(
    services: Iterable[Mapping[str, Any]], addresses: Sequence[Ingress], only_lb_class: bool
) -> list[StatusWrite]:
    """The served LoadBalancer Services whose status differs from ``addresses``."""
    wanted = tuple(sorted(addresses))
    writes: list[StatusWrite] = []
    for service in services:
        spec = service.get("spec")
        if not isinstance(spec, Mapping):
            continue
        lb_class = spec.get("loadBalancerClass") or ""
        if (
            not serves_load_balancer(str(spec.get("type") or ""), str(lb_class), only_lb_class)
            or current_ingress(service) == wanted
        ):
            continue
        if (write := _status_write("Service", service)) is not None:
            writes.append(write)
    return sorted(writes, key=lambda w: (w.namespace, w.name))


def ingress_status_writes(
    ingresses: Iterable[Mapping[str, Any]],
    classes: Iterable[Mapping[str, Any]],
    addresses: Sequence[Ingress],
) -> list[StatusWrite]:
    """The Ingresses splitplane serves (by their class, given the IngressClasses ``classes``) whose
    status differs from ``addresses``."""
    served = ingress_classes(classes)
    wanted = tuple(sorted(addresses))
    writes: list[StatusWrite] = []
    for ingress in ingresses:
        if not served.serves(ingress) or current_ingress(ingress) == wanted:
            continue
        if (write := _status_write("Ingress", ingress)) is not None:
            writes.append(write)
    return sorted(writes, key=lambda w: (w.namespace, w.name))


def _service_label(obj: Mapping[str, Any]) -> object:
    metadata = obj.get("metadata")
    labels = metadata.get("labels") if isinstance(metadata, Mapping) else None
    return labels.get(SERVICE_NAME_LABEL) if isinstance(labels, Mapping) else None


# ------------------------------------------------------------------------------------------------
# The writer


Objects = Callable[[], Iterable[Mapping[str, Any]]]
Diagnostics = Callable[[], Sequence[Diagnostic]]


@dataclass(frozen=True)
class _Served:
    """What a round is about, taken on the event loop."""

    services: list[Mapping[str, Any]]
    ingresses: list[Mapping[str, Any]]
    ingress_classes: list[Mapping[str, Any]]
    config: list[Mapping[str, Any]]  # VirtualServices and DestinationRules
    diagnostics: Sequence[Diagnostic]


_PATCHES = {"Service": patch_service_load_balancer, "Ingress": patch_ingress_load_balancer}


class LoadBalancerStatus:
    """Competes for the Lease and, while holding it, keeps load-balancer statuses current, and
    the status of every VirtualService and DestinationRule (see ``config_status``).

    ``services``, ``ingresses``, ``ingress_classes`` and ``config`` (VirtualServices and
    DestinationRules) return the current objects of each kind, ``diagnostics`` the current
    diagnostics (called on the event loop, e.g. the control plane's store); the fleet's
    EndpointSlices are read from the API server.
    """

    def __init__(
        self,
        api: client.ApiClient,
        settings: StatusSettings,
        services: Objects,
        ingresses: Objects,
        ingress_classes: Objects,
        *,
        config: Objects = lambda: (),
        diagnostics: Diagnostics = lambda: (),
    ) -> None:
        self.api = api
        self.settings = settings
        self.services = services
        self.ingresses = ingresses
        self.ingress_classes = ingress_classes
        self.config = config
        self.diagnostics = diagnostics
        self.is_leader = False
        self.writes = 0  # status writes made, for logs and tests
        self.config_writes = 0  # VirtualService and DestinationRule status writes
        self._written: dict[tuple[str, str, str], tuple[str, tuple[Ingress, ...]]] = {}
        self._config_written: dict[tuple[str, str, str], tuple[str, dict[str, Any]]] = {}
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    async def start(self) -> None:
        """Begin competing for the Lease (returns at once)."""
        if self._task is None:
            self._stopping.clear()
            self._task = asyncio.create_task(self._run(), name="loadbalancer-status")

    async def stop(self, release: bool = True) -> None:
        """Stop writing and, with ``release``, give the Lease up if this replica holds it (else
        another replica takes over once it expires)."""
        task, self._task = self._task, None
        if task is None:
            return
        self._stopping.set()
        await task  # the round in progress finishes; no new one starts
        leader, self.is_leader = self.is_leader, False
        if leader and release:
            try:
                await asyncio.to_thread(release_lease, self.api, self.settings.lease)
            except Exception:  # the Lease then simply expires
                log.warning("could not release the leader lease", exc_info=True)

    async def _run(self) -> None:
        while not self._stopping.is_set():
            served = _Served(
                list(self.services()),
                list(self.ingresses()),
                list(self.ingress_classes()),
                list(self.config()),
                tuple(self.diagnostics()),
            )
            await asyncio.to_thread(self._round, served)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.settings.renew_seconds)

    def _round(self, served: _Served) -> None:
        """One renewal, then (as leader) one pass over the statuses. Runs in a thread."""
        lease = self.settings.lease
        try:
            leader = acquire_or_renew_lease(self.api, lease)
        except Exception:
            log.warning(
                "leader lease %s/%s unreachable", lease.namespace, lease.name, exc_info=True
            )
            leader = False
        if leader != self.is_leader:
            log.info(
                "leadership %s",
                "acquired" if leader else "lost",
                extra={"identity": lease.holder, "lease": f"{lease.namespace}/{lease.name}"},
            )
            self._written.clear()
            self._config_written.clear()
        self.is_leader = leader
        if not leader:
            return
        try:
            self._write_statuses(served)
        except Exception:
            log.warning("could not update load-balancer statuses", exc_info=True)
        try:
            self._write_config_statuses(served)
        except Exception:
            log.warning(
                "could not update VirtualService and DestinationRule statuses", exc_info=True
            )

    def _write_config_statuses(self, served: _Served) -> None:
        writes = config_status_writes(
            served.config, served.diagnostics, self.settings.gateway_names, datetime.now(UTC)
        )
        for write in writes:
            done = self._config_written.get(write.key)
            if done == (write.resource_version, write.status):
                continue  # written already; the watch has not brought the new version yet
            try:
                request_json(
                    self.api,
                    "PATCH",
                    write.path,
                    body={"status": write.status},
                    content_type=MERGE_PATCH,
                )
            except ApiStatusError as refused:  # this object only: the others are still written
                level = logging.DEBUG if refused.status == 404 else logging.WARNING
                log.log(level, "could not write the status of %s: %s", write.path, refused)
                continue
            self._config_written[write.key] = (write.resource_version, write.status)
            self.config_writes += 1

    def _write_statuses(self, served: _Served) -> None:
        fleet = self.settings.fleet
        answer = request_json(
            self.api,
            "GET",
            f"/apis/discovery.k8s.io/v1/namespaces/{fleet.namespace}/endpointslices",
            query={"labelSelector": f"{SERVICE_NAME_LABEL}={fleet.name}"},
        )
        items = answer.get("items") if isinstance(answer, Mapping) else None
        slices = [
            s
            for s in (items if isinstance(items, list) else ())
            if isinstance(s, Mapping) and _service_label(s) == fleet.name
        ]
        addresses = fleet_addresses(slices)
        if not addresses:
            log.warning("the fleet %s/%s has no ready addresses", fleet.namespace, fleet.name)
            return
        writes = [
            *status_writes(served.services, addresses, self.settings.only_lb_class),
            *ingress_status_writes(served.ingresses, served.ingress_classes, addresses),
        ]
        for write in writes:
            key = (write.kind, write.namespace, write.name)
            if self._written.get(key) == (write.resource_version, addresses):
                continue  # written already; the watch has not brought the new version yet
            try:
                _PATCHES[write.kind](
                    self.api, write.namespace, write.name, [dict(entry) for entry in addresses]
                )
            except ApiStatusError as refused:  # this object only: the others are still written
                level = logging.DEBUG if refused.status == 404 else logging.WARNING
                log.log(
                    level,
                    "could not write the load balancer status of %s %s/%s: %s",
                    write.kind,
                    write.namespace,
                    write.name,
                    refused,
                )
                continue
            self._written[key] = (write.resource_version, addresses)
            self.writes += 1
            log.info(
                "wrote load balancer status",
                extra={
                    write.kind.lower(): f"{write.namespace}/{write.name}",
                    "addresses": addresses,
                },
            )
