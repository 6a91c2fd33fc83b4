"""The generated CRDs: valid Kubernetes manifests with structural schemas that accept real specs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import kubernetes_validate
import pytest
import yaml

from translators.api import UNSUPPORTED_ISTIO_FIELDS
from translators.diagnostics import Severity
from translators.spec import parse_destination_rule, parse_virtual_service

ROOT = Path(__file__).resolve().parents[2]
CRD_DIR = ROOT / "deploy" / "crds"
VIRTUAL_SERVICES = "virtualservices.networking.istio.io"
DESTINATION_RULES = "destinationrules.networking.istio.io"
JUNCTORS = ("oneOf", "anyOf", "allOf", "not")

CANARY = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: shop}
spec:
  hosts: [reviews]
  http:
  - match:
    - headers:
        end-user: {exact: jason}
      uri: {prefix: /api}
    route:
    - destination: {host: reviews, subset: v2}
  - route:
    - destination: {host: reviews, subset: v1, port: {number: 9080}}
      weight: 90
    - destination: {host: reviews, subset: v2}
      weight: 10
    timeout: 1m30s
    retries: {attempts: 3, perTryTimeout: 100ms, retryOn: 5xx, retryRemoteLocalities: true}
    fault:
      abort: {httpStatus: 503, percentage: {value: 0.1}}
    mirror: {host: reviews, subset: v3}
    mirrorPercentage: {value: 5}
    corsPolicy: {allowOrigins: [{exact: "https://example.com"}]}
"""

DESTINATION_RULE = """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: shop}
spec:
  host: reviews
  trafficPolicy:
    loadBalancer:
      consistentHash: {httpCookie: {name: user, ttl: 0s}, ringHash: {minimumRingSize: 1024}}
    connectionPool:
      tcp: {maxConnections: 100, connectTimeout: 30ms, tcpKeepalive: {time: 7200s}}
      http: {http2MaxRequests: 1000, idleTimeout: 1h}
    outlierDetection: {consecutive5xxErrors: 7, interval: 5m, baseEjectionTime: 15m}
    tls: {mode: ISTIO_MUTUAL}
  subsets:
  - name: v1
    labels: {version: v1}
    trafficPolicy:
      loadBalancer: {simple: LEAST_REQUEST}
"""


def crd(name: str) -> dict[str, Any]:
    document = yaml.safe_load((CRD_DIR / f"{name}.yaml").read_text())
    assert isinstance(document, dict)
    return document


def schema(name: str, version: str = "v1") -> dict[str, Any]:
    [served] = [v for v in crd(name)["spec"]["versions"] if v["name"] == version]
    result = served["schema"]["openAPIV3Schema"]
    assert isinstance(result, dict)
    return result


