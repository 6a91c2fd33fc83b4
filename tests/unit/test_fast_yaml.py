"""The fast YAML path: the folder source reads ordinary Kubernetes YAML with the fast parser, and
leaves to PyYAML every file where the two could build something different — so what a folder
yields, its errors and lines included, is what PyYAML's safe loader yields."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from xds_server.sources import fast_yaml
from xds_server.sources.directory import _documents, parse_yaml, pyyaml_documents

BUDGET = 1_000_000

KUBERNETES_FILE = b"""# reviews: one Service, its pods, and the canary split
apiVersion: v1
kind: Service
metadata:
  name: reviews
  namespace: shop
  labels: {app: reviews, tier: "backend"}
spec:
  selector:
    app: reviews
  ports:
  - name: http
    port: 9080
    targetPort: 9080
---
apiVersion: v1
kind: Pod
metadata:
  name: reviews-v1-0
  namespace: shop
  labels:
    app: reviews
    version: v1
  annotations:
    note: |
      kept as written
      over two lines
    folded: >-
      one
      line
status:
  phase: Running
  podIP: 10.0.0.7
  conditions:
  - type: Ready
    status: "True"
---
# the split
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
  namespace: shop
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews, subset: v1}
      weight: 90
    - destination:
        host: reviews
        subset: v2
      weight: 10
    timeout: 1.5s
    retries: {attempts: 3, perTryTimeout: 0.5s}
    fault:
      delay:
        percentage: {value: 0.1}
        fixedDelay: 5s
"""


def canonical(value: Any) -> Any:
    """``value`` with every type spelled out (so that 1, 1.0 and True differ) and NaN comparable."""
    if isinstance(value, dict):
        return ("dict", [(canonical(k), canonical(v)) for k, v in value.items()])
    if isinstance(value, list):
        return ("list", [canonical(item) for item in value])
    if isinstance(value, float) and math.isnan(value):
        return ("float", "nan")
    return (type(value).__name__, value)


def built(read: Any, data: bytes) -> Any:
    try:
        return [(line, canonical(document)) for line, document in read(data, BUDGET)]
    except Exception as exc:
        return (type(exc).__name__, str(exc))


def test_ordinary_kubernetes_yaml_is_read_by_the_fast_parser_as_pyyaml_reads_it() -> None:
    fast = fast_yaml.documents(KUBERNETES_FILE)
    assert fast is not None
    assert [line for line, _ in fast] == [2, 16, 39]
    assert built(lambda data, _: fast, KUBERNETES_FILE) == built(pyyaml_documents, KUBERNETES_FILE)


def test_windows_line_endings_and_empty_documents_keep_their_lines() -> None:
    data = b"---\r\n# nothing here\r\n---\r\napiVersion: v1\r\nkind: Service\r\n---\r\n"
    assert fast_yaml.documents(data) is not None
    assert built(_documents, data) == built(pyyaml_documents, data)


@pytest.mark.parametrize(
    "text",
    [
        "port: 010",  # octal in YAML 1.1, ten in 1.2
        "port: 0o10",
        "weight: 1e3",  # a string in YAML 1.1
        "weight: +.5",
        "enabled: yes",  # a bool in YAML 1.1
        "at: 1:20",  # sexagesimal
        "<<: {a: 1}",
        "a: [x, y,\n  z]",  # a flow collection across lines
        "a: {>}",
        "a: >\n",  # an empty block scalar at the end
        "? a\n: 1",
        ": 1",  # an empty key, which PyYAML refuses
        ".nan: a\n.NaN: b",  # one key for PyYAML (a single NaN object), two for the fast parser
        "a:\n\tb: 1",  # tab indentation, which PyYAML refuses
        "a: b\x07",  # a control character
        "a: b\u2028c",  # a line separator: a line break in YAML 1.1
        "\ufeffa: 1",
        'a: "\\ud800"',
        "a: !custom x",
        "a: &x 1\nb: *x",
        "%YAML 1.1\n---\na: 1",
        "a: 1\n...\n",
        "--- {a: 1}",
    ],
)
def test_what_the_parsers_read_differently_is_left_to_pyyaml(text: str) -> None:
    data = text.encode("utf-8", "surrogatepass")
    assert fast_yaml.documents(data) is None
    assert built(_documents, data) == built(pyyaml_documents, data)


def test_a_string_that_looks_typed_is_read_fast_when_every_occurrence_is_quoted() -> None:
    quoted = b"status: 'True'\nport: \"80\"\nenabled: 'yes'\n"
    assert fast_yaml.documents(quoted) == [(1, {"status": "True", "port": "80", "enabled": "yes"})]
    unquoted = b"status: 'True'\nready: True\nenabled: yes\nagain: 'yes'\n"
    assert fast_yaml.documents(unquoted) is None
    assert built(_documents, unquoted) == built(pyyaml_documents, unquoted)


def test_a_file_that_fails_has_pyyaml_s_message_and_line() -> None:
    data = KUBERNETES_FILE + b"---\nkind: Pod\nmetadata: {name: x\n"
    parsed = parse_yaml("svc.yaml", data)
    assert not parsed.complete
    (problem,) = parsed.problems
    assert problem.message.startswith("invalid YAML at line 63, column 1: did not find expected")


# Text inserted at random places of a Kubernetes file: the constructs where YAML 1.1 and 1.2, or
# libyaml and the fast parser, part ways.
INSERTS = [
    "010", "0o7", "08", "yes", "No", "on", "OFF", "True", "1e3", "1.5e3", "+.5", "1_0", "1:20",
    "0b1", "-0x1F", "'True'", '"80"', "<<", "=", "~", "null", "- ", ": ", "\t", "#", "---",
    "...", "%YAML 1.1", "&a ", "*a", "!x ", "\n", "  ", "'", '"', "{", "}", "[", "]", ",", "?",
    "|", ">", "\r", "\x85", "\u2028", "\\u00e9", "\\ud800", ".inf", "-.inf", ".NaN", "@", "`",
    "\ufeff", "--- x", "12:30:00", "a: |\n", "b: >-\n", "\n---\n",
]  # fmt: skip


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    edits=st.lists(
        st.tuples(st.integers(0, len(KUBERNETES_FILE)), st.sampled_from(INSERTS), st.booleans()),
        min_size=1,
        max_size=3,
    )
)
def test_an_edited_kubernetes_file_is_built_as_pyyaml_builds_it(
    edits: list[tuple[int, str, bool]],
) -> None:
    text = KUBERNETES_FILE.decode()
    for wanted, insert, replace_line in edits:
        position = min(wanted, len(text))
        end = text.find("\n", position) if replace_line else position
        text = text[:position] + insert + text[end if end >= 0 else len(text) :]
    data = text.encode("utf-8", "surrogatepass")
    assert built(_documents, data) == built(pyyaml_documents, data)
