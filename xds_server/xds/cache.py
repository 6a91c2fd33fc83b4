"""The snapshot cache: per node group, the Envoy resources every stream of that group is served.

Each resource is serialized once, when its snapshot is built (or by the builder, which hands its
bytes over with it); its version is a hash of those bytes, so the same configuration yields the
same versions on every replica and after a restart.
Streams never copy resources: they read the shared ``Resource`` objects and send their bytes.

The cache knows nothing about streams. A stream asks for its group's snapshot and registers a
callback that the cache calls (with no arguments) whenever that group's snapshot changes.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import operator
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from itertools import compress, count, islice, repeat
from types import MappingProxyType
from typing import NamedTuple, Protocol, runtime_checkable

from envoy.config.cluster.v3.cluster_pb2 import Cluster
from envoy.config.listener.v3.listener_pb2 import Listener
from envoy.config.route.v3.scoped_route_pb2 import ScopedRouteConfiguration
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from google.protobuf.any_pb2 import Any
from google.protobuf.message import Message

log = logging.getLogger(__name__)

TYPE_PREFIX = "type.googleapis.com/"
CLUSTER = TYPE_PREFIX + "envoy.config.cluster.v3.Cluster"
ENDPOINT = TYPE_PREFIX + "envoy.config.endpoint.v3.ClusterLoadAssignment"
LISTENER = TYPE_PREFIX + "envoy.config.listener.v3.Listener"
ROUTE = TYPE_PREFIX + "envoy.config.route.v3.RouteConfiguration"
SCOPED_ROUTE = TYPE_PREFIX + "envoy.config.route.v3.ScopedRouteConfiguration"

# The order in which a stream pushes types: a cluster before its endpoints, a listener before
# its scopes and routes, a scope before the route configuration it names, clusters before the
# listeners that route to them.
PUSH_ORDER: tuple[str, ...] = (CLUSTER, ENDPOINT, LISTENER, SCOPED_ROUTE, ROUTE)
# Types whose state-of-the-world responses may leave out what did not change: a client takes
# a resource of these left out of a response as unchanged, but takes the resources of the other
# types (Listener, Cluster, ScopedRouteConfiguration) in a response as all there are.
CHANGES_ONLY_TYPES = frozenset({ENDPOINT, ROUTE})

_HCM_TYPE = TYPE_PREFIX + hcm_pb2.HttpConnectionManager.DESCRIPTOR.full_name
_NO_REFERENCES: frozenset[str] = frozenset()


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low = value & 0x7F
        value >>= 7
        if value:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def length_delimited(field_number: int, payload: bytes) -> bytes:
    """One protobuf length-delimited field (string, bytes or message) in wire format."""
    return _varint(field_number << 3 | 2) + _varint(len(payload)) + payload


def short_hash(data: bytes) -> str:
    """The first 16 hex digits of the SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()[:16]


@dataclass(frozen=True)
class Resource:
    """One serialized resource; ``version`` is the hash of ``body``."""

    type_url: str
    name: str
    version: str
    body: bytes

    @cached_property
    def any_bytes(self) -> bytes:
        """The resource wrapped in a ``google.protobuf.Any``, serialized."""
        return length_delimited(1, self.type_url.encode()) + length_delimited(2, self.body)

    @cached_property
    def sotw_entry(self) -> bytes:
        """The resource as one ``DiscoveryResponse.resources`` field."""
        return length_delimited(2, self.any_bytes)

    @cached_property
    def delta_entry(self) -> bytes:
        """The resource as one ``DeltaDiscoveryResponse.resources`` field."""
        inner = (
            length_delimited(1, self.version.encode())
            + length_delimited(2, self.any_bytes)
            + length_delimited(3, self.name.encode())
        )
        return length_delimited(2, inner)

    @cached_property
    def digest(self) -> int:
        """A number from the name and version (see `set_digest`)."""
        data = hashlib.sha256(f"{self.name}\0{self.version}".encode()).digest()
        return int.from_bytes(data[:8], "big")

    def as_any(self) -> Any:
        """The resource as a parsed ``Any`` (for debug output, never on the hot path)."""
        return Any(type_url=self.type_url, value=self.body)


