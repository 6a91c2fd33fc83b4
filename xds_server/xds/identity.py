"""Who is at the other end of an xDS or CSDS stream, and what it may ask for.

With mutual TLS the identity is the client certificate's SPIFFE ID
(``spiffe://TRUST_DOMAIN/ns/NAMESPACE/sa/SERVICE_ACCOUNT``), which gRPC has verified against the
client CA. Node metadata may only narrow it: a node whose ``NAMESPACE`` differs from its
certificate's namespace is refused, and the gateway role (the load-balancer fleet, which receives
every Ingress and LoadBalancer Service) is open only to the service accounts configured for it.
CSDS lists every proxy's configuration, so only the identities allowed to read status get an
answer. Without mutual TLS there is no identity: xDS streams are taken as they come, and CSDS
answers only connections from the same host (loopback).
"""

from __future__ import annotations

import ipaddress
import logging
import re
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol, TypeVar

import grpc
from envoy.config.core.v3.base_pb2 import Node

from xds_server.xds.nodes import GATEWAY, node_namespace, node_role

log = logging.getLogger(__name__)

DEFAULT_TRUST_DOMAIN = "cluster.local"
CONTROL_PLANE_NAMESPACE = "splitplane-system"

# A DNS-1123 label, as Kubernetes namespaces and service account names are (service accounts may
# also hold dots).
_NAMESPACE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_ACCOUNT = re.compile(r"^[a-z0-9]([-.a-z0-9]{0,251}[a-z0-9])?$")


@dataclass(frozen=True, order=True)
class ServiceAccount:
    """A Kubernetes service account, ``NAMESPACE/NAME``."""

    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


def parse_service_account(text: str) -> ServiceAccount:
    """``NAMESPACE/NAME`` → ``ServiceAccount``; ``ValueError`` says what is wrong."""
    namespace, sep, name = text.strip().partition("/")
    if not sep or not _NAMESPACE.match(namespace) or not _ACCOUNT.match(name):
        raise ValueError(f"{text!r} is not NAMESPACE/SERVICE_ACCOUNT")
    return ServiceAccount(namespace, name)


# The load-balancer fleet's service account (deploy/loadbalancer-fleet.yaml) and the control
# plane's own (deploy/rbac.yaml).
DEFAULT_GATEWAY_ACCOUNTS = frozenset({ServiceAccount(CONTROL_PLANE_NAMESPACE, "splitplane-lb")})
DEFAULT_STATUS_READERS = frozenset({ServiceAccount(CONTROL_PLANE_NAMESPACE, "splitplane")})


@dataclass(frozen=True)
class SpiffeId:
    """A Kubernetes workload's SPIFFE ID."""

    trust_domain: str
    namespace: str
    service_account: str

    @property
    def uri(self) -> str:
        return f"spiffe://{self.trust_domain}/ns/{self.namespace}/sa/{self.service_account}"

    @property
    def account(self) -> ServiceAccount:
        return ServiceAccount(self.namespace, self.service_account)

    def __str__(self) -> str:
        return self.uri


def parse_spiffe_id(uri: str) -> SpiffeId | None:
    """``spiffe://TD/ns/NS/sa/SA`` → ``SpiffeId``; None for any other URI."""
    scheme, sep, rest = uri.partition("://")
    if scheme != "spiffe" or not sep:
        return None
    parts = rest.split("/")
    if len(parts) != 5 or parts[1] != "ns" or parts[3] != "sa":
        return None
    trust_domain, _, namespace, _, account = parts
    if not trust_domain or not _NAMESPACE.match(namespace) or not _ACCOUNT.match(account):
        return None
    return SpiffeId(trust_domain, namespace, account)


@dataclass(frozen=True)
class AccessPolicy:
    """What the transport proves and what each identity may ask for."""

    # Client certificates are required (mutual TLS): every stream has a verified identity.
    mtls: bool = False
    trust_domain: str = DEFAULT_TRUST_DOMAIN
    gateway_accounts: frozenset[ServiceAccount] = DEFAULT_GATEWAY_ACCOUNTS
    status_readers: frozenset[ServiceAccount] = DEFAULT_STATUS_READERS


class RefusedError(Exception):
    """A stream the policy does not allow; ``reason`` is a short label for metrics."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def certificate_uris(auth_context: Mapping[str, Iterable[bytes]]) -> list[str]:
    """The URI SANs of the verified peer certificate, from gRPC's auth context."""
    return [value.decode(errors="replace") for value in auth_context.get("peer_uri", ())]


