"""The folder source: reading YAML files once, and following a watched folder through inotify."""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

import pytest

from xds_server.sources.base import (
    STILL_SERVING,
    KindVerdict,
    KubeObject,
    ObjectKey,
    SourceProblem,
    kind_verdict,
    object_key,
)
from xds_server.sources.directory import DirectorySource, _read_at_most, load_directory
from xds_server.store import LoopTimer, ObjectStore, StoreChange

REVIEWS: ObjectKey = ("VirtualService", "default", "reviews")
RATINGS: ObjectKey = ("VirtualService", "default", "ratings")


def virtual_service(name: str = "reviews", weight: int = 90, namespace: str = "") -> str:
    namespace_line = f"\n  namespace: {namespace}" if namespace else ""
    return f"""apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: {name}{namespace_line}
spec:
  hosts: [{name}]
  http:
  - route:
    - destination: {{host: {name}, subset: v1}}
      weight: {weight}
    - destination: {{host: {name}, subset: v2}}
      weight: {100 - weight}
"""


def service(name: str = "reviews") -> str:
    return f"""apiVersion: v1
kind: Service
metadata:
  name: {name}
spec:
  selector: {{app: {name}}}
  ports: [{{port: 9080}}]
"""


def weight_of(obj: KubeObject | None) -> int:
    assert obj is not None
    return int(obj["spec"]["http"][0]["route"][0]["weight"])


class Sink:
    """An ObjectSink that applies calls like the store would and records them in order."""

    def __init__(self) -> None:
        self.objects: dict[ObjectKey, KubeObject] = {}
        self.problems: list[SourceProblem] = []
        self.synced = False
        self.calls: list[tuple[str, ObjectKey | None]] = []

    def replace_all(self, source: str, objects: Iterable[KubeObject]) -> None:
        self.objects = {object_key(obj): obj for obj in objects}
        self.calls.append(("replace_all", None))

    def upsert(self, source: str, obj: KubeObject) -> None:
        self.objects[object_key(obj)] = obj
        self.calls.append(("upsert", object_key(obj)))

    def delete(self, source: str, key: ObjectKey) -> None:
        del self.objects[key]
        self.calls.append(("delete", key))

    def set_problems(self, source: str, problems: Iterable[SourceProblem]) -> None:
        self.problems = list(problems)
        self.calls.append(("set_problems", None))

    def mark_synced(self, source: str) -> None:
        self.synced = True
        self.calls.append(("mark_synced", None))

    def deleted(self, key: ObjectKey) -> bool:
        return ("delete", key) in self.calls

    def problem_files(self) -> list[str]:
        """The file of each error (warnings say what is still served, or what is skipped)."""
        return [os.path.basename(p.file) for p in self.problems if not p.warning]

    def still_served(self) -> list[ObjectKey]:
        """The objects a warning says are kept at their last accepted version."""
        return [
            (p.kind, p.namespace, p.name)
            for p in self.problems
            if p.message.endswith(STILL_SERVING)
        ]


async def eventually(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait, polling, until ``condition()`` holds; fail after a generous ``timeout``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.002)


async def weight_becomes(sink: Sink, weight: int, key: ObjectKey = REVIEWS) -> None:
    await eventually(lambda: key in sink.objects and weight_of(sink.objects[key]) == weight)


async def settled_by_marker(folder: Path, sink: Sink) -> None:
    """Wait until every event queued before now has been handled (events arrive in order)."""
    marker = folder / "zz-marker.yaml"
    generation = len(sink.calls)
    marker.write_text(service(f"marker-{generation}"))
    await eventually(lambda: ("Service", "default", f"marker-{generation}") in sink.objects)


Start = Callable[..., Awaitable[tuple[DirectorySource, Sink]]]


@pytest.fixture
def mesh(tmp_path: Path) -> Path:
    folder = tmp_path / "mesh"
    folder.mkdir()
    return folder


@pytest.fixture
async def start(mesh: Path) -> AsyncIterator[Start]:
    """Start a DirectorySource on the ``mesh`` folder; stopped at teardown."""
    started: list[DirectorySource] = []

    async def start_source(**options: Any) -> tuple[DirectorySource, Sink]:
        sink = Sink()
        source = DirectorySource(mesh, sink, **options)
        await source.start()
        started.append(source)
        return source, sink

    yield start_source
    for source in started:
        await source.stop()


# -- reading once ---------------------------------------------------------------------------------


def test_load_reads_every_yaml_and_yml_file_recursively_with_many_documents(mesh: Path) -> None:
    (mesh / "routes.yaml").write_text(virtual_service() + "---\n" + virtual_service("ratings"))
    (mesh / "team" / "deep").mkdir(parents=True)
    (mesh / "team" / "deep" / "svc.yml").write_text(service())
    objects, problems = load_directory([mesh])
    assert problems == []
    assert sorted(object_key(obj) for obj in objects) == [
        ("Service", "default", "reviews"),
        RATINGS,
        REVIEWS,
    ]