DIGEST_MODULUS = 1 << 64


def set_digest(resources: Iterable[Resource]) -> int:
    """An order-free digest of a set of resources: the sum of their digests (so a set that
    differs from another in a few resources has its digest from the other's in as many steps)."""
    return sum(r.digest for r in resources) % DIGEST_MODULUS


def digest_version(digest: int) -> str:
    return f"{digest:016x}"


def set_version(resources: Iterable[Resource]) -> str:
    """The version of a set of resources, from their names and versions, order-free."""
    return digest_version(set_digest(resources))


@dataclass(frozen=True)
class Selection:
    """The resources a subscription selects from one type, ready to send."""

    resources: tuple[Resource, ...]
    version: str
    # What changed since another selection (by its version: equal versions, equal resources),
    # for the last few asked (see `changed_since`).
    _changes: dict[str, Changes] = field(default_factory=dict, compare=False, repr=False)

    @cached_property
    def sotw_entries(self) -> bytes:
        """Every resource as ``DiscoveryResponse.resources`` fields (joined once, when first
        needed: a stream that sends only what changed never needs them)."""
        return b"".join(r.sotw_entry for r in self.resources)

    def changed_since(self, before: Selection) -> Changes:
        """The resources of this selection that ``before`` does not hold as they are now (new,
        or another version), as response entries, and the names ``before`` has that this one
        has not: what a client that took ``before`` needs to hold this selection, where leaving
        a resource out means "unchanged" (delta xDS; EDS and RDS in the state-of-the-world
        protocol). Streams that took the same selection share one."""
        held = self._changes.get(before.version)
        if held is not None:
            return held
        old, new = before.resources, self.resources
        if len(old) == len(new):  # mostly the same names: compare in place
            at = list(compress(count(), map(operator.is_not, old, new)))
            if all(old[i].name == new[i].name for i in at):
                changed = tuple(new[i] for i in at if new[i].version != old[i].version)
                return self._keep(before, changed, ())
        versions = {r.name: r.version for r in old}
        changed = tuple(r for r in new if versions.get(r.name) != r.version)
        names = {r.name for r in new}
        return self._keep(before, changed, tuple(sorted(n for n in versions if n not in names)))

    def _keep(
        self, before: Selection, changed: tuple[Resource, ...], removed: tuple[str, ...]
    ) -> Changes:
        found = Changes(changed, b"".join(r.sotw_entry for r in changed), removed)
        if len(self._changes) >= _CHANGES_KEPT:
            self._changes.clear()
        self._changes[before.version] = found
        return found


class Changes(NamedTuple):
    """Resources that changed (with their response entries), and the names that are gone."""

    resources: tuple[Resource, ...]
    sotw_entries: bytes
    removed: tuple[str, ...]


_CHANGES_KEPT = 8


_SELECTIONS_KEPT = 64
_SORTED_KEPT = 64
_sorted_names: dict[int, tuple[frozenset[str], tuple[str, ...]]] = {}


def _sorted(names: frozenset[str]) -> tuple[str, ...]:
    """``names`` in order, sorted once per set (streams share their name sets, and a new
    snapshot selects the same names again)."""
    held = _sorted_names.get(id(names))
    if held is None or held[0] is not names:
        if len(_sorted_names) >= _SORTED_KEPT:
            _sorted_names.clear()
        held = _sorted_names[id(names)] = (names, tuple(sorted(names)))
    return held[1]


