"""Strict parsing of VirtualService, DestinationRule and Sidecar objects into the API messages.

The parser walks the plain data (as YAML or the Kubernetes API gives it) against the message
descriptors itself, so every problem becomes a diagnostic with the exact field path
(``spec.http[0].route[1].weight``) instead of an exception. It accepts JSON names (``exportTo``)
and, like protobuf JSON, proto names (``export_to``); ``null`` means "not set", as for the API
server. Istio fields splitplane does not implement are a warning and are ignored. Errors are
collected, not stopped at, and any error makes the object invalid (``None``).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import difflib
import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum
from fractions import Fraction
from functools import cache
from typing import Final, NamedTuple, NoReturn, TypeGuard, TypeVar

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.duration_pb2 import Duration
from google.protobuf.message import Message

from translators.api import DURATION_PATTERN, DURATION_UNITS, UNSUPPORTED_ISTIO_FIELDS
from translators.api.networking_pb2 import DestinationRule, Sidecar, VirtualService
from translators.diagnostics import Diagnostic, Severity
from translators.objects import is_mapping

M = TypeVar("M", bound=Message)

API_GROUP: Final = "networking.istio.io"
API_VERSIONS: Final = ("v1alpha3", "v1beta1", "v1")
DEFAULT_NAMESPACE: Final = "default"
OBJECT_FIELDS: Final = frozenset({"apiVersion", "kind", "metadata", "spec", "status"})

UNSUPPORTED_MESSAGE: Final = "not supported by splitplane; ignored"
_API_VERSIONS: Final = tuple(f"{API_GROUP}/{version}" for version in API_VERSIONS)

_DURATION: Final = re.compile(DURATION_PATTERN)
_DURATION_PART: Final = re.compile(r"([0-9.]+)([^0-9.]+)")
_DURATION_EXAMPLES: Final = '"2s", "0.5s", "100ms" or "1m30s"'
_MAX_DURATION_TEXT: Final = 64
# google.protobuf.Duration covers about ±10,000 years.
_MAX_DURATION_NANOS: Final = 315_576_000_000 * 10**9 + 999_999_999
_SHOWN_TEXT: Final = 60
_SUGGESTED_KEY_LENGTH: Final = 100
_SHOWN_INTEGER_BITS: Final = 256

_INTEGER_RANGES: Final[Mapping[int, tuple[str, int, int]]] = {
    FieldDescriptor.TYPE_INT32: ("int32", -(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SINT32: ("int32", -(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SFIXED32: ("int32", -(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_UINT32: ("uint32", 0, 2**32 - 1),
    FieldDescriptor.TYPE_FIXED32: ("uint32", 0, 2**32 - 1),
    FieldDescriptor.TYPE_INT64: ("int64", -(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SINT64: ("int64", -(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SFIXED64: ("int64", -(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT64: ("uint64", 0, 2**64 - 1),
    FieldDescriptor.TYPE_FIXED64: ("uint64", 0, 2**64 - 1),
}
_FLOAT32_MAX: Final = 3.4028234663852886e38
_WRAPPERS: Final = frozenset(
    f"google.protobuf.{name}Value"
    for name in ("Double", "Float", "Int64", "UInt64", "Int32", "UInt32", "Bool", "String", "Bytes")
)

Scalar = bool | int | float | str | bytes

# Lists whose null items Istio takes as empty messages: a null match matches every request.
_NULL_IS_EMPTY: Final = frozenset({"splitplane.networking.HTTPRoute.match"})


class _RejectedError(Exception):
    """A value that does not fit its field; the message says why."""


class _Shape(Enum):
    """How a field's value is read."""

    SCALAR = "scalar"
    MESSAGE = "message"
    REPEATED = "repeated"
    MAP = "map"


@dataclass(frozen=True, slots=True)
class _Field:
    """What the reader needs of one field, looked up once per message type."""

    descriptor: FieldDescriptor
    name: str
    shape: _Shape
    oneof: str | None
    value: FieldDescriptor  # the map entry's value field for a map, else the field itself


@dataclass(frozen=True, slots=True)
class _Fields:
    """How the keys of one message type are looked up."""

    by_key: Mapping[str, _Field]
    json_names: tuple[str, ...]
    unsupported: frozenset[str]
    is_duration: bool  # google.protobuf.Duration, written as a string such as "2s"
    wrapped: FieldDescriptor | None  # the value field of a wrapper type such as Int32Value