def test_load_skips_other_files_and_hidden_files_and_folders(mesh: Path) -> None:
    (mesh / "notes.txt").write_text(service("txt"))
    (mesh / "reviews.yaml~").write_text(service("backup"))
    (mesh / ".reviews.yaml").write_text(service("hidden"))
    (mesh / ".git").mkdir()
    (mesh / ".git" / "svc.yaml").write_text(service("in-hidden-folder"))
    (mesh / "svc.YAML").write_text(service("upper"))
    objects, problems = load_directory([mesh])
    assert problems == []
    assert [obj["metadata"]["name"] for obj in objects] == ["upper"]


def test_load_reads_a_file_named_explicitly_whatever_its_name(mesh: Path) -> None:
    (mesh / "svc.txt").write_text(service())
    objects, _ = load_directory([mesh / "svc.txt"])
    assert [object_key(obj) for obj in objects] == [("Service", "default", "reviews")]


def test_load_reports_a_missing_path(mesh: Path) -> None:
    objects, problems = load_directory([mesh / "absent.yaml"])
    assert objects == []
    assert problems == [SourceProblem("no such file or directory", file=str(mesh / "absent.yaml"))]


def test_objects_without_a_namespace_are_put_in_default(mesh: Path) -> None:
    (mesh / "a.yaml").write_text(
        virtual_service() + "---\n" + virtual_service("ratings", 1, "shop")
    )
    objects, _ = load_directory([mesh])
    assert [obj["metadata"]["namespace"] for obj in objects] == ["default", "shop"]


def test_empty_documents_are_skipped_silently(mesh: Path) -> None:
    (mesh / "a.yaml").write_text("---\n" + service() + "---\n---\n")
    (mesh / "empty.yaml").write_text("")
    objects, problems = load_directory([mesh])
    assert problems == []
    assert len(objects) == 1


def test_timestamps_stay_strings_as_in_kubernetes(mesh: Path) -> None:
    text = service() + "  # comment\n" + "status:\n  since: 2024-01-02T03:04:05Z\n"
    (mesh / "a.yaml").write_text(text.replace("spec:", "metadata2: 2024-01-02\nspec:"))
    objects, _ = load_directory([mesh])
    assert objects[0]["metadata2"] == "2024-01-02"
    assert objects[0]["status"]["since"] == "2024-01-02T03:04:05Z"


@pytest.mark.parametrize(
    ("document", "message", "field", "warning"),
    [
        ("- a list\n", "document 2 (line 9) is a list, not a mapping", "", False),
        ("just text\n", "document 2 (line 9) is a str, not a mapping", "", False),
        ("metadata: {name: x}\n", "document 2 (line 9) has no kind", "kind", False),
        (
            "apiVersion: v1\nkind: Service\nmetadata: {namespace: a}\n",
            "document 2 (line 9): Service has no metadata.name",
            "metadata.name",
            False,
        ),
        (
            "apiVersion: v1\nkind: Service\nmetadata: {name: 7}\n",
            "document 2 (line 9): Service has no metadata.name",
            "metadata.name",
            False,
        ),
        (
            "apiVersion: v1\nkind: Service\nmetadata: {name: x, namespace: [a]}\n",
            "document 2 (line 9): metadata.namespace must be a string",
            "metadata.namespace",
            False,
        ),
        (
            "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: x}\n",
            "document 2 (line 9): kind 'Gateway' is not one splitplane reads; skipped",
            "kind",
            False,  # but info: expected in a folder of manifests
        ),
        (
            "apiVersion: networking.istio.io/v1\nkind: VirtualServce\nmetadata: {name: x}\n",
            "document 2 (line 9): networking.istio.io/v1 has no kind 'VirtualServce'; "
            "did you mean VirtualService?",
            "kind",
            False,  # an error: Kubernetes would refuse it
        ),
        (
            "apiVersion: example.com/v1\nkind: VirtualServce\nmetadata: {name: x}\n",
            "document 2 (line 9): kind 'VirtualServce' of example.com/v1 is not one splitplane"
            " reads; skipped; did you mean VirtualService?",
            "kind",
            True,
        ),
    ],
)
def test_a_bad_document_is_a_problem_naming_file_and_document_and_is_skipped(
    mesh: Path, document: str, message: str, field: str, warning: bool
) -> None:
    (mesh / "a.yaml").write_text(service() + "---\n" + document + "---\n" + service("ratings"))
    objects, problems = load_directory([mesh])
    assert [obj["metadata"]["name"] for obj in objects] == ["reviews", "ratings"]
    assert len(problems) == 1
    assert problems[0].message == message
    assert problems[0].file == str(mesh / "a.yaml")
    assert problems[0].field == field
    assert problems[0].warning is warning
    assert problems[0].info is ("is not one splitplane reads" in message and not warning)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "kind: Service\nmetadata: {name: a\n",
            "invalid YAML at line 11, column 1: did not find expected ',' or '}'"
            " (while parsing a flow mapping at line 10, column 11)",
        ),
        (
            "kind: Service\n  metadata: x\n",
            "invalid YAML at line 10, column 11: mapping values are not allowed in this context",
        ),
        (
            "kind: Service\nmetadata:\n\tname: a\n",
            "invalid YAML at line 11, column 1: found character that cannot start any token"
            " (while scanning for the next token at line 11, column 1)",
        ),
        ("a: *undefined\n", "invalid YAML at line 9, column 4: found undefined alias"),
        ("? [a]\n: b\n", "invalid YAML at line 9, column 3: found unhashable key"),
    ],
)
def test_broken_yaml_is_one_problem_for_the_file_with_line_and_column(
    mesh: Path, text: str, message: str
) -> None:
    # The broken document starts on line 9, after an 8-line good one.
    (mesh / "broken.yaml").write_text(service() + "---\n" + text)
    (mesh / "good.yaml").write_text(service("ratings"))
    objects, problems = load_directory([mesh])
    assert [obj["metadata"]["name"] for obj in objects] == ["ratings"]
    assert [problem.file for problem in problems] == [str(mesh / "broken.yaml")]
    assert problems[0].message.startswith(message)


