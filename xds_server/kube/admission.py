"""A validating admission webhook (``admission.k8s.io/v1`` AdmissionReview over HTTPS): the API
server asks before it stores a VirtualService or DestinationRule, and splitplane refuses what
``splitplane validate`` calls an error, with the same message, so ``kubectl apply`` fails at once
instead of answering "configured".

The object is checked together with the mesh the server holds (so a route to a subset the
DestinationRule lacks is refused, as ``validate`` of both files would refuse it). Deletions, and
kinds splitplane does not read, are always allowed. The check runs in a thread: a large mesh never
holds up the event loop's xDS work.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from aiohttp import web

from translators.diagnostics import Diagnostic
from translators.translate import Options, translate
from xds_server.sources.base import KubeObject, object_key

log = logging.getLogger("splitplane.admission")

CHECKED_KINDS = frozenset({"VirtualService", "DestinationRule"})
PATH = "/validate"
MAX_BODY = 3 * 1024 * 1024  # the API server's own limit on an object

Check = Callable[[KubeObject], Sequence[Diagnostic]]
Mesh = Callable[[], list[KubeObject]]
_DEFAULT_OPTIONS = Options()


def object_errors(
    obj: KubeObject, mesh: Iterable[KubeObject], options: Options = _DEFAULT_OPTIONS
) -> list[Diagnostic]:
    """The errors ``splitplane validate`` finds in ``obj`` when it joins ``mesh`` (replacing the
    object of the same kind/namespace/name)."""
    key = object_key(obj)
    others = [other for other in mesh if object_key(other) != key]
    found = translate([*others, obj], options=options).diagnostics
    return [d for d in found if d.is_error and (d.kind, d.namespace, d.name) == key]


def review_response(review: Mapping[str, Any], check: Check) -> dict[str, Any]:
    """The AdmissionReview answering ``review``: allowed, or refused with every error, one line
    each, as ``splitplane validate`` prints them."""
    request = review.get("request")
    if not isinstance(request, Mapping) or not isinstance(request.get("uid"), str):
        raise ValueError("not an AdmissionReview request: request.uid is missing")
    response: dict[str, Any] = {"uid": request["uid"], "allowed": True}
    obj = request.get("object")
    if (
        request.get("operation") in ("CREATE", "UPDATE")
        and isinstance(obj, Mapping)
        and obj.get("kind") in CHECKED_KINDS
    ):
        checked = dict(obj)
        metadata = dict(checked.get("metadata") or {})
        if not metadata.get("namespace") and isinstance(request.get("namespace"), str):
            metadata["namespace"] = request["namespace"]  # kubectl create without -n
        checked["metadata"] = metadata
        errors = check(checked)
        if errors:
            message = "\n".join(d.render() for d in errors)
            response.update(allowed=False, status={"code": 400, "message": message})
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response}


def tls_context(certfile: str, keyfile: str) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(certfile, keyfile)
    return context


async def start_admission_server(
    host: str, port: int, context: ssl.SSLContext, mesh: Mesh, options: Options = _DEFAULT_OPTIONS
) -> web.AppRunner:
    """Serve ``POST /validate`` over TLS on ``host:port``, checking objects against ``mesh()``
    (the objects the server holds, taken on the event loop); ``cleanup()`` stops it."""

    async def validate(request: web.Request) -> web.Response:
        held = mesh()
        try:
            review = json.loads(await request.read())
            answer = await asyncio.to_thread(
                review_response, review, lambda obj: object_errors(obj, held, options)
            )
        except (ValueError, TypeError) as err:
            return web.json_response({"error": str(err)}, status=400)
        return web.json_response(answer)

    app = web.Application(client_max_size=MAX_BODY)
    app.router.add_post(PATH, validate)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port, ssl_context=context).start()
    log.info("admission webhook serving", extra={"address": f"{host}:{port}{PATH}"})
    return runner
