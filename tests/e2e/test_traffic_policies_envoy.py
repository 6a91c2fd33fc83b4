"""Every DestinationRule traffic policy through a real Envoy of the load-balancer fleet.

``reviews`` has four endpoints (four loopback backends), reached through an edge VirtualService.
Consistent hashing sends every request with one key to one host and spreads different keys;
the simple balancers, connection-pool limits, outlier detection and TLS settings (which
splitplane ignores) are what Envoy runs with, and requests keep landing. A policy change
re-warms the cluster, and Envoy gets its endpoints again at once: its own counters show the
cluster's EDS update and no initial-fetch timeout (it would otherwise wait 15 s for them).
"""

from __future__ import annotations

import asyncio
import http.client
import json
import re
import urllib.parse
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.test_gateway_envoy import gateway_node, publish
from tests.protocol.conftest import XdsHarness, running_harness
from tests.support.backends import BACKEND_HEADER, Backend, free_port, http_backend
from tests.unit.objects import (
    Obj,
    destination,
    destination_rule,
    endpoint_slice,
    http_route,
    pod,
    service,
    service_port,
    slice_endpoint,
    virtual_service,
)
from xds_server.cli.bootstrap import render_bootstrap
from xds_server.cli.local_envoy import RunningEnvoy, running_envoy
from xds_server.xds.client_status import SyncState
from xds_server.xds.grpc_server import ServerOptions

pytestmark = pytest.mark.envoy

HOST = "reviews.example.com"
CLUSTER = "outbound|80||reviews.default.svc.cluster.local"
SYNC_TIMEOUT_S = 30.0
KEYS = [f"user-{i}" for i in range(12)]


@pytest.fixture
def backends() -> Iterator[list[Backend]]:
    with ExitStack() as stack:
        yield [stack.enter_context(http_backend(f"r{i}")) for i in range(4)]


def reviews(backends: list[Backend], policy: Obj | None) -> list[Obj]:
    """``reviews`` with one pod and EndpointSlice per backend (no zones), a DestinationRule
    with ``policy``, and an edge VirtualService for ``HOST``."""
    objects: list[Obj] = [service("reviews", ports=[service_port(80, "http", "http")])]
    for i, backend in enumerate(backends):
        objects += [
            pod(f"reviews-{i}", "127.0.0.1", {"app": "reviews"}),
            endpoint_slice(
                f"reviews-{i}",
                "reviews",
                [slice_endpoint("127.0.0.1", ready=True, pod=f"reviews-{i}")],
                ports={"http": backend.port},
            ),
        ]
    rule = destination_rule("reviews", "reviews", {})
    if policy is not None:
        rule["spec"]["trafficPolicy"] = policy
    objects.append(rule)
    route = http_route(destination("reviews"))
    objects.append(
        virtual_service("reviews-edge", [HOST], [route], gateways=["splitplane-system/splitplane"])
    )
    return objects


def gateway_bootstrap(xds_port: int, http_port: int, *, delta: bool = False) -> dict[str, Any]:
    node = gateway_node(http_port)
    text = render_bootstrap(
        node.id, "gateway", "default", f"127.0.0.1:{xds_port}", 0, http_port=http_port, delta=delta
    )
    loaded: dict[str, Any] = yaml.safe_load(text)
    return loaded


def get(
    port: int,
    path: str = "/",
    headers: dict[str, str] | None = None,
    source: str = "127.0.0.1",
) -> str:
    """One GET to ``HOST`` through the Envoy on ``port``, from ``source``: the backend that
    answered, or ``status <code>``."""
    connection = http.client.HTTPConnection(
        "127.0.0.1", port, timeout=10, source_address=(source, 0)
    )
    try:
        connection.request("GET", path, headers={"Host": HOST, **(headers or {})})
        reply = connection.getresponse()
        reply.read()
        return reply.getheader(BACKEND_HEADER) or f"status {reply.status}"
    finally:
        connection.close()