def test_a_file_that_is_not_text_is_one_problem(mesh: Path) -> None:
    (mesh / "binary.yaml").write_bytes(service().encode() + b"a: \xff\xfe\n")
    objects, problems = load_directory([mesh])
    assert objects == []
    assert len(problems) == 1
    assert problems[0].message.startswith("invalid YAML:")


def test_line_numbers_count_from_the_start_of_the_file(mesh: Path) -> None:
    (mesh / "broken.yaml").write_text(service() + "---\nkind: [\n")
    _, problems = load_directory([mesh])
    assert "at line 10, column 1" in problems[0].message


def test_a_10_mb_file_is_refused_by_the_default_limit_and_nothing_else_is_lost(mesh: Path) -> None:
    (mesh / "huge.yaml").write_text(service() + "#" * (10 * 1024 * 1024) + "\n")
    (mesh / "small.yaml").write_text(service("ratings"))
    objects, problems = load_directory([mesh])
    assert [obj["metadata"]["name"] for obj in objects] == ["ratings"]
    [problem] = problems
    assert problem.file == str(mesh / "huge.yaml")
    assert problem.message == f"file is larger than the limit of {4 * 1024 * 1024} bytes"


def test_a_file_over_the_size_limit_is_a_problem_not_a_crash(mesh: Path) -> None:
    (mesh / "big.yaml").write_text(service() + "#" * 2000 + "\n")
    (mesh / "small.yaml").write_text(service("ratings"))
    objects, problems = load_directory([mesh], max_file_bytes=1024)
    assert [obj["metadata"]["name"] for obj in objects] == ["ratings"]
    assert problems == [
        SourceProblem("file is larger than the limit of 1024 bytes", file=str(mesh / "big.yaml"))
    ]


@pytest.mark.parametrize("size_taken", [0, 10, 5000, 6000])
def test_a_file_is_read_to_its_end_or_one_byte_past_the_limit(mesh: Path, size_taken: int) -> None:
    # The size fstat gave may be out of date: the file grew or shrank before it was read.
    for length, limit, expected in [(5000, 1024, 1025), (5000, 8192, 5000), (0, 1024, 0)]:
        path = mesh / "growing.yaml"
        path.write_bytes(b"#" * length)
        fd = os.open(path, os.O_RDONLY)
        try:
            assert _read_at_most(fd, limit, size_taken) == b"#" * expected
        finally:
            os.close(fd)


def test_a_named_pipe_is_a_problem_and_does_not_block(mesh: Path) -> None:
    os.mkfifo(mesh / "pipe.yaml")
    (mesh / "svc.yaml").write_text(service())
    objects, problems = load_directory([mesh])
    assert len(objects) == 1
    assert problems == [SourceProblem("not a regular file", file=str(mesh / "pipe.yaml"))]


def test_a_file_that_cannot_be_read_is_a_problem(mesh: Path) -> None:
    (mesh / "svc.yaml").symlink_to(mesh / "gone.yaml")  # dangling: opening it fails
    (mesh / "other.yaml").write_text(service())
    objects, problems = load_directory([mesh])
    assert len(objects) == 1
    assert problems == [SourceProblem("no such file or directory", file=str(mesh / "svc.yaml"))]


def billion_laughs(levels: int = 9) -> str:
    lines = ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for level in range(1, levels + 1):
        refs = ", ".join([f"*a{level - 1}"] * 10)
        lines.append(f"a{level}: &a{level} [{refs}]")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (billion_laughs(), "unsafe YAML: aliases expand the document to more than"),
        ("a: &loop [x, *loop]\n", "unsafe YAML: an alias refers to a node that contains it"),
        ("a: &loop {b: *loop}\n", "unsafe YAML: an alias refers to a node that contains it"),
    ],
)
def test_alias_bombs_and_self_references_are_refused(mesh: Path, text: str, message: str) -> None:
    (mesh / "bomb.yaml").write_text(text)
    objects, problems = load_directory([mesh])
    assert objects == []
    assert len(problems) == 1
    assert problems[0].message.startswith(message)