def _field(field: FieldDescriptor) -> _Field:
    message_type = field.message_type
    value = field
    if message_type is not None and message_type.GetOptions().map_entry:
        shape = _Shape.MAP
        value = message_type.fields_by_name["value"]
    elif field.is_repeated:
        shape = _Shape.REPEATED
    elif message_type is not None:
        shape = _Shape.MESSAGE
    else:
        shape = _Shape.SCALAR
    oneof = field.containing_oneof
    return _Field(field, field.name, shape, oneof.name if oneof is not None else None, value)


@cache
def _fields(descriptor: Descriptor) -> _Fields:
    by_key: dict[str, _Field] = {}
    for field in descriptor.fields:
        info = _field(field)
        by_key[field.name] = info
        by_key[field.json_name] = info
    full_name = descriptor.full_name
    return _Fields(
        by_key=by_key,
        json_names=tuple(field.json_name for field in descriptor.fields),
        unsupported=UNSUPPORTED_ISTIO_FIELDS.get(full_name, frozenset()),
        is_duration=full_name == "google.protobuf.Duration",
        wrapped=descriptor.fields_by_name["value"] if full_name in _WRAPPERS else None,
    )


class _Path(NamedTuple):
    """A field path below ``parent``, rendered only when a diagnostic names it."""

    parent: _Path | str
    key: str | int  # a field name, a map key or a list index
    is_map_key: bool = False

    def __str__(self) -> str:
        if isinstance(self.key, int):
            return f"{self.parent}[{self.key}]"
        if self.is_map_key:
            return f"{self.parent}[{_key_segment(self.key)}]"
        return f"{self.parent}.{_key_segment(self.key)}"


FieldPath = _Path | str


def _camel_case(name: str) -> str:
    return re.sub(r"_([a-z0-9])", lambda match: match.group(1).upper(), name)


def _shown_text(text: str) -> str:
    shown = text if len(text) <= _SHOWN_TEXT else text[:_SHOWN_TEXT] + "…"
    quoted = json.dumps(shown, ensure_ascii=False)
    try:
        quoted.encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(shown)
    return quoted


