"""A validating admission webhook (``admission.k8s.io/v1`` AdmissionReview over HTTPS): the API
server asks before it stores a VirtualService, DestinationRule or Sidecar, and splitplane refuses
what ``splitplane validate`` calls an error, with the same message, so ``kubectl apply`` fails at
once instead of answering "configured".

The object is checked together with the mesh the server holds (so a route to a subset the
DestinationRule lacks is refused, as ``validate`` of both files would refuse it). Deletions, and
kinds splitplane does not read, are always allowed. The webhook is served like the debug endpoint,
on an HTTP server with a thread and loop of its own, and the check runs in a worker thread: the
xDS loop only hands over the objects it holds.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from aiohttp import web

from translators.diagnostics import Diagnostic
from translators.translate import Options, translate
from xds_server.debug.server import HttpServer
from xds_server.sources.base import KubeObject, object_key
from xds_server.xds.tls import ReloadingSslContext, TlsFiles, TlsFilesError

log = logging.getLogger("splitplane.admission")

CHECKED_KINDS = frozenset({"VirtualService", "DestinationRule", "Sidecar"})
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


def admission_app(mesh: Mesh, options: Options = _DEFAULT_OPTIONS) -> web.Application:
    """``POST /validate``: an AdmissionReview in, its answer out. The check runs in a worker
    thread, against ``mesh()`` (which may block that thread briefly)."""

    async def validate(request: web.Request) -> web.Response:
        try:
            review = json.loads(await request.read())
            answer = await asyncio.to_thread(
                review_response, review, lambda obj: object_errors(obj, mesh(), options)
            )
        except (ValueError, TypeError) as err:
            return web.json_response({"error": str(err)}, status=400)
        return web.json_response(answer)

    app = web.Application(client_max_size=MAX_BODY)
    app.router.add_post(PATH, validate)
    return app


def mesh_from_loop(
    objects: Callable[[], list[KubeObject]], loop: asyncio.AbstractEventLoop
) -> Mesh:
    """``objects`` (the store's, owned by the xDS loop), read on that loop from another thread."""

    async def read() -> list[KubeObject]:
        return objects()

    def mesh() -> list[KubeObject]:
        return asyncio.run_coroutine_threadsafe(read(), loop).result(timeout=10)

    return mesh


class AdmissionServer:
    """The webhook of ``serve``, on an HTTP server with its own thread and loop (the xDS loop
    never runs a request), started once its certificate and key exist: cert-manager may issue
    them after the pod starts (the Secret volume then fills); checked every ``poll_seconds``
    until then. When cert-manager renews them, new connections get the new certificate, as on
    the xDS port."""

    def __init__(
        self,
        host: str,
        port: int,
        certfile: str,
        keyfile: str,
        mesh: Mesh,
        *,
        options: Options = _DEFAULT_OPTIONS,
        poll_seconds: float = 5.0,
    ) -> None:
        self.address = (host, port)
        self.files = (certfile, keyfile)
        self.mesh, self.options, self.poll_seconds = mesh, options, poll_seconds
        self.http: HttpServer | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def serving(self) -> bool:
        return self.http is not None

    async def start(self) -> None:
        """Start now if the files are there, else keep looking in the background."""
        if not await self._try_start():
            log.warning(
                "admission webhook waits for its certificate", extra={"files": list(self.files)}
            )
            self._task = asyncio.create_task(self._wait(), name="admission-webhook")

    async def _try_start(self) -> bool:
        if not all(Path(name).is_file() for name in self.files):
            return False
        certfile, keyfile = self.files
        context = ReloadingSslContext(TlsFiles(Path(certfile), Path(keyfile))).context
        http = HttpServer(admission_app(self.mesh, self.options), name="admission-https")
        await asyncio.to_thread(http.start)
        try:
            await asyncio.to_thread(http.listen, *self.address, context)
        except OSError:
            await asyncio.to_thread(http.stop)
            raise
        self.http = http
        log.info("admission webhook serving", extra={"address": f"{self.address}{PATH}"})
        return True

    async def _wait(self) -> None:
        while True:
            await asyncio.sleep(self.poll_seconds)
            try:
                if await self._try_start():
                    return
            except (OSError, ssl.SSLError, TlsFilesError):
                log.warning("admission webhook could not start yet", exc_info=True)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self.http is not None:
            await asyncio.to_thread(self.http.stop)
