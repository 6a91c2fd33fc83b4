"""How the folder source builds YAML documents: exactly as PyYAML's safe loader (timestamps left
as strings) builds them, whatever the document holds, including the errors it reports."""

from __future__ import annotations

import math
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from xds_server.sources.directory import _documents, _KubeYamlLoader

BUDGET = 1_000_000

# Plain scalars that resolve to every core-schema type, and some that need the full constructor:
# explicit tags, merge and value keys, quoting, flow collections.
TOKENS = [
    "reviews",
    "a b",
    "",
    "~",
    "null",
    "Null",
    "yes",
    "No",
    "on",
    "OFF",
    "true",
    "False",
    "0",
    "-17",
    "+5",
    "017",
    "0o17",
    "0x1F",
    "0b101",
    "1_000",
    "1:30",
    "-1:30:00",
    "1.5",
    "1e3",
    "6.8523015e+5",
    "190:20:30.15",
    ".inf",
    "-.Inf",
    ".NaN",
    "2001-12-14",
    "2001-12-14t21:59:43.10-05:00",
    "'quoted: yes'",
    '"double \\u00e9"',
    "!!str 12",
    "!!int '7'",
    "!!float '1'",
    "!!binary aGVsbG8=",
    "!!timestamp 2001-12-14",
    "!!set {a, b}",
    "!!omap [{a: 1}]",
    "!custom x",
    "[1, two, {three: 3}]",
    "{a: 1, b: [x]}",
    "{}",
    "[]",
]
KEYS = [*TOKENS[:31], "<<", "=", "'<<'", "[1, 2]", "{k: v}", "? x"]

Tree = Any  # ("scalar", token) | ("map", [(key, Tree)]) | ("seq", [Tree])

trees: st.SearchStrategy[Tree] = st.recursive(
    st.tuples(st.just("scalar"), st.sampled_from(TOKENS)),
    lambda children: st.one_of(
        st.tuples(
            st.just("map"),
            st.lists(st.tuples(st.sampled_from(KEYS), children), min_size=1, max_size=4),
        ),
        st.tuples(st.just("seq"), st.lists(children, min_size=1, max_size=4)),
    ),
    max_leaves=12,
)


def render(tree: Tree, indent: int = 0) -> list[str]:
    """Block-style YAML lines for ``tree``."""
    pad = " " * indent
    kind, content = tree
    if kind == "scalar":
        return [pad + content]
    lines = []
    if kind == "map":
        for key, value in content:
            if value[0] == "scalar":
                lines.append(f"{pad}{key}: {value[1]}")
            else:
                lines.append(f"{pad}{key}:")
                lines.extend(render(value, indent + 2))
        return lines
    for item in content:
        if item[0] == "scalar":
            lines.append(f"{pad}- {item[1]}")
        else:
            lines.append(f"{pad}-")
            lines.extend(render(item, indent + 2))
    return lines


def canonical(value: Any) -> Any:
    """``value`` with every type spelled out (so that 1, 1.0 and True differ) and NaN comparable."""
    if isinstance(value, dict):
        return ("dict", [(canonical(k), canonical(v)) for k, v in value.items()])
    if isinstance(value, list):
        return ("list", [canonical(item) for item in value])
    if isinstance(value, set | frozenset):
        return ("set", sorted(repr(item) for item in value))
    if isinstance(value, float) and math.isnan(value):
        return ("float", "nan")
    return (type(value).__name__, value)


def safe_loader_documents(data: bytes) -> Any:
    """What the safe loader builds, or the error it raises."""
    loader = _KubeYamlLoader(data)
    try:
        built = []
        while loader.check_node():
            node = loader.get_node()
            if node is None:
                break
            built.append((node.start_mark.line + 1, canonical(loader.construct_document(node))))
        return built
    except Exception as exc:
        return (type(exc).__name__, str(exc))
    finally:
        loader.dispose()


def folder_documents(data: bytes) -> Any:
    try:
        return [(line, canonical(document)) for line, document in _documents(data, BUDGET)]
    except Exception as exc:
        return (type(exc).__name__, str(exc))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents=st.lists(trees, min_size=1, max_size=3))
def test_documents_are_built_as_the_safe_loader_builds_them(documents: list[Tree]) -> None:
    data = "\n".join("---\n" + "\n".join(render(tree)) for tree in documents).encode()
    assert folder_documents(data) == safe_loader_documents(data)


def test_a_kubernetes_object_keeps_its_types() -> None:
    data = b"""apiVersion: v1
kind: Service
metadata: {name: reviews, labels: {canary: "true", stable: yes}}
spec:
  ports: [{port: 9080, targetPort: http}]
  sessionAffinity: ~
  weight: 1.5
  created: 2001-12-14
"""
    [(line, service)] = _documents(data, BUDGET)
    assert line == 1
    assert service["metadata"]["labels"] == {"canary": "true", "stable": True}
    assert service["spec"] == {
        "ports": [{"port": 9080, "targetPort": "http"}],
        "sessionAffinity": None,
        "weight": 1.5,
        "created": "2001-12-14",
    }
    assert folder_documents(data) == safe_loader_documents(data)


def test_merge_keys_and_explicit_tags_are_built_by_the_safe_constructor() -> None:
    data = b"base: {a: 1}\nderived:\n  <<: {b: 2}\n  c: !!str 3\nraw: !!binary aGk=\n"
    [(_, document)] = _documents(data, BUDGET)
    assert document == {"base": {"a": 1}, "derived": {"b": 2, "c": "3"}, "raw": b"hi"}
    assert folder_documents(data) == safe_loader_documents(data)


def test_an_unhashable_key_is_the_safe_constructors_error() -> None:
    data = b"? [a, b]\n: value\n"
    assert folder_documents(data)[0] == "ConstructorError"
    assert folder_documents(data) == safe_loader_documents(data)


def test_yaml_documents_without_aliases_agree_with_yaml_safe_load() -> None:
    data = yaml.safe_dump({"spec": {"hosts": ["a"], "weight": 0, "on": "yes"}}).encode()
    [(_, document)] = _documents(data, BUDGET)
    assert document == yaml.safe_load(data)
