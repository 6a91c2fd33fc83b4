"""A real Envoy from a generated bootstrap comes back within about a second of the server.

Envoy's own xDS back-off doubles from 0.5 s up to 30 s, so after an outage a proxy could stay
away for tens of seconds. The generated bootstraps set the xDS gRPC service's retry back-off
(a random wait below an interval of at most 1 s), so during an outage Envoy tries again at least
once a second, and is back about a second after the server is.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from tests.e2e.test_serve_envoy import sidecar_bootstrap, wait_for
from tests.e2e.test_serve_process import EXAMPLE, serve_command, serving
from tests.support.backends import free_port
from xds_server.cli.local_envoy import RunningEnvoy, running_envoy

pytestmark = pytest.mark.envoy

OUTAGE_S = 6.0
CONNECT_FAILURES = "cluster.xds-grpc.upstream_cx_connect_fail"


def connected(envoy: RunningEnvoy) -> bool:
    return envoy.stat("control_plane.connected_state") == 1


def has_clusters(envoy: RunningEnvoy) -> bool:
    return envoy.stat("cluster_manager.active_clusters") > 1  # more than xds-grpc


def test_envoy_retries_every_second_during_an_outage_and_is_back_when_the_server_is(
    tmp_path: Path,
) -> None:
    xds_port = free_port()
    command = serve_command("--config-dir", str(EXAMPLE), xds_port=xds_port)
    bootstrap = sidecar_bootstrap(xds_port, free_port())
    with serving(command) as first, running_envoy(bootstrap, tmp_path / "envoy") as envoy:
        wait_for(lambda: connected(envoy) and has_clusters(envoy), "Envoy synced")

        first.send_signal(signal.SIGKILL)  # an outage: no goodbye to the proxy
        first.wait(10)
        wait_for(lambda: not connected(envoy), "Envoy to see the server gone")
        failures_before = envoy.stat(CONNECT_FAILURES)
        time.sleep(OUTAGE_S)
        attempts = envoy.stat(CONNECT_FAILURES) - failures_before

        # Each wait is below 1 s: at least one attempt per second of outage. (With Envoy's own
        # back-off, 6 s hold about 4 attempts.)
        assert attempts >= OUTAGE_S, attempts

        with serving(command):
            back_after = wait_for(lambda: connected(envoy), "Envoy back")
            print(f"Envoy back {back_after * 1000:.0f} ms after the server logged serving")
            wait_for(lambda: has_clusters(envoy), "clusters after the restart")
