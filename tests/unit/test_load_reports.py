"""Load reports: per-cluster counts over a recent window, in fixed memory, and the configured
split beside the observed one."""

from __future__ import annotations

import pytest
from envoy.config.endpoint.v3.load_report_pb2 import ClusterStats, UpstreamLocalityStats
from envoy.service.load_stats.v3.lrs_pb2 import LoadStatsRequest

from translators.model import HttpRoute, MeshModel, VirtualHost, WeightedCluster
from xds_server.debug.traffic import observed_clusters, traffic, traffic_json
from xds_server.xds.load_reports import Load, LoadWindows, record_report

V1 = "outbound|80|v1|reviews.default.svc.cluster.local"
V2 = "outbound|80|v2|reviews.default.svc.cluster.local"


def windows(window: float = 60.0, buckets: int = 12, max_clusters: int = 1000) -> LoadWindows:
    return LoadWindows(window, buckets, max_clusters, clock=lambda: 0.0)


def test_reports_from_several_proxies_add_up_per_cluster() -> None:
    kept = windows()
    kept.record(V1, issued=80, succeeded=79, failed=1, now=1.0)
    kept.record(V1, issued=20, succeeded=20, failed=0, now=2.0)  # another proxy
    kept.record(V2, issued=25, succeeded=20, failed=5, now=3.0)

    assert kept.totals(now=4.0) == {V1: Load(100, 99, 1), V2: Load(25, 20, 5)}
    assert kept.totals(now=4.0)[V2].error_rate == pytest.approx(0.2)


def test_counts_older_than_the_window_fall_out_bucket_by_bucket() -> None:
    kept = windows(window=60.0, buckets=12)  # 5 s buckets
    kept.record(V1, 10, 10, 0, now=1.0)  # bucket [0, 5)
    kept.record(V1, 5, 5, 0, now=31.0)  # bucket [30, 35)

    assert kept.totals(now=59.0)[V1].issued == 15
    assert kept.totals(now=61.0)[V1].issued == 5  # the first bucket left the window
    assert kept.totals(now=89.9)[V1].issued == 5  # the second one, until 95 s


def test_a_cluster_no_proxy_reports_for_a_whole_window_is_dropped() -> None:
    kept = windows(window=60.0, buckets=12)
    kept.record(V1, 10, 10, 0, now=1.0)
    kept.record(V2, 10, 10, 0, now=50.0)

    assert set(kept.totals(now=62.0)) == {V2}
    assert len(kept) == 1


def test_a_bucket_is_reused_in_place_when_the_ring_comes_round() -> None:
    kept = windows(window=10.0, buckets=2)
    kept.record(V1, 7, 7, 0, now=1.0)  # epoch 0, slot 0
    kept.record(V1, 3, 3, 0, now=11.0)  # epoch 2, slot 0 again: the old counts are gone

    assert kept.totals(now=11.0)[V1] == Load(3, 3, 0)


def test_clusters_past_the_cap_are_ignored_and_counted() -> None:
    kept = windows(max_clusters=2)
    for n in range(5):
        kept.record(f"c{n}", 1, 1, 0, now=1.0)

    assert set(kept.totals(now=1.0)) == {"c0", "c1"}
    assert kept.ignored == 3


def test_a_full_table_makes_room_by_dropping_clusters_gone_quiet() -> None:
    kept = windows(window=60.0, buckets=12, max_clusters=1)
    kept.record("old", 1, 1, 0, now=1.0)
    kept.record("new", 1, 1, 0, now=70.0)

    assert set(kept.totals(now=70.0)) == {"new"}
    assert kept.ignored == 0


def cluster_stats(name: str, issued: int, ok: int, failed: int) -> ClusterStats:
    return ClusterStats(
        cluster_name=name,
        upstream_locality_stats=[
            UpstreamLocalityStats(
                total_issued_requests=issued // 2,
                total_successful_requests=ok // 2,
                total_error_requests=failed // 2,
            ),
            UpstreamLocalityStats(
                total_issued_requests=issued - issued // 2,
                total_successful_requests=ok - ok // 2,
                total_error_requests=failed - failed // 2,
            ),
        ],
    )


def test_a_report_adds_every_locality_of_every_cluster_and_skips_idle_ones() -> None:
    kept = LoadWindows()
    report = LoadStatsRequest(
        cluster_stats=[
            cluster_stats(V1, 9, 8, 1),
            cluster_stats(V2, 0, 0, 0),
            ClusterStats(cluster_name="dropper", total_dropped_requests=4),
        ]
    )

    assert record_report(kept, report) == 3
    totals = kept.totals()
    assert totals[V1] == Load(9, 8, 1)
    assert totals["dropper"] == Load(dropped=4)
    assert V2 not in totals


def canary_model(v1: int = 80, v2: int = 20) -> MeshModel:
    route = HttpRoute(destinations=(WeightedCluster(V1, v1), WeightedCluster(V2, v2)))
    reviews = VirtualHost(
        "reviews.default.svc.cluster.local:80", 80, ("reviews",), (route,), "default/reviews"
    )
    plain = VirtualHost(
        "ratings.default.svc.cluster.local:80",
        80,
        ("ratings",),
        (HttpRoute(destinations=(WeightedCluster("outbound|80||ratings", 100),)),),
    )
    return MeshModel(mesh_hosts=(plain, reviews))


def test_traffic_shows_configured_and_observed_share_per_virtual_service_route() -> None:
    loads = {V1: Load(300, 297, 3), V2: Load(100, 50, 50)}

    [route] = traffic(canary_model(), loads)

    assert (route.virtual_service, route.scope, route.index) == ("default/reviews", "mesh", 0)
    assert route.requests == 400
    v1, v2 = route.destinations
    assert (v1.configured_share, v1.observed_share, v1.load.error_rate) == (0.8, 0.75, 0.01)
    assert (v2.configured_share, v2.observed_share, v2.load.error_rate) == (0.2, 0.25, 0.5)


def test_traffic_without_reports_has_no_observed_share() -> None:
    document = traffic_json(canary_model(), {}, 60.0)

    assert document["window_seconds"] == 60.0
    [route] = document["routes"]
    assert [d["observed_share"] for d in route["destinations"]] == [None, None]
    assert [d["weight"] for d in route["destinations"]] == [80, 20]
    assert [d["requests"] for d in route["destinations"]] == [0, 0]


def test_proxies_are_asked_for_the_destinations_of_virtual_service_routes_only() -> None:
    assert observed_clusters(canary_model()) == {V1, V2}
    assert observed_clusters(None) == frozenset()