@dataclass(frozen=True)
class TypeResources:
    """All resources of one type in a snapshot, by name, with the version of the whole set."""

    type_url: str
    by_name: Mapping[str, Resource]
    version: str
    digest: int = field(default=-1, compare=False, repr=False)  # see `set_digest`; -1: unknown
    # Selections already computed, so streams subscribing to the same names share one.
    _selections: dict[frozenset[str], Selection] = field(
        default_factory=dict, compare=False, repr=False
    )

    def select(self, names: frozenset[str] | None) -> Selection:
        """The resources named in ``names`` (every resource for None), ordered by name."""
        if names is None:
            return self.everything
        found = self._selections.get(names)
        if found is None:
            by_name = self.by_name
            chosen = tuple(by_name[n] for n in _sorted(names) if n in by_name)
            found = Selection(chosen, set_version(chosen))
            if len(self._selections) >= _SELECTIONS_KEPT:
                self._selections.clear()
            self._selections[names] = found
        return found

    @cached_property
    def resources(self) -> tuple[Resource, ...]:
        """Every resource, ordered by name."""
        return tuple(self.by_name.values())

    @cached_property
    def everything(self) -> Selection:
        """Every resource, as a selection."""
        return Selection(self.resources, self.version)

    @property
    def sotw_entries(self) -> bytes:
        """Every resource as ``DiscoveryResponse.resources`` fields, joined once per snapshot."""
        return self.everything.sotw_entries


@dataclass(frozen=True)
class Snapshot:
    """Everything a node group is served, per type URL.

    ``eds_references`` and ``rds_references`` are the ClusterLoadAssignment names the clusters
    need and the RouteConfiguration names the listeners and scopes need; the cache publishes a
    snapshot only when they all exist.
    """

    types: Mapping[str, TypeResources]
    eds_references: frozenset[str] = field(default_factory=frozenset)
    rds_references: frozenset[str] = field(default_factory=frozenset)

    def of_type(self, type_url: str) -> TypeResources:
        """The resources of ``type_url`` (an empty set when the snapshot has none)."""
        found = self.types.get(type_url)
        if found is None:
            return TypeResources(type_url, MappingProxyType({}), set_version(()))
        return found

    @property
    def versions(self) -> dict[str, str]:
        """Version per type URL."""
        return {url: t.version for url, t in self.types.items()}


def resource_name(message: Message) -> str:
    """The xDS name of a resource: its ``name``, or ``cluster_name`` for a load assignment."""
    message_type = type(message)
    field_name = _NAME_FIELDS.get(message_type)
    if field_name is None:
        fields = message_type.DESCRIPTOR.fields_by_name
        field_name = next((f for f in ("name", "cluster_name") if f in fields), None)
        if field_name is None:
            raise ValueError(f"{message_type.DESCRIPTOR.full_name} has no name field")
        _NAME_FIELDS[message_type] = field_name
    return str(getattr(message, field_name))


_NAME_FIELDS: dict[type[Message], str] = {}


def _eds_name(cluster: Cluster) -> str | None:
    if cluster.WhichOneof("cluster_discovery_type") != "type" or cluster.type != Cluster.EDS:
        return None
    return str(cluster.eds_cluster_config.service_name or cluster.name)


def _route_names(listener: Listener) -> frozenset[str]:
    if listener.HasField("api_listener"):
        config = listener.api_listener.api_listener
        return _rds_names(config.value) if config.type_url == _HCM_TYPE else _NO_REFERENCES
    names: set[str] = set()
    for chain in [*listener.filter_chains, listener.default_filter_chain]:
        for f in chain.filters:
            if f.typed_config.type_url == _HCM_TYPE:
                names |= _rds_names(f.typed_config.value)
    return frozenset(names)


@functools.lru_cache(maxsize=4096)
def _rds_names(hcm_bytes: bytes) -> frozenset[str]:
    """The RDS name of a serialized HttpConnectionManager (many listeners share one config)."""
    hcm = hcm_pb2.HttpConnectionManager.FromString(hcm_bytes)
    if hcm.WhichOneof("route_specifier") == "rds":
        return frozenset((hcm.rds.route_config_name,))
    return frozenset()


