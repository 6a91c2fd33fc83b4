"""A folder of Kubernetes-style YAML files as a source.

``load_directory`` reads files and folders once (``splitplane validate`` uses it).
``DirectorySource`` reads a folder, then follows it through Linux inotify: every write, rename
and removal is applied as soon as the kernel reports it, re-reading only the files that changed.

Rules shared by both:
- every ``*.yaml`` / ``*.yml`` under a folder is read, recursively; hidden files and folders (a name
  starting with ``.``) are skipped, and so are symlinked folders;
- a file holds any number of YAML documents; an empty document is skipped;
- a file that cannot be read or parsed (bad YAML, over the size limit, aliases that expand too far)
  is one problem for that file, with the line and column when YAML gives them; in a watched folder
  its previous objects stay in effect until it parses again;
- a document Kubernetes would refuse (not a mapping; no ``kind`` or ``apiVersion``; a kind that
  does not exist in a known API version, see ``kind_verdict``; no ``metadata.name``, or a name or
  namespace that is not a DNS name) is an error naming the file and the document; ``validate``
  checks the file's other documents, but a watched folder does not apply the file: every object
  it held keeps its last accepted version, with a warning saying so (a new file serves nothing);
- a kind of another API, or of a known API that splitplane does not read, is a warning and the
  document is skipped;
- an object without a namespace is put in ``default``;
- when two documents define the same kind/namespace/name, the first by path order wins and the
  other is a problem (``file_merge`` holds this rule; a watched folder keeps its merge up to date
  one changed file at a time).
"""

from __future__ import annotations

import asyncio
import difflib
import errno
import logging
import os
import re
import stat
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, BinaryIO

import yaml

from xds_server.sources import fast_yaml
from xds_server.sources.base import (
    KINDS,
    STILL_SERVING,
    KubeObject,
    ObjectKey,
    ObjectSink,
    SourceProblem,
    kind_verdict,
    object_key,
)
from xds_server.sources.file_merge import FileMerge, ParsedFile, merge_files
from xds_server.sources.inotify import (
    FOLDER_EVENTS,
    IN_CLOSE_WRITE,
    IN_CREATE,
    IN_DELETE,
    IN_DELETE_SELF,
    IN_IGNORED,
    IN_ISDIR,
    IN_MOVED_FROM,
    IN_MOVED_TO,
    IN_Q_OVERFLOW,
    Inotify,
    InotifyEvent,
)

log = logging.getLogger(__name__)

DEFAULT_MAX_FILE_BYTES = 4 * 1024 * 1024
# How long a file that disappeared without being renamed to another YAML file keeps its objects:
# editors that save by renaming the old file away and writing a new one leave it missing briefly.
DEFAULT_REMOVAL_GRACE = 0.1
YAML_SUFFIXES = (".yaml", ".yml")

# -- reading files --------------------------------------------------------------------------------


try:
    from yaml import CSafeLoader as _SafeLoader
except ImportError:  # PyYAML built without libyaml
    from yaml import SafeLoader as _SafeLoader  # type: ignore[assignment]

_TIMESTAMP_TAG = "tag:yaml.org,2002:timestamp"


class _KubeYamlLoader(_SafeLoader):
    """The safe loader, reading unquoted timestamps as strings the way Kubernetes does."""


_KubeYamlLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != _TIMESTAMP_TAG]
    for first, resolvers in _SafeLoader.yaml_implicit_resolvers.items()
}


class _UnsafeAliasesError(Exception):
    """A document whose aliases refer to themselves or expand beyond the node budget."""


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def _check_expansion(root: yaml.Node, budget: int) -> None:
    """Raise ``_UnsafeAliasesError`` if ``root`` with its aliases expanded exceeds ``budget`` nodes.

    Aliases make the node graph a DAG (or, with a self-reference, a cycle); sizes are memoized per
    node, so this is linear in the number of distinct nodes.
    """
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, finished = stack.pop()
        node_id = id(node)
        if finished:
            open_nodes.discard(node_id)
            sizes[node_id] = 1 + sum(sizes[id(child)] for child in _children(node))
            continue
        if node_id in sizes:
            continue
        if node_id in open_nodes:
            raise _UnsafeAliasesError("an alias refers to a node that contains it")
        open_nodes.add(node_id)
        stack.append((node, True))
        for child in _children(node):
            if id(child) in open_nodes:
                raise _UnsafeAliasesError("an alias refers to a node that contains it")
            if id(child) not in sizes:
                stack.append((child, False))
    if sizes[id(root)] > budget:
        raise _UnsafeAliasesError(f"aliases expand the document to more than {budget} nodes")


