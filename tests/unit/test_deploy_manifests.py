"""Specification of deploy/: every manifest is valid offline, RBAC grants exactly what the code
uses, the kustomization installs everything, and the examples are what splitplane accepts."""

from __future__ import annotations

import copy
import functools
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import SchemaNotFoundError

from translators.diagnostics import Severity
from translators.translate import translate
from xds_server.cli.bootstrap import BootstrapTls, render_bootstrap, render_sds_files
from xds_server.kube import admission
from xds_server.sources.base import KINDS
from xds_server.xds.identity import (
    DEFAULT_GATEWAY_ACCOUNTS,
    DEFAULT_STATUS_READERS,
    ServiceAccount,
    parse_spiffe_id,
)

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
CRDS = DEPLOY / "crds"
EXAMPLES = DEPLOY / "examples"
LOCAL = EXAMPLES / "local"
NAMESPACE = "splitplane-system"
# A Kubernetes version kubernetes-validate bundles; every API used here is GA there.
KUBERNETES_VERSION = "1.33"
XDS_ADDRESS = "splitplane.splitplane-system.svc:15012"
SPIFFE_DIR = "/var/run/secrets/spiffe.io"
# What csi-driver-spiffe mounts, and where the proxies' bootstraps read it through SDS.
WORKLOAD_TLS = BootstrapTls(
    ca_file=f"{SPIFFE_DIR}/ca.crt",
    cert_file=f"{SPIFFE_DIR}/tls.crt",
    key_file=f"{SPIFFE_DIR}/tls.key",
    sds_dir="/etc/envoy",
)

# What the control plane does with the API server, and why. RBAC must grant exactly this.
VERBS_READ = ("get", "list", "watch")
CLUSTER_WIDE_GRANTS: frozenset[tuple[str, str, str]] = frozenset(
    [
        # xds_server/sources (Kubernetes informers: list, then watch) feed the translators.
        *(("", "services", verb) for verb in VERBS_READ),
        *(("", "pods", verb) for verb in VERBS_READ),  # endpoint labels, selector fallback
        *(("discovery.k8s.io", "endpointslices", verb) for verb in VERBS_READ),
        *(("networking.k8s.io", "ingresses", verb) for verb in VERBS_READ),
        *(("networking.k8s.io", "ingressclasses", verb) for verb in VERBS_READ),
        *(("networking.istio.io", "virtualservices", verb) for verb in VERBS_READ),
        *(("networking.istio.io", "destinationrules", verb) for verb in VERBS_READ),
        *(("networking.istio.io", "sidecars", verb) for verb in VERBS_READ),
        # The leader writes status.loadBalancer.ingress of LoadBalancer Services and Ingresses.
        ("", "services/status", "update"),
        ("", "services/status", "patch"),
        ("networking.k8s.io", "ingresses/status", "update"),
        ("networking.k8s.io", "ingresses/status", "patch"),
        # The debug endpoint (off loopback) checks bearer tokens and what their users may read.
        ("authentication.k8s.io", "tokenreviews", "create"),
        ("authorization.k8s.io", "subjectaccessreviews", "create"),
        # ... and the status of VirtualServices and DestinationRules (merge patches only).
        ("networking.istio.io", "virtualservices/status", "patch"),
        ("networking.istio.io", "destinationrules/status", "patch"),
    ]
)
# Leader election (coordination.k8s.io/v1 Lease) in the control plane's own namespace.
NAMESPACED_GRANTS: frozenset[tuple[str, str, str]] = frozenset(
    ("coordination.k8s.io", "leases", verb) for verb in ("get", "create", "update")
)


@dataclass(frozen=True)
class Document:
    """One YAML document of a file under deploy/."""

    path: Path
    index: int
    body: dict[str, Any]

    @property
    def kind(self) -> str:
        return str(self.body.get("kind", ""))

    @property
    def name(self) -> str:
        return str((self.body.get("metadata") or {}).get("name", ""))

    @property
    def label(self) -> str:
        return f"{self.path.relative_to(DEPLOY)}#{self.index} {self.kind}/{self.name}"


def manifest_files(root: Path = DEPLOY) -> list[Path]:
    """Every Kubernetes manifest under ``root`` (kustomization.yaml is kustomize's, not one)."""
    files = [*root.rglob("*.yaml"), *root.rglob("*.yml")]
    return sorted(path for path in files if path.name != "kustomization.yaml")


