"""Merging files by key, one file at a time: after any history of writes, removals and renames, the
incremental merge holds what merging the current files at once gives, and reports exactly the
keys whose winning object changed."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from xds_server.sources.base import KubeObject, ObjectKey, SourceProblem, object_key
from xds_server.sources.file_merge import FileMerge, ParsedFile, merge_files

# Few paths and few keys, so that files overlap and replace each other often. "c.yaml" sorts
# before "c/d.yaml" ('.' < '/'): path order is plain string order.
PATHS = ["a.yaml", "b.yaml", "c.yaml", "c/d.yaml", "z.yml"]
KEYS: list[ObjectKey] = [
    ("VirtualService", "default", "reviews"),
    ("VirtualService", "default", "ratings"),
    ("VirtualService", "other", "reviews"),
    ("Service", "default", "reviews"),
]


def reference_merge(
    files: Iterable[ParsedFile],
) -> tuple[dict[ObjectKey, KubeObject], list[SourceProblem]]:
    """The rule as written down: walk the files in path order and their objects in document
    order; the first definition of a key wins, every later one that differs from it is a problem
    naming the first."""
    merged: dict[ObjectKey, KubeObject] = {}
    origin: dict[ObjectKey, str] = {}
    problems: list[SourceProblem] = []
    for parsed in sorted(files, key=lambda parsed: parsed.path):
        problems.extend(parsed.problems)
        for obj in parsed.objects:
            key = object_key(obj)
            first = origin.get(key)
            if first is None:
                merged[key] = obj
                origin[key] = parsed.path
                continue
            if obj == merged[key]:
                continue  # the same object again
            kind, namespace, name = key
            where = "earlier in this file" if first == parsed.path else f"in {first}"
            message = f"{kind} {namespace}/{name} is already defined {where}; this one is ignored"
            problems.append(SourceProblem(message, parsed.path, kind, namespace, name))
    return merged, problems


def kube_object(key: ObjectKey, content: int = 0) -> dict[str, Any]:
    """A new object under ``key``: a new identity, as a file parsed again gives, equal to the
    others under it with the same ``content``. Only the identity says which object wins."""
    kind, namespace, name = key
    return {"kind": kind, "metadata": {"name": name, "namespace": namespace}, "spec": content}


def parsed_file(
    path: str, keys: Sequence[ObjectKey], bad_documents: int, contents: Sequence[int] = ()
) -> ParsedFile:
    """A file of objects under ``keys`` (with ``contents``, by default 0 and 1 in turn, so a key
    written twice is two different objects)."""
    problems = tuple(
        SourceProblem(f"document {n} has no kind", file=path, field="kind")
        for n in range(bad_documents)
    )
    contents = contents or [n % 2 for n in range(len(keys))]
    return ParsedFile(
        path, tuple(kube_object(key, c) for key, c in zip(keys, contents, strict=True)), problems
    )


def identities(objects: dict[ObjectKey, KubeObject]) -> list[tuple[ObjectKey, int]]:
    """The keys in order, each with the identity of its object."""
    return [(key, id(obj)) for key, obj in objects.items()]


# -- histories ------------------------------------------------------------------------------------

Operation = tuple[Any, ...]

writes = st.tuples(
    st.just("write"),
    st.sampled_from(PATHS),
    st.lists(st.sampled_from(KEYS), max_size=5),  # a key may repeat: duplicates within the file
    st.integers(min_value=0, max_value=2),  # documents that are problems of their own
    st.lists(st.integers(min_value=0, max_value=1), min_size=5, max_size=5),  # their contents
)
breaks = st.tuples(st.just("break"), st.sampled_from(PATHS))  # unparsable, previous objects kept
removals = st.tuples(st.just("remove"), st.sampled_from(PATHS))
renames = st.tuples(st.just("rename"), st.sampled_from(PATHS), st.sampled_from(PATHS))
# One step is what one round of events brings: a few operations, then the result is looked at.
steps = st.lists(st.one_of(writes, writes, breaks, removals, renames), min_size=1, max_size=3)


def apply(operation: Operation, files: dict[str, ParsedFile], merge: FileMerge) -> None:
    """Apply ``operation`` to both the plain map of current files and the incremental merge."""
    match operation:
        case ("write", path, keys, bad_documents, contents):
            changed = [parsed_file(path, keys, bad_documents, contents[: len(keys)])]
        case ("break", path):
            previous = files.get(path)
            kept = previous.objects if previous is not None else ()
            problem = SourceProblem("invalid YAML at line 1, column 1: nope", file=path)
            changed = [ParsedFile(path, kept, (problem,), complete=False)]
        case ("remove", path):
            files.pop(path, None)
            merge.remove(path)
            return
        case ("rename", source, target):
            moved = files.pop(source, None)
            merge.remove(source)
            if moved is None:
                return
            # The very same objects, now under another path (they may win or lose differently).
            problems = tuple(
                SourceProblem(problem.message, file=target, field=problem.field)
                for problem in moved.problems
            )
            changed = [ParsedFile(target, moved.objects, problems, moved.complete)]
        case _:
            raise AssertionError(operation)
    for parsed in changed:
        files[parsed.path] = parsed
        merge.put(parsed)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(steps, min_size=1, max_size=25))
def test_after_every_step_the_merge_is_what_merging_the_current_files_gives(
    history: list[list[Operation]],
) -> None:
    files: dict[str, ParsedFile] = {}
    merge = FileMerge()
    reported: dict[ObjectKey, KubeObject] = {}  # what a sink applying the changes holds
    for step in history:
        before, _ = reference_merge(files.values())
        for operation in step:
            apply(operation, files, merge)
        expected, expected_problems = reference_merge(files.values())

        assert identities(merge.objects()) == identities(expected)
        assert list(merge.problems()) == expected_problems
        for key in KEYS:
            assert merge.get(key) is expected.get(key)
        at_once, at_once_problems = merge_files(files.values())
        assert identities(at_once) == identities(expected)
        assert at_once_problems == expected_problems

        changes = merge.take_changes()
        upserted = [object_key(obj) for obj in changes.upserted]
        # In path and document order of the winners, as the merged map is.
        assert upserted == [key for key, obj in expected.items() if before.get(key) is not obj]
        assert changes.deleted == sorted(before.keys() - expected.keys())
        for obj in changes.upserted:
            reported[object_key(obj)] = obj
        for key in changes.deleted:
            del reported[key]
        assert identities(dict(sorted(reported.items()))) == identities(
            dict(sorted(expected.items()))
        )


# -- the rule, case by case -----------------------------------------------------------------------

REVIEWS = KEYS[0]


def test_a_later_duplicate_takes_over_when_the_winner_is_removed() -> None:
    merge = FileMerge()
    first, second = parsed_file("a.yaml", [REVIEWS], 0), parsed_file("b.yaml", [REVIEWS], 0, [1])
    merge.put(second)
    merge.put(first)
    assert merge.take_changes().upserted == [first.objects[0]]
    assert [problem.message for problem in merge.problems()] == [
        "VirtualService default/reviews is already defined in a.yaml; this one is ignored"
    ]

    merge.remove("a.yaml")

    changes = merge.take_changes()
    assert changes.upserted == [second.objects[0]]
    assert changes.deleted == []
    assert merge.problems() == ()


def test_a_file_put_again_with_the_same_objects_changes_nothing() -> None:
    merge = FileMerge()
    merge.put(parsed_file("a.yaml", [REVIEWS, REVIEWS], 1))
    merge.take_changes()
    problems = merge.problems()
    previous = merge.file("a.yaml")
    assert previous is not None

    merge.put(ParsedFile("a.yaml", previous.objects, previous.problems))

    assert merge.take_changes().upserted == []
    assert merge.problems() is problems  # the same tuple: nothing to compare for whoever holds it
    assert [problem.message for problem in problems][1:] == [
        "VirtualService default/reviews is already defined earlier in this file; "
        "this one is ignored"
    ]


def test_the_same_object_in_two_files_is_one_object_until_one_of_them_changes() -> None:
    merge = FileMerge()
    merge.put(parsed_file("a.yaml", [REVIEWS], 0, [0]))
    merge.put(parsed_file("b.yaml", [REVIEWS], 0, [0]))
    assert merge.problems() == ()

    merge.put(parsed_file("a.yaml", [REVIEWS], 0, [1]))  # the winner changes
    assert [problem.message for problem in merge.problems()] == [
        "VirtualService default/reviews is already defined in a.yaml; this one is ignored"
    ]

    merge.put(parsed_file("b.yaml", [REVIEWS], 0, [1]))  # and the other follows
    assert merge.problems() == ()


def test_a_removed_key_is_reported_deleted_once() -> None:
    merge = FileMerge()
    merge.put(parsed_file("a.yaml", [REVIEWS], 0))
    merge.take_changes()
    merge.remove("a.yaml")
    merge.remove("a.yaml")
    assert merge.take_changes().deleted == [REVIEWS]
    assert merge.take_changes().deleted == []
    assert "a.yaml" not in merge


def test_a_merge_made_of_files_reports_only_what_changes_after_them() -> None:
    merge = FileMerge([parsed_file("a.yaml", [REVIEWS], 0)])
    assert merge.take_changes().upserted == []
    replacement = parsed_file("a.yaml", [REVIEWS], 0)
    merge.put(replacement)
    assert merge.take_changes().upserted == [replacement.objects[0]]
