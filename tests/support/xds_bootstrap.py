"""Minimal bootstraps pointing a test client at an xDS server on loopback (test use only)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

XDS_CLUSTER = "xds_cluster"


def envoy_bootstrap(
    xds_port: int,
    node_id: str,
    *,
    delta: bool = False,
    metadata: Mapping[str, str] | None = None,
    node_cluster: str = "test",
) -> dict[str, Any]:
    """An Envoy bootstrap fetching everything over ADS (``GRPC`` or ``DELTA_GRPC``)."""
    ads_source = {"ads": {}, "resource_api_version": "V3"}
    return {
        "node": {
            "id": node_id,
            "cluster": node_cluster,
            "metadata": dict(metadata if metadata is not None else {"ROLE": "sidecar"}),
        },
        "dynamic_resources": {
            "ads_config": {
                "api_type": "DELTA_GRPC" if delta else "GRPC",
                "transport_api_version": "V3",
                "grpc_services": [{"envoy_grpc": {"cluster_name": XDS_CLUSTER}}],
                "set_node_on_first_message_only": True,
            },
            "cds_config": ads_source,
            "lds_config": ads_source,
        },
        "static_resources": {
            "clusters": [
                {
                    "name": XDS_CLUSTER,
                    "type": "STATIC",
                    "connect_timeout": "1s",
                    # Without HTTP/2 Envoy never gets a gRPC stream to the server.
                    "typed_extension_protocol_options": {
                        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                            "@type": "type.googleapis.com/"
                            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                            "explicit_http_config": {"http2_protocol_options": {}},
                        }
                    },
                    "load_assignment": {
                        "cluster_name": XDS_CLUSTER,
                        "endpoints": [
                            {
                                "lb_endpoints": [
                                    {
                                        "endpoint": {
                                            "address": {
                                                "socket_address": {
                                                    "address": "127.0.0.1",
                                                    "port_value": xds_port,
                                                }
                                            }
                                        }
                                    }
                                ]
                            }
                        ],
                    },
                }
            ]
        },
    }


def grpc_bootstrap(
    xds_port: int, node_id: str, metadata: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """A gRPC ``GRPC_XDS_BOOTSTRAP`` document for a proxyless client."""
    return {
        "xds_servers": [
            {
                "server_uri": f"127.0.0.1:{xds_port}",
                "channel_creds": [{"type": "insecure"}],
                "server_features": ["xds_v3"],
            }
        ],
        "node": {
            "id": node_id,
            "cluster": "test",
            "metadata": dict(metadata if metadata is not None else {"ROLE": "proxyless"}),
            "locality": {"region": "local"},
        },
    }
