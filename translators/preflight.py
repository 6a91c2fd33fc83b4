"""Envoy's own rules, checked before anything is sent: what a proxy would reject is never sent.

Envoy declares most of its constraints in its protos, as protoc-gen-validate options
(``validate.rules``: ``min_len: 1``, ``lte: 100``, a required oneof, …), which the descriptors
from xds-protos carry. `Checker` compiles those options, once per message type, into a list of
checks of the fields that have rules and of the message fields that lead to some; a message is
then checked by walking only those. Envoy enforces a few more rules in code, and those that
bite a control plane are checked too (`_CODE_RULES`): RE2 regexes, the header formatter's ``%``,
Maglev table sizes that must be prime, and a route that rewrites its path two ways.

A violation is an Envoy field path (``routes[0].match.headers[0].name``) and a reason; callers
turn violations into diagnostics on the object that produced the resource.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, fields
from functools import cache
from operator import attrgetter
from typing import Any, Final

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from google.protobuf import any_pb2, descriptor_pool, message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import DecodeError, Message
from validate import validate_pb2

from translators.build_clusters import cluster_template
from translators.build_routes import encode_routes, hash_policy
from translators.diagnostics import Diagnostic
from translators.envoy_rules import header_value_problem, is_prime
from translators.model import HttpRoute, Mirror, Protocol, TrafficPolicy, WeightedCluster
from translators.regex import regex_problem
from translators.resolve_ingress import IngressRules, edge_match
from translators.resolve_routing import DestinationRuleSpec, VirtualServiceRules, effective_policy

Violation = tuple[str, str]  # Envoy field path, reason
_ROUTE: Final = rc.Route.DESCRIPTOR
_CLUSTER: Final = cluster_pb2.Cluster.DESCRIPTOR
_HASH_POLICY: Final = rc.RouteAction.HashPolicy.DESCRIPTOR
_Check = Callable[[Message, str, list[Violation]], None]

# protoc-gen-validate's well-known regexes (``strict: false`` only forbids NUL, CR and LF).
_HEADER_NAME: Final = re.compile(r"^:?[0-9a-zA-Z!#$%&'*+\-.^_|~`]+$")
_HEADER_VALUE: Final = re.compile(r"^[^\x00-\x08\x0a-\x1f\x7f]*$")
_LOOSE_HEADER: Final = re.compile(r"^[^\x00\x0a\x0d]*$")

# ------------------------------------------------------------------------------------------------
# Rules Envoy enforces in code, by message type


def _regex_rule(message: Any, path: str, out: list[Violation]) -> None:
    problem = regex_problem(message.regex) if message.regex else None
    if problem is not None:
        out.append((f"{path}.regex" if path else "regex", problem))


def _header_value_rule(message: Any, path: str, out: list[Violation]) -> None:
    problem = header_value_problem(message.header.value)
    if problem is not None:
        out.append((_join(path, "header.value"), problem))


def _maglev_rule(message: Any, path: str, out: list[Violation]) -> None:
    if message.HasField("table_size") and not is_prime(message.table_size.value):
        out.append((_join(path, "table_size"), f"{message.table_size.value} is not a prime number"))


def _route_action_rule(message: Any, path: str, out: list[Violation]) -> None:
    rewrites = [
        name for name in ("prefix_rewrite", "path_rewrite") if getattr(message, name, "")
    ] + (["regex_rewrite"] if message.HasField("regex_rewrite") else [])
    if len(rewrites) > 1:
        out.append((path, f"only one of {' and '.join(rewrites)} may be set"))


_CODE_RULES: Final[dict[str, _Check]] = {
    "envoy.type.matcher.v3.RegexMatcher": _regex_rule,
    "envoy.config.core.v3.HeaderValueOption": _header_value_rule,
    "envoy.config.cluster.v3.Cluster.MaglevLbConfig": _maglev_rule,
    "envoy.config.route.v3.RouteAction": _route_action_rule,
}


# ------------------------------------------------------------------------------------------------
# protoc-gen-validate rules


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


_NUMBER_BOUNDS: Final = (
    ("gt", lambda v, b: v > b, "greater than"),
    ("gte", lambda v, b: v >= b, "at least"),
    ("lt", lambda v, b: v < b, "less than"),
    ("lte", lambda v, b: v <= b, "at most"),
)


def _number_checks(rules: Any) -> list[Callable[[Any], str | None]]:
    checks: list[Callable[[Any], str | None]] = []
    for name, holds, words in _NUMBER_BOUNDS:
        if rules.HasField(name):
            bound = getattr(rules, name)

            def check(
                value: Any, bound: Any = bound, holds: Any = holds, words: str = words
            ) -> str | None:
                return None if holds(value, bound) else f"must be {words} {bound}, got {value}"

            checks.append(check)
    if rules.HasField("const"):
        wanted = rules.const
        checks.append(lambda v: None if v == wanted else f"must be {wanted}, got {v}")
    allowed = tuple(getattr(rules, "in", ()))
    if allowed:
        checks.append(lambda v: None if v in allowed else f"must be one of {list(allowed)}")
    refused = tuple(rules.not_in)
    if refused:
        checks.append(lambda v: f"must not be {v}" if v in refused else None)
    return checks


def _string_checks(rules: validate_pb2.StringRules) -> list[Callable[[Any], str | None]]:
    checks: list[Callable[[Any], str | None]] = []
    if rules.HasField("min_len"):
        low = rules.min_len
        checks.append(lambda v: None if len(v) >= low else f"must be at least {low} characters")
    if rules.HasField("max_len"):
        high = rules.max_len
        checks.append(lambda v: None if len(v) <= high else f"must be at most {high} characters")
    if rules.HasField("min_bytes"):
        low_bytes = rules.min_bytes
        checks.append(
            lambda v: (
                None if len(v.encode()) >= low_bytes else f"must be at least {low_bytes} bytes"
            )
        )
    if rules.HasField("max_bytes"):
        high_bytes = rules.max_bytes
        checks.append(
            lambda v: (
                None if len(v.encode()) <= high_bytes else f"must be at most {high_bytes} bytes"
            )
        )
    if rules.HasField("prefix"):
        prefix = rules.prefix
        checks.append(lambda v: None if v.startswith(prefix) else f"must start with {prefix!r}")
    if rules.HasField("suffix"):
        suffix = rules.suffix
        checks.append(lambda v: None if v.endswith(suffix) else f"must end with {suffix!r}")
    if rules.HasField("pattern"):
        pattern = re.compile(rules.pattern)
        checks.append(lambda v: None if pattern.search(v) else f"must match {rules.pattern!r}")
    allowed = tuple(getattr(rules, "in"))
    if allowed:
        checks.append(lambda v: None if v in allowed else f"must be one of {list(allowed)}")
    refused = tuple(rules.not_in)
    if refused:
        checks.append(lambda v: f"must not be {v!r}" if v in refused else None)
    known = rules.well_known_regex
    if known:
        strict = rules.strict if rules.HasField("strict") else True
        if not strict:
            regex, what = _LOOSE_HEADER, "must not contain NUL, CR or LF"
        elif known == validate_pb2.HTTP_HEADER_NAME:
            regex, what = _HEADER_NAME, "is not a valid HTTP header name"
        else:
            regex, what = _HEADER_VALUE, "is not a valid HTTP header value"
        checks.append(lambda v: None if regex.match(v) else what)
    if rules.ignore_empty and checks:
        inner = list(checks)
        return [lambda v, c=c: None if v == "" else c(v) for c in inner]  # type: ignore[misc]
    return checks


def _duration_checks(rules: validate_pb2.DurationRules) -> list[Callable[[Any], str | None]]:
    checks: list[Callable[[Any], str | None]] = []
    for name, holds, words in _NUMBER_BOUNDS:
        if rules.HasField(name):
            bound = getattr(rules, name)
            nanos = bound.seconds * 10**9 + bound.nanos

            def check(
                value: Any, nanos: int = nanos, holds: Any = holds, words: str = words
            ) -> str | None:
                given = value.seconds * 10**9 + value.nanos
                return None if holds(given, nanos) else f"must be {words} {nanos / 1e9:g}s"

            checks.append(check)
    return checks


def _scalar_checks(
    field: FieldDescriptor, rules: validate_pb2.FieldRules
) -> list[Callable[[Any], str | None]]:
    kind = rules.WhichOneof("type")
    if kind is None:
        return []
    sub = getattr(rules, kind)
    if kind == "string":
        return _string_checks(sub)
    if kind == "bytes":
        checks: list[Callable[[Any], str | None]] = []
        if sub.HasField("min_len"):
            low = sub.min_len
            checks.append(lambda v: None if len(v) >= low else f"must be at least {low} bytes")
        if sub.HasField("max_len"):
            high = sub.max_len
            checks.append(lambda v: None if len(v) <= high else f"must be at most {high} bytes")
        return checks
    if kind == "enum":
        enum_checks = _number_checks_enum(field, sub)
        return enum_checks
    if kind == "bool":
        if sub.HasField("const"):
            wanted = sub.const
            return [lambda v: None if v == wanted else f"must be {wanted}"]
        return []
    if kind in ("message", "any", "duration", "timestamp", "repeated", "map"):
        return []
    return _number_checks(sub)


def _number_checks_enum(
    field: FieldDescriptor, rules: validate_pb2.EnumRules
) -> list[Callable[[Any], str | None]]:
    checks: list[Callable[[Any], str | None]] = []
    enum = field.enum_type
    if rules.defined_only and enum is not None:
        numbers = frozenset(value.number for value in enum.values)
        checks.append(lambda v: None if v in numbers else f"{v} is not a defined value")
    allowed = tuple(getattr(rules, "in"))
    if allowed:
        checks.append(lambda v: None if v in allowed else f"must be one of {list(allowed)}")
    refused = tuple(rules.not_in)
    if refused:
        checks.append(lambda v: f"must not be {v}" if v in refused else None)
    return checks


_WRAPPERS: Final = frozenset(
    f"google.protobuf.{name}Value"
    for name in ("Double", "Float", "Int64", "UInt64", "Int32", "UInt32", "Bool", "String", "Bytes")
)


_ValueCheck = Callable[[Any, str, list[Violation]], None]


@dataclass(frozen=True, slots=True)
class _FieldRules:
    """What is checked of one field: ``value`` when it is set; ``unset`` when it is not (only
    for a field whose unset value breaks its rules: a required message, ``min_len: 1``)."""

    value: _ValueCheck | None
    unset: _Check | None


def _field_rules(field: FieldDescriptor, rules: validate_pb2.FieldRules | None) -> _FieldRules:
    """The checks of one field: its own rules, and the rules of the messages it holds."""
    name = field.name
    message_type = field.message_type
    is_map = message_type is not None and message_type.GetOptions().map_entry
    kind = rules.WhichOneof("type") if rules is not None else None
    if field.is_repeated:
        repeated = rules.repeated if kind == "repeated" and rules is not None else None
        pairs = rules.map if kind == "map" and rules is not None else None
        low = repeated.min_items if repeated is not None and repeated.HasField("min_items") else 0
        if pairs is not None and pairs.HasField("min_pairs"):
            low = pairs.min_pairs
        high = (
            repeated.max_items if repeated is not None and repeated.HasField("max_items") else None
        )
        unique = repeated is not None and repeated.unique
        item_field = message_type.fields_by_name["value"] if message_type and is_map else field
        item_checks: list[Callable[[Any], str | None]] = []
        if repeated is not None and repeated.HasField("items"):
            item_checks = _scalar_checks(field, repeated.items)
        key_checks: list[Callable[[Any], str | None]] = []
        if message_type is not None and pairs is not None and pairs.HasField("keys"):
            key_checks = _scalar_checks(message_type.fields_by_name["key"], pairs.keys)
        item_type = item_field.message_type
        nested: Checker | _AnyChecker | None = None
        if item_type is not None:
            nested = _ANY if item_type.full_name == _ANY_TYPE else _checker(item_type)
        if isinstance(nested, Checker) and nested.done and nested.is_empty:
            nested = None
        unset: _Check | None = None
        if low:

            def unset_items(message: Message, path: str, out: list[Violation]) -> None:
                out.append((_join(path, name), f"must have at least {low} item(s)"))

            unset = unset_items
        if not (low or high is not None or unique or item_checks or key_checks or nested):
            return _FieldRules(None, None)

        def check_repeated(values: Any, at: str, out: list[Violation]) -> None:
            count = len(values)
            if count < low:
                out.append((at, f"must have at least {low} item(s)"))
            if high is not None and count > high:
                out.append((at, f"must have at most {high} item(s)"))
            if is_map:
                for key in values:
                    where = f"{at}[{key!r}]"
                    for key_check in key_checks:
                        if (problem := key_check(key)) is not None:
                            out.append((where, f"key {problem}"))
                    if nested is not None:
                        nested.check_into(values[key], where, out)
                return
            if unique and len(set(values)) != count:
                out.append((at, "items must be unique"))
            for index, value in enumerate(values):
                if item_checks:
                    for item_check in item_checks:
                        if (problem := item_check(value)) is not None:
                            out.append((f"{at}[{index}]", problem))
                if nested is not None:
                    nested.check_into(value, f"{at}[{index}]", out)

        return _FieldRules(check_repeated, unset)
    in_oneof = field.containing_oneof is not None and not getattr(
        field.containing_oneof, "is_synthetic", False
    )
    if message_type is not None:
        full_name = message_type.full_name
        required = False
        value_checks: list[Callable[[Any], str | None]] = []
        if rules is not None:
            required = rules.message.required
            if kind == "duration":
                required = required or rules.duration.required
                value_checks = _duration_checks(rules.duration)
            elif kind == "any":
                required = required or rules.any.required
            elif kind is not None and full_name in _WRAPPERS:
                value_checks = [
                    _unwrapped(check)
                    for check in _scalar_checks(message_type.fields_by_name["value"], rules)
                ]
        is_any = full_name == _ANY_TYPE
        nested_message = None if is_any else _checker(message_type)
        if nested_message is not None and nested_message.done and nested_message.is_empty:
            nested_message = None
        unset_message: _Check | None = None
        if required and not in_oneof:

            def unset_required(message: Message, path: str, out: list[Violation]) -> None:
                out.append((_join(path, name), "is required"))

            unset_message = unset_required
        if not (value_checks or nested_message or is_any):
            return _FieldRules(None, unset_message)

        def check_message(value: Any, at: str, out: list[Violation]) -> None:
            for value_check in value_checks:
                if (problem := value_check(value)) is not None:
                    out.append((at, problem))
            if is_any:
                _check_any(value, at, out)
            elif nested_message is not None:
                nested_message.check_into(value, at, out)

        return _FieldRules(check_message, unset_message)
    if rules is None:
        return _FieldRules(None, None)
    scalar_checks = _scalar_checks(field, rules)
    if not scalar_checks:
        return _FieldRules(None, None)

    def check_scalar(value: Any, at: str, out: list[Violation]) -> None:
        for scalar_check in scalar_checks:
            if (problem := scalar_check(value)) is not None:
                out.append((at, problem))

    unset_scalar: _Check | None = None
    default = field.default_value
    if not in_oneof and any(check(default) is not None for check in scalar_checks):

        def unset_value(message: Message, path: str, out: list[Violation]) -> None:
            check_scalar(default, _join(path, name), out)

        unset_scalar = unset_value
    return _FieldRules(check_scalar, unset_scalar)


def _unwrapped(check: Callable[[Any], str | None]) -> Callable[[Any], str | None]:
    """A check of a wrapper message (``UInt32Value``) by the rules of its value."""
    return lambda wrapped: check(wrapped.value)


class Checker:
    """The checks of one message type, compiled from its descriptor (see the module's doc).

    A message is walked through the fields it has set (``ListFields``); a field that is not
    set is looked at only when its unset value breaks a rule.
    """

    def __init__(self, descriptor: Descriptor) -> None:
        self.descriptor = descriptor
        self.by_field: dict[int, tuple[str, _ValueCheck]] = {}
        self.unset: tuple[tuple[int, _Check], ...] = ()
        self.whole: tuple[_Check, ...] = ()  # required oneofs, rules Envoy enforces in code
        self.done = False  # compiled (a type that holds itself is still compiling meanwhile)

    @property
    def is_empty(self) -> bool:
        return not (self.by_field or self.unset or self.whole)

    def compile(self) -> None:
        descriptor = self.descriptor
        whole: list[_Check] = []
        unset: list[tuple[int, _Check]] = []
        if descriptor.GetOptions().Extensions[validate_pb2.disabled]:
            self.done = True
            return
        for oneof in descriptor.oneofs:
            if oneof.GetOptions().Extensions[validate_pb2.required]:
                whole.append(_required_oneof(oneof.name, [f.name for f in oneof.fields]))
        for field in descriptor.fields:
            options = field.GetOptions()
            rules = (
                options.Extensions[validate_pb2.rules]
                if options.HasExtension(validate_pb2.rules)
                else None
            )
            found = _field_rules(field, rules)
            if found.value is not None:
                self.by_field[field.number] = (field.name, found.value)
            if found.unset is not None:
                unset.append((field.number, found.unset))
        code_rule = _CODE_RULES.get(descriptor.full_name)
        if code_rule is not None:
            whole.append(code_rule)
        self.unset = tuple(unset)
        self.whole = tuple(whole)
        self.done = True

    def check_into(self, message: Message, path: str, out: list[Violation]) -> None:
        by_field = self.by_field
        present: set[int] | None = None
        if self.unset:
            present = set()
        for field, value in message.ListFields():
            number = field.number
            if present is not None:
                present.add(number)
            found = by_field.get(number)
            if found is not None:
                found[1](value, f"{path}.{found[0]}" if path else found[0], out)
        if present is not None:
            for number, check in self.unset:
                if number not in present:
                    check(message, path, out)
        for check in self.whole:
            check(message, path, out)

    def violations(self, message: Message, path: str = "") -> list[Violation]:
        """Every rule ``message`` breaks, by Envoy field path below ``path``."""
        out: list[Violation] = []
        self.check_into(message, path, out)
        return out


def _required_oneof(name: str, members: Sequence[str]) -> _Check:
    def check(message: Message, path: str, out: list[Violation]) -> None:
        if message.WhichOneof(name) is None:
            out.append((_join(path, name), f"one of {', '.join(members)} is required"))

    return check


_COMPILING: dict[str, Checker] = {}


def _checker(descriptor: Descriptor) -> Checker:
    """The compiled checker of a message type; message types that hold themselves are fine:
    a type's checker exists (still empty) while its fields are compiled."""
    found = _COMPILING.get(descriptor.full_name)
    if found is not None:
        return found
    checker = _COMPILING[descriptor.full_name] = Checker(descriptor)
    checker.compile()
    return checker


def checker_for(descriptor: Descriptor) -> Checker:
    """The checker of ``descriptor``'s message type, compiled once."""
    return _checker(descriptor)


class _AnyChecker:
    """Checks a typed config as the message it holds."""

    def check_into(self, message: Message, path: str, out: list[Violation]) -> None:
        assert isinstance(message, any_pb2.Any)
        _check_any(message, path, out)


_ANY_TYPE: Final = "google.protobuf.Any"
_ANY: Final = _AnyChecker()
_ANY_VERDICTS: dict[tuple[str, bytes], tuple[Violation, ...]] = {}
_MAX_ANY_VERDICTS = 4096


def _check_any(value: any_pb2.Any, path: str, out: list[Violation]) -> None:
    """A typed config is checked as the message it holds (Envoy unpacks and validates it)."""
    key = (value.type_url, value.value)
    found = _ANY_VERDICTS.get(key)
    if found is None:
        held: list[Violation] = []
        type_name = value.type_url.rpartition("/")[2]
        message_type = _message_type(type_name)
        if message_type is not None:
            try:
                inner = message_type.FromString(value.value)
            except DecodeError:
                held.append(("", f"does not hold a valid {type_name}"))
            else:
                violations(inner, "", held)
        found = tuple(held)
        if len(_ANY_VERDICTS) >= _MAX_ANY_VERDICTS:
            _ANY_VERDICTS.clear()
        _ANY_VERDICTS[key] = found
    out.extend((_join(path, where), reason) for where, reason in found)


@cache
def _message_type(full_name: str) -> type[Message] | None:
    try:
        descriptor = descriptor_pool.Default().FindMessageTypeByName(full_name)
    except KeyError:
        return None
    found: type[Message] = message_factory.GetMessageClass(descriptor)
    return found


def violations(
    message: Message, path: str = "", out: list[Violation] | None = None
) -> list[Violation]:
    """Every Envoy rule ``message`` breaks (see `Checker.violations`), added to ``out`` if
    given."""
    found = [] if out is None else out
    descriptor: Descriptor = message.DESCRIPTOR  # type: ignore[assignment]
    _checker(descriptor).check_into(message, path, found)
    return found


def first_problems(found: Iterable[Violation], limit: int = 3) -> str:
    """Violations as one line: ``path: reason; path: reason`` (at most ``limit``)."""
    items = list(dict.fromkeys(found))
    shown = "; ".join(f"{path}: {reason}" if path else reason for path, reason in items[:limit])
    more = len(items) - limit
    return shown + (f"; and {more} more" if more > 0 else "")


# ------------------------------------------------------------------------------------------------
# What one object contributes, checked before it is assembled with anything else

# Verdicts by what was checked, kept across translations: most rules and policies in a mesh
# share a shape, so each shape is checked once.
_ROUTE_VERDICTS: dict[HttpRoute, tuple[Violation, ...]] = {}
_POLICY_VERDICTS: dict[tuple[Protocol, TrafficPolicy], tuple[Violation, ...]] = {}
_MAX_VERDICTS = 65536
# Cluster names are splitplane's own (``outbound|80|v1|reviews.default.svc.cluster.local``),
# checked with the clusters: a rule is checked with this one in their place, so that rules
# that differ only in the services they name share one verdict.
_SOME_CLUSTER = "outbound|80|subset|service.namespace.svc.cluster.local"


def _remembered(
    verdicts: dict[Any, tuple[Violation, ...]], key: Any, found: list[Violation]
) -> tuple[Violation, ...]:
    if len(verdicts) >= _MAX_VERDICTS:
        verdicts.clear()
    held = verdicts[key] = tuple(found)
    return held


# An HttpRoute's fields in order, read in one call: a shape is made for every rule checked, and
# `dataclasses.replace` costs twice as much.
_ROUTE_FIELDS = attrgetter(*(f.name for f in fields(HttpRoute)))
_DESTINATIONS, _MIRROR, _MIRRORS = (
    [f.name for f in fields(HttpRoute)].index(name)
    for name in ("destinations", "mirror", "mirrors")
)


def _route_shape(route: HttpRoute) -> HttpRoute:
    """``route`` with every cluster name replaced by one name (see `_SOME_CLUSTER`)."""
    values = list(_ROUTE_FIELDS(route))
    values[_DESTINATIONS] = tuple(
        [WeightedCluster(_SOME_CLUSTER, d.weight, d.headers) for d in route.destinations]
    )
    if route.mirror is not None or route.mirrors:
        values[_MIRRORS] = tuple([Mirror(_SOME_CLUSTER, m.percent) for m in route.mirrors])
        if route.mirror is not None:
            values[_MIRROR] = Mirror(_SOME_CLUSTER, route.mirror.percent)
    return HttpRoute(*values)


def route_violations(route: HttpRoute) -> tuple[Violation, ...]:
    """The Envoy rules the routes built from one VirtualService rule break (paths below the
    first route built from it)."""
    shape = _route_shape(route)
    held = _ROUTE_VERDICTS.get(shape)
    if held is not None:
        return held
    found: list[Violation] = []
    try:
        encoded = encode_routes(shape, {})
    except (ValueError, TypeError) as error:  # a value no Envoy field can hold
        encoded = []
        found.append(("route", f"cannot be built: {error}"))
    for data in encoded:
        found.extend(checker_for(_ROUTE).violations(rc.Route.FromString(data), "route"))
    return _remembered(_ROUTE_VERDICTS, shape, found)


def policy_violations(protocol: Protocol, policy: TrafficPolicy) -> tuple[Violation, ...]:
    """The Envoy rules a cluster with ``policy`` breaks, as Envoy and as a proxyless gRPC client
    gets it, and the route hash policy of its consistent hash."""
    key = (protocol, policy)
    held = _POLICY_VERDICTS.get(key)
    if held is not None:
        return held
    found: list[Violation] = []
    for grpc in (False, True):
        try:
            cluster = cluster_template(protocol, policy, grpc=grpc)
        except (ValueError, TypeError) as error:  # a value no Envoy field can hold
            found.append(("cluster", f"cannot be built: {error}"))
            break
        cluster.name = _SOME_CLUSTER
        cluster.eds_cluster_config.service_name = _SOME_CLUSTER
        found.extend(checker_for(_CLUSTER).violations(cluster, "cluster"))
    if policy.consistent_hash is not None:
        hashing = hash_policy(policy.consistent_hash)
        found.extend(checker_for(_HASH_POLICY).violations(hashing, "route.hash_policy"))
    return _remembered(_POLICY_VERDICTS, key, list(dict.fromkeys(found)))


def _envoy_rejects(what: str, found: Iterable[Violation]) -> str:
    return f"Envoy would reject {what} ({first_problems(found)}); it is not sent"


def virtual_service_problems(rules: VirtualServiceRules) -> list[Diagnostic]:
    """An error per rule of a VirtualService whose Envoy routes Envoy would reject."""
    source = rules.source
    out = []
    for index, rule in enumerate(rules.http):
        found = route_violations(rule.route)
        if found:
            out.append(
                Diagnostic(
                    "VirtualService",
                    source.namespace,
                    source.name,
                    f"spec.http[{index}]",
                    _envoy_rejects("the route of this rule", found),
                )
            )
    return out


def destination_rule_problems(rule: DestinationRuleSpec) -> list[Diagnostic]:
    """An error per traffic policy of a DestinationRule (the rule's, a port's, a subset's) with
    which Envoy would reject a cluster."""
    spec = rule.spec
    if not rule.has_policy:
        return []
    places: list[tuple[str, int, str]] = []
    if spec.HasField("traffic_policy"):
        places.append(("spec.trafficPolicy", 0, ""))
        for j, level in enumerate(spec.traffic_policy.port_level_settings):
            places.append((f"spec.trafficPolicy.portLevelSettings[{j}]", level.port.number, ""))
    for i, subset in enumerate(spec.subsets):
        if not subset.HasField("traffic_policy"):
            continue
        places.append((f"spec.subsets[{i}].trafficPolicy", 0, subset.name))
        for j, level in enumerate(subset.traffic_policy.port_level_settings):
            places.append(
                (
                    f"spec.subsets[{i}].trafficPolicy.portLevelSettings[{j}]",
                    level.port.number,
                    subset.name,
                )
            )
    out = []
    reported: set[tuple[Violation, ...]] = set()
    for at, port, subset_name in places:
        policy = effective_policy(rule, port, subset_name)
        found = policy_violations(Protocol.HTTP2, policy)
        if found and found not in reported:
            reported.add(found)
            source = rule.source
            out.append(
                Diagnostic(
                    "DestinationRule",
                    source.namespace,
                    source.name,
                    at,
                    _envoy_rejects("the clusters of this policy", found),
                )
            )
    return out


def ingress_problems(rules: IngressRules) -> list[Diagnostic]:
    """An error per Ingress path whose route (and wildcard host match) Envoy would reject."""
    source = rules.source
    out = []
    for path in rules.paths:
        route = HttpRoute(
            matches=(edge_match(path.host, path),),
            destinations=(WeightedCluster(_SOME_CLUSTER, 100),),
        )
        found = route_violations(route)
        if found:
            out.append(
                Diagnostic(
                    "Ingress",
                    source.namespace,
                    source.name,
                    path.at,
                    _envoy_rejects("the route of this path", found),
                )
            )
    return out