_MAP_TAG = "tag:yaml.org,2002:map"
_SEQ_TAG = "tag:yaml.org,2002:seq"
_STR_TAG = "tag:yaml.org,2002:str"
# Scalars the plain construction builds, each with the safe constructor's own function.
_PLAIN_SCALAR_TAGS = frozenset(
    {
        _STR_TAG,
        "tag:yaml.org,2002:int",
        "tag:yaml.org,2002:float",
        "tag:yaml.org,2002:bool",
        "tag:yaml.org,2002:null",
    }
)


class _NotPlainError(Exception):
    """A node the plain construction leaves to the safe constructor."""


def _plain(loader: _KubeYamlLoader, node: yaml.Node) -> Any:
    """``node`` built exactly as the safe constructor builds it, for what Kubernetes objects are
    made of: mappings, sequences and core-schema scalars.

    The safe constructor goes through per-node bookkeeping (aliases, recursion, deferred
    generators) that a document without aliases does not need. Raises ``_NotPlainError`` at
    anything else: another tag, a merge (``<<``) or value (``=``) key, a key that is not a scalar.
    """
    tag = node.tag
    if isinstance(node, yaml.ScalarNode):
        if tag == _STR_TAG:
            return node.value
        if tag not in _PLAIN_SCALAR_TAGS:
            raise _NotPlainError(tag)
        return loader.yaml_constructors[tag](loader, node)
    if isinstance(node, yaml.MappingNode) and tag == _MAP_TAG:
        mapping: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise _NotPlainError(key_node.tag)
            mapping[_plain(loader, key_node)] = _plain(loader, value_node)
        return mapping
    if isinstance(node, yaml.SequenceNode) and tag == _SEQ_TAG:
        return [_plain(loader, child) for child in node.value]
    raise _NotPlainError(tag)


def _constructed(loader: _KubeYamlLoader, node: yaml.Node) -> Any:
    """A document without aliases, built by the plain construction when it can be."""
    try:
        return _plain(loader, node)
    except Exception:  # anything else, errors included, as the safe constructor has it
        return loader.construct_document(node)


def _documents(data: bytes, budget: int) -> list[tuple[int, Any]]:
    """Each YAML document in ``data`` with the line it starts on.

    The fast parser reads the file when it can vouch for building what PyYAML builds (see
    ``fast_yaml``); PyYAML reads the others, and says what is wrong with a file that fails.
    """
    fast = fast_yaml.documents(data)
    if fast is not None:
        return fast
    return pyyaml_documents(data, budget)


def pyyaml_documents(data: bytes, budget: int) -> list[tuple[int, Any]]:
    """Each YAML document in ``data`` with the line it starts on, as PyYAML's safe loader builds
    it (without timestamps); raises PyYAML's errors, or ``_UnsafeAliasesError``."""
    has_anchors = b"&" in data  # without an anchor there is no alias to expand
    loader = _KubeYamlLoader(data)
    try:
        documents: list[tuple[int, Any]] = []
        while loader.check_node():
            node = loader.get_node()
            if node is None:
                break
            if has_anchors:
                _check_expansion(node, budget)
                document = loader.construct_document(node)
            else:
                document = _constructed(loader, node)
            documents.append((node.start_mark.line + 1, document))
        return documents
    finally:
        loader.dispose()


def _yaml_error_message(exc: yaml.YAMLError) -> str:
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        message = f"invalid YAML at line {mark.line + 1}, column {mark.column + 1}: {exc.problem}"
        if exc.context and exc.context_mark is not None:
            context = exc.context_mark
            message += f" ({exc.context} at line {context.line + 1}, column {context.column + 1})"
        return message
    return f"invalid YAML: {exc}"


# Kubernetes' rules for names: a namespace is a DNS-1123 label, other names DNS-1123 subdomains.
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_NAME_MAX, _NAMESPACE_MAX = 253, 63


