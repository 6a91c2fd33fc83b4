"""Envoy resource type URLs, deterministic serialization and content versions, and the encoded
form in which builders hand over the resources they make.

Builders that make resources by the ten thousand write their bytes directly (protobuf wire
format, fields in number order, as deterministic serialization writes them) and parse each
message from its bytes. A ``Built`` tuple carries, next to its messages, each one's name, bytes
and what they refer to, so that the server's serializer does not derive them again. The
serializer reads that shape by its attributes (the cache does not import the translators).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from typing import TypeVar

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import Message

TYPE_PREFIX = "type.googleapis.com/"
CLUSTER = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
ENDPOINT = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
LISTENER = "type.googleapis.com/envoy.config.listener.v3.Listener"
ROUTE = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
SCOPED_ROUTE = "type.googleapis.com/envoy.config.route.v3.ScopedRouteConfiguration"

# The order in which a snapshot is pushed: CDS, EDS, LDS, SRDS, RDS.
PUSH_ORDER = (CLUSTER, ENDPOINT, LISTENER, SCOPED_ROUTE, ROUTE)

NO_REFERENCES: frozenset[str] = frozenset()

M = TypeVar("M", bound=Message)


def serialize(message: Message) -> bytes:
    """The canonical bytes of a resource: equal messages give equal bytes."""
    return message.SerializeToString(deterministic=True)


def content_version(data: bytes) -> str:
    """A short content hash: the same bytes give the same version on every replica."""
    return hashlib.sha256(data).hexdigest()[:16]


def resource_name(message: Message) -> str:
    """The xDS name of a resource (``cluster_name`` for a load assignment, else ``name``)."""
    name: str = getattr(message, "cluster_name", "") or getattr(message, "name", "")
    return name


def type_url(message_type: type[Message]) -> str:
    """The type URL of a message type (``type.googleapis.com/<full name>``)."""
    return TYPE_PREFIX + message_type.DESCRIPTOR.full_name


class Built(tuple[M, ...]):
    """Resources of one type as a builder hands them over: the messages, and for the message at
    each index its xDS name and canonical bytes, from which it was parsed (so a message and its
    bytes cannot disagree); ``references`` are the names of the resources they need (the load
    assignments of clusters, the route tables of listeners).

    The messages are shared (by groups, and with later builds) and are not to be changed: the
    serializer takes their bytes. A tuple made from them (with one more message, say) is a
    plain tuple, which the serializer serializes itself."""

    message_type: type[M]
    type_url: str
    names: tuple[str, ...]
    bodies: tuple[bytes, ...]
    references: frozenset[str]
    # (an earlier build, the indices rewritten in it): this build is that one with only those
    # resources written again; a hint for the serializer, which then hashes those alone
    spliced_from: tuple[Built[M], tuple[int, ...]] | None

    def __new__(
        cls,
        message_type: type[M],
        names: Iterable[str],
        bodies: Iterable[bytes],
        references: frozenset[str] = NO_REFERENCES,
        earlier: Built[M] | None = None,
    ) -> Built[M]:
        """``earlier``: resources built before, whose message is taken for each of their very
        bytes objects found in ``bodies`` instead of parsing them again."""
        held_names = tuple(names)
        held_bodies = tuple(bodies)
        if len(held_names) != len(held_bodies):
            raise ValueError(f"{len(held_names)} names for {len(held_bodies)} resources")
        if earlier is None or earlier.message_type is not message_type:
            messages = parse_all(message_type, held_bodies)
        else:
            messages = _reparse(message_type, held_bodies, earlier)
        out = super().__new__(cls, messages)
        out.message_type = message_type
        out.type_url = type_url(message_type)
        out.names = held_names
        out.bodies = held_bodies
        out.references = references
        out.spliced_from = None
        return out

    def __reduce__(self) -> tuple[object, ...]:
        return (Built, (self.message_type, self.names, self.bodies, self.references))

    @classmethod
    def assembled(
        cls,
        message_type: type[M],
        names: Sequence[str],
        bodies: Sequence[bytes],
        messages: Sequence[M],
        references: frozenset[str] = NO_REFERENCES,
    ) -> Built[M]:
        """Resources put together from others' (each message parsed from the bytes beside it),
        without parsing anything again."""
        if not len(names) == len(bodies) == len(messages):
            raise ValueError(f"{len(names)} names, {len(bodies)} bodies, {len(messages)} messages")
        out = super().__new__(cls, messages)
        out.message_type = message_type
        out.type_url = type_url(message_type)
        out.names = tuple(names)
        out.bodies = tuple(bodies)
        out.references = references
        out.spliced_from = None
        return out

    @classmethod
    def of(
        cls,
        message_type: type[M],
        messages: Iterable[M],
        references: frozenset[str] = NO_REFERENCES,
    ) -> Built[M]:
        """Messages built field by field (resources made a few at a time), encoded."""
        held = list(messages)
        return cls(message_type, map(resource_name, held), map(serialize, held), references)


def _reparse(message_type: type[M], bodies: Sequence[bytes], earlier: Built[M]) -> list[M]:
    # by id: ``earlier`` holds its bodies, so no other bytes object can have the same id
    known = {id(body): message for body, message in zip(earlier.bodies, earlier, strict=True)}
    parsed = iter(parse_all(message_type, [b for b in bodies if id(b) not in known]))
    return [known[id(b)] if id(b) in known else next(parsed) for b in bodies]


def parse_all(message_type: type[M], bodies: Sequence[bytes]) -> list[M]:
    """Messages parsed from their bytes, all at once: as the elements of one message with a
    repeated field of ``message_type``, which costs a third of parsing them one by one."""
    if len(bodies) < 2:
        return [message_type.FromString(body) for body in bodies]
    prefixes = _ITEMS
    framed = b"".join([part for body in bodies for part in (prefixes[len(body)], body)])
    batch = _batch_type(message_type).FromString(framed)
    items: list[M] = list(batch.items)  # type: ignore[attr-defined]
    return items


_BATCH_PACKAGE = "splitplane.batch"
_BATCH_TYPES: dict[type[Message], type[Message]] = {}


def _batch_type(message_type: type[Message]) -> type[Message]:
    """A message type with one field, ``repeated <message_type> items = 1``, made once."""
    found = _BATCH_TYPES.get(message_type)
    if found is not None:
        return found
    descriptor = message_type.DESCRIPTOR
    name = descriptor.full_name.replace(".", "_")
    proto = descriptor_pb2.FileDescriptorProto(
        name=f"{_BATCH_PACKAGE.replace('.', '/')}/{name}.proto",
        package=_BATCH_PACKAGE,
        dependency=[descriptor.file.name],
        syntax="proto3",
    )
    proto.message_type.add(name=name).field.add(
        name="items",
        number=1,
        label=descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED,
        type=descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE,
        type_name=f".{descriptor.full_name}",
    )
    pool = descriptor_pool.Default()
    pool.AddSerializedFile(proto.SerializeToString())
    found = message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{_BATCH_PACKAGE}.{name}"))
    _BATCH_TYPES[message_type] = found
    return found


# ------------------------------------------------------------------------------------------------
# Wire format: what deterministic serialization writes, for builders that write bytes directly.
# Fields are written in field number order; proto3 scalars at their default are left out, a
# message field that is set is written even when empty.

_SMALL = [bytes((value,)) for value in range(0x80)]


def varint(value: int) -> bytes:
    """A non-negative integer as a protobuf varint."""
    if value < 0x80:
        return _SMALL[value]
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def length_delimited(number: int, payload: bytes) -> bytes:
    """A message, string or bytes field (``payload`` already encoded)."""
    size = len(payload)
    if number < 16:  # a one-byte tag, and in practice a length of one or two bytes
        if size < 0x80:
            return bytes((number << 3 | 2, size)) + payload
        if size < 0x4000:
            return bytes((number << 3 | 2, size & 0x7F | 0x80, size >> 7)) + payload
    return varint(number << 3 | 2) + varint(size) + payload


class LengthPrefixes(dict[int, bytes]):
    """The tag and length that start length-delimited field ``number``, by payload length:
    ``prefixes[len(payload)] + payload`` is ``length_delimited(number, payload)``, with the
    prefix of each length made once."""

    def __init__(self, number: int) -> None:
        super().__init__()
        self.tag = varint(number << 3 | 2)

    def __missing__(self, size: int) -> bytes:
        prefix = self[size] = self.tag + varint(size)
        return prefix


_ITEMS = LengthPrefixes(1)  # the repeated field of parse_all's batches


def repeated_string_field(number: int, texts: Iterable[str]) -> bytes:
    """A repeated string field: every element, empty ones too."""
    tag = varint(number << 3 | 2)
    out = []
    for text in texts:
        data = text.encode()
        size = len(data)
        out.append(tag + (_SMALL[size] if size < 0x80 else varint(size)) + data)
    return b"".join(out)


def string_field(number: int, text: str) -> bytes:
    """A proto3 string field (nothing when empty)."""
    return length_delimited(number, text.encode()) if text else b""


def varint_field(number: int, value: int) -> bytes:
    """A proto3 integer, enum or bool field (nothing when 0)."""
    return varint(number << 3) + varint(value) if value else b""


def fields_around(message: Message, number: int) -> tuple[bytes, bytes]:
    """The canonical bytes of the fields of ``message`` numbered below ``number``, and above.

    A builder that varies one field of a template writes the template's other fields from these.
    """
    before = type(message)()
    after = type(message)()
    before.CopyFrom(message)
    after.CopyFrom(message)
    for descriptor, _ in message.ListFields():
        if descriptor.number >= number:
            before.ClearField(descriptor.name)
        if descriptor.number <= number:
            after.ClearField(descriptor.name)
    return serialize(before), serialize(after)
