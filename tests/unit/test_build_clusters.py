"""Model clusters → Envoy clusters."""

from __future__ import annotations

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import config_source_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2

from translators.build_clusters import HTTP_PROTOCOL_OPTIONS, build_cluster, build_clusters
from translators.model import (
    Cluster,
    ConnectionPool,
    ConsistentHash,
    LoadBalancer,
    OutlierDetection,
    Protocol,
    TrafficPolicy,
)

NAME = "outbound|80|v1|reviews.default.svc.cluster.local"
HOST = "reviews.default.svc.cluster.local"
ROUND_ROBIN = cluster_pb2.Cluster.ROUND_ROBIN
UNLIMITED = 2**32 - 1


def cluster(
    policy: TrafficPolicy | None = None, protocol: Protocol = Protocol.HTTP
) -> cluster_pb2.Cluster:
    return build_cluster(
        Cluster(
            name=NAME,
            service="reviews.default.svc.cluster.local",
            port=80,
            subset="v1",
            protocol=protocol,
            policy=policy or TrafficPolicy(),
        )
    )


def protocol_options(out: cluster_pb2.Cluster) -> http_protocol_options_pb2.HttpProtocolOptions:
    options = http_protocol_options_pb2.HttpProtocolOptions()
    assert out.typed_extension_protocol_options[HTTP_PROTOCOL_OPTIONS].Unpack(options)
    return options


def test_cluster_is_eds_fetched_over_ads_under_its_own_name() -> None:
    out = cluster()
    assert out.name == NAME
    assert out.type == cluster_pb2.Cluster.EDS
    assert out.eds_cluster_config.service_name == NAME
    assert out.eds_cluster_config.eds_config.HasField("ads")
    assert out.eds_cluster_config.eds_config.resource_api_version == config_source_pb2.V3


def test_connect_timeout_defaults_to_ten_seconds() -> None:
    assert cluster().connect_timeout.ToMilliseconds() == 10_000


def test_connect_timeout_comes_from_the_connection_pool() -> None:
    out = cluster(TrafficPolicy(connection_pool=ConnectionPool(connect_timeout_ms=250)))
    assert out.connect_timeout.ToMilliseconds() == 250


@pytest.mark.parametrize(
    ("balancer", "envoy", "grpc"),
    [
        (
            LoadBalancer.ROUND_ROBIN,
            cluster_pb2.Cluster.ROUND_ROBIN,
            cluster_pb2.Cluster.ROUND_ROBIN,
        ),
        (
            LoadBalancer.LEAST_REQUEST,
            cluster_pb2.Cluster.LEAST_REQUEST,
            cluster_pb2.Cluster.ROUND_ROBIN,
        ),
        (LoadBalancer.RANDOM, cluster_pb2.Cluster.RANDOM, cluster_pb2.Cluster.ROUND_ROBIN),
        (
            LoadBalancer.PASSTHROUGH,
            cluster_pb2.Cluster.ROUND_ROBIN,
            cluster_pb2.Cluster.ROUND_ROBIN,
        ),
    ],
    ids=lambda v: v.value if isinstance(v, LoadBalancer) else "",
)
def test_simple_load_balancer_for_envoy_and_for_proxyless_grpc(
    balancer: LoadBalancer, envoy: int, grpc: int
) -> None:
    """Proxyless gRPC clients NACK least request and random: they balance round robin."""
    model = Cluster(NAME, HOST, 80, policy=TrafficPolicy(load_balancer=balancer))
    assert build_cluster(model).lb_policy == envoy
    assert build_cluster(model, grpc=True).lb_policy == grpc


def test_least_request_is_the_default_as_in_istio() -> None:
    assert cluster().lb_policy == cluster_pb2.Cluster.LEAST_REQUEST


def test_consistent_hash_uses_a_ring_hash_with_the_minimum_ring_size() -> None:
    chash = ConsistentHash(header="x-user", minimum_ring_size=2048)
    out = cluster(TrafficPolicy(consistent_hash=chash))
    assert out.lb_policy == cluster_pb2.Cluster.RING_HASH
    assert out.ring_hash_lb_config.minimum_ring_size.value == 2048