class _Prepared(NamedTuple):
    """A message serialized, with the names it refers to (EDS for a cluster, RDS for a listener)."""

    message: Message
    resource: Resource
    references: frozenset[str]


def _references(message: Message) -> frozenset[str]:
    if isinstance(message, Cluster):
        eds_name = _eds_name(message)
        return frozenset((eds_name,)) if eds_name is not None else _NO_REFERENCES
    if isinstance(message, Listener):
        return _route_names(message)
    if isinstance(message, ScopedRouteConfiguration) and message.route_configuration_name:
        return frozenset((message.route_configuration_name,))
    return _NO_REFERENCES


def _prepare(type_url: str, message: Message) -> _Prepared:
    actual = _type_url(type(message))
    if actual != type_url:
        raise ValueError(f"a {actual} listed under {type_url}")
    body = message.SerializeToString(deterministic=True)
    resource = Resource(type_url, resource_name(message), short_hash(body), body)
    return _Prepared(message, resource, _references(message))


_TYPE_URLS: dict[type[Message], str] = {}


def _type_url(message_type: type[Message]) -> str:
    url = _TYPE_URLS.get(message_type)
    if url is None:
        url = _TYPE_URLS[message_type] = TYPE_PREFIX + message_type.DESCRIPTOR.full_name
    return url


@dataclass(frozen=True)
class _TypeSet:
    """The resources of one type made from one tuple of messages, and what they refer to."""

    messages: object  # the very tuple handed in, to know it again
    resources: TypeResources
    references: frozenset[str]
    prepared: Mapping[int, _Prepared]  # by id of the message


@runtime_checkable
class EncodedMessages(Protocol):
    """Messages that come with their encoding (the translators' ``Built``): for the message at
    each index, its name and canonical bytes; the names of the resources they refer to."""

    type_url: str
    names: Sequence[str]
    bodies: Sequence[bytes]
    references: frozenset[str]


def _sorted_set(
    type_url: str,
    messages: object,
    by_name: dict[str, Resource],
    references: frozenset[str],
    prepared: Mapping[int, _Prepared],
    *,
    digest: int | None = None,
) -> _TypeSet:
    """A set of resources ordered by name (``digest``: theirs, when known)."""
    if digest is None:  # else they come in the order of a set that was sorted
        names = list(by_name)
        if not all(map(operator.lt, names, islice(names, 1, None))):  # builders sort them
            by_name = dict(sorted(by_name.items()))
        digest = set_digest(by_name.values())
    version = digest_version(digest)
    resources = TypeResources(type_url, MappingProxyType(by_name), version, digest)
    return _TypeSet(messages, resources, references, prepared)


def _copied(by_name: Mapping[str, Resource]) -> dict[str, Resource]:
    """A dict of ``by_name`` (a read-only view of a dict is copied as a dict is: at once)."""
    if isinstance(by_name, MappingProxyType):
        copied: dict[str, Resource] = by_name.copy()
        return copied
    return dict(by_name)