@functools.cache
def _parsed(path: Path) -> tuple[Document, ...]:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    bodies = yaml.load_all(path.read_text(), Loader=loader)
    return tuple(Document(path, i, body) for i, body in enumerate(bodies) if body is not None)


def documents(files: list[Path] | None = None) -> list[Document]:
    """The documents of ``files`` (default: every manifest), parsed once per test run; tests
    that change one deep-copy it first."""
    return [d for path in (manifest_files() if files is None else files) for d in _parsed(path)]


def find(path: Path, kind: str, name: str) -> dict[str, Any]:
    (document,) = (d for d in documents([path]) if (d.kind, d.name) == (kind, name))
    return document.body


# ---------------------------------------------------------------------------------------------
# Schemas


def closed(schema: Any) -> Any:
    """A copy of a CRD schema that rejects unknown fields, as `kubectl apply` (strict field
    validation) does, except where the schema preserves them."""
    if isinstance(schema, dict):
        result = {key: closed(value) for key, value in schema.items()}
        if (
            "properties" in schema
            and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")
        ):
            result["additionalProperties"] = False
        return result
    if isinstance(schema, list):
        return [closed(item) for item in schema]
    return schema


@functools.cache
def crd_schemas() -> dict[tuple[str, str], dict[str, Any]]:
    """(apiVersion, kind) → the served version's OpenAPI schema, from deploy/crds/."""
    if not CRDS.is_dir() or not manifest_files(CRDS):
        pytest.fail(
            f"{CRDS.relative_to(REPO)} is missing: the CRDs are generated from proto/ by "
            "`make generate` (proto/generate.py); run it before validating deploy/"
        )
    schemas = {}
    for document in documents(manifest_files(CRDS)):
        spec = document.body["spec"]
        for version in spec["versions"]:
            if version.get("served"):
                key = (f"{spec['group']}/{version['name']}", spec["names"]["kind"])
                schemas[key] = closed(version["schema"]["openAPIV3Schema"])
    return schemas


def _object(**properties: Any) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "additionalProperties": False}


_STRING = {"type": "string"}
_STRINGS = {"type": "array", "items": _STRING}
_ISSUER_REF = _object(name=_STRING, kind={"enum": ["Issuer", "ClusterIssuer"]}, group=_STRING)
_ISSUER_SPEC = _object(
    selfSigned=_object(crlDistributionPoints=_STRINGS),
    ca=_object(
        secretName=_STRING,
        crlDistributionPoints=_STRINGS,
        ocspServers=_STRINGS,
        issuingCertificateURL=_STRINGS,
    ),
)
_METADATA = {"type": "object", "required": ["name"]}
# cert-manager.io/v1 as its API reference defines the parts these manifests use; a field it
# does not have (a typo) fails here, as `kubectl apply` with strict field validation would.
CERT_MANAGER_SCHEMAS: dict[str, dict[str, Any]] = {
    kind: {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": "cert-manager.io/v1"},
            "kind": {"const": kind},
            "metadata": _METADATA,
            "spec": spec,
        },
        "additionalProperties": False,
    }
    for kind, spec in {
        "Issuer": _ISSUER_SPEC,
        "ClusterIssuer": _ISSUER_SPEC,
        "Certificate": {
            **_object(
                secretName=_STRING,
                commonName=_STRING,
                dnsNames=_STRINGS,
                uris=_STRINGS,
                ipAddresses=_STRINGS,
                isCA={"type": "boolean"},
                duration=_STRING,
                renewBefore=_STRING,
                usages={
                    "type": "array",
                    "items": {
                        "enum": ["server auth", "client auth", "digital signature", "cert sign"]
                    },
                },
                privateKey=_object(
                    algorithm={"enum": ["RSA", "ECDSA", "Ed25519"]},
                    size={"type": "integer"},
                    encoding={"enum": ["PKCS1", "PKCS8"]},
                    rotationPolicy={"enum": ["Never", "Always"]},
                ),
                issuerRef=_ISSUER_REF,
            ),
            "required": ["secretName", "issuerRef"],
        },
    }.items()
}


