"""A rejected edit never changes routing, through a real Envoy sidecar.

A canary folder is served by `splitplane serve --config-dir`; where each request lands is
deterministic (``x-canary: yes`` → v2, everything else → v1). More than a hundred edits of it
that `splitplane validate` rejects are applied one at a time, each the way an editor saves: the
file written whole and renamed into place. Once the server has reported the edit's errors and the
sidecar has acknowledged whatever the server then serves, requests must land exactly where they
did before the edit. Then the file is restored and the next edit comes.

The edits (see `tests.support.canary_mutations`) include every field deleted, values of other
types, numbers out of range, misspelled kinds, apiVersions and names, documents turned into lists
and scalars, ``kind:`` lines deleted, and each case that once changed routing: ``kind: Servce``,
a Pod or DestinationRule without a name, a namespace that is not a string, an EndpointSlice port
out of range.

The same holds for the Kubernetes source: edits that keep each object's identity (what an API
server takes as updates) are applied through the API server, and no request moves either.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.test_serve_envoy import (
    FolderMesh,
    KubeMesh,
    Server,
    sidecar_bootstrap,
    splitplane_serve,
    wait_for,
)
from tests.kube.apiserver import FakeApiServer
from tests.support.backends import count_backends, free_port, http_backend
from tests.support.canary_mutations import (
    CANARY_HEADER,
    Mutation,
    canary_files,
    canary_mutations,
)
from xds_server.cli.local_envoy import running_envoy
from xds_server.cli.validate import validate_paths

pytestmark = pytest.mark.envoy

# How many rejected edits go through Envoy: every required one, the rest a fixed sample.
EDITS = 120
# For the Kubernetes source, edits that keep every object's identity (updates an API server
# takes); what is left of an unidentifiable document is the folder source's concern.
KUBE_EDITS = 30


def rejected_by_validate(
    files: dict[str, str], scratch: Path, count: int, among: list[Mutation] | None = None
) -> list[Mutation]:
    """``count`` mutations of ``files`` (or of ``among``) that `splitplane validate` reports an
    error for: every required one, then others in a fixed random order. A required one that it
    does not report is an error of the test."""
    scratch.mkdir()
    for name, text in files.items():
        (scratch / name).write_text(text)
    mutations = canary_mutations(files) if among is None else among
    required = [m for m in mutations if m.required]
    others = [m for m in mutations if not m.required]
    random.Random(11).shuffle(others)
    rejected: list[Mutation] = []
    for mutation in [*required, *others]:
        if len(rejected) == count:
            break
        (scratch / mutation.file).write_text(mutation.text)
        if any(d.is_error for d in validate_paths([scratch])):
            rejected.append(mutation)
        else:
            assert not mutation.required, f"validate accepts {mutation.case}"
        (scratch / mutation.file).write_text(files[mutation.file])
    return rejected


def write(root: Path, name: str, text: str) -> None:
    """Save ``text`` as an editor does: a whole new file renamed into place."""
    staged = root / f".{name}.tmp"
    staged.write_text(text)
    staged.replace(root / name)


def landings(outbound: int) -> tuple[Counter[str], Counter[str]]:
    """Where two plain requests and two canary requests land."""
    return (
        count_backends(outbound, 2, host="reviews"),
        count_backends(outbound, 2, host="reviews", headers={CANARY_HEADER: "yes"}),
    )


def errors(server: Server) -> list[dict[str, Any]]:
    diagnostics: list[dict[str, Any]] = server.get("/debug/diagnostics")["diagnostics"]
    return [d for d in diagnostics if d["severity"] == "error"]


def sidecar_has_what_is_served(server: Server) -> bool:
    """Whether every client acknowledged the versions its group's snapshot holds now (endpoints
    only while there are clusters: without any, Envoy asks for none)."""
    groups = server.get("/debug/snapshot")["groups"]
    clients = server.get("/debug/clients")["clients"]
    return bool(clients) and all(
        status["acked_version"] == served[status["type"]]["version"]
        or (status["type"] == "endpoints" and not served["clusters"]["resources"])
        for client in clients
        for served in [groups[client["group"]]]
        for status in client["types"]
    )


def check_edits(
    server: Server,
    workdir: Path,
    edits: list[Mutation],
    apply: Callable[[Mutation], None],
    restore: Callable[[Mutation], None],
) -> None:
    """Apply each edit in turn to what ``server`` serves, through one sidecar; fail naming every
    edit after which a request landed elsewhere."""
    outbound = free_port()
    with running_envoy(sidecar_bootstrap(server.xds_port, outbound), workdir / "envoy"):
        expected = (Counter(v1=2), Counter(v2=2))
        wait_for(lambda: landings(outbound) == expected, "the canary's routes")
        assert errors(server) == []

        changed = []
        for edit in edits:
            apply(edit)
            wait_for(lambda: errors(server) != [], f"the errors of {edit.case}")
            wait_for(lambda: sidecar_has_what_is_served(server), "the sidecar to sync")
            found = landings(outbound)
            if found != expected:
                reasons = [f"{d['kind']}/{d['name']} {d['message']}" for d in errors(server)]
                changed.append(f"{edit.case}: {dict(found[0])} {dict(found[1])} {reasons}")
            restore(edit)
            wait_for(lambda: errors(server) == [], f"{edit.file} restored")
        assert not changed, f"{len(changed)} of {len(edits)} edits:\n" + "\n".join(changed)
        wait_for(lambda: sidecar_has_what_is_served(server), "the sidecar to sync")
        assert landings(outbound) == expected


def test_no_edit_that_validate_rejects_changes_where_a_request_lands(tmp_path: Path) -> None:
    mesh = tmp_path / "mesh"
    mesh.mkdir()
    with http_backend("v1") as v1, http_backend("v2") as v2:
        files = canary_files(v1.port, v2.port)
        edits = rejected_by_validate(files, tmp_path / "scratch", EDITS)
        assert len(edits) == EDITS
        for name, text in files.items():
            write(mesh, name, text)
        with splitplane_serve(FolderMesh(mesh), tmp_path) as server:
            check_edits(
                server,
                tmp_path,
                edits,
                lambda edit: write(mesh, edit.file, edit.text),
                lambda edit: write(mesh, edit.file, files[edit.file]),
            )


def identities(text: str) -> list[Any] | None:
    """The kind, apiVersion, name and namespace of each document of ``text`` (None for a
    document that has no metadata, or for text that is not YAML)."""
    try:
        documents = list(yaml.load_all(text, Loader=yaml.CSafeLoader))
    except yaml.YAMLError:
        return None
    found: list[Any] = []
    for document in documents:
        meta = document.get("metadata") if isinstance(document, dict) else None
        if not isinstance(meta, dict):
            return None
        kind, version = document.get("kind"), document.get("apiVersion")
        found.append((kind, version, meta.get("name"), meta.get("namespace")))
    return found


def test_objects_from_kubernetes_that_fail_validation_keep_their_last_accepted_version(
    tmp_path: Path,
) -> None:
    with FakeApiServer() as api, http_backend("v1") as v1, http_backend("v2") as v2:
        files = canary_files(v1.port, v2.port)
        # Edits an API server takes as updates of the same objects.
        before = {name: identities(text) for name, text in files.items()}
        updates = [m for m in canary_mutations(files) if identities(m.text) == before[m.file]]
        edits = rejected_by_validate(files, tmp_path / "scratch", KUBE_EDITS, updates)
        assert len(edits) == KUBE_EDITS

        def put(text: str) -> None:
            for document in yaml.safe_load_all(text):
                api.apply(document)

        put("".join(f"---\n{text}" for text in files.values()))
        kubeconfig = api.write_kubeconfig(tmp_path / "kubeconfig")
        with splitplane_serve(KubeMesh(api, kubeconfig), tmp_path) as server:
            check_edits(
                server,
                tmp_path,
                edits,
                lambda edit: put(edit.text),
                lambda edit: put(files[edit.file]),
            )