def _name_problem(name: str) -> str:
    """Why ``name`` is not a Kubernetes object name ("" when it is one)."""
    if len(name) > _NAME_MAX:
        return f"must be at most {_NAME_MAX} characters"
    if not _DNS_SUBDOMAIN.fullmatch(name):  # dot-separated DNS labels
        return f"{name[:64]!r} is not a DNS-1123 subdomain (lowercase letters, digits, '-', '.')"
    return ""


def _namespace_problem(namespace: str) -> str:
    """Why ``namespace`` is not a Kubernetes namespace name ("" when it is one)."""
    if len(namespace) > _NAMESPACE_MAX or not _DNS_LABEL.fullmatch(namespace):
        return f"{namespace[:64]!r} is not a DNS-1123 label (lowercase letters, digits, '-')"
    return ""


def _document_object(
    path: str, index: int, line: int, document: Any
) -> KubeObject | SourceProblem | None:
    """The object a document defines, the problem that keeps it out, or None for an empty one.

    The problem is an error when the document cannot be an object Kubernetes would take (see
    ``kind_verdict`` for kinds), a warning when it is a kind splitplane does not read.
    """
    where = f"document {index} (line {line})"
    if document is None:
        return None
    if not isinstance(document, Mapping):
        kind_of = type(document).__name__
        return SourceProblem(f"{where} is a {kind_of}, not a mapping", file=path, line=line)
    kind = document.get("kind")
    if not isinstance(kind, str) or not kind:
        return SourceProblem(f"{where} has no kind", file=path, field="kind", line=line)
    meta = document.get("metadata")
    name = meta.get("name") if isinstance(meta, Mapping) else None
    namespace = meta.get("namespace") if isinstance(meta, Mapping) else None
    shown_namespace = namespace if isinstance(namespace, str) and namespace else "default"
    shown_name = name if isinstance(name, str) else ""
    verdict = kind_verdict(document.get("apiVersion"), kind)
    if verdict is not None:
        # A near miss of a kind splitplane reads is likely a typo: say so (an error in a known
        # API, a warning in another); any other kind skipped (the Deployments beside the routes)
        # is expected in a folder of manifests.
        near_miss = verdict.field == "kind" and kind not in KINDS
        close = difflib.get_close_matches(kind, KINDS, n=1, cutoff=0.75) if near_miss else []
        hint = f"; did you mean {close[0]}?" if close else ""
        return SourceProblem(
            f"{where}: {verdict.message}{hint}",
            file=path,
            kind=kind,
            namespace=shown_namespace,
            name=shown_name,
            field=verdict.field,
            warning=not verdict.error and bool(close),
            info=not verdict.error and not close,
            line=line,
        )
    if not isinstance(meta, Mapping) or not isinstance(name, str) or not name:
        return SourceProblem(
            f"{where}: {kind} has no metadata.name",
            file=path,
            kind=kind,
            field="metadata.name",
            line=line,
        )
    if namespace is not None and not isinstance(namespace, str):
        return SourceProblem(
            f"{where}: metadata.namespace must be a string",
            file=path,
            kind=kind,
            name=name,
            field="metadata.namespace",
            line=line,
        )
    bad_name = _name_problem(name)
    if bad_name:
        return SourceProblem(
            f"{where}: metadata.name {bad_name}",
            file=path,
            kind=kind,
            field="metadata.name",
            line=line,
        )
    bad_namespace = _namespace_problem(namespace) if namespace else ""
    if bad_namespace:
        return SourceProblem(
            f"{where}: metadata.namespace {bad_namespace}",
            file=path,
            kind=kind,
            name=name,
            field="metadata.namespace",
            line=line,
        )
    if namespace:
        return document
    return {**document, "metadata": {**meta, "namespace": "default"}}