def test_moderate_use_of_aliases_is_fine(mesh: Path) -> None:
    text = service().replace("spec:", "x-labels: &labels {app: reviews}\nspec:")
    (mesh / "a.yaml").write_text(text + "  extra: *labels\n")
    objects, problems = load_directory([mesh])
    assert problems == []
    assert objects[0]["spec"]["extra"] == {"app": "reviews"}


def test_when_two_files_define_an_object_the_first_by_path_wins(mesh: Path) -> None:
    (mesh / "b.yaml").write_text(virtual_service(weight=20))
    (mesh / "a.yaml").write_text(virtual_service(weight=10) + "---\n" + virtual_service(weight=5))
    objects, problems = load_directory([mesh])
    assert [weight_of(obj) for obj in objects] == [10]
    assert [(os.path.basename(p.file), p.message) for p in problems] == [
        (
            "a.yaml",
            "VirtualService default/reviews is already defined earlier in this file;"
            " this one is ignored",
        ),
        (
            "b.yaml",
            f"VirtualService default/reviews is already defined in {mesh / 'a.yaml'};"
            " this one is ignored",
        ),
    ]
    assert (problems[1].kind, problems[1].namespace, problems[1].name) == REVIEWS


# -- the watched folder ---------------------------------------------------------------------------


async def test_start_reports_the_folder_then_marks_it_synced(mesh: Path, start: Start) -> None:
    (mesh / "a.yaml").write_text(virtual_service())
    (mesh / "b.yaml").write_text("kind: [\n")
    _, sink = await start()
    assert sink.calls == [("replace_all", None), ("set_problems", None), ("mark_synced", None)]
    assert list(sink.objects) == [REVIEWS]
    assert sink.problem_files() == ["b.yaml"]


async def test_start_refuses_a_missing_folder(tmp_path: Path) -> None:
    source = DirectorySource(tmp_path / "absent", Sink())
    with pytest.raises(NotADirectoryError):
        await source.start()


async def test_adding_a_file_adds_its_objects(mesh: Path, start: Start) -> None:
    _, sink = await start()
    (mesh / "reviews.yaml").write_text(virtual_service())
    await eventually(lambda: REVIEWS in sink.objects)
    assert weight_of(sink.objects[REVIEWS]) == 90


async def test_editing_a_file_in_place_updates_its_objects(mesh: Path, start: Start) -> None:
    (mesh / "reviews.yaml").write_text(virtual_service(weight=90))
    _, sink = await start()
    (mesh / "reviews.yaml").write_text(virtual_service(weight=0))
    await weight_becomes(sink, 0)
    assert not sink.deleted(REVIEWS)


async def test_deleting_a_file_removes_its_objects(mesh: Path, start: Start) -> None:
    (mesh / "reviews.yaml").write_text(virtual_service() + "---\n" + virtual_service("ratings"))
    _, sink = await start()
    (mesh / "reviews.yaml").unlink()
    await eventually(lambda: not sink.objects)
    assert sink.deleted(REVIEWS)
    assert sink.deleted(RATINGS)


async def test_renaming_a_file_keeps_its_objects_without_a_deletion(
    mesh: Path, start: Start
) -> None:
    (mesh / "old.yaml").write_text(virtual_service())
    (mesh / "broken.yaml").write_text("kind: [\n")
    _, sink = await start()
    (mesh / "broken.yaml").rename(mesh / "renamed-broken.yaml")
    (mesh / "old.yaml").rename(mesh / "new.yaml")
    await eventually(lambda: sink.problem_files() == ["renamed-broken.yaml"])
    await settled_by_marker(mesh, sink)
    assert REVIEWS in sink.objects
    assert not sink.deleted(REVIEWS)


async def test_moving_a_file_out_of_the_folder_removes_its_objects(
    mesh: Path, start: Start, tmp_path: Path
) -> None:
    (mesh / "reviews.yaml").write_text(virtual_service())
    _, sink = await start()
    (mesh / "reviews.yaml").rename(tmp_path / "elsewhere.yaml")
    await eventually(lambda: REVIEWS not in sink.objects)


async def test_moving_a_file_in_adds_its_objects(mesh: Path, start: Start, tmp_path: Path) -> None:
    _, sink = await start()
    (tmp_path / "incoming.yaml").write_text(virtual_service())
    (tmp_path / "incoming.yaml").rename(mesh / "reviews.yaml")
    await eventually(lambda: REVIEWS in sink.objects)