@pytest.mark.parametrize("document", documents(), ids=lambda d: d.label)
def test_every_manifest_is_valid_against_its_schema(document: Document) -> None:
    body = document.body
    if body.get("apiVersion", "").startswith("cert-manager.io/"):
        jsonschema.Draft7Validator(CERT_MANAGER_SCHEMAS[document.kind]).validate(body)
        return
    custom = crd_schemas().get((body.get("apiVersion", ""), document.kind))
    if custom is not None:
        jsonschema.Draft7Validator(custom).validate(body)
        return
    try:
        kubernetes_validate.validate(body, KUBERNETES_VERSION, strict=True)
    except SchemaNotFoundError as err:
        pytest.fail(f"{document.label}: no schema for it: {err.message}")


def test_custom_resources_are_checked_against_the_generated_crds() -> None:
    schemas = crd_schemas()
    for version in ("v1alpha3", "v1beta1", "v1"):
        for kind in ("VirtualService", "DestinationRule"):
            assert (f"networking.istio.io/{version}", kind) in schemas

    misspelt = copy.deepcopy(find(EXAMPLES / "canary.yaml", "VirtualService", "reviews"))
    misspelt["spec"]["http"][0]["route"][0]["wieght"] = 90
    validator = jsonschema.Draft7Validator(schemas[("networking.istio.io/v1", "VirtualService")])
    assert not validator.is_valid(misspelt)


# ---------------------------------------------------------------------------------------------
# Kustomization


def kustomization(folder: Path) -> dict[str, Any]:
    found: dict[str, Any] = yaml.safe_load((folder / "kustomization.yaml").read_text())
    return found


def test_kustomization_installs_every_manifest_outside_the_examples_and_the_crds() -> None:
    listed = kustomization(DEPLOY)["resources"]
    expected = {
        str(path.relative_to(DEPLOY))
        for path in manifest_files()
        if not path.is_relative_to(EXAMPLES) and not path.is_relative_to(CRDS)
    }

    assert kustomization(DEPLOY)["namespace"] == NAMESPACE
    assert len(listed) == len(set(listed)), "a resource is listed twice"
    assert set(listed) == expected
    assert listed[0] == "namespace.yaml", "the namespace comes first"


def test_the_crds_are_a_kustomization_of_their_own_that_deleting_splitplane_leaves_alone() -> None:
    crds = kustomization(CRDS)

    assert set(crds["resources"]) == {path.name for path in manifest_files(CRDS)}
    assert "namespace" not in crds  # cluster-scoped
    assert not any("crd" in entry for entry in kustomization(DEPLOY)["resources"])


def test_the_readme_creates_the_crds_and_never_applies_or_deletes_them() -> None:
    readme = (REPO / "README.md").read_text()

    assert "kubectl create -k deploy/crds/" in readme
    assert readme.index("kubectl create -k deploy/crds/") < readme.index("kubectl apply -k deploy/")
    for verb in ("apply", "delete", "replace"):
        assert f"kubectl {verb} -k deploy/crds" not in readme


def test_installed_namespaced_objects_declare_the_control_plane_namespace() -> None:
    cluster_scoped = {
        "Namespace",
        "CustomResourceDefinition",
        "ClusterRole",
        "ClusterRoleBinding",
        "IngressClass",
        "ClusterIssuer",
        "ValidatingWebhookConfiguration",
    }
    installed = [d for d in documents() if not d.path.is_relative_to(EXAMPLES)]
    assert {d.kind for d in installed} >= {"CustomResourceDefinition", "Deployment"}
    for document in installed:
        namespace = document.body["metadata"].get("namespace")
        if document.kind in cluster_scoped:
            assert namespace is None, document.label
        else:
            assert namespace == NAMESPACE, document.label


# ---------------------------------------------------------------------------------------------
# RBAC