def describe(value: object) -> str:
    """A short description of a value for a message: ``string "ten"``, ``integer 5``, ``list``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, int):
        if value.bit_length() > _SHOWN_INTEGER_BITS:
            return f"integer of {value.bit_length()} bits"
        return f"integer {value}"
    if isinstance(value, float):
        return f"number {value!r}"
    if isinstance(value, str):
        return f"string {_shown_text(value)}"
    if is_mapping(value):
        return "object"
    if isinstance(value, list | tuple):
        return "list"
    return type(value).__name__


def _key_segment(key: str) -> str:
    """A key as it appears in a field path: shortened, and printable even when not Unicode."""
    shown = key if len(key) <= _SHOWN_TEXT else key[:_SHOWN_TEXT] + "…"
    return shown.encode("utf-8", "backslashreplace").decode("utf-8")


def _check_text(value: str) -> str:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as error:
        raise _RejectedError(f"{describe(value)} is not valid Unicode text") from error
    return value


def _folded(name: str) -> str:
    return name.lower().replace("_", "")


def _suggestion(key: str, candidates: tuple[str, ...]) -> str:
    if len(key) > _SUGGESTED_KEY_LENGTH:
        return ""
    folded = {_folded(candidate): candidate for candidate in candidates}
    match = folded.get(_folded(key))
    if match is None:
        close = difflib.get_close_matches(key, candidates, n=1, cutoff=0.6)
        match = close[0] if close else None
    return f'; did you mean "{match}"?' if match else ""


def _integer(field: FieldDescriptor, value: object) -> int:
    type_name, low, high = _INTEGER_RANGES[field.type]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _RejectedError(f"expected an integer, got {describe(value)}")
    if isinstance(value, float):
        if not math.isfinite(value) or not value.is_integer():
            raise _RejectedError(f"expected an integer, got {describe(value)}")
        value = int(value)
    if not low <= value <= high:
        raise _RejectedError(f"{describe(value)} is out of range for {type_name} ({low} to {high})")
    return value


def _number(field: FieldDescriptor, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _RejectedError(f"expected a number, got {describe(value)}")
    try:
        number = float(value)
    except OverflowError as error:
        raise _RejectedError(f"{describe(value)} is out of range for a number") from error
    if not math.isfinite(number):
        raise _RejectedError(f"expected a finite number, got {describe(value)}")
    if field.type == FieldDescriptor.TYPE_FLOAT and abs(number) > _FLOAT32_MAX:
        raise _RejectedError(f"{describe(value)} is out of range for float")
    return number


def _enum_number(field: FieldDescriptor, value: object) -> int:
    enum = field.enum_type
    assert enum is not None
    names = [value.name for value in enum.values]
    expected = f"expected one of {', '.join(names)}"
    if not isinstance(value, str):
        raise _RejectedError(f"{expected}; got {describe(value)}")
    found = enum.values_by_name.get(value)
    if found is None:
        raise _RejectedError(f"{expected}; got {describe(value)}{_suggestion(value, tuple(names))}")
    return int(found.number)


def _scalar(field: FieldDescriptor, value: object) -> Scalar:
    """The protobuf value of a non-message field, or ``_RejectedError``."""
    if field.type == FieldDescriptor.TYPE_STRING:
        if not isinstance(value, str):
            raise _RejectedError(f"expected a string, got {describe(value)}")
        return _check_text(value)
    if field.type in _INTEGER_RANGES:
        return _integer(field, value)
    if field.type in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return _number(field, value)
    if field.type == FieldDescriptor.TYPE_BOOL:
        if not isinstance(value, bool):
            raise _RejectedError(f"expected a boolean, got {describe(value)}")
        return value
    if field.type == FieldDescriptor.TYPE_ENUM:
        return _enum_number(field, value)
    if field.type == FieldDescriptor.TYPE_BYTES:
        if not isinstance(value, str):
            raise _RejectedError(f"expected a base64 string, got {describe(value)}")
        try:
            return base64.b64decode(value.encode("ascii"), validate=True)
        except (UnicodeEncodeError, binascii.Error) as error:
            raise _RejectedError(f"expected a base64 string, got {describe(value)}") from error
    raise _RejectedError(f"fields of protobuf type {field.type} are not supported")


def _duration_nanos(value: object) -> int:
    """Nanoseconds in a duration string such as ``"2s"``, ``"0.5s"`` or ``"1m30s"``."""
    expected = f"expected a duration such as {_DURATION_EXAMPLES}, got {describe(value)}"
    if not isinstance(value, str):
        number = isinstance(value, int | float) and not isinstance(value, bool)
        raise _RejectedError(expected + (' (add a unit, e.g. "10s")' if number else ""))
    if len(value) > _MAX_DURATION_TEXT:
        raise _RejectedError(expected)
    if value.startswith("-") and _DURATION.match(value[1:]):
        raise _RejectedError(f"duration must not be negative, got {describe(value)}")
    if not _DURATION.match(value):
        raise _RejectedError(expected)
    total = sum(
        (Fraction(number) * DURATION_UNITS[unit] for number, unit in _DURATION_PART.findall(value)),
        Fraction(0),
    )
    nanos = math.floor(total)
    if nanos > _MAX_DURATION_NANOS:
        raise _RejectedError(f"duration {describe(value)} is too long (at most about 10000 years)")
    return nanos


class _Reader:
    """Fills messages from plain data, collecting diagnostics on the way."""

    def __init__(self, kind: str, namespace: str, name: str) -> None:
        self._kind = kind
        self._namespace = namespace
        self._name = name
        self.diagnostics: list[Diagnostic] = []

    def report(self, path: FieldPath, message: str, severity: Severity = Severity.ERROR) -> None:
        self.diagnostics.append(
            Diagnostic(self._kind, self._namespace, self._name, str(path), message, severity)
        )

    def message(self, target: Message, value: object, path: FieldPath) -> None:
        """Fill ``target`` (any message type, well-known types included) from ``value``."""
        known = _fields(target.DESCRIPTOR)
        try:
            if known.is_duration:
                assert isinstance(target, Duration)
                seconds, nanos = divmod(_duration_nanos(value), 10**9)
                target.seconds, target.nanos = seconds, nanos
                return
            if known.wrapped is not None:
                setattr(target, "value", _scalar(known.wrapped, value))  # noqa: B010 - a Message
                return
        except _RejectedError as rejected:
            self.report(path, str(rejected))
            return
        if not is_mapping(value):
            self.report(path, f"expected an object, got {describe(value)}")
            return
        target.SetInParent()
        self.fields(target, value, path, known)

    def fields(
        self, target: Message, data: Mapping[object, object], path: FieldPath, known: _Fields
    ) -> None:
        """Fill the fields of ``target`` (whose fields are ``known``) from ``data``."""
        used: dict[str, str] = {}
        oneofs: dict[str, list[str]] = {}
        for key, value in data.items():
            if not isinstance(key, str):
                self.report(path, f"field names must be strings, got {describe(key)}")
                continue
            field = known.by_key.get(key)
            if field is None:
                if _camel_case(key) in known.unsupported:
                    self.report(_Path(path, key), UNSUPPORTED_MESSAGE, Severity.WARNING)
                else:
                    candidates = known.json_names + tuple(sorted(known.unsupported))
                    self.report(_Path(path, key), f"unknown field{_suggestion(key, candidates)}")
                continue
            if field.name in used:
                self.report(_Path(path, key), f'set twice, as "{used[field.name]}" and as "{key}"')
                continue
            used[field.name] = key
            if value is None:
                continue
            if field.oneof is not None:
                oneofs.setdefault(field.oneof, []).append(key)
            shape = field.shape
            if shape is _Shape.SCALAR:
                try:
                    setattr(target, field.name, _scalar(field.descriptor, value))
                except _RejectedError as rejected:
                    self.report(_Path(path, key), str(rejected))
            elif shape is _Shape.MESSAGE:
                self.message(getattr(target, field.name), value, _Path(path, key))
            elif shape is _Shape.REPEATED:
                self.repeated(target, field.descriptor, value, _Path(path, key))
            else:
                self.map(target, field, value, _Path(path, key))
        for oneof_name, keys in oneofs.items():
            if len(keys) > 1:
                members = ", ".join(
                    f'"{field.json_name}"'
                    for field in target.DESCRIPTOR.oneofs_by_name[oneof_name].fields
                )
                given = " and ".join(f'"{key}"' for key in keys)
                self.report(path, f"only one of {members} may be set, got {given}")

    def repeated(
        self, target: Message, field: FieldDescriptor, value: object, path: FieldPath
    ) -> None:
        if not isinstance(value, list | tuple):
            self.report(path, f"expected a list, got {describe(value)}")
            return
        container = getattr(target, field.name)
        is_message = field.message_type is not None
        for index, item in enumerate(value):
            if item is None and field.full_name in _NULL_IS_EMPTY:
                container.add()
            elif item is None:
                self.report(_Path(path, index), "expected a value, got null")
            elif is_message:
                self.message(container.add(), item, _Path(path, index))
            else:
                try:
                    container.append(_scalar(field, item))
                except _RejectedError as rejected:
                    self.report(_Path(path, index), str(rejected))

    def map(self, target: Message, field: _Field, value: object, path: FieldPath) -> None:
        if not is_mapping(value):
            self.report(path, f"expected an object, got {describe(value)}")
            return
        container = getattr(target, field.name)
        value_field = field.value
        for key, item in value.items():
            if not isinstance(key, str):
                self.report(path, f"keys must be strings, got {describe(key)}")
                continue
            item_path = _Path(path, key, is_map_key=True)
            try:
                _check_text(key)
            except _RejectedError as rejected:
                self.report(item_path, f"key {rejected}")
                continue
            if item is None:
                self.report(item_path, "expected a value, got null")
            elif value_field.message_type is not None:
                self.message(container[key], item, item_path)
            else:
                try:
                    container[key] = _scalar(value_field, item)
                except _RejectedError as rejected:
                    self.report(item_path, str(rejected))


def _is_text(value: object) -> TypeGuard[str]:
    """Whether ``value`` is a string that can be encoded (and so printed) as UTF-8."""
    if not isinstance(value, str):
        return False
    try:
        _check_text(value)
    except _RejectedError:
        return False
    return True


def _has_error(diagnostics: list[Diagnostic]) -> bool:
    return any(diagnostic.is_error for diagnostic in diagnostics)


# ------------------------------------------------------------------------------------------------
# The one-pass reader for the common case
#
# Nearly every spec a user writes is valid and uses only implemented fields. For those, checking
# each value and building the message in one constructor call is several times cheaper than the
# walker's field-by-field filling. The fast reader accepts a strict subset of what the walker
# accepts (plain dicts, lists, str, int, float, bool; no nulls in lists or maps, no unsupported or
# unknown field, no duplicate or oneof clash) and declines everything else, which then goes
# through the walker for its diagnostics. Both give the same message for what the reader accepts.


class _DeclinedError(Exception):
    """The fast reader leaves this value to the walker."""


_DECLINED: Final = _DeclinedError()

_Read = Callable[[object], object]


def _declined() -> NoReturn:
    raise _DECLINED


def _fast_scalar(field: FieldDescriptor) -> _Read:
    """A reader of one non-message value that returns exactly what the walker would store."""
    kind = field.type
    if kind == FieldDescriptor.TYPE_STRING:

        def read_text(value: object) -> object:
            if type(value) is str and (value.isascii() or _is_text(value)):
                return value
            _declined()

        return read_text
    if kind in _INTEGER_RANGES:
        _, low, high = _INTEGER_RANGES[kind]

        def read_integer(value: object) -> object:
            if type(value) is int and low <= value <= high:
                return value
            _declined()

        return read_integer
    if kind in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        limit = _FLOAT32_MAX if kind == FieldDescriptor.TYPE_FLOAT else math.inf

        def read_number(value: object) -> object:
            if type(value) is float or type(value) is int:
                with contextlib.suppress(OverflowError):
                    number = float(value)
                    if math.isfinite(number) and abs(number) <= limit:
                        return number
            _declined()

        return read_number
    if kind == FieldDescriptor.TYPE_BOOL:

        def read_bool(value: object) -> object:
            if type(value) is bool:
                return value
            _declined()

        return read_bool
    if kind == FieldDescriptor.TYPE_ENUM:
        assert field.enum_type is not None
        names = frozenset(field.enum_type.values_by_name)

        def read_enum(value: object) -> object:
            if type(value) is str and value in names:
                return value
            _declined()

        return read_enum
    return lambda value: _declined()  # bytes: rare, left to the walker


def _fast_value(field: FieldDescriptor) -> _Read:
    """A reader of one field's value (scalar, message, list or map)."""
    message_type = field.message_type
    if message_type is not None and message_type.GetOptions().map_entry:
        read_key = _fast_scalar(message_type.fields_by_name["key"])
        read_item = _fast_single(message_type.fields_by_name["value"])

        def read_map(value: object) -> object:
            if type(value) is not dict:
                _declined()
            return {read_key(key): read_item(item) for key, item in value.items()}

        return read_map
    read_one = _fast_single(field)
    if field.is_repeated:

        def read_list(value: object) -> object:
            if type(value) is not list:
                _declined()
            return [read_one(item) for item in value]

        return read_list
    return read_one


