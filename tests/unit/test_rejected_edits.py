"""Every edit of the canary folder that `splitplane validate` rejects leaves its routes alone.

The watched folder (a real `DirectorySource`) and `translate`, chained the way `serve` chains them,
go through all of the canary's mutations (about 800 that validate rejects); the end-to-end test
sends a sample of them through a real Envoy. What must not change: the virtual host of
``reviews``, and the endpoints of every cluster its routes name.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tests.support.canary_mutations import canary_files, canary_mutations
from translators.translate import Translation, translate
from xds_server.cli.validate import validate_paths
from xds_server.sources.base import KubeObject, ObjectKey, SourceProblem, object_key
from xds_server.sources.directory import DirectorySource

REVIEWS_HOST = "reviews.default.svc.cluster.local:80"


class Sink:
    """The objects the folder source reports, and an event set at each of its calls."""

    def __init__(self) -> None:
        self.objects: dict[ObjectKey, KubeObject] = {}
        self.called = asyncio.Event()

    def _called(self) -> None:
        self.called.set()

    def replace_all(self, source: str, objects: Iterable[KubeObject]) -> None:
        self.objects = {object_key(obj): obj for obj in objects}
        self._called()

    def upsert(self, source: str, obj: KubeObject) -> None:
        self.objects[object_key(obj)] = obj
        self._called()

    def delete(self, source: str, key: ObjectKey) -> None:
        del self.objects[key]
        self._called()

    def set_problems(self, source: str, problems: Iterable[SourceProblem]) -> None:
        self._called()

    def mark_synced(self, source: str) -> None:
        pass


def routing(translation: Translation) -> Any:
    """The routes of ``reviews`` and the endpoints of the clusters they name."""
    [host] = [v for v in translation.model.mesh_hosts if v.name == REVIEWS_HOST]
    named = {d.cluster for route in host.routes for d in route.destinations}
    endpoints = {e.cluster: e.endpoints for e in translation.model.endpoints if e.cluster in named}
    return host, endpoints


async def written(sink: Sink, path: Path, text: str) -> None:
    """Save ``text`` to ``path`` as an editor does; return once the source has reported it."""
    sink.called.clear()
    staged = path.with_name(f".{path.name}.tmp")
    staged.write_text(text)
    staged.replace(path)
    await asyncio.wait_for(sink.called.wait(), timeout=10)


async def test_no_edit_that_validate_rejects_changes_the_routes(tmp_path: Path) -> None:
    files = canary_files(9001, 9002)
    mesh, scratch = tmp_path / "mesh", tmp_path / "scratch"
    for folder in (mesh, scratch):
        folder.mkdir()
        for name, text in files.items():
            (folder / name).write_text(text)
    sink = Sink()
    source = DirectorySource(mesh, sink)
    await source.start()
    try:
        translation = translate(sink.objects.values())
        assert not translation.has_errors
        expected = routing(translation)
        rejected, changed = 0, []
        for edit in canary_mutations(files):
            (scratch / edit.file).write_text(edit.text)
            refused = any(d.is_error for d in validate_paths([scratch]))
            (scratch / edit.file).write_text(files[edit.file])
            if not refused:
                continue
            rejected += 1
            await written(sink, mesh / edit.file, edit.text)
            translation = translate(sink.objects.values(), previous=translation)
            if routing(translation) != expected:
                changed.append(edit.case)
            await written(sink, mesh / edit.file, files[edit.file])
            translation = translate(sink.objects.values(), previous=translation)
            assert not translation.has_errors, edit.case
        assert changed == []
        assert rejected >= 700
    finally:
        await source.stop()