def grants(rules: list[Mapping[str, Any]]) -> set[tuple[str, str, str]]:
    return {
        (group, resource, verb)
        for rule in rules
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def test_rbac_grants_exactly_what_the_code_reads_and_writes() -> None:
    roles = {(d.kind, d.name): d.body for d in documents() if d.kind in ("ClusterRole", "Role")}

    assert set(roles) == {("ClusterRole", "splitplane"), ("Role", "splitplane-leader-election")}
    assert grants(roles["ClusterRole", "splitplane"]["rules"]) == CLUSTER_WIDE_GRANTS
    role = roles["Role", "splitplane-leader-election"]
    assert role["metadata"]["namespace"] == NAMESPACE
    assert grants(role["rules"]) == NAMESPACED_GRANTS
    for rule in [*roles["ClusterRole", "splitplane"]["rules"], *role["rules"]]:
        assert "*" not in [*rule["apiGroups"], *rule["resources"], *rule["verbs"]]
        assert "nonResourceURLs" not in rule


def test_roles_are_bound_to_the_service_account_the_control_plane_runs_as() -> None:
    rbac = DEPLOY / "rbac.yaml"
    pod = find(DEPLOY / "control-plane.yaml", "Deployment", "splitplane")["spec"]["template"]
    account = pod["spec"]["serviceAccountName"]
    subject = {"kind": "ServiceAccount", "name": account, "namespace": NAMESPACE}

    assert find(rbac, "ServiceAccount", account)["metadata"]["namespace"] == NAMESPACE
    cluster_binding = find(rbac, "ClusterRoleBinding", "splitplane")
    assert cluster_binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": "splitplane",
    }
    assert cluster_binding["subjects"] == [subject]
    binding = find(rbac, "RoleBinding", "splitplane-leader-election")
    assert binding["roleRef"]["kind"] == "Role"
    assert binding["roleRef"]["name"] == "splitplane-leader-election"
    assert binding["subjects"] == [subject]


# ---------------------------------------------------------------------------------------------
# Workloads


def pod_templates() -> Iterator[tuple[str, dict[str, Any]]]:
    for document in documents():
        if document.kind == "Deployment":
            yield document.label, document.body["spec"]["template"]["spec"]


@pytest.mark.parametrize(("label", "pod"), list(pod_templates()), ids=lambda v: str(v)[:50])
def test_every_workload_runs_locked_down_with_resource_limits(
    label: str, pod: dict[str, Any]
) -> None:
    assert pod["securityContext"]["runAsNonRoot"] is True
    for container in pod["containers"]:
        security = container["securityContext"]
        assert security["allowPrivilegeEscalation"] is False, container["name"]
        assert security["readOnlyRootFilesystem"] is True, container["name"]
        assert security["capabilities"]["drop"] == ["ALL"], container["name"]
        assert container["resources"]["requests"], container["name"]
        assert container["resources"]["limits"]["memory"], container["name"]


def test_control_plane_serves_xds_over_mutual_tls_and_debug_with_probes() -> None:
    path = DEPLOY / "control-plane.yaml"
    deployment = find(path, "Deployment", "splitplane")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]

    assert deployment["spec"]["replicas"] == 2
    assert container["image"] == "splitplane:0.1.0"
    assert [*container["command"], *container["args"]] == [
        "splitplane", "serve", "--in-cluster",
        "--xds-address", "0.0.0.0:15012",
        "--tls-cert-file", "/etc/splitplane/tls/tls.crt",
        "--tls-key-file", "/etc/splitplane/tls/tls.key",
        "--client-ca-file", "/etc/splitplane/tls/ca.crt",
        "--debug-address", "0.0.0.0:15014",
        "--admission-address", "0.0.0.0:15017",
        "--admission-cert", "/etc/splitplane/webhook/tls.crt",
        "--admission-key", "/etc/splitplane/webhook/tls.key",
    ]  # fmt: skip
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports == {"grpc-xds-tls": 15012, "http-debug": 15014, "https-webhook": 15017}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http-debug"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http-debug"}

    service = find(path, "Service", "splitplane")
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert {(p["name"], p["port"]) for p in service["spec"]["ports"]} == {
        ("grpc-xds-tls", 15012),
        ("http-debug", 15014),
        ("https-webhook", 443),
    }


def envoy_container(pod: dict[str, Any]) -> dict[str, Any]:
    (container,) = (c for c in pod["containers"] if c["name"] == "envoy")
    found: dict[str, Any] = container
    return found


def env_from_fields(container: dict[str, Any]) -> dict[str, str]:
    return {
        item["name"]: item["valueFrom"]["fieldRef"]["fieldPath"]
        for item in container.get("env", [])
        if "valueFrom" in item
    }