async def test_atomic_save_by_temp_file_and_rename_updates_without_a_deletion(
    mesh: Path, start: Start
) -> None:
    (mesh / "reviews.yaml").write_text(virtual_service(weight=90))
    _, sink = await start()
    for weight in (0, 100, 50):
        temp = mesh / f".reviews.yaml.{weight}.tmp"
        temp.write_text(virtual_service(weight=weight))
        os.replace(temp, mesh / "reviews.yaml")
        await weight_becomes(sink, weight)
    assert not sink.deleted(REVIEWS)


async def test_vim_backup_then_write_never_withdraws_the_objects(mesh: Path, start: Start) -> None:
    (mesh / "reviews.yaml").write_text(virtual_service(weight=90))
    _, sink = await start(removal_grace=30.0)
    # vim with backupcopy=no: rename the file to its backup, write a new file, drop the backup.
    (mesh / "reviews.yaml").rename(mesh / "reviews.yaml~")
    await settled_by_marker(mesh, sink)  # the source has seen the file vanish
    assert weight_of(sink.objects.get(REVIEWS)) == 90
    (mesh / "4913").write_text("")  # vim's probe file
    (mesh / "4913").unlink()
    (mesh / "reviews.yaml").write_text(virtual_service(weight=10))
    (mesh / "reviews.yaml~").unlink()
    await weight_becomes(sink, 10)
    assert not sink.deleted(REVIEWS)


async def test_a_file_that_vanishes_and_comes_back_within_the_grace_keeps_its_objects(
    mesh: Path, start: Start
) -> None:
    (mesh / "reviews.yaml").write_text(virtual_service(weight=90))
    _, sink = await start(removal_grace=30.0)
    (mesh / "reviews.yaml").unlink()
    await settled_by_marker(mesh, sink)
    (mesh / "reviews.yaml").write_text(virtual_service(weight=90))
    await settled_by_marker(mesh, sink)
    assert REVIEWS in sink.objects
    assert not sink.deleted(REVIEWS)


