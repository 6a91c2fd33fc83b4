"""YAML documents read by a fast parser, when the result is certainly what PyYAML would build.

The folder source reads YAML with PyYAML's safe loader (YAML 1.1 types, no timestamps), which
is the slow part of reading a large folder. ``yaml_rs`` (a YAML 1.2 parser written in Rust) reads
the same documents many times faster, but YAML 1.2 types some plain scalars differently
(``010``, ``yes``, ``1e3``, ``1:20``) and it accepts a few things PyYAML refuses (tab
indentation, control characters). ``documents`` therefore returns ``None`` — and PyYAML reads
the file, with its exact errors, lines and types — unless the file avoids every construct where
the two can differ:

- in the bytes: no tab, control character, byte order mark, NEL / line / paragraph separator,
  lone carriage return, tag (``!``), anchor (``&``), ``?`` (complex keys, which the parsers
  tell apart differently), directive (``%`` at a line's start), document end (``...``),
  content on a ``---`` line, surrogate escape (``\\ud800``), number written with a leading
  zero (``010``, ``0o10``), and no flow collection (``[...]``, ``{...}``) that spans lines or
  holds ``|``, ``>``, ``@`` or a backquote;
- in what the parser built: every document is a mapping (or empty); every key is a scalar
  other than null and not-a-number (no sequence or mapping as a key, no empty key); no string
  is only line breaks (an empty block scalar at the end of a document); every string PyYAML
  would type if it were unquoted (``yes``, ``1_000``, ``<<``, ``=``) is quoted wherever it
  stands in the file (``status: "True"`` is a string for both); a file with a floating-point
  value has no exponent, underscore or signed leading dot in it (``1e3``, ``+.5``);
- and the parser itself accepts the file.

Documents are split at their ``---`` lines and parsed one by one, so each comes with the line it
starts on, as PyYAML's node marks give it.
"""

from __future__ import annotations

import math
import re
from functools import lru_cache
from typing import Any

import yaml
import yaml_rs

# Printable ASCII, line feed and carriage return: a file of only these needs no further look at
# its characters.
_PLAIN_BYTES = bytes([0x0A, 0x0D, *range(0x20, 0x7F)])
# Beyond ASCII: what PyYAML refuses, and what YAML 1.1 takes as a line break and 1.2 does not.
_UNUSUAL_TEXT = re.compile(
    "[^\x0a\x0d\x20-\x7e\xa0-\u2027\u202a-\ud7ff\ue000-\ufefe\uff00-\ufffd\U00010000-\U0010ffff]"
)
# A number with a leading zero: octal in YAML 1.1 (``010`` is 8), decimal in 1.2; ``0o10``.
_LEADING_ZERO = re.compile(rb"0(?:(?<=[\s\[{,:]0)|(?<=[\s\[{,:][-+]0))[0-9oO]")
# What makes a float's text differ between the two: an exponent (YAML 1.1 wants a dot and a
# sign before it), a sign before a leading dot, an underscore.
_FLOAT_RISK = re.compile(rb"[0-9.][eE]|[-+]\.|[0-9]_|_[0-9]")
_SURROGATE_ESCAPE = re.compile(rb"\\(?:u|U0000)[dD][89a-fA-F]")
_FLOW_LINE = re.compile(rb"^[^\n\[{]*[\[{][^\n]*", re.MULTILINE)
_CONTENT = re.compile(r"^ *[^ #\r\n]", re.MULTILINE)
_LAST_WINS = yaml_rs.DuplicateKeyPolicy.LastWins


class _DeclinedError(Exception):
    """The file has something the fast parser might read differently from PyYAML."""