class Serializer:
    """Serializes each message object once: across the groups of one publish, and across
    versions for as long as the builder hands back the very same message objects.

    A tuple of messages handed in again (groups share their clusters and load assignments) yields
    the very same ``TypeResources``, without looking at its messages again. A tuple that comes
    encoded (``EncodedMessages``) is not serialized again: its bytes are only hashed.
    ``end_round()`` after a publish forgets what that publish did not use, so memory stays
    bounded by the live snapshots.
    """

    def __init__(self) -> None:
        self._held: dict[int, _Prepared] = {}
        self._used: dict[int, _Prepared] = {}
        self._sets_held: dict[tuple[str, int], _TypeSet] = {}
        self._sets_used: dict[tuple[str, int], _TypeSet] = {}
        # The resources of the sets held and used, by id of their bytes, per type URL (made when
        # first needed): the builder hands over the very same bytes for a resource it did not
        # build again.
        self._bodies: dict[str, dict[int, Resource]] = {}
        self.serialized = 0  # resources serialized or hashed so far (for tests and benchmarks)

    def prepare(self, type_url: str, message: Message) -> _Prepared:
        key = id(message)
        found = self._used.get(key) or self._held.get(key)
        if found is None or found.message is not message or found.resource.type_url != type_url:
            found = _prepare(type_url, message)
            self.serialized += 1
        self._used[key] = found
        return found

    def type_set(self, type_url: str, messages: Sequence[Message]) -> _TypeSet:
        """The resources of ``messages`` (all of type ``type_url``; names unique)."""
        if not isinstance(messages, tuple):
            return self._type_set(type_url, messages)
        key = (type_url, id(messages))
        found = self._sets_used.get(key) or self._sets_held.get(key)
        if found is None or found.messages is not messages:
            if isinstance(messages, EncodedMessages):
                found = self._encoded_set(type_url, messages)
            else:
                found = self._type_set(type_url, messages)
        else:
            self._used.update(found.prepared)
        if key not in self._sets_used:
            self._sets_used[key] = found
        return found

    def _type_set(self, type_url: str, messages: Sequence[Message]) -> _TypeSet:
        by_name: dict[str, Resource] = {}
        prepared: dict[int, _Prepared] = {}
        references: set[str] = set()
        for message in messages:
            found = self.prepare(type_url, message)
            name = found.resource.name
            if name in by_name:
                raise ValueError(f"two {type_url} resources named {name!r}")
            by_name[name] = found.resource
            prepared[id(message)] = found
            references.update(found.references)
        return _sorted_set(type_url, tuple(messages), by_name, frozenset(references), prepared)

    def _encoded_set(self, type_url: str, messages: EncodedMessages) -> _TypeSet:
        if messages.type_url != type_url:
            raise ValueError(f"{messages.type_url} resources listed under {type_url}")
        spliced = self._spliced_set(type_url, messages)
        if spliced is not None:
            return spliced
        names, bodies = messages.names, messages.bodies
        known = self._known_bodies(type_url)
        if known:  # keep the resources whose very bytes are handed over again
            made = []
            for name, body in zip(names, bodies, strict=True):
                found = known.get(id(body))
                if found is None or found.body is not body or found.name != name:
                    found = Resource(type_url, name, short_hash(body), body)
                    self.serialized += 1
                made.append(found)
        else:
            made = list(map(Resource, repeat(type_url), names, map(short_hash, bodies), bodies))
            self.serialized += len(made)
        by_name = dict(zip(names, made, strict=True))
        if len(by_name) != len(names):
            twice = next(name for name, count in Counter(names).items() if count > 1)
            raise ValueError(f"two {type_url} resources named {twice!r}")
        found_set = _sorted_set(type_url, messages, by_name, messages.references, {})
        self._remember_bodies(type_url, found_set.resources.by_name.values())
        return found_set

    def _spliced_set(self, type_url: str, messages: EncodedMessages) -> _TypeSet | None:
        """The resources of ``messages`` from those of a set held or used that has the very
        same names (a builder that rewrote a few resources hands them over so): only the bytes
        that are not the very same are hashed, and the set's digest follows them."""
        names = messages.names
        # A builder's hint: the earlier messages, and the indices it wrote again in them.
        hint: tuple[object, Sequence[int]] | None = getattr(messages, "spliced_from", None)
        before = None
        if hint is not None:
            key = (type_url, id(hint[0]))
            before = self._sets_used.get(key) or self._sets_held.get(key)
            if before is not None and before.messages is not hint[0]:
                before = None
        if before is None:
            hint = None
            before = next(
                (
                    held
                    for sets in (self._sets_used, self._sets_held)
                    for (url, _), held in sets.items()
                    if url == type_url and getattr(held.messages, "names", None) is names
                ),
                None,
            )
        if before is None or before.resources.digest < 0:
            return None
        previous: EncodedMessages = before.messages  # type: ignore[assignment]
        if previous.names is not names:
            return None
        by_name = _copied(before.resources.by_name)
        digest = before.resources.digest
        made = []
        bodies = messages.bodies
        rewritten = (
            hint[1]
            if hint is not None
            else compress(count(), map(operator.is_not, previous.bodies, bodies))
        )
        for at in rewritten:
            if previous.bodies[at] is bodies[at]:
                continue
            name, body = names[at], bodies[at]
            old = by_name[name]
            new = Resource(type_url, name, short_hash(body), body)
            self.serialized += 1
            by_name[name] = new
            digest += new.digest - old.digest
            made.append(new)
        self._remember_bodies(type_url, made)
        return _sorted_set(
            type_url, messages, by_name, messages.references, {}, digest=digest % DIGEST_MODULUS
        )

    def _known_bodies(self, type_url: str) -> dict[int, Resource]:
        """The resources of this type's sets held and used, by id of their bytes."""
        known = self._bodies.get(type_url)
        if known is None:
            known = self._bodies[type_url] = {
                id(resource.body): resource
                for sets in (self._sets_held, self._sets_used)
                for (url, _), held in sets.items()
                if url == type_url
                for resource in held.resources.by_name.values()
            }
        return known

    def _remember_bodies(self, type_url: str, resources: Iterable[Resource]) -> None:
        known = self._bodies.get(type_url)
        if known is not None:
            known.update((id(resource.body), resource) for resource in resources)

    def retain(self, snapshots: Iterable[Snapshot | None]) -> None:
        """Forget every resource set (and message, and body) that none of ``snapshots`` holds:
        what was made for a group that is gone."""
        live = {id(t) for s in snapshots if s is not None for t in s.types.values()}
        kept: set[int] = set()
        for sets in (self._sets_held, self._sets_used):
            for key, found in list(sets.items()):
                if id(found.resources) in live:
                    kept.update(found.prepared)
                else:
                    del sets[key]
        for messages in (self._held, self._used):
            for message_id in [i for i in messages if i not in kept]:
                del messages[message_id]
        self._bodies = {}

    def end_round(self) -> None:
        self._held, self._used = self._used, {}
        self._sets_held, self._sets_used = self._sets_used, {}
        self._bodies = {}  # made again when needed, from the sets still held


