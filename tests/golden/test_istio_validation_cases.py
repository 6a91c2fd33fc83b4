"""Oracle: the cases of Istio's own validation tests (istio/istio ``pkg/config/validation``), with
the verdicts Istio's tests give them, written here as YAML.

- Every case Istio accepts is accepted by splitplane (warnings are fine: a field splitplane does
  not apply), and everything splitplane builds from all of them together passes a real
  ``envoy --mode validate`` for every node group.
- Every case Envoy would reject (NACK) is rejected by splitplane, with an error naming the field.
- Every other case Istio rejects is rejected too.

Left out, because another part of the work covers them: delegation (``delegate``, VirtualServices
without hosts), redirects with neither uri nor authority, and ``rewrite.uri`` with
``uriRegexRewrite``. Left out because splitplane ignores the whole section: TLS settings.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from google.protobuf import json_format

from tests.golden.test_envoy_validate import ENVOY, static_bootstrap
from tests.unit.objects import destination_rule, pod, service, sidecar, virtual_service
from translators.build import build_group
from translators.model import NodeGroup, Role
from translators.translate import translate

GROUPS = (NodeGroup(Role.SIDECAR, 15001), NodeGroup(Role.GATEWAY, 8080), NodeGroup(Role.PROXYLESS))


@dataclass(frozen=True)
class Case:
    name: str
    kind: str  # the kind the case is about: its spec below
    spec: dict[str, Any]
    valid: bool
    nack: bool = False  # Envoy would reject what a naive translation sends


def sidecar_case(name: str, text: str, *, valid: bool) -> Case:
    """A Sidecar in the case's namespace (its spec in YAML)."""
    return Case(f"Sidecar {name}", "Sidecar", yaml.safe_load(text), valid)


def rule(text: str, *, valid: bool, nack: bool = False, name: str = "") -> Case:
    """A VirtualService for ``reviews`` with one http rule (YAML; a route to v1 if it has none
    of route, redirect, directResponse)."""
    http = yaml.safe_load(text) or {}
    if not {"route", "redirect", "directResponse"} & set(http) and not http.pop("bare", False):
        http["route"] = [{"destination": {"host": "reviews", "subset": "v1"}}]
    return Case(name or text, "VirtualService", {"hosts": ["reviews"], "http": [http]}, valid, nack)


def policy(text: str, *, valid: bool, nack: bool = False, subset: bool = False) -> Case:
    """A DestinationRule for ``reviews`` (subsets v1 and v2) with this traffic policy (YAML),
    at the top or (``subset``) in subset v1."""
    body = yaml.safe_load(text)
    subsets: list[dict[str, Any]] = [
        {"name": "v1", "labels": {"version": "v1"}},
        {"name": "v2", "labels": {"version": "v2"}},
    ]
    spec: dict[str, Any] = {"host": "reviews", "subsets": subsets}
    if subset:
        subsets[0]["trafficPolicy"] = body
    else:
        spec["trafficPolicy"] = body
    name = f"subset {text}" if subset else text
    return Case(name, "DestinationRule", spec, valid, nack)


def rule_object(text: str, *, valid: bool) -> Case:
    """A whole DestinationRule spec (YAML)."""
    return Case(text, "DestinationRule", yaml.safe_load(text), valid)