def _bytes_declined(data: bytes) -> bool:
    """Whether ``data`` holds a construct the fast path leaves to PyYAML (see the module doc)."""
    if b"!" in data or b"&" in data or b"?" in data:
        return True
    if data.startswith((b"%", b"...", b"0", b"-0", b"+0")):
        return True
    if b"\n%" in data or b"\n..." in data:
        return True
    if b"\r" in data and data.count(b"\r") != data.count(b"\r\n"):
        return True
    if b"\\" in data and _SURROGATE_ESCAPE.search(data):
        return True
    if (b"[" in data or b"{" in data) and any(map(_flow_declined, _FLOW_LINE.findall(data))):
        return True
    return _LEADING_ZERO.search(data) is not None


def _flow_declined(line: bytes) -> bool:
    """Whether a line with a flow collection (``[...]``, ``{...}``) is left to PyYAML: one that
    does not close every collection it opens, or has a block indicator in it."""
    if line.count(b"[") != line.count(b"]") or line.count(b"{") != line.count(b"}"):
        return True
    return b"|" in line or b">" in line or b"@" in line or b"`" in line


def _text_declined(data: bytes) -> str | None:
    """``data`` as text, or None when a character in it is left to PyYAML."""
    rest = data.translate(None, _PLAIN_BYTES)
    if rest and rest.isascii():
        return None  # a tab or a control character
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if rest and _UNUSUAL_TEXT.search(text):
        return None
    return text


class _KubeResolver(yaml.resolver.Resolver):
    """PyYAML's implicit types for plain scalars, without timestamps (as the folder reads)."""


_TIMESTAMP_TAG = "tag:yaml.org,2002:timestamp"
_KubeResolver.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != _TIMESTAMP_TAG]
    for first, resolvers in yaml.resolver.Resolver.yaml_implicit_resolvers.items()
}
_RESOLVER = _KubeResolver()
_STR_TAG = "tag:yaml.org,2002:str"
# First characters of the plain scalars PyYAML may read as something other than a string.
_TYPED_FIRST = frozenset(first for first in _KubeResolver.yaml_implicit_resolvers if first)
_LOOKED_AT = _TYPED_FIRST | {"\n"}


@lru_cache(maxsize=4096)
def _typed_when_plain(text: str) -> bool:
    """Whether PyYAML reads ``text``, written unquoted, as something other than a string."""
    tag: str = _RESOLVER.resolve(yaml.ScalarNode, text, (True, False))  # type: ignore[no-untyped-call]
    return tag != _STR_TAG


# Characters that, next to a string, make it part of a longer token.
_TOKEN_CHARACTERS = frozenset(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-+/@"
)


def _quoted_everywhere(text: str, value: str) -> bool:
    """Whether every occurrence of ``value`` in ``text`` that could be a plain scalar of its own
    is between quotes.

    Strings PyYAML would type when unquoted (``"True"``, ``"80"``) have no spaces, so written
    unquoted they would stand in the text as they are, between token boundaries.
    """
    size, end = len(value), len(text)
    position = text.find(value)
    while position >= 0:
        before = text[position - 1] if position else " "
        after = text[position + size] if position + size < end else " "
        quoted = before in "'\"" and after == before
        inside = before in _TOKEN_CHARACTERS or after in _TOKEN_CHARACTERS
        if not quoted and not inside:
            return False
        position = text.find(value, position + 1)
    return True