def test_consistent_hash_with_maglev_uses_maglev_with_the_table_size() -> None:
    chash = ConsistentHash(source_ip=True, maglev=True, table_size=65537)
    out = cluster(TrafficPolicy(consistent_hash=chash))
    assert out.lb_policy == cluster_pb2.Cluster.MAGLEV
    assert out.maglev_lb_config.table_size.value == 65537
    assert not out.HasField("ring_hash_lb_config")


def test_proxyless_grpc_clients_get_a_ring_hash_for_maglev() -> None:
    chash = ConsistentHash(source_ip=True, maglev=True, table_size=65537)
    model = Cluster(NAME, HOST, 80, policy=TrafficPolicy(consistent_hash=chash))
    assert build_cluster(model, grpc=True).lb_policy == cluster_pb2.Cluster.RING_HASH


def test_locality_weights_apply() -> None:
    assert cluster().common_lb_config.HasField("locality_weighted_lb_config")


@pytest.mark.parametrize(
    "chash", [ConsistentHash(header="x-user"), ConsistentHash(header="x-user", maglev=True)]
)
@pytest.mark.parametrize("grpc", [False, True])
def test_consistent_hash_clusters_are_not_locality_weighted(
    chash: ConsistentHash, grpc: bool
) -> None:
    model = Cluster(NAME, HOST, 80, policy=TrafficPolicy(consistent_hash=chash))
    out = build_cluster(model, grpc=grpc)
    assert out.lb_policy in (cluster_pb2.Cluster.RING_HASH, cluster_pb2.Cluster.MAGLEV)
    assert not out.common_lb_config.HasField("locality_weighted_lb_config")


def test_connection_pool_limits_become_circuit_breaker_thresholds() -> None:
    pool = ConnectionPool(max_connections=100, max_pending_requests=10, max_requests=50)
    thresholds = cluster(TrafficPolicy(connection_pool=pool)).circuit_breakers.thresholds
    assert len(thresholds) == 1
    assert thresholds[0].max_connections.value == 100
    assert thresholds[0].max_pending_requests.value == 10
    assert thresholds[0].max_requests.value == 50
    assert thresholds[0].max_retries.value == UNLIMITED


def test_connection_pool_max_retries_becomes_a_threshold() -> None:
    out = cluster(TrafficPolicy(connection_pool=ConnectionPool(max_retries=7)))
    assert out.circuit_breakers.thresholds[0].max_retries.value == 7


@pytest.mark.parametrize(
    "policy",
    [TrafficPolicy(), TrafficPolicy(connection_pool=ConnectionPool(connect_timeout_ms=100))],
    ids=["no-policy", "a-pool-without-limits"],
)
def test_limits_not_given_are_unlimited_as_in_istio(policy: TrafficPolicy) -> None:
    """Istio's connection pool limits default to 2^32-1; Envoy's own defaults (1024 connections,
    pending and active requests, 3 concurrent retries) would shed load and retries."""
    (thresholds,) = cluster(policy).circuit_breakers.thresholds
    assert thresholds.max_connections.value == UNLIMITED
    assert thresholds.max_pending_requests.value == UNLIMITED
    assert thresholds.max_requests.value == UNLIMITED
    assert thresholds.max_retries.value == UNLIMITED
    assert thresholds.track_remaining


def test_plain_http_port_without_limits_has_no_protocol_options() -> None:
    assert HTTP_PROTOCOL_OPTIONS not in cluster().typed_extension_protocol_options


@pytest.mark.parametrize("protocol", [Protocol.HTTP2, Protocol.GRPC])
def test_http2_and_grpc_ports_speak_http2_upstream(protocol: Protocol) -> None:
    options = protocol_options(cluster(protocol=protocol))
    assert options.explicit_http_config.HasField("http2_protocol_options")
    assert not options.HasField("common_http_protocol_options")


def test_tcp_port_has_no_http_options() -> None:
    pool = ConnectionPool(idle_timeout_ms=1000)
    out = cluster(TrafficPolicy(connection_pool=pool), protocol=Protocol.TCP)
    assert HTTP_PROTOCOL_OPTIONS not in out.typed_extension_protocol_options