def _fast_single(field: FieldDescriptor) -> _Read:
    message_type = field.message_type
    if message_type is None:
        return _fast_scalar(field)
    return _fast_message(message_type)


@cache
def _fast_message(descriptor: Descriptor) -> _Read:
    """A reader of one message value, returning the message's constructor arguments."""
    full_name = descriptor.full_name
    if full_name == "google.protobuf.Duration":

        def read_duration(value: object) -> object:
            try:
                seconds, nanos = divmod(_duration_nanos(value), 10**9)
            except _RejectedError:
                _declined()
            return {"seconds": seconds, "nanos": nanos}

        return read_duration
    if full_name in _WRAPPERS:
        read_wrapped = _fast_scalar(descriptor.fields_by_name["value"])
        return lambda value: {"value": read_wrapped(value)}
    # The field table is filled on first use, so message types that contain themselves need
    # no special case.
    by_key: dict[str, tuple[str, _Read]] = {}
    aliased = any(field.json_name != field.name for field in descriptor.fields)
    oneofs = [frozenset(field.name for field in oneof.fields) for oneof in descriptor.oneofs]

    def read_message(value: object) -> object:
        if type(value) is not dict:
            _declined()
        if not by_key:
            for field in descriptor.fields:
                by_key[field.name] = by_key[field.json_name] = (field.name, _fast_value(field))
        arguments: dict[str, object] = {}
        for key, item in value.items():
            entry = by_key.get(key)
            if entry is None:
                _declined()
            if item is not None:
                arguments[entry[0]] = entry[1](item)
        if aliased and len({by_key[key][0] for key in value}) != len(value):
            _declined()  # one field given by both of its names
        for members in oneofs:
            if len(members.intersection(arguments)) > 1:
                _declined()
        return arguments

    return read_message


