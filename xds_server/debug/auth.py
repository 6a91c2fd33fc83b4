"""Who may read the debug endpoint, as kube-rbac-proxy decides it.

A request is first **authenticated**: each ``Authenticator`` in turn looks for credentials of its
kind; the first that finds valid ones names the ``User``. A bearer token is checked with a
Kubernetes ``TokenReview``. A request with no valid credentials is refused with 401.

It is then **authorized** with a ``SubjectAccessReview`` for that user: by default with
non-resource attributes, the request's path and its verb (``get`` for GET and HEAD, as the API
server maps methods); or, when configured, with fixed resource attributes (e.g. ``get`` on the
``proxy`` subresource of the Service ``splitplane``), so that access follows RBAC on an object.
A denied request gets 403.

Both answers are cached briefly (``cache_seconds``, bounded in size), so a poller costs the API
server a review per interval, not per request. ``/healthz`` and ``/readyz`` are always open;
``/metrics`` unless configured otherwise.

On an HTTPS endpoint a client may instead present a certificate from the mesh CA: its SPIFFE ID
names the user, and it is let in when its service account is one of those allowed to read status
(the same list as for CSDS); anyone else still goes through the reviews.

A browser cannot put a bearer token on the dashboard's event stream (``EventSource`` sends no
headers of its own), so the dashboard signs in instead: the page (``/``, which holds no data, is
open) sends the token once with ``POST /dashboard/session``; that request is authenticated and
authorized like any other, and answered with a session cookie: the user the TokenReview named
and an expiry a few minutes ahead, signed with a key the process drew at random and never
shows. The cookie is ``HttpOnly`` (no script reads it), ``SameSite=Strict`` (no other site's
page makes the browser send it) and ``Secure`` over HTTPS; every request it comes with is still
authorized for its own path with a SubjectAccessReview, so RBAC changes apply as for a token.
The page keeps the token in memory only and renews the session before it expires. A session
cannot start another one (only a bearer token or a client certificate can), so it ends when the
token stops being accepted, at most ``SESSION_SECONDS`` later.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from aiohttp import web

from xds_server.xds.identity import RefusedError, ServiceAccount, certificate_identity

log = logging.getLogger(__name__)

OPEN_PATHS = frozenset(("/healthz", "/readyz", "/"))  # "/": the dashboard page, no data in it
METRICS_PATH = "/metrics"
SESSION_PATH = "/dashboard/session"
SESSION_COOKIE = "splitplane-session"
SESSION_SECONDS = 15 * 60
CACHE_SECONDS = 10.0
CACHE_ENTRIES = 4096
# Reviews under way at once; more requests wait for a free one.
REVIEWS_AT_ONCE = 8

# The verbs the API server's own request info gives non-resource requests.
VERBS = {
    "GET": "get",
    "HEAD": "get",
    "POST": "create",
    "PUT": "update",
    "PATCH": "patch",
    "DELETE": "delete",
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


@dataclass(frozen=True)
class User:
    """An authenticated client, as the TokenReview (or a certificate) names it."""

    name: str
    uid: str = ""
    groups: tuple[str, ...] = ()
    extra: tuple[tuple[str, tuple[str, ...]], ...] = ()


@dataclass(frozen=True)
class ResourceAttributes:
    """Fixed resource attributes to authorize every request with (the verb is the request's)."""

    namespace: str = ""
    group: str = ""
    version: str = ""
    resource: str = ""
    subresource: str = ""
    name: str = ""


def parse_resource_attributes(text: str) -> ResourceAttributes:
    """``namespace=ns,resource=services,subresource=proxy,name=splitplane`` (kube-rbac-proxy's
    keys; ``apiGroup`` and ``apiVersion`` are also accepted for ``group`` and ``version``)."""
    aliases = {"apiGroup": "group", "apiVersion": "version"}
    known = set(ResourceAttributes.__dataclass_fields__)
    values: dict[str, str] = {}
    for item in text.split(","):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        key = aliases.get(key.strip(), key.strip())
        if not sep or key not in known:
            raise ValueError(f"{item.strip()!r}: expected KEY=VALUE with a key of {sorted(known)}")
        values[key] = value.strip()
    if not values.get("resource"):
        raise ValueError("resource attributes need at least resource=...")
    return ResourceAttributes(**values)


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str = ""


class UnauthenticatedError(Exception):
    """The request carries credentials that are not valid."""


class ReviewUnavailableError(Exception):
    """The Kubernetes API could not be asked."""


class Authenticator(Protocol):
    async def authenticate(self, request: web.Request) -> User | None:
        """The user the request's credentials name; None when it carries none of this kind;
        ``UnauthenticatedError`` when they are not valid."""
        ...


class Authorizer(Protocol):
    async def authorize(self, user: User, request: web.Request) -> Decision: ...


class TokenReviewer(Protocol):
    def review_token(self, token: str) -> User | None:
        """The token's user, or None when the API server does not authenticate it."""
        ...


class AccessReviewer(Protocol):
    def review_access(self, user: User, attributes: Mapping[str, Any]) -> Decision:
        """``attributes``: ``{"non_resource": {...}}`` or ``{"resource": {...}}``."""
        ...


class TtlCache(Generic[K, V]):
    """At most ``size`` answers, each for ``seconds``; the oldest go first."""

    def __init__(self, seconds: float = CACHE_SECONDS, size: int = CACHE_ENTRIES) -> None:
        self.seconds = seconds
        self.size = size
        self._entries: OrderedDict[K, tuple[float, V]] = OrderedDict()

    def get(self, key: K) -> tuple[bool, V | None]:
        entry = self._entries.get(key)
        if entry is None or entry[0] < time.monotonic():
            self._entries.pop(key, None)
            return False, None
        return True, entry[1]

    def put(self, key: K, value: V) -> None:
        self._entries[key] = (time.monotonic() + self.seconds, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)


def bearer_token(request: web.Request) -> str | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


class BearerTokenAuthenticator:
    """``Authorization: Bearer TOKEN``, checked with a TokenReview (answers cached)."""

    def __init__(self, reviewer: TokenReviewer, cache: TtlCache[str, User | None]) -> None:
        self._reviewer = reviewer
        self._cache = cache

    async def authenticate(self, request: web.Request) -> User | None:
        token = bearer_token(request)
        if token is None:
            return None
        key = hashlib.sha256(token.encode()).hexdigest()  # tokens are not kept
        found, user = self._cache.get(key)
        if not found:
            user = await asyncio.to_thread(self._reviewer.review_token, token)
            self._cache.put(key, user)
        if user is None:
            raise UnauthenticatedError("the token was not accepted")
        return user


# The authenticated user, kept on the request for the session handler.
USER: web.RequestKey[User] = web.RequestKey("user", User)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class SessionTickets:
    """Signed, short-lived session tickets naming a user (HMAC-SHA256 with a random key of this
    process: a restart ends every session)."""

    def __init__(
        self,
        seconds: float = SESSION_SECONDS,
        clock: Callable[[], float] = time.time,
        key: bytes | None = None,
    ) -> None:
        self.seconds = seconds
        self._clock = clock
        self._key = key if key is not None else secrets.token_bytes(32)

    def _signature(self, payload: str) -> str:
        return _b64(hmac.new(self._key, payload.encode(), hashlib.sha256).digest())

    def issue(self, user: User) -> str:
        body = {
            "name": user.name,
            "uid": user.uid,
            "groups": list(user.groups),
            "extra": [[key, list(values)] for key, values in user.extra],
            "expires": int(self._clock() + self.seconds),
        }
        payload = _b64(json.dumps(body, separators=(",", ":")).encode())
        return f"{payload}.{self._signature(payload)}"

    def verify(self, ticket: str) -> User | None:
        """The ticket's user; None when it is not one of ours or has expired."""
        payload, _, signature = ticket.partition(".")
        if not hmac.compare_digest(signature.encode(), self._signature(payload).encode()):
            return None
        try:
            body = json.loads(_unb64(payload))
            if float(body["expires"]) < self._clock():
                return None
            extra = tuple((str(k), tuple(str(v) for v in vs)) for k, vs in body["extra"])
            return User(str(body["name"]), str(body["uid"]), tuple(body["groups"]), extra)
        except (ValueError, KeyError, TypeError):
            return None


class SessionCookieAuthenticator:
    """The dashboard's session cookie (see the module docstring)."""

    def __init__(self, tickets: SessionTickets) -> None:
        self.tickets = tickets

    async def authenticate(self, request: web.Request) -> User | None:
        ticket = request.cookies.get(SESSION_COOKIE)
        if not ticket:
            return None
        user = self.tickets.verify(ticket)
        if user is None:
            raise UnauthenticatedError("the session has expired: sign in again")
        return SessionUser(user.name, user.uid, user.groups, user.extra)


@dataclass(frozen=True)
class SessionUser(User):
    """A user a session cookie names (which cannot start another session)."""


async def start_session(request: web.Request) -> web.StreamResponse:
    """``POST /dashboard/session`` with a bearer token (or a client certificate): a session
    cookie for the user it names."""
    user = request.get(USER)
    tickets = request.app.get(SESSIONS)
    if tickets is None or not isinstance(user, User) or isinstance(user, SessionUser):
        return _refusal(
            401,
            "send a bearer token to start a session",
            {"WWW-Authenticate": 'Bearer realm="splitplane"'},
        )
    response = web.json_response({"user": user.name, "expires_in": int(tickets.seconds)})
    response.set_cookie(
        SESSION_COOKIE,
        tickets.issue(user),
        max_age=int(tickets.seconds),
        path="/",
        httponly=True,
        samesite="Strict",
        secure=request.secure,
    )
    response.headers["Cache-Control"] = "no-store"
    return response


SESSIONS: web.AppKey[SessionTickets] = web.AppKey("sessions")


class SubjectAccessReviewAuthorizer:
    """A SubjectAccessReview per user and request attributes (answers cached)."""

    def __init__(
        self,
        reviewer: AccessReviewer,
        cache: TtlCache[tuple[User, str], Decision],
        resource: ResourceAttributes | None = None,
    ) -> None:
        self._reviewer = reviewer
        self._cache = cache
        self._resource = resource

    def attributes(self, request: web.Request) -> dict[str, Any]:
        verb = VERBS.get(request.method, request.method.lower())
        if self._resource is None:
            return {"non_resource": {"path": request.path, "verb": verb}}
        resource = {
            key: value
            for key, value in vars(self._resource).items()
            if value  # empty attributes are left out, as in the API
        }
        return {"resource": {**resource, "verb": verb}}

    async def authorize(self, user: User, request: web.Request) -> Decision:
        attributes = self.attributes(request)
        key = (user, repr(sorted((k, sorted(v.items())) for k, v in attributes.items())))
        found, decision = self._cache.get(key)
        if not found or decision is None:
            decision = await asyncio.to_thread(self._reviewer.review_access, user, attributes)
            self._cache.put(key, decision)
        return decision


def _refusal(status: int, message: str, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers)


@dataclass
class DebugAuth:
    """The debug endpoint's gate: every path but ``open_paths`` needs an authenticated,
    authorized client."""

    authenticators: Sequence[Authenticator]
    authorizer: Authorizer
    open_paths: frozenset[str] = field(default=OPEN_PATHS | {METRICS_PATH})
    # The dashboard's sessions: tickets issued at SESSION_PATH and taken as a cookie (after
    # every other kind of credentials).
    sessions: SessionTickets | None = None
    _reviews: asyncio.Semaphore | None = field(default=None, init=False, repr=False)

    def install(self, app: web.Application) -> None:
        """Add the gate to ``app`` (its middleware, and the session path when there are
        sessions)."""
        app.middlewares.append(self.middleware)
        if self.sessions is not None:
            app[SESSIONS] = self.sessions
            app.router.add_post(SESSION_PATH, start_session)

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in self.open_paths:
            return await handler(request)
        if self._reviews is None:
            self._reviews = asyncio.Semaphore(REVIEWS_AT_ONCE)
        async with self._reviews:
            try:
                user = await self._user(request)
                if user is None:
                    return _refusal(
                        401,
                        "authentication required: send a bearer token",
                        {"WWW-Authenticate": 'Bearer realm="splitplane"'},
                    )
                decision = await self.authorizer.authorize(user, request)
            except UnauthenticatedError as refused:
                return _refusal(401, str(refused), {"WWW-Authenticate": "Bearer"})
            except ReviewUnavailableError as error:
                log.warning("debug endpoint: %s", error)
                return _refusal(503, "cannot check credentials now; try again")
        if not decision.allowed:
            verb = VERBS.get(request.method, request.method.lower())
            reason = f": {decision.reason}" if decision.reason else ""
            return _refusal(403, f"{user.name} may not {verb} {request.path}{reason}")
        request[USER] = user
        return await handler(request)

    async def _user(self, request: web.Request) -> User | None:
        for authenticator in self.authenticators:
            user = await authenticator.authenticate(request)
            if user is not None:
                return user
        if self.sessions is not None:
            return await SessionCookieAuthenticator(self.sessions).authenticate(request)
        return None


@dataclass(frozen=True)
class CertificateUser(User):
    """A client that presented a valid certificate; ``account`` is its SPIFFE ID's."""

    account: ServiceAccount = field(default_factory=lambda: ServiceAccount("", ""))


class ClientCertificateAuthenticator:
    """The SPIFFE ID of the client certificate the TLS handshake verified."""

    def __init__(self, trust_domain: str) -> None:
        self.trust_domain = trust_domain

    async def authenticate(self, request: web.Request) -> User | None:
        transport = request.transport
        ssl_object = None if transport is None else transport.get_extra_info("ssl_object")
        certificate = None if ssl_object is None else ssl_object.getpeercert()
        if not certificate:
            return None
        uris = [
            str(value) for kind, value in certificate.get("subjectAltName", ()) if kind == "URI"
        ]
        try:
            identity = certificate_identity(uris, self.trust_domain)
        except RefusedError as refused:
            raise UnauthenticatedError(str(refused)) from None
        return CertificateUser(name=identity.uri, account=identity.account)


class CertificateAuthorizer:
    """Certificate users are allowed when their account is one of ``readers``; any other user
    is left to ``others`` (denied without it)."""

    def __init__(self, readers: frozenset[ServiceAccount], others: Authorizer | None) -> None:
        self.readers = readers
        self.others = others

    async def authorize(self, user: User, request: web.Request) -> Decision:
        if isinstance(user, CertificateUser):
            if user.account in self.readers:
                return Decision(True)
            return Decision(False, f"{user.account} is not allowed to read status")
        if self.others is None:
            return Decision(False, "only client certificates are accepted here")
        return await self.others.authorize(user, request)


def with_client_certificates(
    auth: DebugAuth | None, trust_domain: str, readers: frozenset[ServiceAccount]
) -> DebugAuth:
    """``auth`` (or no other authentication) with client certificates accepted first."""
    return DebugAuth(
        authenticators=[
            ClientCertificateAuthenticator(trust_domain),
            *(auth.authenticators if auth is not None else ()),
        ],
        authorizer=CertificateAuthorizer(readers, auth.authorizer if auth is not None else None),
        open_paths=auth.open_paths if auth is not None else OPEN_PATHS | {METRICS_PATH},
        sessions=auth.sessions if auth is not None else SessionTickets(),
    )


class KubernetesReviews:
    """TokenReview and SubjectAccessReview through the Kubernetes API (blocking calls: they run
    in worker threads)."""

    def __init__(self, api: Any, audiences: Sequence[str] = ()) -> None:
        from kubernetes import client

        self._client = client
        self._authentication = client.AuthenticationV1Api(api)
        self._authorization = client.AuthorizationV1Api(api)
        self._audiences = list(audiences) or None

    def review_token(self, token: str) -> User | None:
        client = self._client
        review = client.V1TokenReview(
            spec=client.V1TokenReviewSpec(token=token, audiences=self._audiences)
        )
        try:
            answer = self._authentication.create_token_review(review)
        except Exception as error:
            raise ReviewUnavailableError(f"TokenReview failed: {_reason(error)}") from error
        status = answer.status
        if status is None or not status.authenticated or status.user is None:
            return None
        user = status.user
        extra = tuple(sorted((key, tuple(values)) for key, values in (user.extra or {}).items()))
        return User(user.username or "", user.uid or "", tuple(user.groups or ()), extra)

    def review_access(self, user: User, attributes: Mapping[str, Any]) -> Decision:
        client = self._client
        spec = client.V1SubjectAccessReviewSpec(
            user=user.name,
            uid=user.uid or None,
            groups=list(user.groups) or None,
            extra={key: list(values) for key, values in user.extra} or None,
        )
        if "resource" in attributes:
            spec.resource_attributes = client.V1ResourceAttributes(**attributes["resource"])
        else:
            spec.non_resource_attributes = client.V1NonResourceAttributes(
                **attributes["non_resource"]
            )
        try:
            answer = self._authorization.create_subject_access_review(
                client.V1SubjectAccessReview(spec=spec)
            )
        except Exception as error:
            raise ReviewUnavailableError(f"SubjectAccessReview failed: {_reason(error)}") from error
        status = answer.status
        allowed = bool(status is not None and status.allowed and not status.denied)
        return Decision(allowed, (status.reason or "") if status is not None else "")


def _reason(error: Exception) -> str:
    status = getattr(error, "status", None)
    return f"HTTP {status} {getattr(error, 'reason', '')}".strip() if status else str(error)


def kubernetes_debug_auth(
    api: Any,
    *,
    protect_metrics: bool = False,
    resource: ResourceAttributes | None = None,
    audiences: Sequence[str] = (),
    cache_seconds: float = CACHE_SECONDS,
) -> DebugAuth:
    """Bearer tokens checked with TokenReview, then a SubjectAccessReview, through ``api``."""
    reviews = KubernetesReviews(api, audiences)
    return DebugAuth(
        authenticators=[BearerTokenAuthenticator(reviews, TtlCache(cache_seconds))],
        authorizer=SubjectAccessReviewAuthorizer(reviews, TtlCache(cache_seconds), resource),
        open_paths=OPEN_PATHS if protect_metrics else OPEN_PATHS | {METRICS_PATH},
        sessions=SessionTickets(),
    )
