"""Hostnames as Istio validates them: VirtualService ``hosts``, destination hosts, DestinationRule
``host``.

Istio's rule (its ``ValidateWildcardDomain``): at most 255 characters; dot-separated DNS-1123
labels of letters, digits and ``-`` (at most 63 characters, a letter or digit at each end); the
first label may instead be a wildcard (``*``, ``*foo``, ``*-foo``); the last label may be empty (a
final dot) but not all digits. Short names (``reviews``) are hostnames. Upper case is valid, as in
Istio; splitplane matches hostnames without regard to case, as DNS and Envoy do. A VirtualService
host may also be an IP address.
"""

from __future__ import annotations

import ipaddress
import re
from functools import lru_cache

HOSTNAME_MAX = 255
LABEL_MAX = 63
_LABEL = re.compile(r"[A-Za-z0-9](?:[-A-Za-z0-9]*[A-Za-z0-9])?")
_WILDCARD_LABEL = re.compile(r"\*|(?:\*|\*-)?[A-Za-z0-9](?:[-A-Za-z0-9]*[A-Za-z0-9])?")
_SHOWN = 64  # characters of a bad hostname quoted in a message


def hostname_problem(host: str, *, ip_address: bool = False) -> str:
    """Why ``host`` is not a hostname Istio accepts ("" when it is one).

    ``ip_address``: an IP address is accepted too (as in VirtualService ``hosts``).
    """
    if not host:
        return "must not be empty"
    reason = _reason(host)
    if not reason or (ip_address and _is_ip(host)):
        return ""
    return f"{_shown(host)} is not a valid hostname: {reason}"


# Hostnames recur (a service's name in every route to it, in several VirtualServices): each is
# checked once, while it keeps being seen.
@lru_cache(maxsize=65536)
def _reason(host: str) -> str:
    if len(host) > HOSTNAME_MAX:
        return f"{len(host)} characters, at most {HOSTNAME_MAX}"
    first, _, rest = host.partition(".")
    if not _is_label(first, _WILDCARD_LABEL):
        return f"{_label_text(first)} is not a DNS-1123 label or a leading wildcard ('*', '*x')"
    if not rest and "." not in host:
        return ""
    labels = rest.split(".")
    if labels[-1] == "":  # a final dot
        labels.pop()
    if not labels:
        return ""
    for label in labels:
        if not _is_label(label, _LABEL):
            return f"{_label_text(label)} is not a DNS-1123 label"
    if labels[-1].isdigit():
        return f"the top-level domain {labels[-1]!r} is all digits"
    return ""


def _is_label(label: str, pattern: re.Pattern[str]) -> bool:
    return len(label) <= LABEL_MAX and pattern.fullmatch(label) is not None


def _label_text(label: str) -> str:
    if not label:
        return "an empty label"
    return f"label {_shown(label)}" + (
        f" ({len(label)} characters, at most {LABEL_MAX})" if len(label) > LABEL_MAX else ""
    )


def _shown(text: str) -> str:
    """``text`` quoted, with unprintable characters escaped, cut short when it is long."""
    if len(text) <= _SHOWN:
        return repr(text)
    return f"{text[:_SHOWN]!r}… ({len(text)} characters)"


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
