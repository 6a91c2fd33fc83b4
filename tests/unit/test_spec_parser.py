"""The strict spec parser: what it accepts, what it reports, and that it never raises."""

from __future__ import annotations

import copy
import datetime
import math
from collections.abc import Mapping
from typing import Any

import pytest
import yaml
from google.protobuf import json_format
from google.protobuf.message import Message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from translators import spec as spec_module
from translators.api import UNSUPPORTED_ISTIO_FIELDS, networking_pb2
from translators.api.networking_pb2 import DestinationRule, VirtualService
from translators.diagnostics import Diagnostic, Severity
from translators.spec import (
    UNSUPPORTED_MESSAGE,
    parse_destination_rule,
    parse_spec,
    parse_virtual_service,
)

SEED_VIRTUAL_SERVICE = """
apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata:
  name: my-virtual-service
spec:
  hosts:
  - my-service.example.com
  http:
  - route:
    - destination:
        host: my-service
        subset: v1
      weight: 100
    - destination:
        host: my-service
        subset: v2
      weight: 0
"""

RICH_VIRTUAL_SERVICE = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
  namespace: shop
spec:
  hosts: [reviews, reviews.example.com]
  gateways: [mesh, shop/edge]
  exportTo: ["."]
  http:
  - name: jason
    match:
    - name: end-user
      headers:
        end-user: {exact: jason}
      withoutHeaders:
        x-debug: {prefix: ""}
      queryParams:
        v: {regex: "^2$"}
      uri: {prefix: /reviews}
      method: {exact: GET}
      ignoreUriCase: true
      port: 9080
      sourceLabels: {app: productpage}
    route:
    - destination: {host: reviews, subset: v2, port: {number: 9080}}
      headers:
        request:
          set: {x-canary: "true"}
          add: {x-trace: "1"}
          remove: [x-internal]
    timeout: 10s
    retries: {attempts: 3, perTryTimeout: 2s, retryOn: "5xx,connect-failure"}
    fault:
      delay: {fixedDelay: 5s, percentage: {value: 10}}
      abort: {httpStatus: 503, percentage: {value: 0.5}}
    mirror: {host: reviews, subset: v3}
    mirrorPercentage: {value: 25.0}
    rewrite: {uri: /v2/reviews, authority: reviews.internal}
  - redirect: {uri: /moved, authority: example.com, redirectCode: 302, scheme: https, port: 8443}
  - route:
    - destination: {host: reviews, subset: v1}
      weight: 90
    - destination: {host: reviews, subset: v2}
      weight: 10
  tcp:
  - match: [{port: 27017, destinationSubnets: [10.0.0.0/8], sourceNamespace: shop}]
    route:
    - destination: {host: mongo, port: {number: 5555}}
      weight: 100
"""

RICH_DESTINATION_RULE = """
apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata:
  name: reviews
  namespace: shop
spec:
  host: reviews
  exportTo: ["*"]
  trafficPolicy:
    loadBalancer: {simple: LEAST_REQUEST}
    connectionPool:
      tcp: {maxConnections: 100, connectTimeout: 30ms}
      http:
        http1MaxPendingRequests: 10
        http2MaxRequests: 1000
        maxRequestsPerConnection: 10
        maxRetries: 3
        idleTimeout: 1h
        maxConcurrentStreams: 100
    outlierDetection:
      consecutive5xxErrors: 7
      consecutiveGatewayErrors: 0
      interval: 5m
      baseEjectionTime: 15m
      maxEjectionPercent: 50
      minHealthPercent: 10
      splitExternalLocalOriginErrors: true
      consecutiveLocalOriginFailures: 3
    portLevelSettings:
    - port: {number: 9080}
      loadBalancer:
        consistentHash:
          httpCookie: {name: user, path: /, ttl: 0s}
          ringHash: {minimumRingSize: 1024}
  subsets:
  - name: v1
    labels: {version: v1}
  - name: v2
    labels: {version: v2}
    trafficPolicy:
      loadBalancer:
        consistentHash: {httpHeaderName: x-user, maglev: {tableSize: 65537}}