def test_idle_timeout_and_requests_per_connection_are_common_http_options() -> None:
    pool = ConnectionPool(idle_timeout_ms=30_000, max_requests_per_connection=5)
    options = protocol_options(cluster(TrafficPolicy(connection_pool=pool)))
    assert options.common_http_protocol_options.idle_timeout.ToMilliseconds() == 30_000
    assert options.common_http_protocol_options.max_requests_per_connection.value == 5
    assert options.explicit_http_config.HasField("http_protocol_options")


def test_max_concurrent_streams_applies_to_http2() -> None:
    pool = ConnectionPool(max_concurrent_streams=64)
    options = protocol_options(cluster(TrafficPolicy(connection_pool=pool), Protocol.GRPC))
    assert options.explicit_http_config.http2_protocol_options.max_concurrent_streams.value == 64


def test_outlier_detection_enforces_consecutive_5xx_fully() -> None:
    od = OutlierDetection(
        consecutive_5xx_errors=3,
        interval_ms=5_000,
        base_ejection_time_ms=30_000,
        max_ejection_percent=50,
    )
    out = cluster(TrafficPolicy(outlier_detection=od)).outlier_detection
    assert out.consecutive_5xx.value == 3
    assert out.enforcing_consecutive_5xx.value == 100
    assert out.interval.ToMilliseconds() == 5_000
    assert out.base_ejection_time.ToMilliseconds() == 30_000
    assert out.max_ejection_percent.value == 50


def test_zero_consecutive_5xx_disables_that_ejection() -> None:
    od = OutlierDetection(consecutive_5xx_errors=0)
    out = cluster(TrafficPolicy(outlier_detection=od)).outlier_detection
    assert out.HasField("enforcing_consecutive_5xx")
    assert out.enforcing_consecutive_5xx.value == 0


def test_gateway_errors_alone_leave_5xx_ejection_at_its_default() -> None:
    """Istio: consecutive5xxErrors "defaults to 5" whatever consecutiveGatewayErrors says."""
    od = OutlierDetection(consecutive_gateway_errors=4)
    out = cluster(TrafficPolicy(outlier_detection=od)).outlier_detection
    assert out.consecutive_gateway_failure.value == 4
    assert out.enforcing_consecutive_gateway_failure.value == 100
    assert not out.HasField("consecutive_5xx")
    assert not out.HasField("enforcing_consecutive_5xx")


def test_outlier_detection_never_ejects_on_success_rate() -> None:
    od = OutlierDetection(consecutive_5xx_errors=3, split_external_local_origin_errors=True)
    out = cluster(TrafficPolicy(outlier_detection=od)).outlier_detection
    assert out.HasField("enforcing_success_rate")
    assert out.enforcing_success_rate.value == 0
    assert out.HasField("enforcing_local_origin_success_rate")
    assert out.enforcing_local_origin_success_rate.value == 0


def test_local_origin_failures_are_split_and_enforced() -> None:
    od = OutlierDetection(
        split_external_local_origin_errors=True, consecutive_local_origin_failures=2
    )
    out = cluster(TrafficPolicy(outlier_detection=od)).outlier_detection
    assert out.split_external_local_origin_errors
    assert out.consecutive_local_origin_failure.value == 2
    assert out.enforcing_consecutive_local_origin_failure.value == 100


def test_min_health_percent_sets_the_panic_threshold() -> None:
    od = OutlierDetection(consecutive_5xx_errors=1, min_health_percent=30)
    out = cluster(TrafficPolicy(outlier_detection=od))
    assert out.common_lb_config.healthy_panic_threshold.value == 30.0


def test_outlier_detection_without_min_health_percent_disables_the_panic_threshold() -> None:
    """Istio's minHealthPercent defaults to 0 %, where Envoy's panic threshold defaults to 50 %."""
    out = cluster(TrafficPolicy(outlier_detection=OutlierDetection(consecutive_5xx_errors=1)))
    assert out.common_lb_config.HasField("healthy_panic_threshold")
    assert out.common_lb_config.healthy_panic_threshold.value == 0.0


def test_without_outlier_detection_the_panic_threshold_is_envoys() -> None:
    assert not cluster().common_lb_config.HasField("healthy_panic_threshold")


def test_clusters_are_sorted_by_name() -> None:
    names = ["outbound|80|v2|a", "outbound|80||a", "outbound|80|v1|a"]
    out = build_clusters(Cluster(name=n, service="a", port=80) for n in names)
    assert [c.name for c in out] == sorted(names)