V1 = "{host: reviews, subset: v1}"
CASES: list[Case] = [
    # TestValidateHTTPRoute
    rule("{bare: true}", valid=False, name="empty rule"),
    rule("{}", valid=True, name="simple"),
    rule(
        "{route: [{destination: {host: reviews, subset: v1}, weight: 75},"
        " {destination: {host: reviews, subset: v2}, weight: 25}]}",
        valid=True,
        name="weighted",
    ),
    rule(
        "{route: [{destination: {host: reviews, subset: v1}, weight: 75},"
        " {destination: {host: reviews, subset: v2}, weight: 35}]}",
        valid=True,
        name="total weight > 100",
    ),
    rule(
        "{route: [{destination: {host: reviews, subset: v1}, weight: 15},"
        " {destination: {host: reviews, subset: v2}, weight: 35}]}",
        valid=True,
        name="total weight < 100",
    ),
    rule("{redirect: {uri: /lerp, authority: foo.biz}}", valid=True, name="simple redirect"),
    rule(
        "{match: [{uri: {prefix: /old}}], redirect: {prefixRewrite: /new}}",
        valid=True,
        name="prefixRewrite redirect with a prefix uri match",
    ),
    rule(
        "{match: [{uri: {exact: /old}}], redirect: {prefixRewrite: /new}}",
        valid=False,
        name="prefixRewrite redirect with an exact uri match",
    ),
    rule(
        "{match: [{uri: {regex: /o.d}}], redirect: {prefixRewrite: /new}}",
        valid=False,
        name="prefixRewrite redirect with a regex uri match",
    ),
    rule(
        "{redirect: {prefixRewrite: /new}}",
        valid=True,
        name="prefixRewrite redirect without a uri match",
    ),
    rule(
        "{redirect: {uri: /lerp, authority: foo.biz},"
        " route: [{destination: {host: reviews, subset: v1}}]}",
        valid=False,
        name="conflicting redirect and route",
    ),
    rule(
        "{headers: {request: {add: {x-a: a}, set: {x-b: b}, remove: [x-c]},"
        " response: {add: {x-d: d}, set: {x-e: e}, remove: [x-f]}}}",
        valid=True,
        name="request and response headers",
    ),
    rule("{headers: {request: {add: {'': a}}}}", valid=False, nack=True),
    rule("{headers: {request: {set: {'': a}}}}", valid=False, nack=True),
    rule("{headers: {request: {remove: ['']}}}", valid=False),
    rule("{headers: {response: {add: {'': a}}}}", valid=False, nack=True),
    rule("{headers: {response: {set: {'': a}}}}", valid=False, nack=True),
    rule("{headers: {response: {remove: ['']}}}", valid=False),
    rule("{headers: {request: {set: {x-a: '100%%'}}}}", valid=True, name="escaped % set"),
    rule("{headers: {request: {set: {x-a: '%HOSTNAME%'}}}}", valid=True, name="variable set"),
    rule("{headers: {request: {set: {x-a: '50%'}}}}", valid=False, nack=True),
    rule("{headers: {request: {add: {x-a: '100%%'}}}}", valid=True, name="escaped % add"),
    rule("{headers: {request: {add: {x-a: '%HOSTNAME%'}}}}", valid=True, name="variable add"),
    rule("{headers: {request: {add: {x-a: '50%'}}}}", valid=False, nack=True),
    rule("{headers: {response: {set: {x-a: 'abc%123'}}}}", valid=False, nack=True),
    rule("{headers: {response: {add: {x-a: '%START_TIME%%'}}}}", valid=False, nack=True),
    rule(
        "{headers: {response: {set: {x-a: 'prefix %HOSTNAME% suffix'}}}}",
        valid=True,
        name="variable inside text",
    ),
    rule(
        "{headers: {response: {set: {x-a: '%DOWNSTREAM_PEER_CERT_V_END(%b %d %H:%M:%S %Y %Z)%'}}}}",
        valid=True,
        name="variable with a format",
    ),
    rule(
        "{headers: {request: {set: {x-a: '%DYNAMIC_METADATA(com.test.my_filter)%'}}}}",
        valid=True,
        name="variable with an argument",
    ),
    rule("{match: [{headers: {x-a: null}}]}", valid=False, name="null header match"),
    rule("{match: [{headers: {x-a: {prefix: ''}}}]}", valid=False, nack=True),
    rule("{match: [{headers: {'': {exact: a}}}]}", valid=False, nack=True),
    rule("{match: [{headers: {x-a: {regex: ''}}}]}", valid=False, nack=True),
    rule("{match: [{headers: {x-a: {regex: '*'}}}]}", valid=True, name="present header match"),
    rule("{match: [{withoutHeaders: {x-a: {prefix: ''}}}]}", valid=False, nack=True),
    rule("{match: [{withoutHeaders: {x-a: {regex: '*'}}}]}", valid=True),
    rule("{match: [{withoutHeaders: {'': {exact: a}}}]}", valid=False, nack=True),
    rule("{match: [{queryParams: {q: {prefix: ''}}}]}", valid=False, nack=True),
    rule("{match: [{queryParams: {q: {regex: ''}}}]}", valid=False, nack=True),
    rule("{match: [{queryParams: {q: {exact: a}}}]}", valid=True),
    rule("{match: [{queryParams: {'': {exact: a}}}]}", valid=False, nack=True),
    rule("{match: [{method: {prefix: ''}}]}", valid=False, nack=True),
    rule("{match: [{method: {regex: ''}}]}", valid=False, nack=True),
    rule("{match: [{method: {exact: GET}}]}", valid=True),
    rule("{match: [{scheme: {prefix: ''}}]}", valid=False, nack=True),
    rule("{match: [{scheme: {exact: https}}]}", valid=True),
    rule("{match: [{authority: {prefix: ''}}]}", valid=False, nack=True),
    rule("{match: [{authority: {prefix: reviews}}]}", valid=True),
    rule("{match: [{uri: {prefix: ''}}]}", valid=True, name="empty uri prefix (every path)"),
    rule("{match: [{uri: {regex: ''}}]}", valid=False, nack=True),
    rule("{match: [{uri: {regex: '(?=x)'}}]}", valid=False, nack=True),
    rule("{match: [{uri: {regex: '/api/v[0-9]+/.*'}}]}", valid=True),
    rule("{match: []}", valid=True, name="nil match"),
    rule("{match: [null]}", valid=True, name="match with a null element"),
    rule("{match: [null, {uri: {prefix: /a}}]}", valid=True, name="null and a match"),
    rule(f"{{mirror: {V1}, mirrorPercent: 101}}", valid=False),
    rule(f"{{mirror: {V1}, mirrorPercentage: {{value: 101}}}}", valid=False),
    rule(f"{{mirror: {V1}, mirrorPercentage: {{value: 1.5}}}}", valid=True),
    rule(f"{{mirror: {V1}, mirrorPercentage: {{value: -1}}}}", valid=False),
    rule("{mirrors: [{percentage: {value: 50}}]}", valid=False, name="mirrors without host"),
    rule(f"{{mirrors: [{{destination: {V1}, percentage: {{value: 101}}}}]}}", valid=False),
    rule(f"{{mirrors: [{{destination: {V1}, percentage: {{value: 1.5}}}}]}}", valid=True),
    rule(f"{{mirrors: [{{destination: {V1}, percentage: {{value: -1}}}}]}}", valid=False),
    rule(f"{{mirror: {V1}, mirrors: [{{destination: {V1}}}]}}", valid=False),
    # TestValidateCORSPolicy
    rule(
        "{corsPolicy: {allowMethods: [GET, POST], allowHeaders: [header1, header2],"
        " exposeHeaders: [header3], maxAge: 2s}}",
        valid=True,
        name="cors: valid",
    ),
    rule("{corsPolicy: {allowOrigins: [{exact: ''}]}}", valid=False, name="cors: empty exact"),
    rule("{corsPolicy: {allowOrigins: [{prefix: ''}]}}", valid=False, nack=True),
    rule("{corsPolicy: {allowOrigins: [{regex: ''}]}}", valid=False, nack=True),
    rule(
        "{corsPolicy: {allowOrigins: [{exact: exact}, {prefix: prefix}, {regex: regex}]}}",
        valid=True,
        name="cors: non-empty origins",
    ),
    # TestValidateHTTPFaultInjectionAbort / Delay
    rule("{fault: {abort: {httpStatus: 500, percentage: {value: 20}}}}", valid=True),
    rule("{fault: {abort: {httpStatus: 500}}}", valid=True, name="abort without percentage"),
    rule("{fault: {abort: {httpStatus: 9000, percentage: {value: 20}}}}", valid=False),
    rule("{fault: {abort: {httpStatus: 100, percentage: {value: 20}}}}", valid=False),
    rule("{fault: {abort: {httpStatus: 500, percentage: {value: -1}}}}", valid=False),
    rule("{fault: {abort: {httpStatus: 500, percentage: {value: 101}}}}", valid=False),
    rule("{fault: {abort: {grpcStatus: UNAVAILABLE, percentage: {value: 20}}}}", valid=True),
    rule("{fault: {delay: {fixedDelay: 2s, percentage: {value: 20}}}}", valid=True),
    rule("{fault: {delay: {fixedDelay: 2s, percent: 20}}}", valid=True, name="delay percent"),
    rule("{fault: {delay: {fixedDelay: 2s, percentage: {value: -1}}}}", valid=False),
    rule("{fault: {delay: {fixedDelay: 2s, percentage: {value: 101}}}}", valid=False),
    rule("{fault: {delay: {fixedDelay: 2s, percent: 101}}}", valid=False),
    rule("{fault: {}}", valid=False, name="fault without delay or abort"),
    # TestValidateHTTPRetry
    rule("{retries: {attempts: 10, perTryTimeout: 2s, retryOn: '5xx,gateway-error'}}", valid=True),
    rule("{retries: {attempts: 10}}", valid=True, name="retries without perTryTimeout"),
    rule("{retries: {attempts: -1}}", valid=False, name="negative retry attempts"),
    rule("{retries: {attempts: 3, retryOn: '5xx,503'}}", valid=True, name="retryOn status"),
    rule("{retries: {attempts: 3, backoff: 1ms}}", valid=False, name="backoff of 1ms"),
    rule("{retries: {attempts: 3, backoff: 25ms}}", valid=True),
    # TestValidateHTTPDirectResponse
    rule("{directResponse: {status: 200}}", valid=True),
    rule("{directResponse: {status: 200, body: {string: hello}}}", valid=True),
    rule("{directResponse: {status: 200, body: {bytes: aGVsbG8=}}}", valid=True),
    rule("{directResponse: {status: 1200}}", valid=False, name="direct response status 1200"),
    rule("{directResponse: {status: 100}}", valid=False, name="direct response status 100"),
    rule(
        "{directResponse: {status: 200, body: {string: '" + "x" * 4097 + "'}}}",
        valid=False,
        nack=True,
        name="direct response body over 4 KB",
    ),
    # TestValidateHTTPRewrite / TestValidateUriRegexRewrite
    rule("{rewrite: {uri: /new}}", valid=True),
    rule("{rewrite: {authority: foo.example}}", valid=True),
    rule("{rewrite: {uriRegexRewrite: {match: '^/v1/(.*)$', rewrite: '/v2/\\1'}}}", valid=True),
    rule("{rewrite: {uriRegexRewrite: {match: '(?=x)', rewrite: /}}}", valid=False, nack=True),
    rule("{timeout: 2s}", valid=True, name="timeout"),
    # TestValidateDestinationRule
    rule_object("{host: reviews, subsets: [{name: v1, labels: {version: v1}}]}", valid=True),
    rule_object("{host: '', subsets: [{name: v1, labels: {version: v1}}]}", valid=False),
    rule_object("{host: reviews, subsets: [{labels: {version: v1}}]}", valid=False),
    rule_object(
        "{host: reviews, subsets: [{name: v1, labels: {version: v1}},"
        " {name: v1, labels: {version: v2}}]}",
        valid=False,
    ),
    policy(
        "{connectionPool: {tcp: {maxConnections: 7}, http: {http2MaxRequests: 11}},"
        " outlierDetection: {minHealthPercent: 20}, loadBalancer: {simple: ROUND_ROBIN}}",
        valid=True,
    ),
    policy("{outlierDetection: {minHealthPercent: -1}}", valid=False, nack=True),
    policy("{outlierDetection: {minHealthPercent: 101}}", valid=False, nack=True),
    policy("{outlierDetection: {minHealthPercent: 20}}", valid=True, subset=True),
    policy("{outlierDetection: {minHealthPercent: -1}}", valid=False, nack=True, subset=True),
    # TestValidateConnectionPool
    policy(
        "{connectionPool: {tcp: {maxConnections: 7, connectTimeout: 2s},"
        " http: {http1MaxPendingRequests: 2, http2MaxRequests: 11, maxRequestsPerConnection: 5,"
        " maxRetries: 4, idleTimeout: 30s, maxConcurrentStreams: 5}}}",
        valid=True,
    ),
    policy("{connectionPool: {tcp: {maxConnections: 7, connectTimeout: 2s}}}", valid=True),
    policy("{connectionPool: {http: {http1MaxPendingRequests: 2, maxRetries: 4}}}", valid=True),
    policy("{connectionPool: {http: {http2KeepAlive: {interval: 15s, timeout: 5s}}}}", valid=True),
    policy("{connectionPool: {http: {http2KeepAlive: {timeout: 5s}}}}", valid=False),
    policy("{connectionPool: {http: {http2KeepAlive: {interval: 15s}}}}", valid=False),
    policy("{connectionPool: {tcp: {maxConnections: -1}}}", valid=False),
    policy("{connectionPool: {http: {http1MaxPendingRequests: -1}}}", valid=False),
    policy("{connectionPool: {http: {http2MaxRequests: -1}}}", valid=False),
    policy("{connectionPool: {http: {maxRequestsPerConnection: -1}}}", valid=False),
    policy("{connectionPool: {http: {maxRetries: -1}}}", valid=False),
    policy("{connectionPool: {tcp: {idleTimeout: 0s}}}", valid=True),
    # TestValidateLoadBalancer
    policy("{loadBalancer: {simple: ROUND_ROBIN}}", valid=True),
    policy("{loadBalancer: {simple: LEAST_REQUEST}}", valid=True),
    policy("{loadBalancer: {simple: RANDOM}}", valid=True),
    policy(
        "{loadBalancer: {consistentHash: {minimumRingSize: 1024,"
        " httpCookie: {name: test, ttl: 3600s}}}}",
        valid=True,
    ),
    policy(
        "{loadBalancer: {consistentHash: {minimumRingSize: 1024, httpCookie: {ttl: 3600s}}}}",
        valid=False,
    ),
    policy(
        "{loadBalancer: {consistentHash: {httpHeaderName: x-user, maglev: {tableSize: 1000}}}}",
        valid=False,
        nack=True,
    ),
    policy(
        "{loadBalancer: {consistentHash: {httpHeaderName: x-user, maglev: {tableSize: 65537}}}}",
        valid=True,
    ),
    policy(
        "{loadBalancer: {consistentHash: {httpHeaderName: x-user, maglev: {tableSize: 5000011}}}}",
        valid=False,
    ),
    policy(
        "{loadBalancer: {consistentHash: {useSourceIp: true, ringHash: {minimumRingSize: 1024}}}}",
        valid=True,
    ),
    policy("{loadBalancer: {consistentHash: {httpQueryParameterName: user}}}", valid=True),
    policy("{loadBalancer: {zoneAwareLbSetting: {enabled: true}}}", valid=True),
    policy("{loadBalancer: {backendUtilization: {weightUpdatePeriod: 1s}}}", valid=True),
    # TestValidateOutlierDetection
    policy(
        "{outlierDetection: {consecutiveErrors: 5, interval: 10s, baseEjectionTime: 10s,"
        " maxEjectionPercent: 10}}",
        valid=True,
    ),
    policy(
        "{outlierDetection: {consecutive5xxErrors: 5, consecutiveGatewayErrors: 3}}", valid=True
    ),
    policy("{outlierDetection: {maxEjectionPercent: -1}}", valid=False, nack=True),
    policy("{outlierDetection: {maxEjectionPercent: 101}}", valid=False, nack=True),
    policy(
        "{outlierDetection: {splitExternalLocalOriginErrors: true,"
        " consecutiveLocalOriginFailures: 10}}",
        valid=True,
    ),
    policy("{outlierDetection: {outlierDetectionHttpErrorCodes: [500, 503]}}", valid=True),
    policy("{outlierDetection: {outlierDetectionHttpErrorCodes: [600]}}", valid=False),
    policy("{outlierDetection: {outlierDetectionHttpErrorCodes: [99]}}", valid=False),
    policy("{outlierDetection: {interval: 0s}}", valid=False, nack=True),
    policy("{outlierDetection: {baseEjectionTime: 0s}}", valid=False, nack=True),
    policy(
        "{portLevelSettings: [{port: {number: 80}, outlierDetection: {maxEjectionPercent: 101}}]}",
        valid=False,
        nack=True,
    ),
    policy(
        "{portLevelSettings: [{port: {number: 80}, loadBalancer: {simple: RANDOM}}]}",
        valid=True,
    ),
    policy("{portLevelSettings: [{loadBalancer: {simple: RANDOM}}]}", valid=False),
    # Sidecar (TestValidateSidecar)
    sidecar_case("empty ingress and egress", "{}", valid=False),
    sidecar_case("default", "{egress: [{hosts: ['*/*']}]}", valid=True),
    sidecar_case(
        "workload selector without labels",
        "{egress: [{hosts: ['*/*']}], workloadSelector: {}}",
        valid=True,
    ),
    sidecar_case(
        "import local namespace with wildcard", "{egress: [{hosts: ['./*']}]}", valid=True
    ),
    sidecar_case(
        "import local namespace with fqdn", "{egress: [{hosts: ['./foo.com']}]}", valid=True
    ),
    sidecar_case("import nothing", "{egress: [{hosts: ['~/*']}]}", valid=True),
    sidecar_case(
        "import all except a namespace", "{egress: [{hosts: ['*/*', '~ns1/*']}]}", valid=True
    ),
    sidecar_case(
        "import all except an exact host", "{egress: [{hosts: ['*/*', '~/foo.com']}]}", valid=True
    ),
    sidecar_case(
        "exclude with invalid namespace",
        "{egress: [{hosts: ['*/*', '~Invalid_NS/*']}]}",
        valid=False,
    ),
    sidecar_case("bad egress host 1", "{egress: [{hosts: ['*']}]}", valid=False),
    sidecar_case("bad egress host 2", "{egress: [{hosts: ['/']}]}", valid=False),
    sidecar_case("empty egress host", "{egress: [{hosts: []}]}", valid=False),
    sidecar_case(
        "multiple wildcard egress",
        "{egress: [{hosts: ['*/foo.com']}, {hosts: ['ns1/bar.com']}]}",
        valid=False,
    ),
    sidecar_case(
        "wildcard egress not in end",
        "{egress: [{hosts: ['*/foo.com']},"
        " {port: {protocol: http, number: 8080, name: h8080}, hosts: ['ns1/bar.com']}]}",
        valid=False,
    ),
    sidecar_case("short name egress host", "{egress: [{hosts: ['ns1/foo']}]}", valid=False),
    sidecar_case(
        "partial wildcard egress host", "{egress: [{hosts: ['ns1/*foo.com']}]}", valid=False
    ),
    sidecar_case(
        "valid ingress and egress",
        "{ingress: [{port: {protocol: http, number: 90, name: foo},"
        " defaultEndpoint: '127.0.0.1:9999'}], egress: [{hosts: ['*/*']}]}",
        valid=True,
    ),
    sidecar_case(
        "valid ingress and empty egress",
        "{ingress: [{port: {protocol: http, number: 90, name: foo},"
        " defaultEndpoint: '127.0.0.1:9999'}]}",
        valid=True,
    ),
    sidecar_case(
        "sidecar with outbound traffic policy only",
        "{outboundTrafficPolicy: {mode: REGISTRY_ONLY}}",
        valid=True,
    ),
]


