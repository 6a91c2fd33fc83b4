"""A canary folder and the ways an edit can break it.

``canary_files`` is a small mesh as a folder of YAML: Service ``reviews`` with two pods, an
EndpointSlice per pod, subsets v1/v2 and a VirtualService that sends requests with
``x-canary: yes`` to v2 and every other request to v1 (weights 100/0). Where a request lands is
deterministic, so a single request shows whether routing changed.

``canary_mutations`` derives edits from it, each one file's new content: every field deleted,
every value swapped for another type, every number pushed out of range, kinds, apiVersions and
names misspelled, documents turned into lists and scalars, lines deleted. Some are valid edits,
most are not; ``splitplane validate`` tells them apart.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import yaml

CANARY_HEADER = "x-canary"

Path_ = tuple[str | int, ...]  # a path inside a document: mapping keys and list indexes


@dataclass(frozen=True)
class Mutation:
    """One edit: ``file`` gets ``text``. ``case`` names it; ``required`` marks the edits every
    run must include (each breaks an object in a way that once changed routing)."""

    case: str
    file: str
    text: str
    required: bool = False


def canary_files(v1_port: int, v2_port: int) -> dict[str, str]:
    """The canary folder: file name → content. Backends listen on 127.0.0.1 at the ports."""
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "reviews", "namespace": "default"},
        "spec": {
            "selector": {"app": "reviews"},
            "ports": [{"name": "http", "port": 80, "targetPort": "http"}],
        },
    }
    rule = {
        "apiVersion": "networking.istio.io/v1",
        "kind": "DestinationRule",
        "metadata": {"name": "reviews", "namespace": "default"},
        "spec": {
            "host": "reviews",
            "subsets": [
                {"name": "v1", "labels": {"version": "v1"}},
                {"name": "v2", "labels": {"version": "v2"}},
            ],
        },
    }
    routes = {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "reviews", "namespace": "default"},
        "spec": {
            "hosts": ["reviews"],
            "http": [
                {
                    "match": [{"headers": {CANARY_HEADER: {"exact": "yes"}}}],
                    "route": [{"destination": {"host": "reviews", "subset": "v2"}}],
                },
                {
                    "route": [
                        {"destination": {"host": "reviews", "subset": "v1"}, "weight": 100},
                        {"destination": {"host": "reviews", "subset": "v2"}, "weight": 0},
                    ]
                },
            ],
        },
    }

    def pod(version: str) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": f"reviews-{version}",
                "namespace": "default",
                "labels": {"app": "reviews", "version": version},
            },
            "status": {
                "phase": "Running",
                "podIP": "127.0.0.1",
                "conditions": [{"type": "Ready", "status": "True"}],
            },
        }

    def endpoint_slice(version: str, port: int) -> dict[str, Any]:
        return {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": f"reviews-{version}",
                "namespace": "default",
                "labels": {"kubernetes.io/service-name": "reviews"},
            },
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
            "endpoints": [
                {
                    "addresses": ["127.0.0.1"],
                    "conditions": {"ready": True},
                    "targetRef": {
                        "kind": "Pod",
                        "namespace": "default",
                        "name": f"reviews-{version}",
                    },
                }
            ],
        }

    return {
        "service.yaml": dump([service]),
        "routing.yaml": dump([rule, routes]),  # two documents: a broken one holds back both
        "pods.yaml": dump([pod("v1"), pod("v2")]),
        "slice-v1.yaml": dump([endpoint_slice("v1", v1_port)]),
        "slice-v2.yaml": dump([endpoint_slice("v2", v2_port)]),
    }


def dump(documents: list[Any]) -> str:
    return yaml.safe_dump_all(documents, sort_keys=False)


# -- mutations ------------------------------------------------------------------------------------


def _paths(node: Any, at: Path_ = ()) -> Iterator[tuple[Path_, Any]]:
    """Every path under ``node`` (not ``node`` itself) with its value, depth first."""
    items: list[tuple[str | int, Any]] = []
    if isinstance(node, dict):
        items = list(node.items())
    elif isinstance(node, list):
        items = list(enumerate(node))
    for key, value in items:
        yield (*at, key), value
        yield from _paths(value, (*at, key))


def _replaced(node: Any, path: Path_, value: Any) -> Any:
    """A copy of ``node`` with ``path`` set to ``value`` (deleted when ``value`` is _DELETE)."""
    if not path:
        return value
    head, rest = path[0], path[1:]
    if isinstance(node, dict):
        out = dict(node)
        if not rest and value is _DELETE:
            del out[head]
        else:
            out[head] = _replaced(node[head], rest, value)
        return out
    assert isinstance(node, list) and isinstance(head, int)
    items = list(node)
    if not rest and value is _DELETE:
        del items[head]
    else:
        items[head] = _replaced(node[head], rest, value)
    return items


_DELETE = object()


def _shown(path: Path_) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _swaps(value: Any) -> list[tuple[str, Any]]:
    """Values of other types (and, for numbers, out of range) to put in place of ``value``."""
    swaps: list[tuple[str, Any]] = [("null", None), ("list", [value]), ("true", True)]
    if isinstance(value, bool):
        swaps += [("string", "yes"), ("number", 1)]
    elif isinstance(value, int):
        swaps += [
            ("string", str(value)),
            ("negative", -1),
            ("zero", 0),
            ("65536", 65536),
            ("2^31", 2**31),
            ("10^20", 10**20),
            ("fraction", value + 0.5),
            ("mapping", {"value": value}),
        ]
    elif isinstance(value, str):
        swaps += [
            ("number", 7),
            ("mapping", {value: value}),
            ("empty", ""),
            ("upper case", value.upper()),
            ("space", f"{value} x"),
        ]
    elif isinstance(value, dict):
        swaps += [("string", "x"), ("empty", {}), ("list of items", list(value.items()))]
    elif isinstance(value, list):
        swaps += [("string", "x"), ("empty", []), ("mapping", {"0": value[0] if value else 0})]
    return swaps


def _kind_typos(kind: str) -> list[str]:
    return [
        kind[:4] + kind[5:],  # Service → Servce, a letter dropped
        kind[:-2] + kind[-1] + kind[-2],  # two letters swapped
        kind.lower(),
        kind + "s",
    ]


def _document_mutations(file: str, documents: list[Any], index: int) -> Iterator[Mutation]:
    """Mutations of document ``index`` of ``file``."""
    document = documents[index]
    where = f"{file}#{index}"

    def edit(case: str, new: Any, *, required: bool = False) -> Mutation:
        changed = [*documents[:index], new, *documents[index + 1 :]]
        return Mutation(f"{where} {case}", file, dump(changed), required)

    kind = document["kind"]
    for path, value in _paths(document):
        shown = _shown(path)
        required = False
        if kind == "Pod" and path == ("metadata", "name"):
            required = True  # a Pod without a name
        if kind == "DestinationRule" and path == ("metadata", "name"):
            required = True  # a DestinationRule without a name
        yield edit(f"{shown} deleted", _replaced(document, path, _DELETE), required=required)
        for label, swapped in _swaps(value):
            required = (path == ("metadata", "namespace") and label == "number") or (
                kind == "EndpointSlice" and path == ("ports", 0, "port") and label == "65536"
            )  # a namespace that is not a string; a port out of range
            yield edit(f"{shown} → {label}", _replaced(document, path, swapped), required=required)
    for typo in _kind_typos(kind):
        yield edit(f"kind → {typo}", {**document, "kind": typo}, required=typo == "Servce")
    for version in ("v2", "networking.istio.io/v1", "v1", "networking.istio.io/v1beta", ""):
        if version != document["apiVersion"]:
            yield edit(f"apiVersion → {version!r}", {**document, "apiVersion": version})
    meta = document["metadata"]
    for label, name in [
        ("typo", meta["name"] + "z"),
        ("upper case", meta["name"].capitalize()),
        ("underscore", meta["name"].replace("-", "_") + "_x"),
        ("300 characters", "r" * 300),
        ("path", "../../etc"),
    ]:
        yield edit(f"metadata.name → {label}", {**document, "metadata": {**meta, "name": name}})
    yield edit(
        "metadata.namespace → upper case",
        {**document, "metadata": {**meta, "namespace": "Default"}},
    )
    yield edit("document → a list", [document], required=True)
    yield edit("document → a scalar", "reviews", required=True)
    yield edit("document → a number", 42)


def _line_mutations(file: str, text: str) -> Iterator[Mutation]:
    """Mutations of the text: each ``kind:`` line deleted, a line indented with a tab, the
    file cut in half."""
    lines = text.splitlines(keepends=True)
    for number, line in enumerate(lines):
        if line.startswith("kind:"):
            kept = lines[:number] + lines[number + 1 :]
            yield Mutation(f"{file}:{number + 1} kind line deleted", file, "".join(kept), True)
    for number, line in enumerate(lines):
        if line.startswith("  ") and number % 7 == 3:
            tabbed = [*lines[:number], "\t" + line.lstrip(" "), *lines[number + 1 :]]
            yield Mutation(f"{file}:{number + 1} indented with a tab", file, "".join(tabbed))
    yield Mutation(f"{file} cut in half", file, text[: len(text) // 2])
    yield Mutation(f"{file} → a scalar", file, "reviews\n")


def canary_mutations(files: Mapping[str, str]) -> list[Mutation]:
    """Every mutation of ``files`` (see the module docstring), each a change, in a fixed order."""
    found: dict[tuple[str, str], Mutation] = {}
    for file, text in files.items():
        documents = list(yaml.safe_load_all(text))
        candidates = [
            *(m for i in range(len(documents)) for m in _document_mutations(file, documents, i)),
            *_line_mutations(file, text),
        ]
        for mutation in candidates:
            key = (mutation.file, mutation.text)
            if mutation.text == text:
                continue
            held = found.get(key)
            if held is None or (mutation.required and not held.required):
                found[key] = mutation
    return list(found.values())