"""


def load(text: str) -> dict[str, Any]:
    document = yaml.safe_load(text)
    assert isinstance(document, dict)
    return document


def parse_vs_spec(spec: object) -> tuple[VirtualService | None, list[Diagnostic]]:
    return parse_spec(VirtualService, spec, kind="VirtualService", namespace="shop", name="t")


def parse_dr_spec(spec: object) -> tuple[DestinationRule | None, list[Diagnostic]]:
    return parse_spec(DestinationRule, spec, kind="DestinationRule", namespace="shop", name="t")


def parse_any_spec(message_type: type[Message], spec: object) -> list[Diagnostic]:
    kind = message_type.DESCRIPTOR.name
    return parse_spec(message_type, spec, kind=kind, namespace="shop", name="t")[1]


def errors(diagnostics: list[Diagnostic]) -> list[tuple[str, str]]:
    return [(d.field, d.message) for d in diagnostics if d.severity is Severity.ERROR]


def without_64_bit_strings(document: object) -> object:
    """Protobuf JSON writes 64-bit integers as strings; the CRD schema wants them as integers."""
    if isinstance(document, dict):
        return {
            key: int(value)
            if key in {"minimumRingSize", "tableSize"}
            else without_64_bit_strings(value)
            for key, value in document.items()
        }
    if isinstance(document, list):
        return [without_64_bit_strings(item) for item in document]
    return document


def route_with(**destination_fields: object) -> dict[str, Any]:
    """A VirtualService spec with one HTTP route whose first destination has extra fields."""
    return {
        "hosts": ["reviews"],
        "http": [{"route": [{"destination": {"host": "reviews"}, **destination_fields}]}],
    }


def http_with(**route_fields: object) -> dict[str, Any]:
    """A VirtualService spec with one HTTP route that has extra fields."""
    return {
        "hosts": ["reviews"],
        "http": [{"route": [{"destination": {"host": "reviews"}}], **route_fields}],
    }


def policy_with(**policy_fields: object) -> dict[str, Any]:
    """A DestinationRule spec whose traffic policy has the given fields."""
    return {"host": "reviews", "trafficPolicy": policy_fields}


# --- clean input ------------------------------------------------------------------------------


def test_the_issue_seed_virtual_service_parses_cleanly() -> None:
    spec, diagnostics = parse_virtual_service(load(SEED_VIRTUAL_SERVICE))

    assert diagnostics == []
    assert spec is not None
    assert list(spec.hosts) == ["my-service.example.com"]
    route = spec.http[0].route
    assert [(r.destination.host, r.destination.subset, r.weight) for r in route] == [
        ("my-service", "v1", 100),
        ("my-service", "v2", 0),
    ]


def test_a_rich_virtual_service_parses_as_protobuf_json_would() -> None:
    obj = load(RICH_VIRTUAL_SERVICE)
    spec, diagnostics = parse_virtual_service(obj)

    assert diagnostics == []
    assert spec is not None
    assert spec == json_format.ParseDict(obj["spec"], VirtualService())


@pytest.mark.parametrize(
    "text",
    [RICH_VIRTUAL_SERVICE, RICH_DESTINATION_RULE],
    ids=["virtual-service", "destination-rule"],
)
def test_a_parsed_spec_round_trips_through_protobuf_json(text: str) -> None:
    obj = load(text)
    message_type = VirtualService if obj["kind"] == "VirtualService" else DestinationRule
    spec, _ = parse_spec(message_type, obj["spec"], kind=obj["kind"], namespace="shop", name="t")
    assert spec is not None

    as_json = without_64_bit_strings(json_format.MessageToDict(spec))
    again, diagnostics = parse_spec(
        message_type, as_json, kind=obj["kind"], namespace="shop", name="t"
    )

    assert diagnostics == []
    assert again == spec


@pytest.mark.parametrize("version", ["v1alpha3", "v1beta1", "v1"])
@pytest.mark.parametrize(
    ("text", "parse"),
    [
        (SEED_VIRTUAL_SERVICE, parse_virtual_service),
        (RICH_DESTINATION_RULE, parse_destination_rule),
    ],
    ids=["virtual-service", "destination-rule"],
)
def test_every_served_api_version_is_accepted(version: str, text: str, parse: Any) -> None:
    obj = load(text)
    obj["apiVersion"] = f"networking.istio.io/{version}"

    spec, diagnostics = parse(obj)

    assert spec is not None
    assert diagnostics == []


# --- values that are accepted -----------------------------------------------------------------


def test_an_integral_float_is_an_integer() -> None:
    spec, diagnostics = parse_vs_spec(route_with(weight=90.0))

    assert diagnostics == []
    assert spec is not None
    assert spec.http[0].route[0].weight == 90


def test_proto_field_names_are_accepted_like_json_names() -> None:
    spec, diagnostics = parse_vs_spec(
        {
            "hosts": ["reviews"],
            "export_to": ["."],
            "http": [{"match": [{"ignore_uri_case": True, "source_labels": {"app": "a"}}]}],
        }
    )

    assert diagnostics == []
    assert spec is not None
    assert list(spec.export_to) == ["."]
    assert spec.http[0].match[0].ignore_uri_case
    assert dict(spec.http[0].match[0].source_labels) == {"app": "a"}


def test_null_means_not_set() -> None:
    spec, diagnostics = parse_vs_spec(http_with(timeout=None, retries=None, name=None))

    assert diagnostics == []
    assert spec is not None
    assert not spec.http[0].HasField("timeout")
    assert not spec.http[0].HasField("retries")


def test_an_empty_object_still_sets_the_message() -> None:
    spec, diagnostics = parse_vs_spec(http_with(retries={}))

    assert diagnostics == []
    assert spec is not None
    assert spec.http[0].HasField("retries")


@pytest.mark.parametrize(
    ("outlier_detection", "field", "expected"),
    [
        ({"consecutive5xxErrors": 7}, "consecutive_5xx_errors", 7),
        ({"consecutive5xxErrors": 0}, "consecutive_5xx_errors", 0),
        ({"consecutiveGatewayErrors": 4.0}, "consecutive_gateway_errors", 4),
    ],
)
def test_a_uint32_wrapper_takes_a_plain_integer_and_keeps_presence(
    outlier_detection: dict[str, object], field: str, expected: int
) -> None:
    spec, diagnostics = parse_dr_spec(policy_with(outlierDetection=outlier_detection))

    assert diagnostics == []
    assert spec is not None
    outlier = spec.traffic_policy.outlier_detection
    assert outlier.HasField(field)
    assert getattr(outlier, field).value == expected


@pytest.mark.parametrize("value", [True, False])
def test_a_bool_wrapper_takes_a_plain_boolean_and_keeps_presence(value: bool) -> None:
    spec, diagnostics = parse_vs_spec(http_with(retries={"retryRemoteLocalities": value}))

    assert diagnostics == []
    assert spec is not None
    retries = spec.http[0].retries
    assert retries.HasField("retry_remote_localities")
    assert retries.retry_remote_localities.value is value


def test_an_enum_is_given_by_name() -> None:
    spec, diagnostics = parse_dr_spec(policy_with(loadBalancer={"simple": "ROUND_ROBIN"}))

    assert diagnostics == []
    assert spec is not None
    assert (
        spec.traffic_policy.load_balancer.simple == networking_pb2.LoadBalancerSettings.ROUND_ROBIN
    )


def test_a_double_takes_an_integer() -> None:
    spec, diagnostics = parse_vs_spec(http_with(mirrorPercentage={"value": 50}))

    assert diagnostics == []
    assert spec is not None
    assert spec.http[0].mirror_percentage.value == 50.0


# --- durations --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds", "nanos"),
    [
        ("2s", 2, 0),
        ("0.5s", 0, 500_000_000),
        (".5s", 0, 500_000_000),
        ("100ms", 0, 100_000_000),
        ("1m30s", 90, 0),
        ("1h", 3600, 0),
        ("1.5h", 5400, 0),
        ("1h2m3.25s", 3723, 250_000_000),
        ("300us", 0, 300_000),
        ("300µs", 0, 300_000),
        ("10ns", 0, 10),
        ("0s", 0, 0),
        ("0", 0, 0),
        ("315576000000s", 315_576_000_000, 0),
    ],
)
def test_durations_are_read_in_protobuf_and_go_syntax(text: str, seconds: int, nanos: int) -> None:
    spec, diagnostics = parse_vs_spec(http_with(timeout=text))

    assert diagnostics == []
    assert spec is not None
    assert (spec.http[0].timeout.seconds, spec.http[0].timeout.nanos) == (seconds, nanos)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("-1s", 'duration must not be negative, got string "-1s"'),
        ("-1m30s", "duration must not be negative"),
        ("10", 'expected a duration such as "2s", "0.5s", "100ms" or "1m30s", got string "10"'),
        ("1d", "expected a duration such as"),
        ("2S", "expected a duration such as"),
        ("1 s", "expected a duration such as"),
        ("s", "expected a duration such as"),
        ("", "expected a duration such as"),
        ("9" * 80 + "s", "expected a duration such as"),
        ("315576000001s", "is too long"),
        (10, 'got integer 10 (add a unit, e.g. "10s")'),
        (True, "got boolean true"),
        ({"seconds": 1}, "got object"),
    ],
)
def test_bad_durations_are_diagnosed(value: object, message: str) -> None:
    spec, diagnostics = parse_vs_spec(http_with(timeout=value))

    assert spec is None
    [(field, text)] = errors(diagnostics)
    assert field == "spec.http[0].timeout"
    assert message in text


# --- wrong types ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("message_type", "spec", "field", "message"),
    [
        (
            VirtualService,
            route_with(weight="ten"),
            "spec.http[0].route[0].weight",
            'expected an integer, got string "ten"',
        ),
        (
            VirtualService,
            route_with(weight=True),
            "spec.http[0].route[0].weight",
            "expected an integer, got boolean true",
        ),
        (
            VirtualService,
            route_with(weight=90.5),
            "spec.http[0].route[0].weight",
            "expected an integer, got number 90.5",
        ),
        (
            VirtualService,
            route_with(weight=2**31),
            "spec.http[0].route[0].weight",
            "integer 2147483648 is out of range for int32 (-2147483648 to 2147483647)",
        ),
        (
            VirtualService,
            route_with(weight=math.inf),
            "spec.http[0].route[0].weight",
            "expected an integer, got number inf",
        ),
        (
            VirtualService,
            route_with(destination={"host": "reviews", "port": {"number": -1}}),
            "spec.http[0].route[0].destination.port.number",
            "integer -1 is out of range for uint32 (0 to 4294967295)",
        ),
        (
            VirtualService,
            route_with(destination={"host": "reviews", "port": {"number": 2**32}}),
            "spec.http[0].route[0].destination.port.number",
            "out of range for uint32",
        ),
        (
            VirtualService,
            route_with(destination={"host": 42}),
            "spec.http[0].route[0].destination.host",
            "expected a string, got integer 42",
        ),
        (
            VirtualService,
            route_with(destination="reviews"),
            "spec.http[0].route[0].destination",
            'expected an object, got string "reviews"',
        ),
        (
            VirtualService,
            {"hosts": "reviews"},
            "spec.hosts",
            'expected a list, got string "reviews"',
        ),
        (VirtualService, {"hosts": ["a", 1]}, "spec.hosts[1]", "expected a string, got integer 1"),
        (VirtualService, {"hosts": [None]}, "spec.hosts[0]", "expected a value, got null"),
        (VirtualService, {"http": ["x"]}, "spec.http[0]", 'expected an object, got string "x"'),
        (VirtualService, {"http": {"route": []}}, "spec.http", "expected a list, got object"),
        (
            VirtualService,
            {"http": [{"match": [{"ignoreUriCase": "true"}]}]},
            "spec.http[0].match[0].ignoreUriCase",
            'expected a boolean, got string "true"',
        ),
        (
            VirtualService,
            {"http": [{"match": [{"headers": {"end-user": {"exact": 5}}}]}]},
            "spec.http[0].match[0].headers[end-user].exact",
            "expected a string, got integer 5",
        ),
        (
            VirtualService,
            {"http": [{"match": [{"headers": {"end-user": "jason"}}]}]},
            "spec.http[0].match[0].headers[end-user]",
            'expected an object, got string "jason"',
        ),
        (
            VirtualService,
            {"http": [{"match": [{"headers": {"end-user": None}}]}]},
            "spec.http[0].match[0].headers[end-user]",
            "expected a value, got null",
        ),
        (
            VirtualService,
            http_with(mirrorPercentage={"value": "50"}),
            "spec.http[0].mirrorPercentage.value",
            'expected a number, got string "50"',
        ),
        (
            VirtualService,
            http_with(mirrorPercentage={"value": math.nan}),
            "spec.http[0].mirrorPercentage.value",
            "expected a finite number, got number nan",
        ),
        (
            VirtualService,
            http_with(retries={"retryRemoteLocalities": "yes"}),
            "spec.http[0].retries.retryRemoteLocalities",
            'expected a boolean, got string "yes"',
        ),
        (
            VirtualService,
            {"hosts": ["a"], "exportTo": ["."], "export_to": ["*"]},
            "spec.export_to",
            'set twice, as "exportTo" and as "export_to"',
        ),
        (VirtualService, {1: "a"}, "spec", "field names must be strings, got integer 1"),
        (VirtualService, ["hosts"], "spec", "expected an object, got list"),
        (VirtualService, None, "spec", "missing; a VirtualService needs a spec"),
        (
            DestinationRule,
            policy_with(loadBalancer={"simple": "ROUND_ROBINN"}),
            "spec.trafficPolicy.loadBalancer.simple",
            "expected one of UNSPECIFIED, LEAST_CONN, RANDOM, PASSTHROUGH, ROUND_ROBIN,"
            ' LEAST_REQUEST; got string "ROUND_ROBINN"; did you mean "ROUND_ROBIN"?',
        ),
        (
            DestinationRule,
            policy_with(loadBalancer={"simple": "round_robin"}),
            "spec.trafficPolicy.loadBalancer.simple",
            'did you mean "ROUND_ROBIN"?',
        ),
        (
            DestinationRule,
            policy_with(loadBalancer={"simple": 4}),
            "spec.trafficPolicy.loadBalancer.simple",
            "expected one of UNSPECIFIED,",
        ),
        (
            DestinationRule,
            policy_with(outlierDetection={"consecutive5xxErrors": -1}),
            "spec.trafficPolicy.outlierDetection.consecutive5xxErrors",
            "integer -1 is out of range for uint32",
        ),
        (
            DestinationRule,
            policy_with(outlierDetection={"consecutive5xxErrors": "5"}),
            "spec.trafficPolicy.outlierDetection.consecutive5xxErrors",
            'expected an integer, got string "5"',
        ),
        (
            DestinationRule,
            policy_with(loadBalancer={"consistentHash": {"ringHash": {"minimumRingSize": -1}}}),
            "spec.trafficPolicy.loadBalancer.consistentHash.ringHash.minimumRingSize",
            "out of range for uint64 (0 to 18446744073709551615)",
        ),
        (
            DestinationRule,
            {"host": "r", "subsets": [{"name": "v1", "labels": {"version": 1}}]},
            "spec.subsets[0].labels[version]",
            "expected a string, got integer 1",
        ),
        (
            DestinationRule,
            {"host": "r", "subsets": [{"name": "v1", "labels": ["version=v1"]}]},
            "spec.subsets[0].labels",
            "expected an object, got list",
        ),
        (
            DestinationRule,
            {"host": "r", "subsets": [{"name": "v1", "labels": {1: "a"}}]},
            "spec.subsets[0].labels",
            "keys must be strings, got integer 1",
        ),
        (
            DestinationRule,
            {"host": "r", "subsets": [{"name": "v1", "labels": {"\udc80": "a"}}]},
            "spec.subsets[0].labels[\\udc80]",
            "is not valid Unicode text",
        ),
        (
            DestinationRule,
            {"host": datetime.date(2024, 1, 1)},
            "spec.host",
            "expected a string, got date",
        ),
        (DestinationRule, {"host": 10**5000}, "spec.host", "expected a string, got integer of"),
    ],
)
def test_wrong_types_are_diagnosed_with_the_field_path(
    message_type: type[Message], spec: object, field: str, message: str
) -> None:
    diagnostics = parse_any_spec(message_type, spec)

    assert [f for f, _ in errors(diagnostics)] == [field]
    assert message in errors(diagnostics)[0][1]


def test_errors_are_collected_not_stopped_at_and_the_result_is_none() -> None:
    spec = {
        "hosts": [1],
        "http": [
            {
                "route": [{"destination": {"host": "a"}, "weight": "ten"}],
                "timeout": "forever",
            }
        ],
        "tpc": [],
    }

    message, diagnostics = parse_vs_spec(spec)

    assert message is None
    assert [field for field, _ in errors(diagnostics)] == [
        "spec.hosts[0]",
        "spec.http[0].route[0].weight",
        "spec.http[0].timeout",
        "spec.tpc",
    ]


def test_diagnostics_name_the_object() -> None:
    [diagnostic] = parse_spec(
        VirtualService, {"hostz": []}, kind="VirtualService", namespace="shop", name="reviews"
    )[1]

    assert (diagnostic.kind, diagnostic.namespace, diagnostic.name) == (
        "VirtualService",
        "shop",
        "reviews",
    )
    assert diagnostic.render() == (
        'error: VirtualService/shop/reviews spec.hostz: unknown field; did you mean "hosts"?'
    )


# --- unknown fields ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "field", "message"),
    [
        (
            {"http": [{"route": [{}, {"destinationn": {"host": "a"}}]}]},
            "spec.http[0].route[1].destinationn",
            'unknown field; did you mean "destination"?',
        ),
        ({"Hosts": ["a"]}, "spec.Hosts", 'unknown field; did you mean "hosts"?'),
        ({"export_too": ["."]}, "spec.export_too", 'unknown field; did you mean "exportTo"?'),
        (
            http_with(retry={"attempts": 3}),
            "spec.http[0].retry",
            'unknown field; did you mean "retries"?',
        ),
        ({"zzzzzz": 1}, "spec.zzzzzz", "unknown field"),
        ({"x" * 500: 1}, "spec." + "x" * 60 + "…", "unknown field"),
    ],
)
def test_unknown_fields_are_errors_with_the_full_path_and_a_suggestion(
    spec: object, field: str, message: str
) -> None:
    message_spec, diagnostics = parse_vs_spec(spec)

    assert message_spec is None
    assert errors(diagnostics) == [(field, message)]


# --- Istio fields splitplane does not implement -----------------------------------------------


@pytest.mark.parametrize(
    ("message_type", "spec", "field"),
    [
        (VirtualService, {"hosts": ["a"], "tls": [{"match": []}]}, "spec.tls"),
        (
            VirtualService,
            http_with(corsPolicy={"allowOrigin": ["https://a"]}),
            "spec.http[0].corsPolicy.allowOrigin",
        ),
        (
            VirtualService,
            http_with(cors_policy={"allow_origin": ["https://a"]}),
            "spec.http[0].cors_policy.allow_origin",
        ),
        (
            VirtualService,
            http_with(match=[{"statPrefix": "x"}]),
            "spec.http[0].match[0].statPrefix",
        ),
        (
            VirtualService,
            http_with(fault={"abort": {"http2Error": "x"}}),
            "spec.http[0].fault.abort.http2Error",
        ),
        (DestinationRule, {"host": "r", "workloadSelector": {}}, "spec.workloadSelector"),
        (DestinationRule, policy_with(tls={"mode": "SIMPLE"}), "spec.trafficPolicy.tls"),
        (DestinationRule, policy_with(tunnel={}), "spec.trafficPolicy.tunnel"),
        (DestinationRule, policy_with(proxyProtocol={}), "spec.trafficPolicy.proxyProtocol"),
        (
            DestinationRule,
            policy_with(loadBalancer={"simple": "RANDOM", "localityLbSetting": {}}),
            "spec.trafficPolicy.loadBalancer.localityLbSetting",
        ),
        (
            DestinationRule,
            policy_with(loadBalancer={"warmupDurationSecs": "10s"}),
            "spec.trafficPolicy.loadBalancer.warmupDurationSecs",
        ),
        (
            DestinationRule,
            policy_with(connectionPool={"tcp": {"tcpKeepalive": {"time": "10s"}}}),
            "spec.trafficPolicy.connectionPool.tcp.tcpKeepalive",
        ),
        (
            DestinationRule,
            policy_with(connectionPool={"http": {"h2UpgradePolicy": "UPGRADE"}}),
            "spec.trafficPolicy.connectionPool.http.h2UpgradePolicy",
        ),
        (
            DestinationRule,
            policy_with(connectionPool={"http": {"useClientProtocol": True}}),
            "spec.trafficPolicy.connectionPool.http.useClientProtocol",
        ),
        (
            DestinationRule,
            policy_with(portLevelSettings=[{"port": {"number": 80}, "tls": {}}]),
            "spec.trafficPolicy.portLevelSettings[0].tls",
        ),
    ],
)
def test_unimplemented_istio_fields_are_a_warning_and_ignored(
    message_type: type[Message], spec: object, field: str
) -> None:
    message, diagnostics = parse_spec(message_type, spec, kind="Test", namespace="ns", name="t")

    assert message is not None
    assert [(d.field, d.message, d.severity) for d in diagnostics] == [
        (field, UNSUPPORTED_MESSAGE, Severity.WARNING)
    ]


def test_the_unimplemented_field_list_names_real_messages_and_no_implemented_field() -> None:
    pool_file = networking_pb2.DESCRIPTOR
    for full_name, names in UNSUPPORTED_ISTIO_FIELDS.items():
        descriptor = pool_file.pool.FindMessageTypeByName(full_name)
        implemented = {field.json_name for field in descriptor.fields}
        assert not names & implemented, full_name


def test_warnings_alone_keep_the_object() -> None:
    obj = load(SEED_VIRTUAL_SERVICE)
    obj["spec"]["tls"] = [{"match": [{"sniHosts": ["a"]}]}]

    spec, diagnostics = parse_virtual_service(obj)

    assert spec is not None
    assert [(d.field, d.severity) for d in diagnostics] == [("spec.tls", Severity.WARNING)]


# --- oneofs -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("message_type", "spec", "field", "message"),
    [
        (
            VirtualService,
            http_with(match=[{"uri": {"exact": "/a", "prefix": "/"}}]),
            "spec.http[0].match[0].uri",
            'only one of "exact", "prefix", "regex" may be set, got "exact" and "prefix"',
        ),
        (
            VirtualService,
            http_with(fault={"abort": {"httpStatus": 503, "grpcStatus": "UNAVAILABLE"}}),
            "spec.http[0].fault.abort",
            'only one of "httpStatus", "grpcStatus" may be set',
        ),
        (
            DestinationRule,
            policy_with(loadBalancer={"simple": "RANDOM", "consistentHash": {}}),
            "spec.trafficPolicy.loadBalancer",
            'only one of "simple", "consistentHash" may be set, got "simple" and "consistentHash"',
        ),
        (
            DestinationRule,
            policy_with(
                loadBalancer={"consistentHash": {"httpHeaderName": "x", "useSourceIp": True}}
            ),
            "spec.trafficPolicy.loadBalancer.consistentHash",
            'got "httpHeaderName" and "useSourceIp"',
        ),
    ],
)
def test_two_members_of_a_oneof_are_an_error(
    message_type: type[Message], spec: object, field: str, message: str
) -> None:
    [(error_field, error_message)] = errors(parse_any_spec(message_type, spec))

    assert error_field == field
    assert message in error_message


def test_a_null_oneof_member_does_not_count() -> None:
    spec, diagnostics = parse_vs_spec(http_with(match=[{"uri": {"exact": None, "prefix": "/"}}]))

    assert diagnostics == []
    assert spec is not None
    assert spec.http[0].match[0].uri.WhichOneof("match_type") == "prefix"


# --- whole objects ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        (
            {"apiVersion": "networking.istio.io/v2"},
            "apiVersion",
            "expected one of networking.istio.io/v1alpha3, networking.istio.io/v1beta1,"
            ' networking.istio.io/v1; got string "networking.istio.io/v2"',
        ),
        ({"apiVersion": "v1"}, "apiVersion", 'got string "v1"'),
        ({"apiVersion": None}, "apiVersion", "got null"),
        ({"apiVersion": 3}, "apiVersion", "got integer 3"),
        ({"kind": "DestinationRule"}, "kind", 'expected "VirtualService"'),
        ({"spec": None}, "spec", "missing; a VirtualService needs a spec"),
        ({"spec": "hosts: [a]"}, "spec", "expected an object, got string"),
        ({"metadata": None}, "metadata", "expected an object with a name, got null"),
        ({"metadata": {"namespace": "shop"}}, "metadata.name", "expected a non-empty string"),
        ({"metadata": {"name": "a", "namespace": 5}}, "metadata.namespace", "expected a string"),
        ({"metadata": {"name": "a\udc80"}}, "metadata.name", "expected a non-empty string"),
    ],
)
def test_object_envelope_problems_are_diagnosed(
    change: dict[str, object], field: str, message: str
) -> None:
    obj = load(SEED_VIRTUAL_SERVICE)
    obj.update(change)

    spec, diagnostics = parse_virtual_service(obj)

    assert spec is None
    [(error_field, error_message)] = errors(diagnostics)
    assert error_field == field
    assert message in error_message


def test_a_missing_spec_key_is_diagnosed() -> None:
    obj = load(SEED_VIRTUAL_SERVICE)
    del obj["spec"]

    spec, diagnostics = parse_destination_rule({**obj, "kind": "DestinationRule"})

    assert spec is None
    assert errors(diagnostics) == [("spec", "missing; a DestinationRule needs a spec")]


def test_an_object_without_a_namespace_is_in_the_default_namespace() -> None:
    obj = load(SEED_VIRTUAL_SERVICE)
    obj["spec"]["hostz"] = []

    _, [diagnostic] = parse_virtual_service(obj)

    assert (diagnostic.namespace, diagnostic.name) == ("default", "my-virtual-service")


def test_unknown_top_level_fields_are_a_warning() -> None:
    obj = load(SEED_VIRTUAL_SERVICE)
    obj["sepc"] = {}

    spec, diagnostics = parse_virtual_service(obj)

    assert spec is not None
    assert [(d.field, d.severity) for d in diagnostics] == [("sepc", Severity.WARNING)]


@pytest.mark.parametrize("obj", [None, [], 5, "kind: VirtualService", b"x", 1.5])
def test_something_that_is_not_an_object_is_diagnosed(obj: object) -> None:
    spec, diagnostics = parse_virtual_service(obj)

    assert spec is None
    assert [d.field for d in diagnostics] == ["apiVersion"]
    assert "expected a Kubernetes object" in diagnostics[0].message


# --- never raises -----------------------------------------------------------------------------


def deeply_nested(depth: int) -> object:
    value: object = "leaf"
    for _ in range(depth):
        value = {"http": [value]}
    return value


def self_containing_list() -> list[object]:
    items: list[object] = []
    items.append(items)
    return items


@pytest.mark.parametrize(
    "spec",
    [
        deeply_nested(5000),
        {"hosts": self_containing_list(), "http": self_containing_list()},
        {"hosts": ["a" * 5_000_000]},
        {"http": [{"timeout": "1" * 5_000_000 + "s"}]},
        {"x" * 1_000_000: 1},
        {"http": [{"route": [{"weight": 2**100_000}]}]},
        {"http": [{"match": [{"headers": {"a" * 100_000: {"exact": "\udc80"}}}]}]},
        {"gateways": (1, 2.5, None, [], {})},
        {"http": [{"timeout": "1" * 60 + "h"}]},
    ],
    ids=[
        "deep",
        "self-containing",
        "huge-string",
        "huge-duration",
        "huge-key",
        "huge-integer",
        "surrogates",
        "tuple-of-junk",
        "overflowing-duration",
    ],
)
def test_junk_never_raises_and_every_error_has_a_spec_path(spec: object) -> None:
    message, diagnostics = parse_vs_spec(spec)

    assert all(d.field.startswith("spec") for d in diagnostics)
    assert (message is None) == any(d.is_error for d in diagnostics)


def json_values(keys: st.SearchStrategy[str]) -> st.SearchStrategy[object]:
    scalars = (
        st.none()
        | st.booleans()
        | st.integers()
        | st.floats()
        | st.text(max_size=20)
        | st.sampled_from(["2s", "-1s", "100ms", "ROUND_ROBIN", "exact", "v1", "\udc80"])
    )

    def containers(children: st.SearchStrategy[object]) -> st.SearchStrategy[object]:
        return st.lists(children, max_size=4) | st.dictionaries(keys, children, max_size=5)

    return st.recursive(scalars, containers, max_leaves=30)


def field_names(message_type: type[Message]) -> list[str]:
    names: set[str] = set()
    pending = [message_type.DESCRIPTOR]
    seen: set[str] = set()
    while pending:
        descriptor = pending.pop()
        if descriptor.full_name in seen:
            continue
        seen.add(descriptor.full_name)
        names.update(UNSUPPORTED_ISTIO_FIELDS.get(descriptor.full_name, ()))
        for field in descriptor.fields:
            names.update({field.json_name, field.name})
            if field.message_type is not None:
                pending.append(field.message_type)
    return sorted(names)


SPEC_KEYS = st.sampled_from(
    [*field_names(VirtualService), *field_names(DestinationRule), "\udc80"]
) | st.text(max_size=12)
ENVELOPE_ROOTS = {"spec", "apiVersion", "metadata", "kind"}


def assert_errors_have_object_paths(diagnostics: list[Diagnostic]) -> None:
    """Every error names a field of the object, and every diagnostic prints as UTF-8."""
    for diagnostic in diagnostics:
        if diagnostic.is_error:
            root = diagnostic.field.split(".")[0].split("[")[0]
            assert root in ENVELOPE_ROOTS, diagnostic
        diagnostic.render().encode("utf-8")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=json_values(SPEC_KEYS))
def test_arbitrary_specs_never_raise(spec: object) -> None:
    for parse in (parse_vs_spec, parse_dr_spec):
        message, diagnostics = parse(spec)
        assert_errors_have_object_paths(diagnostics)
        assert (message is None) == any(d.is_error for d in diagnostics)


@settings(max_examples=100, deadline=None)
@given(obj=json_values(st.sampled_from(["apiVersion", "kind", "metadata", "spec", "name"])))
def test_arbitrary_objects_never_raise(obj: object) -> None:
    for parse in (parse_virtual_service, parse_destination_rule):
        _, diagnostics = parse(obj)
        assert_errors_have_object_paths(diagnostics)


def paths_in(value: object, prefix: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    """Every path (keys and indexes) to a node of a JSON-like document."""
    found = [prefix]
    if isinstance(value, Mapping):
        for key, child in value.items():
            found.extend(paths_in(child, (*prefix, key)))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            found.extend(paths_in(child, (*prefix, index)))
    return found


def mutated(document: dict[str, Any], path: tuple[object, ...], how: str, new: object) -> object:
    """``document`` with the node at ``path`` replaced, removed or renamed."""
    if not path:
        return new
    copied = copy.deepcopy(document)
    parent: Any = copied
    for step in path[:-1]:
        parent = parent[step]
    last: Any = path[-1]
    if how == "replace":
        parent[last] = new
    elif how == "remove":
        del parent[last]
    elif isinstance(parent, dict):
        parent[f"{last}{new}"] = parent.pop(last)
    else:
        parent.insert(last, new)
    return copied


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
@pytest.mark.parametrize(
    ("text", "parse"),
    [
        (RICH_VIRTUAL_SERVICE, parse_virtual_service),
        (SEED_VIRTUAL_SERVICE, parse_virtual_service),
        (RICH_DESTINATION_RULE, parse_destination_rule),
    ],
    ids=["rich-virtual-service", "seed-virtual-service", "destination-rule"],
)
def test_mutated_valid_objects_never_raise(data: st.DataObject, text: str, parse: Any) -> None:
    document = load(text)
    path = data.draw(st.sampled_from(paths_in(document)))
    how = data.draw(st.sampled_from(["replace", "remove", "rename"]))
    new = data.draw(json_values(SPEC_KEYS))

    message, diagnostics = parse(mutated(document, path, how, new))

    assert_errors_have_object_paths(diagnostics)
    assert (message is None) == any(d.is_error for d in diagnostics)


# --- the one-pass reader and the walker agree --------------------------------------------------


def walked(message_type: type[Message], data: object) -> tuple[Message, list[Diagnostic]]:
    """What the field-by-field walker alone makes of ``data`` (a spec mapping)."""
    reader = spec_module._Reader("Test", "shop", "t")
    message = message_type()
    reader.fields(message, data, "spec", spec_module._fields(message.DESCRIPTOR))  # type: ignore[arg-type]
    return message, reader.diagnostics


@pytest.mark.parametrize(
    "text",
    [RICH_VIRTUAL_SERVICE, SEED_VIRTUAL_SERVICE, RICH_DESTINATION_RULE],
    ids=["rich-virtual-service", "seed-virtual-service", "destination-rule"],
)
def test_a_valid_spec_is_read_in_one_pass_into_the_walkers_message(text: str) -> None:
    obj = load(text)
    message_type = VirtualService if obj["kind"] == "VirtualService" else DestinationRule

    fast = spec_module._read_fast(message_type, obj["spec"])

    assert fast is not None
    assert walked(message_type, obj["spec"]) == (fast, [])


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
@pytest.mark.parametrize(
    "text",
    [RICH_VIRTUAL_SERVICE, SEED_VIRTUAL_SERVICE, RICH_DESTINATION_RULE],
    ids=["rich-virtual-service", "seed-virtual-service", "destination-rule"],
)
def test_what_the_one_pass_reader_accepts_the_walker_accepts_without_a_word(
    data: st.DataObject, text: str
) -> None:
    document = load(text)
    message_type = VirtualService if document["kind"] == "VirtualService" else DestinationRule
    path = data.draw(st.sampled_from(paths_in(document["spec"])))
    how = data.draw(st.sampled_from(["replace", "remove", "rename"]))
    new = data.draw(json_values(SPEC_KEYS))
    spec = mutated(document["spec"], path, how, new)
    if not isinstance(spec, dict):
        return

    fast = spec_module._read_fast(message_type, spec)

    if fast is not None:
        assert walked(message_type, spec) == (fast, [])


ODD_VALUES = st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=5)


def scalar_values(field: Any) -> st.SearchStrategy[object]:
    """Mostly values of the field's own type, at its edges too, and now and then anything."""
    by_type: dict[int, st.SearchStrategy[object]] = {
        field.TYPE_STRING: st.text(max_size=8) | st.just("\udc80"),
        field.TYPE_BOOL: st.booleans(),
        field.TYPE_DOUBLE: st.floats() | st.integers(),
        field.TYPE_FLOAT: st.floats() | st.integers(),
        field.TYPE_ENUM: st.sampled_from(
            [value.name for value in field.enum_type.values] if field.enum_type else ["?"]
        ),
        field.TYPE_UINT32: st.integers(-1, 2**32) | st.sampled_from([5.0, 5.5]),
        field.TYPE_INT32: st.integers(-(2**31) - 1, 2**31),
        field.TYPE_INT64: st.integers(-(2**63) - 1, 2**63),
        field.TYPE_UINT64: st.integers(-1, 2**64),
    }
    return by_type.get(field.type, ODD_VALUES) | ODD_VALUES