def parse_yaml(path: str, data: bytes, *, budget: int = DEFAULT_MAX_FILE_BYTES) -> ParsedFile:
    """The objects and problems in ``data``, the content of the file ``path``.

    ``budget`` caps how many nodes a document may expand to through aliases.
    """
    try:
        documents = _documents(data, budget)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if isinstance(mark, yaml.Mark) else 0
        problem = SourceProblem(_yaml_error_message(exc), file=path, line=line)
        return ParsedFile(path, (), (problem,), complete=False)
    except _UnsafeAliasesError as exc:
        return ParsedFile(path, (), (SourceProblem(f"unsafe YAML: {exc}", file=path),), False)
    except Exception as exc:  # a value YAML accepts but cannot build, e.g. an unhashable key
        problem = SourceProblem(f"invalid YAML: {exc}", file=path)
        return ParsedFile(path, (), (problem,), complete=False)
    objects: list[KubeObject] = []
    lines: list[int] = []
    problems: list[SourceProblem] = []
    for index, (line, document) in enumerate(documents, start=1):
        result = _document_object(path, index, line, document)
        if isinstance(result, SourceProblem):
            problems.append(result)
        elif result is not None:
            objects.append(result)
            lines.append(line)
    # A document that is not an object Kubernetes would take may be the broken version of any
    # object the file held: the file as a whole is not applied (see ``ParsedFile.complete``).
    complete = all(problem.warning or problem.info for problem in problems)
    return ParsedFile(path, tuple(objects), tuple(problems), complete, lines=tuple(lines))


def _read_at_most(fd: int, limit: int, size: int) -> bytes:
    """What ``fd`` holds, read to its end but stopping past ``limit`` bytes (at ``limit + 1``).

    ``size`` is the size ``fstat`` gave: buffers are sized for the file, not for the limit.
    """
    chunks: list[bytes] = []
    total = 0
    ask = size + 1  # one byte more than expected: a file that grew shows it at once
    while total <= limit:
        chunk = os.read(fd, min(ask, limit + 1 - total))
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
        ask = _READ_CHUNK
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


_READ_CHUNK = 64 * 1024


def parse_file(path: str, *, max_bytes: int = DEFAULT_MAX_FILE_BYTES) -> ParsedFile:
    """Read and parse one file. Raises ``FileNotFoundError`` if it does not exist."""
    try:
        # Non-blocking, so that a named pipe cannot stall the reader; regular files ignore it.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            status = os.fstat(fd)
            if not stat.S_ISREG(status.st_mode):
                problem = SourceProblem("not a regular file", file=path)
                return ParsedFile(path, (), (problem,), complete=False)
            data = (
                b"" if status.st_size > max_bytes else _read_at_most(fd, max_bytes, status.st_size)
            )
            oversized = status.st_size > max_bytes or len(data) > max_bytes
        finally:
            os.close(fd)
    except FileNotFoundError:
        raise
    except OSError as exc:
        reason = exc.strerror or str(exc)
        return ParsedFile(path, (), (SourceProblem(f"cannot read: {reason}", file=path),), False)
    if oversized:
        problem = SourceProblem(f"file is larger than the limit of {max_bytes} bytes", file=path)
        return ParsedFile(path, (), (problem,), complete=False)
    return parse_yaml(path, data, budget=max_bytes)


def is_config_name(name: str) -> bool:
    """Whether a file of this name is read: ``*.yaml`` or ``*.yml``, not hidden."""
    return not name.startswith(".") and name.lower().endswith(YAML_SUFFIXES)


def config_files(root: str) -> tuple[list[str], list[str]]:
    """The config files and the (non-hidden, non-symlinked) folders under ``root``, sorted."""
    files: list[str] = []
    folders: list[str] = []
    for folder, subfolders, names in os.walk(root):
        folders.append(folder)
        subfolders[:] = sorted(name for name in subfolders if not name.startswith("."))
        files.extend(os.path.join(folder, name) for name in names if is_config_name(name))
    return sorted(files), folders


STDIN = "-"  # the path that names standard input
STDIN_NAME = "<stdin>"  # how diagnostics name it


@dataclass(frozen=True)
class Loaded:
    """What ``load_files`` read: the merged objects in path and document order, every problem,
    and where each object was written (file and the line its document starts on)."""

    objects: list[KubeObject]
    problems: list[SourceProblem]
    positions: dict[ObjectKey, tuple[str, int]]