def _read_fast(message_type: type[M], data: object) -> M | None:
    """``data`` as a ``message_type`` when the one-pass reader accepts it, else None."""
    try:
        arguments = _fast_message(message_type.DESCRIPTOR)(data)
        assert isinstance(arguments, dict)
        return message_type(**arguments)
    except (_DeclinedError, TypeError, ValueError):
        return None


def parse_spec(
    message_type: type[M],
    data: object,
    *,
    kind: str,
    namespace: str,
    name: str,
    base_path: str = "spec",
) -> tuple[M | None, list[Diagnostic]]:
    """Parse ``data`` into a ``message_type``; ``None`` when any diagnostic is an error.

    Never raises: every problem with ``data`` is a diagnostic whose field path starts with
    ``base_path``.
    """
    fast = _read_fast(message_type, data)
    if fast is not None:
        return fast, []
    reader = _Reader(kind, namespace, name)
    message = message_type()
    if data is None:
        reader.report(base_path, f"missing; a {kind} needs a {base_path}")
    elif not is_mapping(data):
        reader.report(base_path, f"expected an object, got {describe(data)}")
    else:
        reader.fields(message, data, base_path, _fields(message.DESCRIPTOR))
    if _has_error(reader.diagnostics):
        return None, reader.diagnostics
    return message, reader.diagnostics