def nodes(node: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every schema node that describes a value (not the junctors' constraint-only nodes)."""
    yield path, node
    for name, child in node.get("properties", {}).items():
        yield from nodes(child, f"{path}.{name}")
    if isinstance(node.get("additionalProperties"), dict):
        yield from nodes(node["additionalProperties"], f"{path}[*]")
    if "items" in node:
        yield from nodes(node["items"], f"{path}[]")


def junctor_keys(node: object) -> Iterator[str]:
    """Every key used inside a junctor (oneOf/anyOf/allOf/not), recursively."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield key
            yield from junctor_keys(value)
    elif isinstance(node, list):
        for item in node:
            yield from junctor_keys(item)


def validator(name: str) -> Any:
    return jsonschema.Draft4Validator(schema(name))


def load(text: str) -> dict[str, Any]:
    document = yaml.safe_load(text)
    assert isinstance(document, dict)
    return document


@pytest.mark.parametrize("name", [VIRTUAL_SERVICES, DESTINATION_RULES])
def test_the_crd_is_a_valid_kubernetes_manifest(name: str) -> None:
    kubernetes_validate.validate(crd(name), "1.37.0", strict=True)


@pytest.mark.parametrize("name", [VIRTUAL_SERVICES, DESTINATION_RULES])
def test_versions_v1alpha3_v1beta1_and_v1_are_served_and_v1_is_stored(name: str) -> None:
    versions = crd(name)["spec"]["versions"]

    assert [(v["name"], v["served"], v["storage"]) for v in versions] == [
        ("v1alpha3", True, False),
        ("v1beta1", True, False),
        ("v1", True, True),
    ]
    assert all(v["subresources"] == {"status": {}} for v in versions)
    assert all(v["schema"] == versions[0]["schema"] for v in versions)


@pytest.mark.parametrize(
    ("name", "columns"),
    [(VIRTUAL_SERVICES, ["Hosts", "Gateways", "Age"]), (DESTINATION_RULES, ["Host", "Age"])],
)
def test_printer_columns(name: str, columns: list[str]) -> None:
    for version in crd(name)["spec"]["versions"]:
        assert [column["name"] for column in version["additionalPrinterColumns"]] == columns


@pytest.mark.parametrize("name", [VIRTUAL_SERVICES, DESTINATION_RULES])
def test_every_schema_node_is_structural(name: str) -> None:
    for path, node in nodes(schema(name)):
        assert "type" in node or node.get("x-kubernetes-preserve-unknown-fields"), path
        assert "$ref" not in node, path
        for junctor in JUNCTORS:
            if junctor in node:
                used = set(junctor_keys(node[junctor]))
                assert used <= {"required", *JUNCTORS}, f"{path}: {used}"


def test_durations_wrappers_64_bit_integers_maps_and_enums_have_their_json_shapes() -> None:
    spec = schema(DESTINATION_RULES)["properties"]["spec"]["properties"]
    policy = spec["trafficPolicy"]["properties"]
    outlier = policy["outlierDetection"]["properties"]
    load_balancer = policy["loadBalancer"]["properties"]
    ring_hash = load_balancer["consistentHash"]["properties"]["ringHash"]["properties"]

    assert outlier["interval"]["type"] == "string"
    assert "pattern" in outlier["interval"]
    assert outlier["consecutive5xxErrors"]["type"] == "integer"
    assert outlier["consecutive5xxErrors"]["nullable"] is True
    assert ring_hash["minimumRingSize"]["format"] == "int64"
    assert ring_hash["minimumRingSize"]["type"] == "integer"
    assert spec["subsets"]["items"]["properties"]["labels"] == {
        "description": "Pod labels an endpoint must have to belong to the subset.",
        "type": "object",
        "additionalProperties": {"type": "string"},
    }
    assert load_balancer["simple"]["enum"] == [
        "UNSPECIFIED",
        "LEAST_CONN",
        "RANDOM",
        "PASSTHROUGH",
        "ROUND_ROBIN",
        "LEAST_REQUEST",
    ]


def test_oneofs_are_documented() -> None:
    load_balancer = schema(DESTINATION_RULES)["properties"]["spec"]["properties"]["trafficPolicy"][
        "properties"
    ]["loadBalancer"]

    assert "At most one of simple, consistentHash may be set." in load_balancer["description"]


def test_unimplemented_istio_fields_are_in_the_schema_so_istio_yaml_applies() -> None:
    http_route = schema(VIRTUAL_SERVICES)["properties"]["spec"]["properties"]["http"]["items"]

    match = http_route["properties"]["match"]["items"]
    assert match["properties"]["statPrefix"]["x-kubernetes-preserve-unknown-fields"] is True
    assert len(UNSUPPORTED_ISTIO_FIELDS) > 0


def test_delegation_is_in_the_schema() -> None:
    http_route = schema(VIRTUAL_SERVICES)["properties"]["spec"]["properties"]["http"]["items"]

    assert set(http_route["properties"]["delegate"]["properties"]) == {"name", "namespace"}


@pytest.mark.parametrize(
    ("name", "text"),
    [(VIRTUAL_SERVICES, CANARY), (DESTINATION_RULES, DESTINATION_RULE)],
    ids=["virtual-service", "destination-rule"],
)
def test_valid_objects_validate_against_the_v1_schema(name: str, text: str) -> None:
    validator(name).validate(load(text))


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("spec", "http", 1, "route", 0, "weight"), "ten"),
        (("spec", "http", 1, "route", 0, "destination", "port", "number"), -1),
        (("spec", "http", 1, "timeout"), "10"),
        (("spec", "http", 1, "timeout"), "-1s"),
        (("spec", "http", 0, "match", 0, "uri"), {"exact": "/a", "prefix": "/"}),
        (("spec", "http", 1, "fault", "abort"), {"httpStatus": 503, "grpcStatus": "UNAVAILABLE"}),
        (("spec", "hosts"), "reviews"),
    ],
)
def test_invalid_virtual_services_are_rejected_by_the_schema(
    path: tuple[str | int, ...], value: object
) -> None:
    obj: Any = load(CANARY)
    target = obj
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value

    assert not validator(VIRTUAL_SERVICES).is_valid(obj)


def test_an_unknown_enum_value_is_rejected_by_the_schema() -> None:
    obj = load(DESTINATION_RULE)
    obj["spec"]["subsets"][0]["trafficPolicy"]["loadBalancer"]["simple"] = "FASTEST"

    assert not validator(DESTINATION_RULES).is_valid(obj)


@pytest.mark.parametrize(
    ("text", "parse"),
    [(CANARY, parse_virtual_service), (DESTINATION_RULE, parse_destination_rule)],
    ids=["virtual-service", "destination-rule"],
)
def test_what_the_schema_accepts_the_parser_accepts(text: str, parse: Any) -> None:
    spec, diagnostics = parse(load(text))

    assert spec is not None
    assert all(d.severity is Severity.WARNING for d in diagnostics)