def snapshot_from_messages(
    resources: Mapping[str, Sequence[Message]], serializer: Serializer | None = None
) -> Snapshot:
    """Serialize every message (once, with a shared ``serializer``) and build a snapshot.

    Keys are type URLs; every message must be of its key's type. Names must be unique per type.
    """
    serializer = serializer or Serializer()
    types: dict[str, TypeResources] = {}
    eds: frozenset[str] = _NO_REFERENCES
    rds: frozenset[str] = _NO_REFERENCES
    for type_url, messages in resources.items():
        found = serializer.type_set(type_url, messages)
        types[type_url] = found.resources
        if type_url == CLUSTER:
            eds = found.references
        elif type_url in (LISTENER, SCOPED_ROUTE):
            rds = rds | found.references
    return Snapshot(MappingProxyType(types), eds, rds)


def _listing(names: list[str], shown: int = 5) -> str:
    more = len(names) - shown
    return ", ".join(names[:shown]) + (f" and {more} more" if more > 0 else "")


def inconsistency(snapshot: Snapshot) -> str | None:
    """Why ``snapshot`` cannot be served, or None when every reference resolves."""
    eds = snapshot.eds_references
    if eds and not eds <= snapshot.of_type(ENDPOINT).by_name.keys():
        missing_eds = sorted(eds - snapshot.of_type(ENDPOINT).by_name.keys())
        return f"clusters reference missing endpoints: {_listing(missing_eds)}"
    rds = snapshot.rds_references
    if rds and not rds <= snapshot.of_type(ROUTE).by_name.keys():
        missing_rds = sorted(rds - snapshot.of_type(ROUTE).by_name.keys())
        return f"listeners or scopes reference missing routes: {_listing(missing_rds)}"
    return None