def message_values(descriptor: Any, depth: int = 0) -> st.SearchStrategy[object]:
    """Spec-shaped documents for a message type: real field names (JSON or proto, sometimes
    both), unsupported Istio fields, oneof clashes, nulls and wrong types now and then."""
    if descriptor.full_name == "google.protobuf.Duration":
        return st.sampled_from(["2s", "0.5s", "1m30s", "-1s", "5", "", 3]) | ODD_VALUES
    if descriptor.full_name.startswith("google.protobuf.") and descriptor.full_name.endswith(
        "Value"
    ):
        return scalar_values(descriptor.fields_by_name["value"])
    if depth > 3:
        return st.just({})

    def value_of(field: Any) -> st.SearchStrategy[object]:
        message_type = field.message_type
        if message_type is not None and message_type.GetOptions().map_entry:
            item = message_type.fields_by_name["value"]
            items = (
                message_values(item.message_type, depth + 1)
                if item.message_type is not None
                else scalar_values(item)
            )
            return st.dictionaries(st.text(max_size=4), items, max_size=2) | ODD_VALUES
        one = (
            message_values(message_type, depth + 1)
            if message_type is not None
            else scalar_values(field)
        )
        return st.lists(one, max_size=2) | ODD_VALUES if field.is_repeated else one

    keys = [(field.json_name, field) for field in descriptor.fields]
    keys += [(field.name, field) for field in descriptor.fields if field.name != field.json_name]
    unsupported = sorted(UNSUPPORTED_ISTIO_FIELDS.get(descriptor.full_name, ()))
    entries = st.sampled_from(keys).flatmap(lambda kf: st.tuples(st.just(kf[0]), value_of(kf[1])))
    if unsupported:
        entries = entries | st.tuples(st.sampled_from(unsupported), ODD_VALUES)
    return st.lists(entries, max_size=4).map(dict)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