def flag(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


def test_load_balancer_fleet_is_three_gateway_envoys_behind_a_headless_service() -> None:
    path = DEPLOY / "loadbalancer-fleet.yaml"
    deployment = find(path, "Deployment", "splitplane-lb")
    pod = deployment["spec"]["template"]["spec"]
    envoy = envoy_container(pod)

    assert deployment["spec"]["replicas"] == 3
    assert envoy["image"] == "envoyproxy/envoy:v1.40.0"
    assert flag(envoy["args"], "--service-node") == "$(POD_NAME)"
    assert flag(envoy["args"], "--service-cluster") == "splitplane-lb"
    assert "--disable-hot-restart" in envoy["args"]
    assert env_from_fields(envoy) == {"POD_NAME": "metadata.name"}
    assert envoy["readinessProbe"]["httpGet"]["path"] == "/healthz/ready"

    service = find(path, "Service", "splitplane-lb")
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]


@pytest.mark.parametrize(
    ("path", "config_map", "deployment", "expected"),
    [
        (
            DEPLOY / "loadbalancer-fleet.yaml",
            "splitplane-lb-bootstrap",
            "splitplane-lb",
            render_bootstrap(
                "splitplane-lb",
                "gateway",
                NAMESPACE,
                XDS_ADDRESS,
                15000,
                health_port=15021,
                tls=WORKLOAD_TLS,
            ),
        ),
        (
            EXAMPLES / "sidecar-app.yaml",
            "reviews-client-sidecar",
            "reviews-client",
            render_bootstrap("sidecar", "sidecar", "default", XDS_ADDRESS, 15000, tls=WORKLOAD_TLS),
        ),
    ],
    ids=["load-balancer-fleet", "sidecar-app"],
)
def test_bootstrap_config_maps_are_what_splitplane_bootstrap_prints(
    path: Path, config_map: str, deployment: str, expected: str
) -> None:
    data = find(path, "ConfigMap", config_map)["data"]
    pod = find(path, "Deployment", deployment)["spec"]["template"]["spec"]
    envoy = envoy_container(pod)
    (volume,) = (v for v in pod["volumes"] if v.get("configMap", {}).get("name") == config_map)
    (mount,) = (m for m in envoy["volumeMounts"] if m["name"] == volume["name"])

    assert yaml.safe_load(data["envoy.yaml"]) == yaml.safe_load(expected)
    assert flag(envoy["args"], "-c") == f"{mount['mountPath']}/envoy.yaml"
    # The SDS files the bootstrap reads sit next to it, as `splitplane bootstrap` writes them.
    for sds_path, text in render_sds_files(WORKLOAD_TLS).items():
        directory, _, name = sds_path.rpartition("/")
        assert directory == mount["mountPath"]
        assert yaml.safe_load(data[name]) == yaml.safe_load(text)


def test_sidecar_app_names_each_pod_as_an_istio_style_sidecar_node() -> None:
    pod = find(EXAMPLES / "sidecar-app.yaml", "Deployment", "reviews-client")["spec"]["template"]
    envoy = envoy_container(pod["spec"])

    assert flag(envoy["args"], "--service-node") == (
        "sidecar~$(POD_IP)~$(POD_NAME).$(POD_NAMESPACE)~$(POD_NAMESPACE).svc.cluster.local"
    )
    assert env_from_fields(envoy) == {
        "POD_NAME": "metadata.name",
        "POD_NAMESPACE": "metadata.namespace",
        "POD_IP": "status.podIP",
    }


# ---------------------------------------------------------------------------------------------
# Mutual TLS


def ca_secret_of(issuer_name: str, kind: str = "Issuer") -> str:
    """The Secret holding the CA behind an issuer of deploy/cert-manager.yaml."""
    (issuer,) = (
        d.body
        for d in documents([DEPLOY / "cert-manager.yaml"])
        if (d.kind, d.name) == (kind, issuer_name)
    )
    secret: str = issuer["spec"]["ca"]["secretName"]
    return secret