def objects_for(case: Case, namespace: str = "default") -> list[dict[str, Any]]:
    """``reviews`` (port 80, pods v1 and v2), a DestinationRule with subsets v1 and v2 and a
    VirtualService: the case's object replaces the one of its kind."""
    found: list[dict[str, Any]] = [
        service("reviews", namespace),
        pod("reviews-v1", "10.0.0.1", {"app": "reviews", "version": "v1"}, namespace=namespace),
        pod("reviews-v2", "10.0.0.2", {"app": "reviews", "version": "v2"}, namespace=namespace),
    ]
    if case.kind == "DestinationRule":
        found.append({**destination_rule("reviews", "reviews", None, namespace), "spec": case.spec})
    else:
        found.append(
            destination_rule(
                "reviews", "reviews", {"v1": {"version": "v1"}, "v2": {"version": "v2"}}, namespace
            )
        )
    if case.kind == "Sidecar":
        found.append({**sidecar("sidecar", namespace), "spec": case.spec})
    if case.kind == "VirtualService":
        spec = dict(case.spec)
        hosts = spec.pop("hosts")
        found.append(virtual_service("reviews", hosts, namespace=namespace, **spec))
    return found


def test_the_table_covers_istios_cases() -> None:
    assert len(CASES) >= 100
    assert len({case.name for case in CASES}) == len(CASES), "case names must be unique"


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name[:80])
def test_splitplane_gives_istios_verdict(case: Case) -> None:
    result = translate(objects_for(case))
    errors = [d for d in result.diagnostics if d.is_error]
    if case.valid:
        assert errors == [], errors
        return
    assert errors, f"{case.name}: Istio rejects it, splitplane accepted it"
    assert all(d.kind == case.kind and d.field.startswith("spec") for d in errors), errors


def test_the_table_marks_what_envoy_itself_would_reject() -> None:
    nacked = [case for case in CASES if case.nack]
    assert len(nacked) >= 30 and not any(case.valid for case in nacked)


@pytest.mark.envoy
@pytest.mark.parametrize("group", GROUPS, ids=lambda g: g.key)
def test_envoy_takes_everything_built_from_the_valid_cases(
    group: NodeGroup, tmp_path: Path
) -> None:
    objects = [
        obj
        for index, case in enumerate(CASES)
        if case.valid
        for obj in objects_for(case, namespace=f"case-{index}")
    ]
    result = translate(objects)
    assert not result.has_errors, [d for d in result.diagnostics if d.is_error]
    built = build_group(result.model, group)
    config = tmp_path / "bootstrap.json"
    config.write_text(json_format.MessageToJson(static_bootstrap(built)), encoding="utf-8")
    checked = subprocess.run(
        [str(ENVOY), "--mode", "validate", "-c", str(config), "--disable-hot-restart"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout[-4000:] + checked.stderr[-4000:]