class _Check:
    """Walks what the fast parser built from ``text``; raises ``_DeclinedError`` at anything PyYAML
    could build differently, and notes whether a float was seen. The dispatch on a value's type
    is written out in both loops, not called: it runs for every value of every file read."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.floats = False
        self.quoted: set[str] = set()  # typed-looking strings found quoted wherever they are

    def mapping(self, mapping: dict[Any, Any]) -> None:
        for key, item in mapping.items():
            if type(key) is str:
                if key and key[0] in _LOOKED_AT:
                    self.string(key)
            else:
                self.scalar(key)
                if key is None:
                    raise _DeclinedError  # an empty key, which PyYAML refuses, or a null one
                if type(key) is float and math.isnan(key):
                    # Not-a-number: PyYAML builds every .nan as one object, so a mapping holds
                    # one such key however often it is written; the fast parser holds each.
                    raise _DeclinedError
            kind = type(item)
            if kind is str:
                if item and item[0] in _LOOKED_AT:
                    self.string(item)
            elif kind is dict:
                self.mapping(item)
            elif kind is list:
                self.sequence(item)
            else:
                self.scalar(item)

    def sequence(self, sequence: list[Any]) -> None:
        for item in sequence:
            kind = type(item)
            if kind is str:
                if item and item[0] in _LOOKED_AT:
                    self.string(item)
            elif kind is dict:
                self.mapping(item)
            elif kind is list:
                self.sequence(item)
            else:
                self.scalar(item)

    def string(self, value: str) -> None:
        """A string starting with a character that needs a look (never empty: a plain scalar
        is never empty, that is null, so an empty string was quoted)."""
        if value[0] == "\n":
            if not value.strip("\n"):
                raise _DeclinedError  # an empty block scalar at the end: the parsers differ
        elif _typed_when_plain(value) and value not in self.quoted:
            if not _quoted_everywhere(self.text, value):
                raise _DeclinedError
            self.quoted.add(value)

    def scalar(self, value: Any) -> None:
        kind = type(value)
        if kind is float:
            self.floats = True
        elif kind is not int and kind is not bool and value is not None:
            raise _DeclinedError  # a sequence or mapping as a key, or a type PyYAML would not build


def _markers(text: str) -> list[int]:
    """Where the ``---`` lines that start documents are."""
    found = []
    position = 0 if text.startswith("---") else text.find("\n---")
    while position >= 0:
        start = position + 1 if text[position] == "\n" else position
        if text[start + 3 : start + 4] in ("", " ", "\r", "\n"):
            found.append(start)
        position = text.find("\n---", start + 3)
    return found


def documents(data: bytes) -> list[tuple[int, Any]] | None:
    """Each YAML document in ``data`` with the line it starts on, exactly as PyYAML's safe
    loader (without timestamps) builds them; None when that cannot be vouched for."""
    if _bytes_declined(data):
        return None
    text = _text_declined(data)
    if text is None:
        return None
    starts = _markers(text)
    pieces: list[tuple[int, int, bool]] = []  # (start, end, explicit)
    if not starts or starts[0] > 0:
        pieces.append((0, starts[0] if starts else len(text), False))
    for index, start in enumerate(starts):
        end = starts[index + 1] if index + 1 < len(starts) else len(text)
        pieces.append((start, end, True))
    check = _Check(text)
    found: list[tuple[int, Any]] = []
    # The lines before a document are counted on from the last document's (counting from the
    # start for each one costs the square of a file's documents: 4 s for 10,000 of them).
    breaks, counted = 0, 0  # line breaks in text[:counted]
    try:
        for start, end, explicit in pieces:
            body = start
            if explicit:
                line_end = text.find("\n", start)
                line_end = end if line_end < 0 or line_end > end else line_end
                after = text[start + 3 : line_end].strip(" \r")
                if after and not after.startswith("#"):
                    return None  # content on the --- line
                body = min(line_end + 1, end)
            content = _CONTENT.search(text, body, end)
            if content is None and not explicit:
                continue  # only comments before the first ---: no document
            document = yaml_rs.loads(
                text[start:end], parse_datetime=False, duplicate_key_policy=_LAST_WINS
            )
            if content is None:
                if document is not None:
                    return None
                # PyYAML puts an empty document where the next one starts, or at the end (on
                # a line of its own after a last line without a line break).
                unended = end == len(text) and not text.endswith("\n")
                breaks, counted = breaks + text.count("\n", counted, end), end
                found.append((breaks + 1 + unended, None))
                continue
            if type(document) is not dict:
                return None  # not a mapping: PyYAML says what it is
            check.mapping(document)
            position = content.start()
            breaks, counted = breaks + text.count("\n", counted, position), position
            found.append((breaks + 1, document))
    except (_DeclinedError, yaml_rs.YAMLDecodeError, ValueError, TypeError, RecursionError):
        return None
    if check.floats and _FLOAT_RISK.search(data):
        return None
    return found