async def test_a_file_is_not_read_until_its_writer_closes_it(mesh: Path, start: Start) -> None:
    (mesh / "reviews.yaml").write_text(virtual_service(weight=90))
    _, sink = await start()
    text = virtual_service(weight=10)
    with open(mesh / "reviews.yaml", "w") as handle:
        handle.write(text[: len(text) // 2])
        handle.flush()
        await settled_by_marker(mesh, sink)
        assert weight_of(sink.objects.get(REVIEWS)) == 90
        assert sink.problems == []
        handle.write(text[len(text) // 2 :])
    await weight_becomes(sink, 10)
    assert sink.problems == []


async def test_a_half_written_file_is_a_problem_and_its_previous_objects_stay(
    mesh: Path, start: Start
) -> None:
    (mesh / "reviews.yaml").write_text(virtual_service(weight=90) + "---\n" + service())
    _, sink = await start()
    truncated = virtual_service(weight=10).split("  http:")[0] + "  http:\n  - route: [{destinat"
    (mesh / "reviews.yaml").write_text(truncated)
    await eventually(lambda: sink.problem_files() == ["reviews.yaml"])
    assert "line " in sink.problems[0].message
    assert "column " in sink.problems[0].message
    assert sink.still_served() == [REVIEWS, ("Service", "default", "reviews")]
    assert weight_of(sink.objects.get(REVIEWS)) == 90
    assert ("Service", "default", "reviews") in sink.objects

    (mesh / "reviews.yaml").write_text(virtual_service(weight=10))
    await weight_becomes(sink, 10)
    await eventually(lambda: sink.problems == [])
    assert ("Service", "default", "reviews") not in sink.objects


# Edits that leave a document something no Kubernetes API server would take: the document could
# be the broken version of any object the file held.
UNIDENTIFIABLE_EDITS = [
    pytest.param(
        lambda text: text.replace("kind: VirtualService", "kind: VirtualServce"), id="kind typo"
    ),
    pytest.param(lambda text: text.replace("kind: VirtualService\n", ""), id="kind line deleted"),
    pytest.param(lambda text: text.replace("  name: reviews\n", ""), id="no metadata.name"),
    pytest.param(
        lambda text: text.replace("  name: reviews\n", "  name: Reviews\n"), id="name not DNS"
    ),
    pytest.param(
        lambda text: text.replace("  name: reviews\n", "  name: reviews\n  namespace: 7\n"),
        id="namespace a number",
    ),
    pytest.param(
        lambda text: text.replace("  name: reviews\n", "  name: reviews\n  namespace: A_B\n"),
        id="namespace not DNS",
    ),
    pytest.param(
        lambda text: text.replace("apiVersion: networking.istio.io/v1\n", ""), id="no apiVersion"
    ),
    pytest.param(
        lambda text: text.replace("networking.istio.io/v1", "networking.istio.io/v1beta"),
        id="version that does not exist",
    ),
    pytest.param(
        lambda text: text.replace("networking.istio.io/v1", "v1"), id="kind not in the version"
    ),
    pytest.param(
        lambda text: text.replace("networking.istio.io", "Networking.istio.io"),
        id="group upper case",
    ),
    pytest.param(lambda text: "- " + text.replace("\n", "\n  "), id="document a list"),
    pytest.param(lambda text: "reviews\n", id="document a scalar"),
]


@pytest.mark.parametrize("edit", UNIDENTIFIABLE_EDITS)
async def test_while_a_file_has_a_document_kubernetes_would_refuse_its_objects_stay(
    mesh: Path, start: Start, edit: Callable[[str], str]
) -> None:
    (mesh / "reviews.yaml").write_text(virtual_service(weight=90) + "---\n" + service())
    _, sink = await start()
    # The other document changes in the same save: nothing of the file is applied.
    broken = edit(virtual_service(weight=10)) + "---\n" + service().replace("9080", "9090")
    (mesh / "reviews.yaml").write_text(broken)
    await eventually(lambda: sink.problem_files() == ["reviews.yaml"])
    assert sink.still_served() == [REVIEWS, ("Service", "default", "reviews")]
    assert weight_of(sink.objects.get(REVIEWS)) == 90
    assert sink.objects[("Service", "default", "reviews")]["spec"]["ports"] == [{"port": 9080}]
    assert not any(call[0] == "delete" for call in sink.calls)

    (mesh / "reviews.yaml").write_text(virtual_service(weight=10))
    await weight_becomes(sink, 10)
    await eventually(lambda: sink.problems == [])
    assert ("Service", "default", "reviews") not in sink.objects


async def test_a_new_file_with_a_refused_document_serves_nothing(mesh: Path, start: Start) -> None:
    _, sink = await start()
    (mesh / "reviews.yaml").write_text(service() + "---\napiVersion: v1\nkind: Servce\n")
    await eventually(lambda: sink.problem_files() == ["reviews.yaml"])
    assert sink.objects == {}
    assert sink.still_served() == []
    assert "v1 has no kind 'Servce'" in sink.problems[0].message


async def test_a_folder_read_at_start_skips_a_file_with_a_refused_document(
    mesh: Path, start: Start
) -> None:
    (mesh / "a.yaml").write_text(service("ratings"))
    (mesh / "b.yaml").write_text(service() + "---\nkind: Service\n")
    _, sink = await start()
    assert list(sink.objects) == [("Service", "default", "ratings")]
    assert sink.problem_files() == ["b.yaml"]


async def test_a_kind_splitplane_does_not_read_holds_nothing_back(mesh: Path, start: Start) -> None:
    (mesh / "reviews.yaml").write_text(virtual_service(weight=90))
    _, sink = await start()
    other = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n"
    (mesh / "reviews.yaml").write_text(virtual_service(weight=10) + "---\n" + other)
    await weight_becomes(sink, 10)
    assert [p.info for p in sink.problems] == [True]


async def test_a_broken_file_leaves_other_files_unaffected(mesh: Path, start: Start) -> None:
    (mesh / "reviews.yaml").write_text(virtual_service("reviews", weight=90))
    (mesh / "ratings.yaml").write_text(virtual_service("ratings", weight=90))
    _, sink = await start()
    (mesh / "reviews.yaml").write_text("kind: VirtualService\nmetadata: [\n")
    await eventually(lambda: sink.problem_files() == ["reviews.yaml"])
    (mesh / "ratings.yaml").write_text(virtual_service("ratings", weight=30))
    await weight_becomes(sink, 30, RATINGS)
    assert weight_of(sink.objects.get(REVIEWS)) == 90
    assert sink.problem_files() == ["reviews.yaml"]


async def test_a_file_over_the_size_limit_keeps_its_previous_objects(
    mesh: Path, start: Start
) -> None:
    (mesh / "reviews.yaml").write_text(virtual_service(weight=90))
    _, sink = await start(max_file_bytes=1024)
    (mesh / "reviews.yaml").write_text(virtual_service(weight=10) + "#" * 2000 + "\n")
    await eventually(lambda: sink.problem_files() == ["reviews.yaml"])
    assert "larger than the limit" in sink.problems[0].message
    assert weight_of(sink.objects.get(REVIEWS)) == 90


async def test_only_the_changed_file_is_reported_again(mesh: Path, start: Start) -> None:
    (mesh / "reviews.yaml").write_text(virtual_service("reviews"))
    (mesh / "ratings.yaml").write_text(virtual_service("ratings"))
    _, sink = await start()
    (mesh / "reviews.yaml").write_text(virtual_service("reviews", weight=1))
    await weight_becomes(sink, 1)
    assert sink.calls[3:] == [("upsert", REVIEWS)]


async def test_a_new_subfolder_is_watched_with_the_files_already_in_it(
    mesh: Path, start: Start
) -> None:
    _, sink = await start()
    (mesh / "team" / "a" / "b").mkdir(parents=True)
    (mesh / "team" / "a" / "b" / "reviews.yaml").write_text(virtual_service())
    await eventually(lambda: REVIEWS in sink.objects)
    (mesh / "team" / "a" / "b" / "ratings.yaml").write_text(virtual_service("ratings"))
    await eventually(lambda: RATINGS in sink.objects)


async def test_removing_a_subfolder_removes_its_objects(mesh: Path, start: Start) -> None:
    (mesh / "team" / "deep").mkdir(parents=True)
    (mesh / "team" / "deep" / "reviews.yaml").write_text(virtual_service())
    (mesh / "ratings.yaml").write_text(virtual_service("ratings"))
    _, sink = await start()
    shutil.rmtree(mesh / "team")
    await eventually(lambda: REVIEWS not in sink.objects)
    assert RATINGS in sink.objects


async def test_a_subfolder_removed_and_made_again_is_followed(mesh: Path, start: Start) -> None:
    (mesh / "team").mkdir()
    (mesh / "team" / "reviews.yaml").write_text(virtual_service(weight=90))
    _, sink = await start()
    shutil.rmtree(mesh / "team")
    (mesh / "team").mkdir()
    (mesh / "team" / "reviews.yaml").write_text(virtual_service(weight=10))
    await weight_becomes(sink, 10)
    await settled_by_marker(mesh, sink)
    (mesh / "team" / "reviews.yaml").write_text(virtual_service(weight=20))
    await weight_becomes(sink, 20)


async def test_removing_the_watched_folder_withdraws_everything_and_says_so(
    mesh: Path, start: Start
) -> None:
    (mesh / "reviews.yaml").write_text(virtual_service())
    _, sink = await start()
    shutil.rmtree(mesh)
    await eventually(lambda: not sink.objects)
    await eventually(
        lambda: [p.message for p in sink.problems] == ["the watched folder was removed"]
    )


async def test_folders_moved_out_in_and_around_are_followed(
    mesh: Path, start: Start, tmp_path: Path
) -> None:
    (mesh / "team").mkdir()
    (mesh / "team" / "reviews.yaml").write_text(virtual_service())
    _, sink = await start()

    (mesh / "team").rename(mesh / "renamed")
    await settled_by_marker(mesh, sink)
    assert REVIEWS in sink.objects
    assert not sink.deleted(REVIEWS)
    (mesh / "renamed" / "reviews.yaml").write_text(virtual_service(weight=5))
    await weight_becomes(sink, 5)

    (mesh / "renamed").rename(tmp_path / "outside")
    await eventually(lambda: REVIEWS not in sink.objects)
    (tmp_path / "outside" / "reviews.yaml").write_text(virtual_service(weight=6))
    await settled_by_marker(mesh, sink)
    assert REVIEWS not in sink.objects

    (tmp_path / "outside").rename(mesh / "back")
    await weight_becomes(sink, 6)


async def test_duplicates_across_files_first_wins_until_it_is_removed(
    mesh: Path, start: Start
) -> None:
    (mesh / "a.yaml").write_text(virtual_service(weight=10))
    (mesh / "b.yaml").write_text(virtual_service(weight=20))
    _, sink = await start(removal_grace=0.01)
    assert weight_of(sink.objects[REVIEWS]) == 10
    assert sink.problem_files() == ["b.yaml"]
    (mesh / "a.yaml").unlink()
    await weight_becomes(sink, 20)
    await eventually(lambda: sink.problems == [])


async def test_problems_are_sent_again_only_when_they_change(mesh: Path, start: Start) -> None:
    (mesh / "a.yaml").write_text(virtual_service(weight=10))
    (mesh / "b.yaml").write_text(virtual_service(weight=20))
    _, sink = await start()
    assert sink.problem_files() == ["b.yaml"]
    before = len(sink.calls)
    (mesh / "a.yaml").write_text(virtual_service(weight=30))
    await weight_becomes(sink, 30)
    assert sink.calls[before:] == [("upsert", REVIEWS)]
    (mesh / "b.yaml").write_text(virtual_service("ratings"))
    await eventually(lambda: RATINGS in sink.objects)
    assert sink.problems == []
    assert sink.calls[-2:] == [("upsert", RATINGS), ("set_problems", None)]


async def test_a_mounted_configmap_update_is_followed(mesh: Path, start: Start) -> None:
    # How the kubelet lays out and atomically updates a ConfigMap volume.
    (mesh / "..v1").mkdir()
    (mesh / "..v1" / "reviews.yaml").write_text(virtual_service(weight=90))
    (mesh / "..data").symlink_to("..v1")
    (mesh / "reviews.yaml").symlink_to(os.path.join("..data", "reviews.yaml"))
    _, sink = await start()
    assert list(sink.objects) == [REVIEWS]

    (mesh / "..v2").mkdir()
    (mesh / "..v2" / "reviews.yaml").write_text(virtual_service(weight=10))
    (mesh / "..data_tmp").symlink_to("..v2")
    os.replace(mesh / "..data_tmp", mesh / "..data")
    shutil.rmtree(mesh / "..v1")
    await weight_becomes(sink, 10)
    assert sink.problems == []


async def test_after_the_kernel_queue_overflows_the_folder_is_read_again(
    mesh: Path, start: Start
) -> None:
    (mesh / "reviews.yaml").write_text(virtual_service(weight=90))
    (mesh / "ratings.yaml").write_text(virtual_service("ratings"))
    junk = [mesh / "a.txt", mesh / "b.txt"]
    for path in junk:
        path.touch()
    _, sink = await start()
    queue_limit = int(Path("/proc/sys/fs/inotify/max_queued_events").read_text())
    # Without yielding to the loop, queue more events than the kernel holds: each open for writing
    # and close is one event (alternating files, so the kernel cannot merge them).
    for index in range(queue_limit + 100):
        os.close(os.open(junk[index % 2], os.O_WRONLY))
    (mesh / "reviews.yaml").write_text(virtual_service(weight=10))
    (mesh / "ratings.yaml").unlink()
    (mesh / "late.yaml").write_text(service())
    await weight_becomes(sink, 10)
    await eventually(lambda: RATINGS not in sink.objects)
    await eventually(lambda: ("Service", "default", "reviews") in sink.objects)


async def test_after_stop_changes_are_no_longer_followed(mesh: Path, start: Start) -> None:
    source, sink = await start()
    await source.stop()
    calls = list(sink.calls)
    (mesh / "reviews.yaml").write_text(virtual_service())
    await asyncio.sleep(0.05)
    assert sink.calls == calls


class JumpingClock(LoopTimer):
    """The loop's clock, which a test can move forward to stand for a long quiet period."""

    def __init__(self) -> None:
        self.offset = 0.0

    def now(self) -> float:
        return super().now() + self.offset


async def test_the_first_change_after_quiet_reaches_the_store_consumer_at_once(mesh: Path) -> None:
    (mesh / "reviews.yaml").write_text(virtual_service(weight=90))
    changes: list[StoreChange] = []
    clock = JumpingClock()
    # A quiet period far beyond the wait below: a change held back by it would never arrive.
    store = ObjectStore(changes.append, quiet=60.0, max_delay=120.0, timer=clock)
    source = DirectorySource(mesh, store)
    await source.start()
    try:
        await eventually(lambda: len(changes) == 1)
        assert changes[0].initial
        clock.offset += 3600.0
        (mesh / "reviews.yaml").write_text(virtual_service(weight=0))
        await eventually(lambda: len(changes) == 2)
        assert changes[1] == StoreChange(keys=frozenset({REVIEWS}))
        assert weight_of(store.get(REVIEWS)) == 0
    finally:
        await source.stop()
        store.close()


def skipped(kind: str, of: str = "") -> KindVerdict:
    return KindVerdict("kind", f"kind {kind!r}{of} is not one splitplane reads; skipped", False)


def refused(field: str, message: str) -> KindVerdict:
    return KindVerdict(field, message, True)


@pytest.mark.parametrize(
    ("api_version", "kind", "verdict"),
    [
        ("v1", "Service", None),
        ("networking.istio.io/v1alpha3", "VirtualService", None),
        ("networking.k8s.io/v1", "Ingress", None),
        ("v1", "ConfigMap", skipped("ConfigMap")),
        ("v1", "List", skipped("List")),
        ("v1", "ServiceList", skipped("ServiceList")),
        ("serving.knative.dev/v1", "Service", skipped("Service", " of serving.knative.dev/v1")),
        ("v1", "Servce", refused("kind", "v1 has no kind 'Servce'")),
        (
            "networking.istio.io/v1",
            "Gatway",
            refused("kind", "networking.istio.io/v1 has no kind 'Gatway'"),
        ),
        ("v1", "VirtualService", refused("kind", "v1 has no kind 'VirtualService'")),
        (
            "discovery.k8s.io/v1beta1",
            "EndpointSlice",
            refused(
                "apiVersion",
                "EndpointSlice is read as discovery.k8s.io/v1, not discovery.k8s.io/v1beta1",
            ),
        ),
        (
            "networking.istio.io/v2",
            "VirtualService",
            refused(
                "apiVersion",
                "apiVersion 'networking.istio.io/v2' does not exist (known: networking.istio.io/v1,"
                " networking.istio.io/v1alpha3, networking.istio.io/v1beta1)",
            ),
        ),
        (None, "Service", refused("apiVersion", "has no apiVersion")),
        (7, "Gateway", refused("apiVersion", "has no apiVersion")),
        (
            "V1",
            "Service",
            refused("apiVersion", "apiVersion 'V1' is not a lowercase group/version"),
        ),
    ],
)
def test_which_kinds_are_read_skipped_or_refused(
    api_version: object, kind: str, verdict: KindVerdict | None
) -> None:
    assert kind_verdict(api_version, kind) == verdict
