"""CSDS (``envoy.service.status.v3.ClientStatusDiscoveryService``) from the client-status model.

It lists every proxy's id and configuration, so it answers only callers the access policy lets
read status; anyone else gets PERMISSION_DENIED.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable

import grpc
from envoy.admin.v3.config_dump_shared_pb2 import ClientResourceStatus, UpdateFailureState
from envoy.service.status.v3 import csds_pb2, csds_pb2_grpc
from envoy.type.matcher.v3.node_pb2 import NodeMatcher
from envoy.type.matcher.v3.string_pb2 import StringMatcher
from google.protobuf.timestamp_pb2 import Timestamp

from xds_server.xds.client_status import ClientRegistry, ClientView, SyncState, TypeStatus
from xds_server.xds.identity import AccessControl, RefusedError

_CONFIG_STATUS = {
    SyncState.SYNCED: csds_pb2.SYNCED,
    SyncState.STALE: csds_pb2.STALE,
    SyncState.NOT_SENT: csds_pb2.NOT_SENT,
    SyncState.NACKED: csds_pb2.ERROR,
}
_RESOURCE_STATUS = {
    SyncState.SYNCED: ClientResourceStatus.ACKED,
    SyncState.STALE: ClientResourceStatus.REQUESTED,
    SyncState.NOT_SENT: ClientResourceStatus.REQUESTED,
    SyncState.NACKED: ClientResourceStatus.NACKED,
}


def _timestamp(seconds: float | None) -> Timestamp:
    stamp = Timestamp()
    if seconds is not None:
        stamp.FromNanoseconds(int(seconds * 1e9))
    return stamp


def string_matches(matcher: StringMatcher, value: str) -> bool:
    """Whether ``value`` satisfies an exact, prefix, suffix or contains ``StringMatcher``."""
    kind = matcher.WhichOneof("match_pattern")
    if kind is None:
        return True
    pattern = str(getattr(matcher, kind))
    if matcher.ignore_case:
        pattern, value = pattern.lower(), value.lower()
    if kind == "exact":
        return value == pattern
    if kind == "prefix":
        return value.startswith(pattern)
    if kind == "suffix":
        return value.endswith(pattern)
    if kind == "contains":
        return pattern in value
    return False


def _selected(view: ClientView, matchers: Iterable[NodeMatcher]) -> bool:
    matchers = list(matchers)
    if not matchers:
        return True
    return any(
        not m.HasField("node_id") or string_matches(m.node_id, view.node_id) for m in matchers
    )


def _generic_configs(
    status: TypeStatus, include_contents: bool
) -> list[csds_pb2.ClientConfig.GenericXdsConfig]:
    state = status.state
    error_state = None
    if state is SyncState.NACKED:
        error_state = UpdateFailureState(
            last_update_attempt=_timestamp(status.error_at),
            details=status.error,
            version_info=status.nacked_version,
        )

    def config(name: str, version: str) -> csds_pb2.ClientConfig.GenericXdsConfig:
        generic = csds_pb2.ClientConfig.GenericXdsConfig(
            type_url=status.type_url,
            name=name,
            version_info=version,
            config_status=_CONFIG_STATUS[state],
            client_status=_RESOURCE_STATUS[state],
        )
        if status.sent_at is not None:
            generic.last_updated.CopyFrom(_timestamp(status.sent_at))
        if error_state is not None:
            generic.error_state.CopyFrom(error_state)
        return generic

    if not status.sent_resources:
        return [config("", status.sent_version)]
    configs = []
    for resource in status.sent_resources:
        generic = config(resource.name, resource.version)
        if include_contents:
            generic.xds_config.CopyFrom(resource.as_any())
        configs.append(generic)
    return configs


def client_config(view: ClientView, include_contents: bool = True) -> csds_pb2.ClientConfig:
    """One client's CSDS entry: every resource it was sent, with its type's sync state."""
    result = csds_pb2.ClientConfig(node=view.node)
    for status in view.types:
        result.generic_xds_configs.extend(_generic_configs(status, include_contents))
    return result


def client_status_response(
    registry: ClientRegistry, request: csds_pb2.ClientStatusRequest
) -> csds_pb2.ClientStatusResponse:
    """The CSDS answer for ``request`` (filtered by its node id matchers)."""
    include = not request.exclude_resource_contents
    return csds_pb2.ClientStatusResponse(
        config=[
            client_config(view, include)
            for view in registry.views()
            if _selected(view, request.node_matchers)
        ]
    )


class ClientStatusService(csds_pb2_grpc.ClientStatusDiscoveryServiceServicer):  # type: ignore[misc]
    """The CSDS servicer; ``access`` decides who may read client status."""

    def __init__(self, registry: ClientRegistry, access: AccessControl | None = None) -> None:
        self._registry = registry
        self._access = access or AccessControl()

    async def _check_reader(self, context: grpc.aio.ServicerContext[object, object]) -> None:
        try:
            self._access.status_reader(context)
        except RefusedError as refusal:
            self._access.refused(refusal, "client status request", context.peer())
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, str(refusal))

    async def FetchClientStatus(  # noqa: N802 (gRPC method name)
        self,
        request: csds_pb2.ClientStatusRequest,
        context: grpc.aio.ServicerContext[object, object],
    ) -> csds_pb2.ClientStatusResponse:
        await self._check_reader(context)
        return client_status_response(self._registry, request)

    async def StreamClientStatus(  # noqa: N802 (gRPC method name)
        self,
        requests: AsyncIterator[csds_pb2.ClientStatusRequest],
        context: grpc.aio.ServicerContext[object, object],
    ) -> AsyncIterator[csds_pb2.ClientStatusResponse]:
        await self._check_reader(context)
        async for request in requests:
            yield client_status_response(self._registry, request)