def certificate_identity(uris: Iterable[str], trust_domain: str) -> SpiffeId:
    """The SPIFFE ID among a certificate's URI SANs; ``RefusedError`` unless there is exactly
    one and it belongs to ``trust_domain``."""
    spiffe = [uri for uri in uris if uri.startswith("spiffe://")]
    if len(spiffe) != 1:
        raise RefusedError(
            "no_identity",
            f"the client certificate must carry exactly one SPIFFE ID, found {len(spiffe)}",
        )
    identity = parse_spiffe_id(spiffe[0])
    if identity is None:
        raise RefusedError(
            "no_identity", f"{spiffe[0]} is not spiffe://TRUST_DOMAIN/ns/NAMESPACE/sa/ACCOUNT"
        )
    if identity.trust_domain != trust_domain:
        raise RefusedError(
            "trust_domain",
            f"{identity} is not in trust domain {trust_domain}",
        )
    return identity


def node_allowed(identity: SpiffeId, node: Node, policy: AccessPolicy) -> None:
    """``RefusedError`` when ``node`` claims more than ``identity`` may have."""
    claimed = node_namespace(node)
    if claimed and claimed != identity.namespace:
        raise RefusedError(
            "namespace",
            f"node {node.id!r} claims namespace {claimed!r}, its certificate says"
            f" {identity.namespace!r} ({identity})",
        )
    if node_role(node) == GATEWAY and identity.account not in policy.gateway_accounts:
        allowed = ", ".join(str(a) for a in sorted(policy.gateway_accounts)) or "none"
        raise RefusedError(
            "role",
            f"node {node.id!r} asks for the gateway role, which {identity.account} may not"
            f" take (allowed: {allowed})",
        )


def is_loopback_peer(peer: str) -> bool:
    """Whether gRPC's peer string (``ipv4:127.0.0.1:5000``, ``ipv6:[::1]:5000``) is loopback."""
    kind, _, address = peer.partition(":")
    host = address.rpartition(":")[0].strip("[]")
    if kind not in ("ipv4", "ipv6"):
        return kind == "unix"
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _Context(Protocol):
    def auth_context(self) -> Mapping[str, Iterable[bytes]]: ...

    def peer(self) -> str: ...


class _HasNode(Protocol):
    node: Node


R = TypeVar("R", bound=_HasNode)


async def _chained(first: R, rest: AsyncIterator[R]) -> AsyncIterator[R]:
    yield first
    async for request in rest:
        yield request


class AccessControl:
    """Applies an ``AccessPolicy`` to streams; tells ``on_refused`` each refusal's reason."""

    def __init__(
        self,
        policy: AccessPolicy = AccessPolicy(),
        on_refused: Callable[[str], None] | None = None,
    ) -> None:
        self.policy = policy
        self._on_refused = on_refused

    def stream_identity(self, context: _Context, node: Node) -> SpiffeId | None:
        """The verified identity of an xDS stream whose first request names ``node`` (None
        without mutual TLS); ``RefusedError`` when the policy does not let it in."""
        if not self.policy.mtls:
            return None
        identity = certificate_identity(
            certificate_uris(context.auth_context()), self.policy.trust_domain
        )
        node_allowed(identity, node, self.policy)
        return identity

    def status_reader(self, context: _Context) -> str:
        """Who reads status (a SPIFFE ID, or ``loopback``); ``RefusedError`` for anyone else."""
        if not self.policy.mtls:
            if is_loopback_peer(context.peer()):
                return "loopback"
            raise RefusedError(
                "status",
                "client status is served over mutual TLS, or to this host only",
            )
        identity = certificate_identity(
            certificate_uris(context.auth_context()), self.policy.trust_domain
        )
        if identity.account not in self.policy.status_readers:
            raise RefusedError("status", f"{identity.account} may not read client status")
        return identity.uri

    def refused(self, refusal: RefusedError, what: str, peer: str) -> None:
        """Log and count a refusal."""
        log.warning(
            "refused %s from %s: %s",
            what,
            peer,
            refusal,
            extra={"reason": refusal.reason, "peer": peer},
        )
        if self._on_refused is not None:
            self._on_refused(refusal.reason)

    async def admit(
        self,
        requests: AsyncIterator[R],
        context: grpc.aio.ServicerContext[bytes, bytes],
    ) -> tuple[AsyncIterator[R], SpiffeId | None] | None:
        """Read the stream's first request and check its node against the transport's identity:
        the requests (the first one put back) and the identity, None when the client closed
        first. A refused stream ends here with PERMISSION_DENIED. Without mutual TLS there is
        nothing to check: the requests are handed on untouched."""
        if not self.policy.mtls:
            return requests, None
        pending = aiter(requests)
        first = await anext(pending, None)
        if first is None:
            return None
        try:
            identity = self.stream_identity(context, first.node)
        except RefusedError as refusal:
            self.refused(refusal, "xDS stream", context.peer())
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, str(refusal))
        return _chained(first, pending), identity
