"""Every golden case's resources are accepted by a real Envoy (``envoy --mode validate``).

Per node group, the resources go into a static bootstrap: EDS clusters become STATIC clusters with
their load assignment inline, RDS references become the inline route configuration (scoped routes
an inline list of the scopes, each with its route configuration inline), and each
``api_listener`` (Envoy allows at most one) becomes a plain HTTP listener carrying its connection
manager, so its route table is validated too.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from envoy.config.bootstrap.v3 import bootstrap_pb2
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from google.protobuf import json_format
from google.protobuf.message import Message

from tests.golden.test_golden import CASES, case_groups, run_case
from translators import resources
from translators.model import NodeGroup

ENVOY = Path(sys.executable).parent / "envoy"
HCM_FILTER = "envoy.filters.network.http_connection_manager"
FIRST_API_LISTENER_PORT = 20000

pytestmark = pytest.mark.envoy


def _inline_routes(
    hcm: hcm_pb2.HttpConnectionManager,
    tables: dict[str, Message],
    scopes: tuple[Message, ...] = (),
) -> None:
    if hcm.HasField("scoped_routes"):
        if not scopes:
            return
        # every scope inline, with its route configuration inline
        listed = hcm.scoped_routes.scoped_route_configurations_list
        for scope in scopes:
            inline = listed.scoped_route_configurations.add()
            inline.CopyFrom(scope)
            inline.ClearField("route_configuration_name")
            inline.route_configuration.CopyFrom(tables[scope.route_configuration_name])  # type: ignore[attr-defined]
        return
    table = tables[hcm.rds.route_config_name]
    hcm.ClearField("rds")
    hcm.route_config.CopyFrom(table)


def static_bootstrap(built: dict[str, tuple[Message, ...]]) -> bootstrap_pb2.Bootstrap:
    """The group's resources as one static Envoy bootstrap (EDS clusters made static)."""
    out = bootstrap_pb2.Bootstrap()
    # a sidecar that sees no service has no scope to list inline: its scoped routes stay on SRDS,
    # which Envoy checks only for a node with an id and cluster
    out.node.id, out.node.cluster = "validate", "validate"
    assignments = {a.cluster_name: a for a in built[resources.ENDPOINT]}  # type: ignore[attr-defined]
    for cluster in built[resources.CLUSTER]:
        static = out.static_resources.clusters.add()
        static.CopyFrom(cluster)
        if static.type != cluster_pb2.Cluster.EDS:
            continue  # a DNS cluster holds its endpoint: Envoy checks it as it is
        static.ClearField("eds_cluster_config")
        static.type = cluster_pb2.Cluster.STATIC
        static.load_assignment.CopyFrom(assignments[static.name])
    tables = {t.name: t for t in built[resources.ROUTE]}  # type: ignore[attr-defined]
    port = FIRST_API_LISTENER_PORT
    for listener in built[resources.LISTENER]:
        static = out.static_resources.listeners.add()
        if listener.HasField("api_listener"):
            hcm = hcm_pb2.HttpConnectionManager()
            assert listener.api_listener.api_listener.Unpack(hcm)  # type: ignore[attr-defined]
            _inline_routes(hcm, tables)
            port += 1
            static.CopyFrom(
                listener_pb2.Listener(name=listener.name)  # type: ignore[attr-defined]
            )
            static.address.socket_address.address = "127.0.0.1"
            static.address.socket_address.port_value = port
            chain_filter = static.filter_chains.add().filters.add(name=HCM_FILTER)
            chain_filter.typed_config.Pack(hcm)
            continue
        static.CopyFrom(listener)
        for chain in static.filter_chains:
            for chain_filter in chain.filters:
                hcm = hcm_pb2.HttpConnectionManager()
                if chain_filter.typed_config.Unpack(hcm):
                    _inline_routes(hcm, tables, built.get(resources.SCOPED_ROUTE, ()))
                    chain_filter.typed_config.Pack(hcm)
    return out


@pytest.mark.parametrize(
    ("case", "group"),
    [(case, group) for case in CASES for group in case_groups(case)],
    ids=lambda item: item.key if isinstance(item, NodeGroup) else item.name,
)
def test_envoy_accepts_the_generated_resources(
    case: Path, group: NodeGroup, tmp_path: Path
) -> None:
    built = run_case(case).groups[group.key]
    config = tmp_path / "bootstrap.json"
    config.write_text(json_format.MessageToJson(static_bootstrap(built)), encoding="utf-8")
    result = subprocess.run(
        [str(ENVOY), "--mode", "validate", "-c", str(config), "--disable-hot-restart"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK" in result.stdout