def load_files(
    paths: Iterable[str | os.PathLike[str]],
    *,
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
    stdin: BinaryIO | None = None,
) -> Loaded:
    """Every object in ``paths`` (files, and folders read recursively), every problem, and every
    object's position.

    A file named explicitly is read whatever its name. ``-`` reads ``stdin`` (named ``<stdin>``
    in problems and positions), at most once.
    """
    problems: list[SourceProblem] = []
    files: set[str] = set()
    read_stdin = False
    for entry in paths:
        path = os.fspath(entry)
        if path == STDIN:
            read_stdin = True
        elif os.path.isdir(path):
            files.update(config_files(path)[0])
        elif os.path.exists(path):
            files.add(path)
        else:
            problems.append(SourceProblem("no such file or directory", file=path))
    parsed: list[ParsedFile] = []
    if read_stdin:
        stream = stdin if stdin is not None else sys.stdin.buffer
        data = stream.read(max_file_bytes + 1)
        if len(data) > max_file_bytes:
            problem = SourceProblem(
                f"input is larger than the limit of {max_file_bytes} bytes", file=STDIN_NAME
            )
            parsed.append(ParsedFile(STDIN_NAME, (), (problem,), complete=False))
        else:
            parsed.append(parse_yaml(STDIN_NAME, data, budget=max_file_bytes))
    for path in sorted(files):
        try:
            parsed.append(parse_file(path, max_bytes=max_file_bytes))
        except FileNotFoundError:
            problems.append(SourceProblem("no such file or directory", file=path))
    positions: dict[ObjectKey, tuple[str, int]] = {}
    for one in sorted(parsed, key=lambda held: held.path):  # the first wins, as in the merge
        for position, obj in enumerate(one.objects):
            positions.setdefault(object_key(obj), (one.path, one.line_of(position)))
    merged, merge_problems = merge_files(parsed)
    return Loaded(list(merged.values()), problems + merge_problems, positions)


def load_directory(
    paths: Iterable[str | os.PathLike[str]], *, max_file_bytes: int = DEFAULT_MAX_FILE_BYTES
) -> tuple[list[KubeObject], list[SourceProblem]]:
    """Every object in ``paths`` (files, and folders read recursively) and every problem.

    A file named explicitly is read whatever its name. Objects come in path and document order.
    """
    loaded = load_files(paths, max_file_bytes=max_file_bytes)
    return loaded.objects, loaded.problems


# -- the watched folder ---------------------------------------------------------------------------


@dataclass
class _Batch:
    """What one round of events asks for."""

    read: set[str]
    remove_now: set[str]
    remove_later: set[str]
    rescan: bool = False