def test_the_server_certificate_is_mounted_where_serve_reads_it_and_names_the_service() -> None:
    deployment = find(DEPLOY / "control-plane.yaml", "Deployment", "splitplane")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    server = find(DEPLOY / "cert-manager.yaml", "Certificate", "splitplane-xds")["spec"]

    directory = flag(container["args"], "--tls-cert-file").rpartition("/")[0]
    (mount,) = (m for m in container["volumeMounts"] if m["mountPath"] == directory)
    (volume,) = (v for v in pod["volumes"] if v["name"] == mount["name"])
    assert volume["secret"] == {"secretName": server["secretName"]}  # the pod waits for it
    for option, key in (
        ("--tls-cert-file", "tls.crt"),
        ("--tls-key-file", "tls.key"),
        ("--client-ca-file", "ca.crt"),
    ):
        assert flag(container["args"], option) == f"{mount['mountPath']}/{key}"
    assert XDS_ADDRESS.rpartition(":")[0] in server["dnsNames"]
    assert {"server auth", "client auth"} <= set(server["usages"])
    # Its SPIFFE ID is the control plane's own service account: the default status reader.
    (uri,) = server["uris"]
    identity = parse_spiffe_id(uri)
    assert identity is not None
    assert identity.account == ServiceAccount(NAMESPACE, pod["serviceAccountName"])
    assert identity.account in DEFAULT_STATUS_READERS


def test_server_and_workload_certificates_chain_to_one_root() -> None:
    server_issuer = find(DEPLOY / "cert-manager.yaml", "Certificate", "splitplane-xds")["spec"]
    root = find(DEPLOY / "cert-manager.yaml", "Certificate", "splitplane-ca")["spec"]

    assert root["isCA"] is True
    assert ca_secret_of(server_issuer["issuerRef"]["name"]) == root["secretName"]
    assert ca_secret_of("splitplane-mesh", "ClusterIssuer") == root["secretName"]


@pytest.mark.parametrize(
    ("path", "deployment", "namespace"),
    [
        (DEPLOY / "loadbalancer-fleet.yaml", "splitplane-lb", NAMESPACE),
        (EXAMPLES / "sidecar-app.yaml", "reviews-client", "default"),
    ],
    ids=["load-balancer-fleet", "sidecar-app"],
)
def test_proxies_get_spiffe_certificates_from_csi_driver_spiffe(
    path: Path, deployment: str, namespace: str
) -> None:
    body = find(path, "Deployment", deployment)
    pod = body["spec"]["template"]["spec"]
    envoy = envoy_container(pod)
    (volume,) = (v for v in pod["volumes"] if "csi" in v)
    (mount,) = (m for m in envoy["volumeMounts"] if m["name"] == volume["name"])

    assert volume["csi"]["driver"] == "spiffe.csi.cert-manager.io"
    assert volume["csi"]["readOnly"] is True
    assert volume["csi"]["volumeAttributes"]["spiffe.csi.cert-manager.io/fs-group"] == str(
        pod["securityContext"]["runAsGroup"]
    )
    assert mount["mountPath"] == SPIFFE_DIR
    assert body["metadata"]["namespace"] == namespace
    account = pod["serviceAccountName"]
    assert find(path, "ServiceAccount", account)["metadata"]["namespace"] == namespace


def test_only_the_fleets_service_account_may_take_the_gateway_role() -> None:
    pod = find(DEPLOY / "loadbalancer-fleet.yaml", "Deployment", "splitplane-lb")["spec"]
    account = ServiceAccount(NAMESPACE, pod["template"]["spec"]["serviceAccountName"])

    assert {account} == DEFAULT_GATEWAY_ACCOUNTS


