"""The objects of many files merged by key, kept up to date one file at a time.

The rule, for ``merge_files`` (read once) and the watched folder alike: when several documents
define the same kind/namespace/name, the first by path, then by document order, wins; every other
definition that differs from it is a problem naming its file (the same object written out twice,
identically, is one object, as `kubectl apply` of both would leave it). The problems come in path
order: a file's own problems, then its ignored definitions in document order.

``FileMerge`` keeps, for every key, where its winning definition is and, for a key defined more
than once, where the others are, in that order. Putting or removing one file costs what the file
holds plus the other definitions of the keys it touches (a key defined once has none), however
many other files there are.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Iterable
from dataclasses import dataclass, field

from xds_server.sources.base import KubeObject, ObjectKey, SourceProblem, object_key


@dataclass(frozen=True)
class ParsedFile:
    """What one file holds.

    ``complete`` is False when the file could not be read or parsed (``objects`` is then empty),
    or when some document in it is not an object Kubernetes would take (``objects`` then holds
    the documents that are). A watched folder does not apply such a file: its path keeps the
    objects it held when it was last complete, none for a new file.
    """

    path: str
    objects: tuple[KubeObject, ...]
    problems: tuple[SourceProblem, ...]
    complete: bool = True
    # The line each of ``objects`` starts on (empty when not known, e.g. kept from a past parse).
    lines: tuple[int, ...] = ()

    def line_of(self, position: int) -> int:
        """The line the object at ``position`` starts on; 0 when not known."""
        return self.lines[position] if position < len(self.lines) else 0


@dataclass(frozen=True)
class MergeChanges:
    """What changed since the last look: keys whose winning object is another one, keys gone."""

    upserted: list[KubeObject]  # the new winners, in path and document order
    deleted: list[ObjectKey]  # sorted


# Where a key is defined: the path of the file and the position among its objects. Places sort
# the way definitions take turns: by path, then document order; the first one wins.
_Place = tuple[str, int]


def _duplicate_problem(key: ObjectKey, path: str, first: str, line: int) -> SourceProblem:
    """The problem for a definition of ``key`` in ``path`` that loses to one in ``first``."""
    kind, namespace, name = key
    where = "earlier in this file" if first == path else f"in {first}"
    return SourceProblem(
        f"{kind} {namespace}/{name} is already defined {where}; this one is ignored",
        file=path,
        kind=kind,
        namespace=namespace,
        name=name,
        line=line,
    )


@dataclass
class _File:
    parsed: ParsedFile
    keys: tuple[ObjectKey, ...]  # the key of each of ``parsed.objects``
    # The definitions that lose, by position, each with its problem; every other position wins.
    duplicates: dict[int, SourceProblem] = field(default_factory=dict)


class FileMerge:
    """Files by path, their objects merged by key, and their problems (see the module docstring).

    Paths are distinct: putting a file again replaces what that path held.
    """

    def __init__(self, files: Iterable[ParsedFile] = ()) -> None:
        """A merge of ``files``; ``take_changes`` reports what changes after them."""
        self._files: dict[str, _File] = {}
        # Where each key's winning definition is, and for a key defined more than once, where the
        # definitions that lose to it are, in order.
        self._winners: dict[ObjectKey, _Place] = {}
        self._losers: dict[ObjectKey, list[_Place]] = {}
        # Each file's problems (its own, then its duplicates), for the files that have any.
        self._file_problems: dict[str, tuple[SourceProblem, ...]] = {}
        self._problems: tuple[SourceProblem, ...] | None = ()
        # The winning object of each key touched since ``take_changes`` last ran, as it was then.
        self._before: dict[ObjectKey, KubeObject | None] = {}
        for parsed in files:
            self._put_first(parsed)
        self._before = {}

    def __contains__(self, path: str) -> bool:
        return path in self._files

    def paths(self) -> list[str]:
        """The paths of the files held, in no particular order."""
        return list(self._files)

    def file(self, path: str) -> ParsedFile | None:
        """The file held for ``path``, if any."""
        held = self._files.get(path)
        return None if held is None else held.parsed

    def get(self, key: ObjectKey) -> KubeObject | None:
        """The winning object for ``key``, if any file defines it."""
        place = self._winners.get(key)
        return None if place is None else self._object_at(place)

    def position(self, key: ObjectKey) -> tuple[str, int] | None:
        """Where the winning definition of ``key`` is: its file's path and the line its document
        starts on (0 when not known); None when no file defines it."""
        place = self._winners.get(key)
        held = None if place is None else self._files.get(place[0])
        if place is None or held is None:
            return None
        return place[0], held.parsed.line_of(place[1])

    def objects(self) -> dict[ObjectKey, KubeObject]:
        """The winning object of every key, in path and document order (reads every file)."""
        merged: dict[ObjectKey, KubeObject] = {}
        for path in sorted(self._files):
            held = self._files[path]
            for index, (key, obj) in enumerate(zip(held.keys, held.parsed.objects, strict=True)):
                if self._winners[key] == (path, index):
                    merged[key] = obj
        return merged

    def problems(self) -> tuple[SourceProblem, ...]:
        """Every file's problems, in path order.

        The same tuple object comes back until some file's problems change.
        """
        if self._problems is None:
            by_file = self._file_problems
            self._problems = tuple(problem for path in sorted(by_file) for problem in by_file[path])
        return self._problems

    def put(self, parsed: ParsedFile) -> None:
        """Add the file ``parsed.path``, or replace what it held."""
        self._replace(parsed.path, parsed)

    def remove(self, path: str) -> None:
        """Forget the file ``path`` (nothing happens if it is not held)."""
        if path in self._files:
            self._replace(path, None)

    def take_changes(self) -> MergeChanges:
        """The keys whose winning object changed identity or disappeared since the last call."""
        upserted: list[_Place] = []
        deleted: list[ObjectKey] = []
        for key, before in self._before.items():
            place = self._winners.get(key)
            if place is None:
                if before is not None:
                    deleted.append(key)
            elif self._object_at(place) is not before:
                upserted.append(place)
        self._before = {}
        upserted.sort()
        return MergeChanges([self._object_at(place) for place in upserted], sorted(deleted))

    # -- keeping it up to date --------------------------------------------------------------------

    def _object_at(self, place: _Place) -> KubeObject:
        path, position = place
        return self._files[path].parsed.objects[position]

    def _put_first(self, parsed: ParsedFile) -> None:
        """`put` while the merge is being made: a file of keys no other file defines (nearly
        every file of a folder) just takes them; any other goes the general way."""
        path, winners = parsed.path, self._winners
        keys = tuple(map(object_key, parsed.objects))
        if path in self._files or len(set(keys)) != len(keys) or any(k in winners for k in keys):
            self._replace(path, parsed)
            return
        self._files[path] = _File(parsed, keys)
        for position, key in enumerate(keys):
            winners[key] = (path, position)
        if parsed.problems:
            self._file_problems[path] = parsed.problems
            self._problems = None

    def _replace(self, path: str, parsed: ParsedFile | None) -> None:
        # The winner of each key this change touches, as it was before (None: it was not defined).
        winners_before: dict[ObjectKey, _Place | None] = {}
        old = self._files.get(path)
        if old is not None:
            for index, key in enumerate(old.keys):
                self._note_winner(key, winners_before)
                self._withdraw(key, (path, index))
            del self._files[path]
        if parsed is not None:
            held = self._files[path] = _File(parsed, tuple(map(object_key, parsed.objects)))
            for position, key in enumerate(held.keys):
                self._note_winner(key, winners_before)
                winner = self._add(key, (path, position))
                # Later definitions in this file come after this one: what wins now stays.
                if winner != (path, position):
                    problem = self._loser_problem(key, (path, position), winner)
                    if problem is not None:
                        held.duplicates[position] = problem
        self._refresh_problems(path)
        # The other files' definitions of a key this change touched are checked against its winner
        # anew: it may have moved to another file, or changed (identical ones are no problem).
        others: set[str] = set()
        for key in winners_before:
            first = self._winners.get(key)
            if first is None:
                continue
            for other, position in [first, *self._losers.get(key, ())]:
                if other == path:
                    continue
                duplicates = self._files[other].duplicates
                problem = None
                if (other, position) != first:
                    problem = self._loser_problem(key, (other, position), first)
                if problem is None:
                    if duplicates.pop(position, None) is not None:
                        others.add(other)
                elif duplicates.get(position) != problem:
                    duplicates[position] = problem
                    others.add(other)
        for other in others:
            self._refresh_problems(other)

    def _loser_problem(self, key: ObjectKey, place: _Place, winner: _Place) -> SourceProblem | None:
        """The problem of the definition at ``place``, which loses to ``winner``: none when it
        is the very same object."""
        if self._object_at(place) == self._object_at(winner):
            return None
        line = self._files[place[0]].parsed.line_of(place[1])
        return _duplicate_problem(key, place[0], winner[0], line)

    def _note_winner(self, key: ObjectKey, winners_before: dict[ObjectKey, _Place | None]) -> None:
        """Note where the winner of ``key`` is before it changes, and for ``take_changes``, which
        object it is."""
        if key not in winners_before:
            place = winners_before[key] = self._winners.get(key)
            if key not in self._before:
                self._before[key] = None if place is None else self._object_at(place)

    def _add(self, key: ObjectKey, place: _Place) -> _Place:
        """Add a definition of ``key``; return where the winner is."""
        winner = self._winners.get(key)
        if winner is None:
            self._winners[key] = place
            return place
        losers = self._losers.setdefault(key, [])
        if place < winner:
            self._winners[key] = place
            losers.insert(0, winner)
            return place
        insort(losers, place)
        return winner

    def _withdraw(self, key: ObjectKey, place: _Place) -> None:
        """Remove the definition of ``key`` at ``place``."""
        losers = self._losers.get(key)
        if self._winners[key] == place:
            if losers:
                self._winners[key] = losers.pop(0)
            else:
                del self._winners[key]
        elif losers is not None:
            del losers[bisect_left(losers, place)]
        if losers is not None and not losers:
            del self._losers[key]

    def _refresh_problems(self, path: str) -> None:
        held = self._files.get(path)
        problems: tuple[SourceProblem, ...] = ()
        if held is not None:
            duplicates = held.duplicates
            problems = held.parsed.problems + tuple(duplicates[i] for i in sorted(duplicates))
        if problems == self._file_problems.get(path, ()):
            return
        if problems:
            self._file_problems[path] = problems
        else:
            del self._file_problems[path]
        self._problems = None


def merge_files(
    files: Iterable[ParsedFile],
) -> tuple[dict[ObjectKey, KubeObject], list[SourceProblem]]:
    """The objects of ``files`` by key, in path and document order, and all their problems, in
    path order (see the module docstring). Paths are distinct.
    """
    merge = FileMerge(sorted(files, key=lambda parsed: parsed.path))
    return merge.objects(), list(merge.problems())
