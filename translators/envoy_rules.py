"""Rules Envoy enforces in its code rather than in its protos, shared by the resolvers (which
name the user's field) and the preflight check (which checks what is sent).

- Envoy's header formatter reads ``%`` in a header value as the start of a command
  (``%HOSTNAME%``, ``%REQ(x-id)%``) and rejects a value with an unknown command or a stray ``%``;
  a percent sign is written ``%%``.
- A Maglev lookup table's size must be a prime number.
"""

from __future__ import annotations

import math
import re
from typing import Final

# The command operators Envoy's header formatter knows (``%NAME%`` or ``%NAME(...)%``).
FORMATTER_COMMANDS: Final = frozenset(
    """
    REQ RESP TRAILER REQUEST_HEADER RESPONSE_HEADER RESPONSE_TRAILER QUERY_PARAM PATH
    DYNAMIC_METADATA CLUSTER_METADATA UPSTREAM_METADATA FILTER_STATE UPSTREAM_FILTER_STATE
    PER_REQUEST_STATE START_TIME SYSTEM_TIME EMIT_TIME PROTOCOL UPSTREAM_PROTOCOL
    RESPONSE_CODE RESPONSE_CODE_DETAILS CONNECTION_TERMINATION_DETAILS RESPONSE_FLAGS
    RESPONSE_FLAGS_LONG BYTES_RECEIVED BYTES_SENT DURATION REQUEST_DURATION
    REQUEST_TX_DURATION RESPONSE_DURATION RESPONSE_TX_DURATION COMMON_DURATION UPSTREAM_HOST
    UPSTREAM_HOST_NAME UPSTREAM_HOST_NAME_WITHOUT_PORT UPSTREAM_CLUSTER UPSTREAM_CLUSTER_RAW
    UPSTREAM_LOCAL_ADDRESS UPSTREAM_LOCAL_ADDRESS_WITHOUT_PORT UPSTREAM_LOCAL_PORT
    UPSTREAM_REMOTE_ADDRESS UPSTREAM_REMOTE_ADDRESS_WITHOUT_PORT UPSTREAM_REMOTE_PORT
    UPSTREAM_TRANSPORT_FAILURE_REASON UPSTREAM_REQUEST_ATTEMPT_COUNT UPSTREAM_CONNECTION_ID
    UPSTREAM_PEER_URI_SAN UPSTREAM_LOCAL_URI_SAN UPSTREAM_PEER_SUBJECT UPSTREAM_PEER_ISSUER
    UPSTREAM_PEER_CERT UPSTREAM_TLS_VERSION UPSTREAM_TLS_CIPHER UPSTREAM_TLS_SESSION_ID
    DOWNSTREAM_LOCAL_ADDRESS DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT DOWNSTREAM_LOCAL_PORT
    DOWNSTREAM_REMOTE_ADDRESS DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT DOWNSTREAM_REMOTE_PORT
    DOWNSTREAM_DIRECT_REMOTE_ADDRESS DOWNSTREAM_DIRECT_REMOTE_ADDRESS_WITHOUT_PORT
    DOWNSTREAM_DIRECT_REMOTE_PORT DOWNSTREAM_PEER_URI_SAN DOWNSTREAM_LOCAL_URI_SAN
    DOWNSTREAM_PEER_SUBJECT DOWNSTREAM_LOCAL_SUBJECT DOWNSTREAM_PEER_ISSUER
    DOWNSTREAM_PEER_SERIAL DOWNSTREAM_PEER_FINGERPRINT_1 DOWNSTREAM_PEER_FINGERPRINT_256
    DOWNSTREAM_PEER_CERT DOWNSTREAM_PEER_CERT_V_START DOWNSTREAM_PEER_CERT_V_END
    DOWNSTREAM_TLS_VERSION DOWNSTREAM_TLS_CIPHER DOWNSTREAM_TLS_SESSION_ID
    DOWNSTREAM_PEER_DNS_SAN DOWNSTREAM_LOCAL_DNS_SAN CONNECTION_ID REQUESTED_SERVER_NAME
    ROUTE_NAME VIRTUAL_CLUSTER_NAME HOSTNAME LOCAL_REPLY_BODY FILTER_CHAIN_NAME ENVIRONMENT
    STREAM_ID UNIQUE_ID TRACE_ID CUSTOM_FLAGS REQUEST_HEADERS_BYTES RESPONSE_HEADERS_BYTES
    RESPONSE_TRAILERS_BYTES UPSTREAM_WIRE_BYTES_SENT UPSTREAM_WIRE_BYTES_RECEIVED
    UPSTREAM_HEADER_BYTES_SENT UPSTREAM_HEADER_BYTES_RECEIVED DOWNSTREAM_WIRE_BYTES_SENT
    DOWNSTREAM_WIRE_BYTES_RECEIVED DOWNSTREAM_HEADER_BYTES_SENT
    DOWNSTREAM_HEADER_BYTES_RECEIVED ACCESS_LOG_TYPE
    """.split()  # noqa: SIM905 - a list of names, kept readable
)
_COMMAND: Final = re.compile(r"%([A-Z0-9_]+)(\([^)]*\))?(:[0-9]+)?%")


def header_value_problem(value: str) -> str | None:
    """Why Envoy's header formatter would refuse ``value``, or None.

    ``%`` starts a command (``%HOSTNAME%``, ``%REQ(x-id)%``); a literal percent sign is ``%%``.
    """
    position = 0
    while (start := value.find("%", position)) >= 0:
        if value.startswith("%%", start):
            position = start + 2
            continue
        command = _COMMAND.match(value, start)
        if command is None:
            return (
                f"has an unescaped % at offset {start}: Envoy reads % as the start of a"
                " command such as %HOSTNAME%; write %% for a percent sign"
            )
        if command.group(1) not in FORMATTER_COMMANDS:
            return f"%{command.group(1)}% is not a command Envoy knows; write %% for a percent sign"
        position = command.end()
    return None


def is_prime(number: int) -> bool:
    """Envoy's primality test for Maglev table sizes."""
    if number < 2:
        return False
    if number < 4:
        return True
    if number % 2 == 0:
        return False
    return all(number % factor for factor in range(3, math.isqrt(number) + 1, 2))
