"""The API splitplane accepts: generated spec messages plus what the protobuf cannot say.

``networking_pb2`` (generated from ``proto/splitplane/networking.proto``) holds the messages. This
module holds the two facts the spec parser and the CRD generator share and that protobuf does not
express: which Istio fields are accepted but ignored, and the duration syntax.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

PACKAGE: Final = "splitplane.networking"

# Istio fields (JSON names) splitplane does not implement, by message full name. They are
# accepted with a warning so YAML written for Istio applies unchanged.
UNSUPPORTED_ISTIO_FIELDS: Final[Mapping[str, frozenset[str]]] = {
    f"{PACKAGE}.{message}": frozenset(fields)
    for message, fields in {
        "VirtualService": {"tls"},
        "CorsPolicy": {"allowOrigin"},
        "HTTPMatchRequest": {"statPrefix"},
        "HTTPRedirect": {"derivePort"},
        "HTTPFaultInjection.Delay": {"exponentialDelay"},
        "HTTPFaultInjection.Abort": {"http2Error"},
        "L4MatchAttributes": {"sourceSubnet"},
        "DestinationRule": {"workloadSelector"},
        "Sidecar": {"ingress", "outboundTrafficPolicy", "inboundConnectionPool"},
        "IstioEgressListener": {"port", "bind", "captureMode"},
        "TrafficPolicy": {"proxyProtocol", "retryBudget", "tls", "tunnel"},
        "TrafficPolicy.PortTrafficPolicy": {"tls"},
        "LoadBalancerSettings": {
            "backendUtilization",
            "localityLbSetting",
            "warmup",
            "warmupDurationSecs",
            "zoneAwareLbSetting",
        },
        "LoadBalancerSettings.ConsistentHashLB.HTTPCookie": {"attributes"},
        "ConnectionPoolSettings.TCPSettings": {
            "idleTimeout",
            "maxConnectionDuration",
            "tcpKeepalive",
        },
        "ConnectionPoolSettings.HTTPSettings": {"h2UpgradePolicy", "useClientProtocol"},
    }.items()
}

# Durations as Istio users write them: protobuf JSON ("2s", "0.5s") and Go ("100ms", "1m30s").
DURATION_UNITS: Final[Mapping[str, int]] = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,  # MICRO SIGN, as Go accepts it
    "μs": 1_000,  # GREEK SMALL LETTER MU, as Go accepts it
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
}
_NUMBER: Final = r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)"
_UNIT: Final = "(?:ns|us|µs|μs|ms|s|m|h)"
DURATION_PATTERN: Final = rf"^(?:0|(?:{_NUMBER}{_UNIT})+)$"