def _parse_object(
    message_type: type[M], kind: str, obj: object
) -> tuple[M | None, list[Diagnostic]]:
    if type(obj) is dict and _plain_envelope(obj, kind):
        namespace = obj["metadata"].get("namespace") or DEFAULT_NAMESPACE
        return parse_spec(
            message_type,
            obj.get("spec"),
            kind=kind,
            namespace=namespace,
            name=obj["metadata"]["name"],
        )
    if not is_mapping(obj):
        problem = (
            "expected a Kubernetes object with apiVersion, kind, metadata and spec;"
            f" got {describe(obj)}"
        )
        return None, [Diagnostic(kind, "", "", "apiVersion", problem)]
    envelope = _Reader(kind, "", "")
    metadata = obj.get("metadata")
    name = namespace = ""
    if not is_mapping(metadata):
        envelope.report("metadata", f"expected an object with a name, got {describe(metadata)}")
    else:
        raw_name, raw_namespace = metadata.get("name"), metadata.get("namespace")
        if _is_text(raw_name) and raw_name:
            name = raw_name
        else:
            envelope.report(
                "metadata.name", f"expected a non-empty string, got {describe(raw_name)}"
            )
        if _is_text(raw_namespace):
            namespace = raw_namespace
        elif raw_namespace is not None:
            envelope.report(
                "metadata.namespace", f"expected a string, got {describe(raw_namespace)}"
            )
    namespace = namespace or DEFAULT_NAMESPACE
    reader = _Reader(kind, namespace, name)
    for diagnostic in envelope.diagnostics:
        reader.report(diagnostic.field, diagnostic.message, diagnostic.severity)
    api_version = obj.get("apiVersion")
    if api_version not in _API_VERSIONS:
        reader.report(
            "apiVersion",
            f"expected one of {', '.join(_API_VERSIONS)}; got {describe(api_version)}",
        )
    if obj.get("kind", kind) != kind:
        reader.report("kind", f'expected "{kind}", got {describe(obj.get("kind"))}')
    for key in obj:
        if key not in OBJECT_FIELDS:
            shown = _key_segment(key) if isinstance(key, str) else describe(key)
            reader.report(
                shown if isinstance(key, str) else "", "unknown field; ignored", Severity.WARNING
            )
    message, diagnostics = parse_spec(
        message_type, obj.get("spec"), kind=kind, namespace=namespace, name=name
    )
    diagnostics = reader.diagnostics + diagnostics
    return (None if _has_error(diagnostics) else message), diagnostics


def _plain_envelope(obj: dict[object, object], kind: str) -> bool:
    """Whether the envelope of ``obj`` is one with nothing to report (the common case)."""
    metadata = obj.get("metadata")
    if type(metadata) is not dict:
        return False
    name, namespace = metadata.get("name"), metadata.get("namespace")
    return (
        type(name) is str
        and name.isascii()
        and name != ""
        and (namespace is None or (type(namespace) is str and namespace.isascii()))
        and obj.get("apiVersion") in _API_VERSIONS
        and obj.get("kind", kind) == kind
        and OBJECT_FIELDS.issuperset(obj)
    )


def parse_virtual_service(obj: object) -> tuple[VirtualService | None, list[Diagnostic]]:
    """The spec of a VirtualService object (a plain dict), or ``None`` when it is invalid."""
    return _parse_object(VirtualService, "VirtualService", obj)


def parse_destination_rule(obj: object) -> tuple[DestinationRule | None, list[Diagnostic]]:
    """The spec of a DestinationRule object (a plain dict), or ``None`` when it is invalid."""
    return _parse_object(DestinationRule, "DestinationRule", obj)


def parse_sidecar(obj: object) -> tuple[Sidecar | None, list[Diagnostic]]:
    """The spec of a Sidecar object (a plain dict), or ``None`` when it is invalid."""
    return _parse_object(Sidecar, "Sidecar", obj)