@asynccontextmanager
async def edge(
    backends: list[Backend], policy: Obj | None, tmp_path: Path, *, delta: bool = False
) -> AsyncIterator[tuple[XdsHarness, RunningEnvoy, int]]:
    """A real gateway Envoy serving ``reviews`` with ``policy``, once a request gets through."""
    http_port = free_port()
    async for xds in running_harness(ServerOptions()):
        publish(xds, reviews(backends, policy), http_port)
        bootstrap = gateway_bootstrap(xds.port, http_port, delta=delta)
        with running_envoy(bootstrap, tmp_path, wait_ready=False) as envoy:
            await asyncio.to_thread(envoy.wait_ready)
            async with asyncio.timeout(SYNC_TIMEOUT_S):
                while (await asyncio.to_thread(get, http_port)).startswith("status"):
                    await asyncio.sleep(0.05)
            yield xds, envoy, http_port


def stat(envoy: RunningEnvoy, name: str) -> int:
    """One of Envoy's counters or gauges by its exact name (cluster names hold ``|``)."""
    query = urllib.parse.quote(f"^{re.escape(name)}$")
    body = envoy.admin_get(f"/stats?format=json&filter={query}")
    values = [int(s.get("value", 0)) for s in json.loads(body)["stats"] if s.get("name") == name]
    return values[0] if values else 0


def active_cluster(envoy: RunningEnvoy) -> dict[str, Any]:
    """The reviews cluster as Envoy runs it (its active, not its warming, version)."""
    for config in envoy.config_dump()["configs"]:
        for entry in config.get("dynamic_active_clusters", []):
            if entry["cluster"]["name"] == CLUSTER:
                found: dict[str, Any] = entry["cluster"]
                return found
    raise AssertionError("reviews cluster not active")


# ------------------------------------------------------------------------------------------------
# Consistent hashing


def by_header(key: str) -> dict[str, Any]:
    return {"headers": {"x-user": key}}


CONSISTENT_HASHES: dict[str, tuple[Obj, Any]] = {
    "httpHeaderName": ({"httpHeaderName": "x-user"}, by_header),
    "httpCookie": (
        {"httpCookie": {"name": "user", "ttl": "0s"}},
        lambda key: {"headers": {"cookie": f"user={key}"}},
    ),
    "httpQueryParameterName": (
        {"httpQueryParameterName": "user"},
        lambda key: {"path": f"/?user={key}"},
    ),
    "useSourceIp": (
        {"useSourceIp": True},
        lambda key: {"source": f"127.0.0.{KEYS.index(key) + 2}"},
    ),
    "ringHash": ({"httpHeaderName": "x-user", "ringHash": {"minimumRingSize": 1024}}, by_header),
    "maglev": ({"httpHeaderName": "x-user", "maglev": {"tableSize": 65537}}, by_header),
}


@pytest.mark.parametrize("kind", sorted(CONSISTENT_HASHES))
async def test_consistent_hash_keeps_a_key_on_one_host_and_spreads_keys(
    kind: str, backends: list[Backend], tmp_path: Path
) -> None:
    chash, request_for = CONSISTENT_HASHES[kind]
    policy = {"loadBalancer": {"consistentHash": chash}}
    async with edge(backends, policy, tmp_path) as (_, envoy, http_port):
        landed: dict[str, Counter[str]] = {}
        for key in KEYS:
            request = request_for(key)
            landed[key] = Counter(
                [await asyncio.to_thread(get, http_port, **request) for _ in range(5)]
            )

        assert all(len(hosts) == 1 for hosts in landed.values()), landed
        hosts = {host for counts in landed.values() for host in counts}
        assert hosts <= {b.name for b in backends}, landed  # no 503: every key has a host
        assert len(hosts) >= 2, landed  # 12 keys on 4 hosts: one host for all is ~1e-7
        expected = "MAGLEV" if kind == "maglev" else "RING_HASH"
        assert active_cluster(envoy)["lb_policy"] == expected


# ------------------------------------------------------------------------------------------------
# The other policies: what Envoy runs with, and traffic still lands on every host


SIMPLE = [("ROUND_ROBIN", None), ("LEAST_REQUEST", "LEAST_REQUEST"), ("RANDOM", "RANDOM")]


@pytest.mark.parametrize(("simple", "envoy_policy"), SIMPLE)
async def test_simple_load_balancers_spread_over_every_host(
    simple: str, envoy_policy: str | None, backends: list[Backend], tmp_path: Path
) -> None:
    policy = {"loadBalancer": {"simple": simple}}
    async with edge(backends, policy, tmp_path) as (_, envoy, http_port):
        landed = Counter([await asyncio.to_thread(get, http_port) for _ in range(80)])

        assert set(landed) == {b.name for b in backends}, landed
        # ROUND_ROBIN is Envoy's default, which its config dump leaves out.
        assert active_cluster(envoy).get("lb_policy") == envoy_policy