@pytest.mark.parametrize("message_type", [VirtualService, DestinationRule])
def test_on_spec_shaped_documents_the_one_pass_reader_and_the_walker_agree(
    data: st.DataObject, message_type: type[Message]
) -> None:
    spec = data.draw(message_values(message_type.DESCRIPTOR))

    fast = spec_module._read_fast(message_type, spec)
    message, diagnostics = walked(message_type, spec)

    if fast is not None:
        assert (message, diagnostics) == (fast, [])


@pytest.mark.parametrize(
    "spec",
    [
        {"hosts": ["a"], "exportTo": ["."], "export_to": ["."]},
        {"http": [{"match": [{"uri": {"exact": "/a", "prefix": "/b"}}]}]},
        {"http": [{"route": [{"weight": True}]}]},
        {"http": [{"route": [{"weight": 90.0}]}]},
        {"http": [{"route": [{"weight": 2**31}]}]},
        {"hosts": ["a", None]},
        {"hosts": ["\udc80"]},
        {"http": [{"timeout": 5}]},
        {"http": [{"match": [{"uri": {"exact": "/a"}, "statPrefix": "x"}]}]},
        {"hosts": ("a",)},
        {"tls": []},
    ],
    ids=[
        "one-field-by-both-names",
        "oneof-clash",
        "boolean-integer",
        "float-integer",
        "out-of-range",
        "null-in-list",
        "not-unicode",
        "duration-without-unit",
        "unsupported-field",
        "tuple",
        "unknown-field",
    ],
)
def test_the_one_pass_reader_leaves_anything_unusual_to_the_walker(spec: dict[str, Any]) -> None:
    assert spec_module._read_fast(VirtualService, spec) is None
