"""Where `status`, `snapshot` and `proxy-config` read from: one debug endpoint, or every replica.

Without cluster flags they read the debug endpoint at ``--debug-address``. With ``--kubeconfig``,
``--context`` or ``--namespace`` they find the control plane's pods through the Kubernetes API
(the Deployment's label selector, in ``splitplane-system`` unless told otherwise) and reach each
running replica through a port-forward (the pods' ``portforward`` subresource over WebSocket,
as ``kubectl port-forward`` does) opened with the caller's own Kubernetes credentials; each answer
is named by its replica.

Why a port-forward and not the pods ``proxy`` subresource: off loopback the debug endpoint wants
a bearer token, and the API server removes the caller's ``Authorization`` header once it has
authenticated it, so a request through the proxy arrives without one (401). Through the tunnel
the request reaches the pod's port unchanged, with the bearer token (``--token``/``--token-file``,
else the kubeconfig's own), over the API server's and the kubelet's encrypted connections rather
than in plaintext across the pod network; and the kubelet connects inside the pod, which the
NetworkPolicy (debug port open to the namespace's own pods only) does not filter.
"""

from __future__ import annotations

import argparse
import http.client
import json
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlencode

from xds_server.cli.debug_client import (
    DebugEndpointError,
    fetch_json,
    tls_from_args,
    token_from_args,
)

CONTROL_PLANE_NAMESPACE = "splitplane-system"
CONTROL_PLANE_SELECTOR = "app.kubernetes.io/name=splitplane"  # deploy/control-plane.yaml
DEBUG_PORT_NAME = "http-debug"
DEFAULT_DEBUG_PORT = 15014


class Replica(Protocol):
    """One control-plane replica's debug endpoint."""

    name: str

    def get_json(self, path: str, query: Mapping[str, str] | None = None) -> Any:
        """GET ``path`` and decode the JSON; ``DebugEndpointError`` says why it failed."""
        ...


@dataclass
class DebugAddress:
    """The debug endpoint at ``address`` (``--debug-address``)."""

    name: str
    token: str | None
    tls: ssl.SSLContext | None = None

    def get_json(self, path: str, query: Mapping[str, str] | None = None) -> Any:
        full = path + (f"?{urlencode(query)}" if query else "")
        return fetch_json(self.name, full, token=self.token, tls=self.tls)


@dataclass
class PortForward:
    """A replica's debug endpoint reached through a port-forward to its pod (one tunnel per
    request, closed after the answer)."""

    name: str
    namespace: str
    port: int
    api: Any  # kubernetes.client.ApiClient
    token: str | None
    timeout: float = 30.0

    def get_json(self, path: str, query: Mapping[str, str] | None = None) -> Any:
        from kubernetes import client, stream
        from kubernetes.client.exceptions import ApiException

        try:
            forward = stream.portforward(
                client.CoreV1Api(self.api).connect_get_namespaced_pod_portforward,
                self.name,
                self.namespace,
                ports=str(self.port),
            )
        except ApiException as error:
            raise DebugEndpointError(
                f"{self.name}: port-forward to {self.port}: {error.reason or error}"
            ) from error
        connection = http.client.HTTPConnection("localhost", self.port, timeout=self.timeout)
        try:
            sock = forward.socket(self.port)
            sock.settimeout(self.timeout)
            connection.sock = sock
            headers = {"Host": f"localhost:{self.port}", "Accept": "application/json"}
            if self.token:
                headers["Authorization"] = f"Bearer {self.token}"
            full = path + (f"?{urlencode(query)}" if query else "")
            connection.request("GET", full, headers=headers)
            response = connection.getresponse()
            status, body = response.status, response.read()
        except (OSError, http.client.HTTPException) as error:
            reason = forward.error(self.port) or error or type(error).__name__
            raise DebugEndpointError(
                f"{self.name}: port-forward to {self.port}: {reason}"
            ) from error
        finally:
            connection.close()
            forward.close()
        if status != 200:
            try:
                detail = str(json.loads(body).get("error", ""))
            except (ValueError, AttributeError):
                detail = ""
            hint = ""
            if status == 401 and not self.token:
                hint = (
                    " (the kubeconfig holds no bearer token: give --token or --token-file,"
                    " e.g. from kubectl create token)"
                )
            raise DebugEndpointError(f"{self.name}: HTTP {status} {detail}".rstrip() + hint)
        try:
            return json.loads(body)
        except ValueError as error:
            raise DebugEndpointError(f"{self.name}: not JSON: {error}") from error