async def test_connection_pool_outlier_detection_and_ignored_tls_apply(
    backends: list[Backend], tmp_path: Path
) -> None:
    policy = {
        "connectionPool": {
            "tcp": {"maxConnections": 100, "connectTimeout": "2s"},
            "http": {
                "http1MaxPendingRequests": 10,
                "http2MaxRequests": 50,
                "maxRequestsPerConnection": 5,
                "maxRetries": 4,
                "idleTimeout": "30s",
            },
        },
        "outlierDetection": {
            "consecutive5xxErrors": 3,
            "interval": "5s",
            "baseEjectionTime": "30s",
            "maxEjectionPercent": 50,
        },
        # splitplane does not originate TLS: ignored with a warning, plain HTTP still flows.
        "tls": {"mode": "SIMPLE", "sni": "reviews.example.com"},
    }
    async with edge(backends, policy, tmp_path) as (_, envoy, http_port):
        landed = Counter([await asyncio.to_thread(get, http_port) for _ in range(40)])
        cluster = active_cluster(envoy)

    assert set(landed) == {b.name for b in backends}, landed
    assert cluster["connect_timeout"] == "2s"
    (thresholds,) = cluster["circuit_breakers"]["thresholds"]
    assert thresholds["max_connections"] == 100
    assert thresholds["max_pending_requests"] == 10
    assert thresholds["max_requests"] == 50
    assert thresholds["max_retries"] == 4
    options = cluster["typed_extension_protocol_options"]
    common = next(iter(options.values()))["common_http_protocol_options"]
    assert common == {"idle_timeout": "30s", "max_requests_per_connection": 5}
    outlier = cluster["outlier_detection"]
    assert outlier["consecutive_5xx"] == 3
    assert outlier["enforcing_consecutive_5xx"] == 100
    assert outlier["interval"] == "5s"
    assert outlier["base_ejection_time"] == "30s"
    assert outlier["max_ejection_percent"] == 50
    assert "transport_socket" not in cluster


# ------------------------------------------------------------------------------------------------
# A policy change re-warms the cluster


POLICY_STEPS: list[Obj] = [
    {"loadBalancer": {"simple": "ROUND_ROBIN"}},
    {"loadBalancer": {"consistentHash": {"httpHeaderName": "x-user"}}},
    {"loadBalancer": {"simple": "RANDOM"}, "connectionPool": {"tcp": {"maxConnections": 7}}},
    {"outlierDetection": {"consecutive5xxErrors": 2}},
]


@pytest.mark.parametrize("delta", [False, True], ids=["sotw", "delta"])
async def test_a_policy_change_re_warms_the_cluster_without_a_fetch_timeout(
    delta: bool, backends: list[Backend], tmp_path: Path
) -> None:
    async with edge(backends, None, tmp_path, delta=delta) as (xds, envoy, http_port):
        eds_updates = stat(envoy, f"cluster.{CLUSTER}.update_success")
        for step, policy in enumerate(POLICY_STEPS, start=1):
            publish(xds, reviews(backends, policy), http_port)
            # The change reaches Envoy: the cluster is re-created, warms and is active again.
            async with asyncio.timeout(SYNC_TIMEOUT_S):
                while stat(envoy, "cluster_manager.cluster_modified") < step or stat(
                    envoy, "cluster_manager.warming_clusters"
                ):
                    await asyncio.sleep(0.02)

            # It warmed on an EDS answer, not on Envoy's 15 s initial-fetch timeout.
            assert stat(envoy, f"cluster.{CLUSTER}.init_fetch_timeout") == 0
            assert stat(envoy, f"cluster.{CLUSTER}.update_success") > eds_updates
            eds_updates = stat(envoy, f"cluster.{CLUSTER}.update_success")
            assert (await asyncio.to_thread(get, http_port)).startswith("r")

        (view,) = xds.registry.views()
        assert view.state is SyncState.SYNCED, view.as_dict()
