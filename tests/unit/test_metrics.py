"""Prometheus exposition of splitplane's metrics."""

from __future__ import annotations

from xds_server.debug.metrics import Metrics, short_type


def test_counters_render_with_labels_help_and_type() -> None:
    metrics = Metrics()
    metrics.pushes.inc("cds")
    metrics.pushes.inc("cds")
    metrics.pushes.inc("eds")

    text = metrics.render()

    assert "# TYPE splitplane_xds_pushes_total counter" in text
    assert 'splitplane_xds_pushes_total{type="cds"} 2' in text
    assert 'splitplane_xds_pushes_total{type="eds"} 1' in text


def test_histogram_buckets_are_cumulative_and_end_in_inf() -> None:
    metrics = Metrics()
    for seconds in (0.0004, 0.003, 0.003, 7.0):
        metrics.push_time.observe(seconds)

    lines = metrics.render().splitlines()

    assert 'splitplane_xds_push_time_seconds_bucket{le="0.0005"} 1' in lines
    assert 'splitplane_xds_push_time_seconds_bucket{le="0.005"} 3' in lines
    assert 'splitplane_xds_push_time_seconds_bucket{le="5"} 3' in lines
    assert 'splitplane_xds_push_time_seconds_bucket{le="+Inf"} 4' in lines
    assert "splitplane_xds_push_time_seconds_count 4" in lines
    assert "splitplane_xds_push_time_seconds_sum 7.0064" in lines


def test_label_values_are_escaped() -> None:
    metrics = Metrics()
    metrics.snapshots.inc('odd"group\\name')

    assert 'group="odd\\"group\\\\name"' in metrics.render()


def test_gauges_go_up_and_down() -> None:
    metrics = Metrics()
    metrics.clients.inc("sotw")
    metrics.clients.inc("sotw")
    metrics.clients.dec("sotw")

    assert 'splitplane_xds_clients{protocol="sotw"} 1' in metrics.render()


def test_type_urls_have_istio_short_names() -> None:
    assert short_type("type.googleapis.com/envoy.config.cluster.v3.Cluster") == "cds"
    assert short_type("type.googleapis.com/envoy.config.route.v3.RouteConfiguration") == "rds"
    assert short_type("type.googleapis.com/some.Other") == "Other"