def _kubeconfig_token(api: Any) -> str | None:
    """The bearer token the kubeconfig gave the client (a token, or an exec plugin's), if any."""
    # auth_settings() runs the client's refresh hook (exec plugins, expiring tokens) first.
    setting = api.configuration.auth_settings().get("BearerToken") or {}
    value = str(setting.get("value") or "")
    scheme, _, token = value.partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The cluster flags (the debug-address flags are ``debug_client.add_debug_address``)."""
    parser.add_argument(
        "--kubeconfig",
        metavar="PATH",
        help="read every control-plane replica through this cluster's API (default $KUBECONFIG"
        " when --context or --namespace is given)",
    )
    parser.add_argument("--context", metavar="NAME", help="the kubeconfig context to use")
    parser.add_argument(
        "--namespace",
        metavar="NS",
        help=f"the control plane's namespace (default {CONTROL_PLANE_NAMESPACE})",
    )


def in_cluster_mode(args: argparse.Namespace) -> bool:
    return bool(args.kubeconfig or args.context or args.namespace)


def _debug_port(pod: Mapping[str, Any]) -> int:
    for container in (pod.get("spec") or {}).get("containers") or []:
        for port in container.get("ports") or []:
            if port.get("name") == DEBUG_PORT_NAME and isinstance(port.get("containerPort"), int):
                return int(port["containerPort"])
    return DEFAULT_DEBUG_PORT


def replicas(args: argparse.Namespace) -> list[Replica]:
    """The replicas to read: every running control-plane pod, or the one debug address."""
    if not in_cluster_mode(args):
        return [DebugAddress(args.debug_address, token_from_args(args), tls_from_args(args))]
    from xds_server.sources.kubernetes import (
        ApiStatusError,
        api_client_from_flags,
        request_json,
    )

    namespace = args.namespace or CONTROL_PLANE_NAMESPACE
    given_token = token_from_args(args)
    try:
        api = api_client_from_flags(kubeconfig=args.kubeconfig, context=args.context)
        token = given_token or _kubeconfig_token(api)
        pods = request_json(
            api,
            "GET",
            f"/api/v1/namespaces/{namespace}/pods",
            query={"labelSelector": CONTROL_PLANE_SELECTOR},
        )
    except ApiStatusError as error:
        raise DebugEndpointError(
            f"listing the control-plane pods: HTTP {error.status} {error}"
        ) from error
    except Exception as error:  # no kubeconfig, unreachable API server, ...
        raise DebugEndpointError(f"cannot reach the Kubernetes API: {error}") from error
    found: list[Replica] = []
    for pod in sorted(pods.get("items") or [], key=lambda p: p["metadata"]["name"]):
        status = pod.get("status") or {}
        if status.get("phase") == "Running" and status.get("podIP"):
            found.append(
                PortForward(pod["metadata"]["name"], namespace, _debug_port(pod), api, token)
            )
    if not found:
        raise DebugEndpointError(
            f"no running control-plane pod in namespace {namespace}"
            f" (label selector {CONTROL_PLANE_SELECTOR})"
        )
    return found


def first_answer(
    found: list[Replica], path: str, query: Mapping[str, str] | None = None
) -> tuple[Replica, Any]:
    """The first replica that answers ``path`` (e.g. the one a node is connected to), with its
    answer; ``DebugEndpointError`` naming every replica's failure when none does."""
    failures = []
    for replica in found:
        try:
            return replica, replica.get_json(path, query)
        except DebugEndpointError as error:
            failures.append(str(error))
    raise DebugEndpointError("; ".join(failures))