def _versions_differ(before: Snapshot, after: Snapshot) -> bool:
    """Whether some type's resources differ (same version means same resources: versions are
    content hashes), without looking at the resources."""
    if before.types.keys() != after.types.keys():
        return True
    for type_url, resources in after.types.items():
        previous = before.types[type_url]
        if previous is not resources and previous.version != resources.version:
            return True
    return False


Watcher = Callable[[], None]

DEFAULT_MAX_GROUPS = 100
DEFAULT_GROUP_GRACE_S = 60.0


class GroupLimitError(Exception):
    """A node asked for a group the cache may not create: ``max_groups`` are held already."""

    def __init__(self, group: str, limit: int) -> None:
        super().__init__(
            f"node group limit reached: {limit} groups are in use (max groups {limit});"
            f" group {group!r} was not created"
        )
        self.group = group
        self.limit = limit


class SnapshotCache:
    """The last good snapshot per node group, and who to tell when one changes.

    Use from one event loop thread. ``on_group_requested`` is called once for every group a
    node asks for that has never had a snapshot, so the wiring can build it.

    Clients decide which groups exist (a node's metadata names its group), so groups are
    bounded: at most ``max_groups`` are in use at once (a watch that would create one more
    raises ``GroupLimitError``), and a group that no watcher holds any more is dropped
    ``group_grace`` seconds later — its snapshot and everything kept for it — unless a watcher
    came back meanwhile (a proxy reconnecting finds its snapshot). ``on_group_dropped`` is called
    with each dropped group, so the wiring can forget what it built for it. Without a running
    event loop to time the grace period, an unheld group is dropped at once if the grace is 0
    and kept otherwise.

    The cache also keeps, per group, the listener names its streams subscribe to by name
    (proxyless gRPC clients ask for the listener of each target they dial), counting the streams
    that hold each; ``on_listeners_requested`` is called with the group whenever a name is new to
    it, so the wiring can build those listeners. A name no stream holds any more is kept (a
    client that reconnects finds its listener built) among the ``RELEASED_NAMES_KEPT`` released
    last, so what clients ask for cannot grow the set without bound.
    """

    RELEASED_NAMES_KEPT = 10_000

    def __init__(
        self,
        on_group_requested: Callable[[str], None] | None = None,
        on_listeners_requested: Callable[[str], None] | None = None,
        *,
        max_groups: int = DEFAULT_MAX_GROUPS,
        group_grace: float = DEFAULT_GROUP_GRACE_S,
        on_group_dropped: Callable[[str], None] | None = None,
    ) -> None:
        self._snapshots: dict[str, Snapshot] = {}
        self._watchers: dict[str, set[Watcher]] = {}
        self._requested: set[str] = set()
        self._listener_holders: dict[str, Counter[str]] = {}  # group -> name -> streams
        self._listeners_released: dict[str, OrderedDict[str, None]] = {}  # oldest first
        self._on_group_requested = on_group_requested
        self._on_listeners_requested = on_listeners_requested
        self._on_group_dropped = on_group_dropped
        self.max_groups = max_groups
        self.group_grace = group_grace
        self._drops: dict[str, asyncio.TimerHandle] = {}  # unheld groups waiting out the grace
        self.rejections: dict[str, str] = {}

    def set_snapshot(self, group: str, snapshot: Snapshot) -> bool:
        """Publish ``snapshot`` for ``group`` if it is consistent; return whether it was.

        An inconsistent snapshot is logged and recorded in ``rejections``; the last good one
        keeps serving.
        """
        reason = inconsistency(snapshot)
        if reason is not None:
            log.error("snapshot for %s refused, keeping the last good one: %s", group, reason)
            self.rejections[group] = reason
            return False
        self.rejections.pop(group, None)
        previous = self._snapshots.get(group)
        self._snapshots[group] = snapshot
        if previous is None or _versions_differ(previous, snapshot):
            for notify in list(self._watchers.get(group, ())):
                notify()
        return True

    def snapshot(self, group: str) -> Snapshot | None:
        """The snapshot served to ``group``, or None before the first one."""
        return self._snapshots.get(group)

    def groups(self) -> list[str]:
        """Groups that have a snapshot."""
        return sorted(self._snapshots)

    def groups_requested(self) -> frozenset[str]:
        """Every group some node has asked for."""
        return frozenset(self._requested)

    def watch(self, group: str, notify: Watcher) -> Callable[[], None]:
        """Call ``notify`` whenever ``group``'s snapshot changes; returns the way to stop.

        Raises ``GroupLimitError`` for a group new to the cache while ``max_groups`` groups
        are in use.
        """
        if group not in self._requested:
            if len(self._requested) >= self.max_groups:
                raise GroupLimitError(group, self.max_groups)
            self._requested.add(group)
            if group not in self._snapshots and self._on_group_requested is not None:
                self._on_group_requested(group)
        pending = self._drops.pop(group, None)
        if pending is not None:
            pending.cancel()
        watchers = self._watchers.setdefault(group, set())
        watchers.add(notify)
        return lambda: self._unwatch(group, notify)

    def _unwatch(self, group: str, notify: Watcher) -> None:
        watchers = self._watchers.get(group)
        if watchers is None or notify not in watchers:
            return
        watchers.discard(notify)
        if watchers or group in self._drops:
            return
        if self.group_grace <= 0:
            self._drop(group)
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # nothing to time the grace period with: keep the group
        self._drops[group] = loop.call_later(self.group_grace, self._drop, group)

    def _drop(self, group: str) -> None:
        """Forget ``group``, which no watcher holds, and everything kept for it."""
        self._drops.pop(group, None)
        if self._watchers.get(group):
            return
        self._watchers.pop(group, None)
        self._snapshots.pop(group, None)
        self._requested.discard(group)
        self._listener_holders.pop(group, None)
        self._listeners_released.pop(group, None)
        self.rejections.pop(group, None)
        log.info("dropped node group %s: no stream held it for %gs", group, self.group_grace)
        if self._on_group_dropped is not None:
            self._on_group_dropped(group)

    def groups_in_use(self) -> int:
        """How many groups count against ``max_groups`` (held, or in their grace period)."""
        return len(self._requested)

    def subscribed(
        self, group: str, type_url: str, added: Iterable[str], removed: Iterable[str] = ()
    ) -> None:
        """Note that one stream of ``group`` now also holds ``added`` names of ``type_url`` and
        no longer holds ``removed`` ones (only listener names are kept)."""
        if type_url != LISTENER:
            return
        holders = self._listener_holders.setdefault(group, Counter())
        released = self._listeners_released.setdefault(group, OrderedDict())
        fresh = False
        for name in added:
            if not holders[name] and released.pop(name, True) is True:
                fresh = True  # neither held nor released earlier
            holders[name] += 1
        for name in removed:
            count = holders.pop(name, 0)
            if count > 1:
                holders[name] = count - 1
            elif count == 1:
                released[name] = None
                if len(released) > self.RELEASED_NAMES_KEPT:
                    released.popitem(last=False)
        if fresh and self._on_listeners_requested is not None:
            self._on_listeners_requested(group)

    def listener_names(self, group: str) -> frozenset[str]:
        """The listener names streams of ``group`` hold, and the ones released last."""
        return frozenset(self._listener_holders.get(group, ())).union(
            self._listeners_released.get(group, ())
        )