class DirectorySource:
    """Keeps ``sink`` in step with the YAML files under ``root`` (see the module docstring).

    ``start()`` reads the folder, reports it with ``replace_all``, ``set_problems`` and
    ``mark_synced``, then follows changes on the running event loop. A change is applied in the
    same loop turn the kernel reports it: no polling and no delay, except that a file that vanishes
    without being renamed to another YAML file keeps its objects for ``removal_grace`` seconds,
    so an editor's backup-rename-then-write save never withdraws them. Sink calls are made only for
    keys whose winning object changed or went away, and a change costs what the changed files hold,
    not what the folder holds (problems are gathered again only when some file's problems change).
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        sink: ObjectSink,
        *,
        name: str = "directory",
        max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
        removal_grace: float = DEFAULT_REMOVAL_GRACE,
    ) -> None:
        self.root = os.path.normpath(os.fspath(root))
        self.name = name
        self._sink = sink
        self._max_file_bytes = max_file_bytes
        self._removal_grace = removal_grace
        self._inotify: Inotify | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._folders: dict[str, int] = {}
        self._wd_folders: dict[int, str] = {}
        self._files = FileMerge()
        self._removals: dict[str, asyncio.TimerHandle] = {}
        self._watch_problems: dict[str, SourceProblem] = {}
        # What the sink was last told: the files' problems, the watch problems, both together.
        self._file_problems: tuple[SourceProblem, ...] = ()
        self._watch_problem_list: tuple[SourceProblem, ...] = ()
        self._problems: tuple[SourceProblem, ...] = ()

    async def start(self) -> None:
        """Read the folder, report it as synced, and start following it."""
        if self._inotify is not None:
            raise RuntimeError("already started")
        if not os.path.isdir(self.root):
            raise NotADirectoryError(errno.ENOTDIR, "not a directory", self.root)
        self._loop = asyncio.get_running_loop()
        self._inotify = Inotify()
        try:
            self._inotify.add_watch(self.root, FOLDER_EVENTS)
            self._files = FileMerge(
                self._keep_previous(self._parse(path)) for path in self._watch_tree(self.root)
            )
            self._file_problems = self._files.problems()
            self._watch_problem_list = self._sorted_watch_problems()
            self._problems = self._file_problems + self._watch_problem_list
            self._sink.replace_all(self.name, self._files.objects().values())
            self._sink.set_problems(self.name, self._problems)
            self._sink.mark_synced(self.name)
            self._loop.add_reader(self._inotify.fd, self._on_events)
        except BaseException:
            self._close()
            raise

    def position(self, key: ObjectKey) -> tuple[str, int] | None:
        """Where the object under ``key`` was written: its file, relative to the folder, and the
        line its document starts on (0 when not known); None for an object the folder does not
        hold. May be called from any thread."""
        found = self._files.position(key)
        if found is None:
            return None
        path, line = found
        return os.path.relpath(path, self.root), line

    async def stop(self) -> None:
        """Stop following the folder (what was reported stays reported)."""
        self._close()

    # -- events -----------------------------------------------------------------------------------

    def _on_events(self) -> None:
        if self._inotify is None:
            return
        events = self._inotify.read_events()
        if events:
            self._apply(self._batch(events))

    def _batch(self, events: list[InotifyEvent]) -> _Batch:
        """Sort ``events`` into files to read and remove; folders are watched and unwatched here.

        A file renamed to another YAML file in the folder is removed at once; any other file that
        vanishes waits out the removal grace.
        """
        batch = _Batch(read=set(), remove_now=set(), remove_later=set())
        renamed_in = {
            event.cookie
            for event in events
            if event.mask & IN_MOVED_TO
            and event.wd in self._wd_folders
            and (event.mask & IN_ISDIR or is_config_name(event.name))
            and not event.name.startswith(".")
        }
        for event in events:
            if event.mask & IN_Q_OVERFLOW:
                batch.rescan = True
                continue
            folder = self._wd_folders.get(event.wd)
            if folder is None:
                continue
            if event.mask & IN_IGNORED:
                self._forget_watch(event.wd)
                continue
            if event.mask & IN_DELETE_SELF:
                if folder == self.root:
                    self._watch_problems[folder] = SourceProblem(
                        "the watched folder was removed", file=folder
                    )
                continue
            path = os.path.join(folder, event.name)
            if event.name.startswith(".."):
                # Kubernetes updates a mounted ConfigMap by renaming a "..data" symlink into place.
                batch.rescan = batch.rescan or bool(event.mask & IN_MOVED_TO)
                continue
            if event.name.startswith("."):
                continue
            removal = batch.remove_now if event.cookie in renamed_in else batch.remove_later
            if event.mask & IN_ISDIR:
                if event.mask & (IN_CREATE | IN_MOVED_TO):
                    batch.read.update(self._watch_tree(path))
                elif event.mask & (IN_DELETE | IN_MOVED_FROM):
                    self._unwatch_tree(path)
                    removal.update(self._files_under(path))
            elif is_config_name(event.name):
                written = event.mask & (IN_CLOSE_WRITE | IN_MOVED_TO)
                if written or (event.mask & IN_CREATE and os.path.islink(path)):
                    batch.read.add(path)
                elif event.mask & (IN_DELETE | IN_MOVED_FROM):
                    removal.add(path)
        return batch

    def _apply(self, batch: _Batch) -> None:
        if batch.rescan:
            self._rescan()
            return
        for path in batch.remove_now - batch.read:
            self._cancel_removal(path)
            self._files.remove(path)
        for path in batch.remove_later - batch.read:
            self._schedule_removal(path)
        for path in sorted(batch.read):
            self._cancel_removal(path)
            try:
                parsed = self._parse(path)
            except FileNotFoundError:
                self._schedule_removal(path)
                continue
            self._files.put(self._keep_previous(parsed))
        self._publish()

    def _keep_previous(self, parsed: ParsedFile) -> ParsedFile:
        """``parsed``, or for a file with an error, ``parsed`` holding instead the objects its
        path held when it was last complete (none for a new file), each with a warning."""
        if parsed.complete:
            return parsed
        previous = self._files.file(parsed.path)
        kept = previous.objects if previous is not None else ()
        notes = tuple(
            SourceProblem(
                f"not updated while {parsed.path} has errors; {STILL_SERVING}",
                file=parsed.path,
                kind=kind,
                namespace=namespace,
                name=name,
                warning=True,
            )
            for kind, namespace, name in map(object_key, kept)
        )
        lines = previous.lines if previous is not None else ()
        return ParsedFile(parsed.path, kept, parsed.problems + notes, complete=False, lines=lines)

    def _rescan(self) -> None:
        """Read the whole folder again (after an event queue overflow or a ConfigMap swap)."""
        log.info("reading the whole folder again", extra={"config_dir": self.root})
        for handle in self._removals.values():
            handle.cancel()
        self._removals.clear()
        found: list[ParsedFile] = []
        for path in self._watch_tree(self.root):
            try:
                found.append(self._keep_previous(self._parse(path)))
            except FileNotFoundError:
                continue
        kept = {parsed.path for parsed in found}
        for path in self._files.paths():
            if path not in kept:
                self._files.remove(path)
        for parsed in found:
            self._files.put(parsed)
        self._publish()

    # -- removals ---------------------------------------------------------------------------------

    def _schedule_removal(self, path: str) -> None:
        if path not in self._files or path in self._removals or self._loop is None:
            return
        self._removals[path] = self._loop.call_later(
            self._removal_grace, self._expire_removal, path
        )

    def _cancel_removal(self, path: str) -> None:
        handle = self._removals.pop(path, None)
        if handle is not None:
            handle.cancel()

    def _expire_removal(self, path: str) -> None:
        self._removals.pop(path, None)
        if os.path.isfile(path):
            return  # written again; its own event brings the new content
        if path in self._files:
            self._files.remove(path)
            self._publish()

    # -- watches ----------------------------------------------------------------------------------

    def _watch_tree(self, top: str) -> list[str]:
        """Watch ``top`` and every folder under it; return the config files found there."""
        files, folders = config_files(top)
        for folder in folders:
            self._watch(folder)
        return files

    def _watch(self, folder: str) -> None:
        assert self._inotify is not None
        try:
            wd = self._inotify.add_watch(folder, FOLDER_EVENTS)
        except OSError as exc:
            reason = exc.strerror or str(exc)
            self._watch_problems[folder] = SourceProblem(
                f"cannot watch folder: {reason}", file=folder
            )
            return
        self._watch_problems.pop(folder, None)
        stale = self._folders.get(folder)
        if stale is not None and stale != wd:
            self._wd_folders.pop(stale, None)
        self._folders[folder] = wd
        self._wd_folders[wd] = folder

    def _unwatch_tree(self, top: str) -> None:
        prefix = top + os.sep
        for folder in [f for f in self._folders if f == top or f.startswith(prefix)]:
            wd = self._folders.pop(folder)
            self._wd_folders.pop(wd, None)
            self._watch_problems.pop(folder, None)
            if self._inotify is not None:
                self._inotify.rm_watch(wd)

    def _forget_watch(self, wd: int) -> None:
        """The kernel dropped watch ``wd`` (its folder is gone); the folder may be watched anew."""
        folder = self._wd_folders.pop(wd, None)
        if folder is not None and self._folders.get(folder) == wd:
            del self._folders[folder]

    def _files_under(self, top: str) -> list[str]:
        prefix = top + os.sep
        return [path for path in self._files.paths() if path.startswith(prefix)]

    # -- reporting --------------------------------------------------------------------------------

    def _parse(self, path: str) -> ParsedFile:
        return parse_file(path, max_bytes=self._max_file_bytes)

    def _sorted_watch_problems(self) -> tuple[SourceProblem, ...]:
        return tuple(self._watch_problems[folder] for folder in sorted(self._watch_problems))

    def _publish(self) -> None:
        """Tell the sink what changed: the keys whose winning object did, then the problems
        (the files' problems in path order, then the watch problems) if they did."""
        changes = self._files.take_changes()
        for obj in changes.upserted:
            self._sink.upsert(self.name, obj)
        for key in changes.deleted:
            self._sink.delete(self.name, key)
        file_problems = self._files.problems()  # the same tuple while no file's problems change
        watch_problems = self._sorted_watch_problems()
        if file_problems is self._file_problems and watch_problems == self._watch_problem_list:
            return
        self._file_problems, self._watch_problem_list = file_problems, watch_problems
        problems = file_problems + watch_problems
        if problems != self._problems:
            self._problems = problems
            self._sink.set_problems(self.name, self._problems)

    def _close(self) -> None:
        for handle in self._removals.values():
            handle.cancel()
        self._removals.clear()
        if self._inotify is None:
            return
        if self._loop is not None:
            self._loop.remove_reader(self._inotify.fd)
        self._inotify.close()
        self._inotify = None
        self._folders.clear()
        self._wd_folders.clear()