def test_network_policy_opens_the_tls_debug_and_webhook_ports_only() -> None:
    policy = find(DEPLOY / "network-policy.yaml", "NetworkPolicy", "splitplane")["spec"]
    deployment = find(DEPLOY / "control-plane.yaml", "Deployment", "splitplane")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]

    assert policy["podSelector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    assert policy["policyTypes"] == ["Ingress"]
    opened = {
        port["port"]: rule.get("from") for rule in policy["ingress"] for port in rule["ports"]
    }
    assert set(opened) == {15012, 15014, 15017}  # plaintext 15010 reaches nobody
    assert opened[15012] == [{"namespaceSelector": {}}]  # every proxy, in any namespace
    assert opened[15014] == [{"podSelector": {}}]  # the control plane's own namespace
    assert opened[15017] is None  # anyone: the API server's address is not known in advance
    assert {p["containerPort"] for p in container["ports"]} == set(opened)


# ---------------------------------------------------------------------------------------------
# Examples


def objects_in(files: list[Path]) -> list[dict[str, Any]]:
    return [d.body for d in documents(files) if d.kind in KINDS]


def test_cluster_examples_translate_without_errors() -> None:
    files = [path for path in manifest_files(EXAMPLES) if not path.is_relative_to(LOCAL)]
    translation = translate(objects_in(files))

    assert [d for d in translation.diagnostics if d.severity == Severity.ERROR] == []
    hostnames = {service.hostname for service in translation.model.services}
    assert {"reviews.default.svc.cluster.local", "my-service.default.svc.cluster.local"} <= (
        hostnames
    )


def test_seed_examples_are_present_in_their_served_form() -> None:
    path = EXAMPLES / "my-service.yaml"
    service = find(path, "Service", "my-service")
    ingress = find(path, "Ingress", "my-ingress")
    (rule,) = ingress["spec"]["rules"]
    (http_path,) = rule["http"]["paths"]
    routes = find(path, "VirtualService", "my-virtual-service")["spec"]["http"][0]["route"]

    assert service["spec"]["type"] == "LoadBalancer"
    assert ingress["apiVersion"] == "networking.k8s.io/v1"
    assert ingress["spec"]["ingressClassName"] == "splitplane"
    assert find(DEPLOY / "ingressclass.yaml", "IngressClass", "splitplane")
    assert rule["host"] == "my-service.example.com"
    assert http_path["backend"] == {"service": {"name": "my-service", "port": {"number": 80}}}
    assert [(r["destination"]["subset"], r["weight"]) for r in routes] == [("v1", 100), ("v2", 0)]
    assert find(path, "DestinationRule", "my-service")["spec"]["host"] == "my-service"


def test_local_example_holds_only_kinds_splitplane_reads() -> None:
    kinds = {d.kind for d in documents(manifest_files(LOCAL))}

    assert kinds
    assert kinds <= set(KINDS)


def test_local_example_is_a_90_10_canary_on_loopback_backends() -> None:
    translation = translate(objects_in(manifest_files(LOCAL)))
    model = translation.model
    endpoints = {
        entry.cluster: {(e.address, e.port) for e in entry.endpoints} for entry in model.endpoints
    }
    (host,) = (h for h in model.mesh_hosts if "reviews" in h.hosts)
    (route,) = host.routes

    assert translation.diagnostics == ()
    assert endpoints["outbound|80|v1|reviews.default.svc.cluster.local"] == {("127.0.0.1", 8081)}
    assert endpoints["outbound|80|v2|reviews.default.svc.cluster.local"] == {("127.0.0.1", 8082)}
    assert {(d.cluster, d.weight) for d in route.destinations} == {
        ("outbound|80|v1|reviews.default.svc.cluster.local", 90),
        ("outbound|80|v2|reviews.default.svc.cluster.local", 10),
    }


def test_local_canary_matches_the_cluster_canary() -> None:
    def routing(path: Path) -> list[dict[str, Any]]:
        return [
            find(path, "Service", "reviews"),
            find(path, "VirtualService", "reviews"),
            find(path, "DestinationRule", "reviews"),
        ]

    assert routing(LOCAL / "canary.yaml") == routing(EXAMPLES / "canary.yaml")


# ---------------------------------------------------------------------------------------------
def test_the_control_plane_hands_memory_back_after_node_groups_are_dropped() -> None:
    # Python's own allocator keeps a 1 MB arena while one object in it lives; the C allocator
    # hands freed pages back (the server trims the heap once dropped groups are forgotten).
    pod = find(DEPLOY / "control-plane.yaml", "Deployment", "splitplane")["spec"]["template"]
    (container,) = pod["spec"]["containers"]

    assert {"name": "PYTHONMALLOC", "value": "malloc"} in container["env"]


# The admission webhook


def test_the_webhook_certificate_is_mounted_optionally_where_serve_reads_it() -> None:
    pod = find(DEPLOY / "control-plane.yaml", "Deployment", "splitplane")["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    args = container["args"]
    certificate = find(DEPLOY / "cert-manager.yaml", "Certificate", "splitplane-webhook")["spec"]
    directory = flag(args, "--admission-cert").rpartition("/")[0]
    (mount,) = (m for m in container["volumeMounts"] if m["mountPath"] == directory)
    (volume,) = (v for v in pod["spec"]["volumes"] if v["name"] == mount["name"])

    assert flag(args, "--admission-address") == "0.0.0.0:15017"
    assert flag(args, "--admission-cert") == f"{directory}/tls.crt"
    assert flag(args, "--admission-key") == f"{directory}/tls.key"
    assert mount["readOnly"] is True
    # Optional: the pod starts before cert-manager issues it; serve waits for the files.
    assert volume["secret"] == {"secretName": certificate["secretName"], "optional": True}
    assert certificate["usages"] == ["server auth"]


def test_the_webhook_service_port_reaches_the_webhook_under_the_certificates_name() -> None:
    path = DEPLOY / "control-plane.yaml"
    (container,) = find(path, "Deployment", "splitplane")["spec"]["template"]["spec"]["containers"]
    service = find(path, "Service", "splitplane")
    certificate = find(DEPLOY / "cert-manager.yaml", "Certificate", "splitplane-webhook")["spec"]
    config = find(DEPLOY / "admission-webhook.yaml", "ValidatingWebhookConfiguration", "splitplane")
    (webhook,) = config["webhooks"]
    target = webhook["clientConfig"]["service"]

    (port,) = (p for p in service["spec"]["ports"] if p["port"] == target["port"])
    (container_port,) = (p for p in container["ports"] if p["name"] == port["targetPort"])
    address = flag(container["args"], "--admission-address")
    assert container_port["containerPort"] == int(address.rpartition(":")[2])
    assert (target["name"], target["namespace"]) == (service["metadata"]["name"], NAMESPACE)
    assert target["path"] == admission.PATH
    # The API server dials <service>.<namespace>.svc and checks the name against the certificate.
    assert f"{target['name']}.{target['namespace']}.svc" in certificate["dnsNames"]


def test_the_webhook_certificate_reuses_the_mesh_root_and_it_is_injected_as_the_ca() -> None:
    config = find(DEPLOY / "admission-webhook.yaml", "ValidatingWebhookConfiguration", "splitplane")
    certificate = find(DEPLOY / "cert-manager.yaml", "Certificate", "splitplane-webhook")
    root = find(DEPLOY / "cert-manager.yaml", "Certificate", "splitplane-ca")["spec"]
    issuers = [d for d in documents() if d.kind in ("Issuer", "ClusterIssuer")]

    assert config["metadata"]["annotations"] == {
        "cert-manager.io/inject-ca-from": f"{NAMESPACE}/{certificate['metadata']['name']}"
    }
    assert ca_secret_of(certificate["spec"]["issuerRef"]["name"]) == root["secretName"]
    # No issuer of its own: the three of cert-manager.yaml serve xDS and the webhook alike.
    assert {(d.kind, d.name) for d in issuers} == {
        ("Issuer", "splitplane-selfsigned"),
        ("Issuer", "splitplane-ca"),
        ("ClusterIssuer", "splitplane-mesh"),
    }


def test_the_webhook_checks_virtual_services_and_destination_rules_and_fails_open() -> None:
    config = find(DEPLOY / "admission-webhook.yaml", "ValidatingWebhookConfiguration", "splitplane")
    (webhook,) = config["webhooks"]
    (rule,) = webhook["rules"]
    served = {
        version["name"]
        for document in documents(manifest_files(CRDS))
        for version in document.body["spec"]["versions"]
        if version.get("served")
    }

    assert webhook["failurePolicy"] == "Ignore"  # an outage never blocks an apply
    assert webhook["sideEffects"] == "None"
    assert webhook["admissionReviewVersions"] == ["v1"]
    assert rule["apiGroups"] == ["networking.istio.io"]
    assert set(rule["apiVersions"]) == served == {"v1alpha3", "v1beta1", "v1"}
    assert set(rule["operations"]) == {"CREATE", "UPDATE"}
    assert set(rule["resources"]) == {"virtualservices", "destinationrules", "sidecars"}
    assert {kind for kind in admission.CHECKED_KINDS} == {
        "VirtualService",
        "DestinationRule",
        "Sidecar",
    }
