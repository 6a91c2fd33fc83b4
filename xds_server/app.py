"""`splitplane serve`: the one place the pieces are wired together.

    source(s) ──► ObjectStore ──► translate ──► build per node group ──► SnapshotCache ──► xDS
    (folder or     (debounced,     (pure, with     (pure)                  (consistent,
     Kubernetes)    sync gate)      last good)                              content hashes)

Everything runs on one asyncio event loop; Kubernetes informer threads hand their events to it.
For a large mesh, translating and building snapshots run in a worker thread instead, one run at a
time, and the loop hands the snapshots to the cache; changes and groups first asked for during a
run wait for it and go together into the next.
A change is published before anything else is done about it: its diagnostics are kept, counted and
logged, and its snapshots logged, on the loop's next turn, after the streams it woke have written.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import grpc
from google.protobuf.message import Message

from translators.build import ResourceBuilder
from translators.diagnostics import Diagnostic, Severity
from translators.incremental import Translator
from translators.model import MeshModel, NodeGroup, Role
from translators.resolve_routing import DEFAULT_GATEWAY
from translators.translate import KubeObject, Options, Translation
from translators.visibility import is_namespace_name
from xds_server import collector
from xds_server.debug.auth import (
    DebugAuth,
    kubernetes_debug_auth,
    parse_resource_attributes,
    with_client_certificates,
)
from xds_server.debug.http import is_loopback, start_debug_server
from xds_server.debug.metrics import Metrics, short_type
from xds_server.debug.pacing import Pacer
from xds_server.debug.traffic import observed_clusters
from xds_server.kube.settings import (
    DEFAULT_FLEET_SERVICE,
    DEFAULT_LEASE_NAMESPACE,
    LEASE_NAME,
    parse_fleet_service,
)
from xds_server.logs import configure_logging
from xds_server.problems import diagnostics_from_problems
from xds_server.sources.base import ObjectKey, SourceProblem
from xds_server.store import DEFAULT_MAX_DELAY, DEFAULT_QUIET, ObjectStore, StoreChange
from xds_server.xds.cache import (
    DEFAULT_GROUP_GRACE_S,
    DEFAULT_MAX_GROUPS,
    Serializer,
    Snapshot,
    SnapshotCache,
    snapshot_from_messages,
)
from xds_server.xds.client_status import ClientRegistry, ClientView
from xds_server.xds.grpc_server import (
    DEFAULT_MAX_CONNECTION_AGE_GRACE_S,
    DEFAULT_MAX_CONNECTION_AGE_S,
    DEFAULT_MAX_RECEIVE_BYTES,
    ServerOptions,
    start_xds_server,
)
from xds_server.xds.identity import (
    DEFAULT_GATEWAY_ACCOUNTS,
    DEFAULT_STATUS_READERS,
    DEFAULT_TRUST_DOMAIN,
    AccessControl,
    AccessPolicy,
    parse_service_account,
)
from xds_server.xds.limits import DEFAULT_MAX_NAMES, StreamLimits
from xds_server.xds.tls import (
    PLAINTEXT_PORT,
    TLS_PORT,
    ReloadingSslContext,
    TlsFiles,
    TlsFilesError,
    is_loopback_host,
    server_credentials,
)

if TYPE_CHECKING:
    from kubernetes.client import ApiClient
from xds_server.xds.load_reports import (
    DEFAULT_REPORT_INTERVAL,
    Load,
    LoadReportingService,
    LoadWindows,
)

log = logging.getLogger("splitplane")

Stopper = Callable[[], Awaitable[None]]
T = TypeVar("T")


def after_pushes(call: Callable[[], None]) -> None:
    """Run ``call`` once the streams already woken have started their writes.

    On the running loop, ``call`` is scheduled behind those streams (the loop runs callbacks in
    the order they were scheduled); without a running loop it runs at once.
    """
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        call()
        return
    loop.call_soon(call)


# From this many objects (about 600 services) on, translating and building run in a worker thread,
# so that streams keep being served meanwhile (ACKs, new connections); smaller meshes are
# translated and built on the loop, where that costs less than the hop to a thread and back.
OFFLOAD_OBJECTS = 5_000
SWITCH_INTERVAL_S = 0.001  # sys.setswitchinterval while serving

# Dropped node groups are forgotten (their builds, their serialized resources, the freed heap
# handed back) this long after a drop, together with the others dropped meanwhile.
FORGET_AFTER_S = 1.0


def _in_worker(work: Callable[[], T], cold: bool) -> T:
    with collector.long_lived(cold):
        return work()


def _merged(first: StoreChange, then: StoreChange) -> StoreChange:
    """One change standing for ``first`` and then ``then``."""
    return StoreChange(
        keys=first.keys | then.keys,
        initial=first.initial or then.initial,
        problems_changed=first.problems_changed or then.problems_changed,
    )


@dataclass(frozen=True, slots=True)
class _Run:
    """What one pipeline run made, to be handed to the cache on the loop."""

    translation: Translation
    built: tuple[tuple[str, Snapshot], ...]  # each group's new snapshot
    model_changed: bool


def parse_group(key: str) -> NodeGroup | None:
    """``sidecar:15001/shop`` → NodeGroup(SIDECAR, 15001, "shop") (the namespace is optional);
    None for a key no role matches."""
    base, _, namespace = key.partition("/")
    if namespace and not is_namespace_name(namespace):
        return None
    role_name, _, port_text = base.partition(":")
    try:
        role = Role(role_name)
    except ValueError:
        return None
    if not port_text:
        return NodeGroup(role, 0, namespace)
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        return None
    return NodeGroup(role, int(port_text), namespace)


@dataclass
class ControlPlane:
    """The server's state: the store, the last translation, the cache, and the clients.

    Implements the debug endpoint's ``DebugState``.
    """

    quiet: float = DEFAULT_QUIET
    max_delay: float = DEFAULT_MAX_DELAY
    metrics: Metrics = field(default_factory=Metrics)
    translate_options: Options = field(default_factory=Options)
    # From this many objects on, translation runs in a worker thread (see `OFFLOAD_OBJECTS`).
    offload_objects: int = OFFLOAD_OBJECTS
    # Node groups in use at once, and how long one no stream holds is kept.
    max_groups: int = DEFAULT_MAX_GROUPS
    group_grace: float = DEFAULT_GROUP_GRACE_S

    def __post_init__(self) -> None:
        self.clients_registry = ClientRegistry(observer=self.metrics)
        self.cache = SnapshotCache(
            on_group_requested=self._on_group_requested,
            on_listeners_requested=self._on_listeners_requested,
            max_groups=self.max_groups,
            group_grace=self.group_grace,
            on_group_dropped=self._on_group_dropped,
        )
        self.store = ObjectStore(self._on_change, quiet=self.quiet, max_delay=self.max_delay)
        # Each change translated from the last, at a cost that follows what it touches.
        self.translator = Translator(self.translate_options)
        self._translation: Translation | None = None
        self._diagnostics: tuple[Diagnostic, ...] = ()
        # Groups some node has asked for; a group is built when its first node connects.
        self._groups: set[str] = set()
        self._published = False
        # Large meshes are translated and built in a worker thread, one run at a time; the loop
        # leaves the builder and serializer to it while a run is under way.
        self._large = False
        self._running = False
        self._pending: StoreChange | None = None  # what changed during the run
        self._waiting: set[str] = set()  # groups first asked for during the run
        self._dropped: set[str] = set()  # groups dropped whose builds are still to forget
        self._forget_soon: asyncio.TimerHandle | None = None
        # Unchanged parts of the model are not built again, nor their messages serialized again.
        self.builder = ResourceBuilder()
        self.serializer = Serializer()
        # The debug endpoint's threads yield the CPU to this loop while a change is under way.
        self.debug_pacer = Pacer()
        # What proxies report of the traffic each cluster got (LRS), over a recent window.
        self.load_windows = LoadWindows()
        self.load_reporting = LoadReportingService(self.load_windows)
        self._reported_model: MeshModel | None = None
        # Where the folder source read each object (file, line); the wiring sets it.
        self.positions: Callable[[ObjectKey], tuple[str, int] | None] | None = None
        self.xds_port = 0  # bound ports, known once serving
        self.debug_port = 0

    # -- DebugState ---------------------------------------------------------------------------

    def snapshots(self) -> Mapping[str, Snapshot]:
        return {g: s for g in self.cache.groups() if (s := self.cache.snapshot(g)) is not None}

    def clients(self) -> Sequence[ClientView]:
        return self.clients_registry.views()

    def model(self) -> MeshModel | None:
        return self._translation.model if self._translation else None

    def diagnostics(self) -> Sequence[Diagnostic]:
        return self._diagnostics

    def is_ready(self) -> bool:
        return self._published

    def traffic(self) -> Mapping[str, Load]:
        return self.load_windows.totals()

    @property
    def traffic_window(self) -> float:
        return self.load_windows.window

    def origin(self, kind: str, namespace: str, name: str) -> tuple[str, int] | None:
        positions = self.positions
        return None if positions is None else positions((kind, namespace, name))

    # -- the pipeline -------------------------------------------------------------------------

    def _on_change(self, change: StoreChange) -> None:
        self.debug_pacer.hold()  # a translation, a publish and pushes follow
        if self._running:  # the run's result comes first; then this, with what is new
            self._pending = change if self._pending is None else _merged(self._pending, change)
            return
        started = time.perf_counter()
        # What changed, read now (the store moves on while a run is under way): every object
        # for the first translation, else the changed keys' objects (None: gone).
        everything = self.store.by_key() if self._translation is None else None
        changes = {} if everything is not None else {k: self.store.get(k) for k in change.keys}
        groups, fresh = sorted(self._groups), sorted(self._waiting)
        self._waiting = set()
        names = self._listener_names(groups)
        work = partial(self._run, changes, everything, groups, fresh, listener_names=names)
        self._large = self.store.size() >= self.offload_objects
        # The first translation is a cold build: everything it makes lives on.
        cold = self._translation is None
        if not self._large:
            with collector.long_lived(cold):
                self._take(work(), started)
            return
        self._in_background("translation", work, cold, lambda run: self._take(run, started))

    def _run(
        self,
        changes: Mapping[ObjectKey, KubeObject | None],
        everything: Mapping[ObjectKey, KubeObject] | None,
        groups: Sequence[str],
        fresh: Sequence[str],
        *,
        listener_names: Mapping[str, frozenset[str]],
    ) -> _Run:
        """Translate the change (``everything`` at first) and build snapshots: every one of
        ``groups`` if the model changed, else only the ``fresh`` groups' (first asked for, or
        asked for new listeners, while the last run ran)."""
        previous = self.translator.translation
        if everything is not None:
            translation = self.translator.reset(everything)
        elif changes:
            translation = self.translator.apply(changes)
        else:  # only the sources' problems changed: the objects are what they were
            assert previous is not None
            translation = previous
        model = translation.model
        changed = previous is None or previous.model != model or not self._published
        built = self._build(groups if changed else fresh, model, listener_names)
        if changed:
            self.serializer.end_round()
        return _Run(translation, built, changed)

    def _listener_names(self, keys: Iterable[str]) -> dict[str, frozenset[str]]:
        """The listener names the streams of each group have subscribed to (read on the loop,
        for a build that may run in the worker)."""
        return {key: self.cache.listener_names(key) for key in keys}

    def _build(
        self,
        keys: Sequence[str],
        model: MeshModel,
        listener_names: Mapping[str, frozenset[str]],
    ) -> tuple[tuple[str, Snapshot], ...]:
        """The snapshots of the groups ``keys`` for ``model``; a proxyless group's api listeners
        are those of ``listener_names`` (the names its clients asked for) that are targets."""
        built = []
        for key in keys:
            group = parse_group(key)
            if group is None:
                log.warning("a node asked for group %r, which no role serves", key)
                continue
            names = listener_names.get(key, frozenset())
            resources: Mapping[str, Sequence[Message]] = self.builder.build_group(
                model, group, names
            )
            built.append((key, snapshot_from_messages(resources, self.serializer)))
        return tuple(built)

    def _in_background(
        self, what: str, work: Callable[[], T], cold: bool, then: Callable[[T], None]
    ) -> None:
        """Run ``work`` in the worker thread, then ``then`` with its result on the loop, then
        whatever came in meanwhile."""
        self._running = True
        ran = asyncio.get_running_loop().run_in_executor(None, _in_worker, work, cold)

        def done(future: asyncio.Future[T]) -> None:
            self._running = False
            try:
                result = future.result()
            except Exception:
                log.exception("%s failed; the last published configuration stays", what)
            else:
                then(result)
            self._forget_dropped()
            self._next()

        ran.add_done_callback(done)

    def _next(self) -> None:
        """After a run in the worker: a change that came in meanwhile, else groups first asked
        for (or asked for new listeners) meanwhile."""
        if self._running:
            return  # the run under way calls this again when it is done
        pending, self._pending = self._pending, None
        if pending is not None:
            self._on_change(pending)
        elif self._waiting and self._translation is not None:
            fresh, self._waiting = self._waiting, set()
            model = self._translation.model
            work = partial(self._build, sorted(fresh), model, self._listener_names(fresh))
            # Not a cold build: clients decide when groups come and go, and freezing what
            # survives each would also freeze whatever garbage the loop makes meanwhile.
            self._in_background("building a group", work, False, self._hand_over_new)

    def _take(self, run: _Run, started: float) -> None:
        """Make ``run``'s translation current and hand its snapshots to the cache."""
        first = self._translation is None
        translation = self._translation = run.translation
        published = self._hand_over(run.built)
        if run.model_changed:
            self._published = True
        self.metrics.push_time.observe(time.perf_counter() - started)
        problems = self.store.problems()
        after_pushes(lambda: self._report(problems, translation.diagnostics, published))
        if first:  # what the first change needs, made once the first snapshots are out
            if self._large:
                self._in_background("indexing", self.translator.prepare, False, lambda _: None)
            else:
                self.translator.prepare()

    def _hand_over(self, built: Sequence[tuple[str, Snapshot]]) -> list[tuple[str, Snapshot]]:
        """Give the cache each built snapshot; the ones it took (it keeps an unchanged one)."""
        published = []
        for key, snapshot in built:
            if key not in self._groups:
                continue  # dropped while it was built
            if self.cache.set_snapshot(key, snapshot):
                self.metrics.snapshots.inc(key)
                published.append((key, snapshot))
        return published

    def _hand_over_new(self, built: Sequence[tuple[str, Snapshot]]) -> None:
        published = self._hand_over(built)
        if published:
            after_pushes(lambda: _log_all_published(published))

    def _report(
        self,
        problems: Sequence[SourceProblem],
        found: Sequence[Diagnostic],
        published: Sequence[tuple[str, Snapshot]],
    ) -> None:
        """Keep, count and log a change's diagnostics (the new ones), and log what it published."""
        diagnostics = tuple(sorted([*diagnostics_from_problems(problems), *found]))
        before = set(self._diagnostics)
        _log_diagnostics([diagnostic for diagnostic in diagnostics if diagnostic not in before])
        self._diagnostics = diagnostics
        counts = {severity.value: 0 for severity in Severity}
        for diagnostic in diagnostics:
            counts[diagnostic.severity.value] += 1
        for severity, count in counts.items():
            self.metrics.diagnostics.set(severity, value=count)
        _log_all_published(published)
        model = self.model()
        if model is not self._reported_model:  # proxies report the load of the split clusters
            self._reported_model = model
            self.load_reporting.want(observed_clusters(model))

    def _on_group_requested(self, key: str) -> None:
        self._groups.add(key)
        self._build_soon(key)

    def _on_group_dropped(self, key: str) -> None:
        """No stream has held group ``key`` for the grace period: stop building it, drop its
        metric series, and forget what was built for it (once no run is using the builder)."""
        self._groups.discard(key)
        self._waiting.discard(key)
        self.metrics.snapshots.remove(key)
        self._dropped.add(key)
        if self._forget_soon is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._forget_dropped()
            return
        # Groups dropped together (they came together) are forgotten in one go.
        self._forget_soon = loop.call_later(FORGET_AFTER_S, self._forget_dropped)

    def _forget_dropped(self) -> None:
        if self._forget_soon is not None:
            self._forget_soon.cancel()
            self._forget_soon = None
        if not self._dropped or self._running:
            return  # a run under way uses the builder: forgotten once it is done
        # What was built for a role and port is shared by its groups in every namespace.
        in_use = {(g.role, g.port) for key in self._groups if (g := parse_group(key)) is not None}
        for key in self._dropped:
            group = parse_group(key)
            if group is not None and (group.role, group.port) not in in_use:
                self.builder.forget_group(group)
        self._dropped.clear()
        # Keep only the serialized resources the remaining snapshots hold.
        self.serializer.retain(self.cache.snapshot(g) for g in self.cache.groups())
        collector.release_freed_memory()

    def _on_listeners_requested(self, key: str) -> None:
        """A stream of group ``key`` subscribed to listener names new to it: for a proxyless
        group, build its snapshot again with them (only a proxyless group's listeners depend on
        the names asked for)."""
        group = parse_group(key)
        if group is not None and group.role is Role.PROXYLESS and key in self._groups:
            self._build_soon(key)

    def _build_soon(self, key: str) -> None:
        """Build group ``key``'s snapshot for the current model: now, or after the run under way
        (or in the worker, for a large mesh)."""
        if self._running:  # built once the run is done
            self._waiting.add(key)
            return
        if self._translation is None:
            return  # the first translation builds it
        if self._large:
            self._waiting.add(key)
            self._next()
            return
        built = self._build([key], self._translation.model, self._listener_names([key]))
        self._hand_over_new(built)


_LOG_LEVELS = {
    Severity.ERROR: logging.ERROR,
    Severity.WARNING: logging.WARNING,
    Severity.INFO: logging.INFO,
}


def _log_diagnostics(diagnostics: Sequence[Diagnostic]) -> None:
    for diagnostic in diagnostics:
        level = _LOG_LEVELS[diagnostic.severity]
        log.log(level, diagnostic.render(), extra={"diagnostic": diagnostic.as_dict()})


def _log_all_published(published: Sequence[tuple[str, Snapshot]]) -> None:
    for group, snapshot in published:
        _log_published(group, snapshot)


def _log_published(group: str, snapshot: Snapshot) -> None:
    versions = {short_type(t): v for t, v in snapshot.versions.items()}
    log.info("published snapshot", extra={"group": group, "versions": versions})


@dataclass(frozen=True)
class ServeOptions:
    config_dir: Path | None = None
    kubeconfig: str | None = None  # None: $KUBECONFIG, else ~/.kube/config
    context: str | None = None  # the kubeconfig context (None: its current-context)
    in_cluster: bool = False
    namespaces: tuple[str, ...] = ()
    xds_address: str = f"127.0.0.1:{PLAINTEXT_PORT}"
    debug_address: str = "127.0.0.1:15014"
    max_concurrent_streams: int = 10_000
    max_groups: int = DEFAULT_MAX_GROUPS
    group_grace: float = DEFAULT_GROUP_GRACE_S
    max_receive_bytes: int = DEFAULT_MAX_RECEIVE_BYTES
    max_names_per_stream: int = DEFAULT_MAX_NAMES
    max_connection_age: float = DEFAULT_MAX_CONNECTION_AGE_S
    max_connection_age_grace: float = DEFAULT_MAX_CONNECTION_AGE_GRACE_S
    drain_seconds: float = 5.0
    # The load-balancer fleet (Kubernetes only): whose addresses LoadBalancer Services get, and
    # the namespace of the leader Lease ("" = $POD_NAMESPACE, else splitplane-system).
    fleet_service: str = DEFAULT_FLEET_SERVICE
    lease_namespace: str = ""
    only_lb_class: bool = False
    # The debug endpoint off loopback: /metrics behind authentication too; SubjectAccessReviews
    # with these resource attributes (kube-rbac-proxy's form) instead of the path and verb.
    debug_protect_metrics: bool = False
    debug_auth_resource: str = ""
    # xDS over TLS (mutual TLS when the files name a client CA); without it, plaintext is served
    # only on a loopback address or when ``insecure_xds`` says so.
    tls: TlsFiles | None = None
    insecure_xds: bool = False
    # Who may take which role and read client status (its ``mtls`` follows ``tls``).
    access: AccessPolicy = field(default_factory=AccessPolicy)
    # The debug endpoint over HTTPS with the xDS server's files; a status reader's client
    # certificate then authenticates as well as a bearer token.
    debug_tls: bool = False
    # The gateways (namespace/name) whose bound VirtualServices the fleet serves.
    gateway_names: tuple[str, ...] = (DEFAULT_GATEWAY,)
    # The validating admission webhook (HTTPS): off unless an address is given.
    admission_address: str = ""
    admission_cert: str = ""
    admission_key: str = ""
    # Seconds between the load reports every proxy is asked for (LRS).
    load_report_interval: float = DEFAULT_REPORT_INTERVAL


def xds_transport(
    options: ServeOptions,
) -> tuple[grpc.ServerCredentials | None, AccessPolicy, str]:
    """The xDS port's credentials, the access policy that goes with them and a sentence for the
    log; ``ValueError`` (or ``TlsFilesError``) for a transport the options may not have."""
    host, _ = split_address(options.xds_address)
    if options.tls is None:
        policy = dataclasses.replace(options.access, mtls=False)
        if options.insecure_xds:
            return None, policy, "plaintext, as --insecure-xds asks: proxies are not identified"
        if is_loopback_host(host):
            return None, policy, "plaintext on loopback: only this host can connect"
        raise ValueError(
            f"xDS on {options.xds_address} would be plaintext: give --tls-cert-file and"
            " --tls-key-file (and --client-ca-file for mutual TLS), or --insecure-xds"
        )
    if options.insecure_xds:
        raise ValueError("--insecure-xds contradicts --tls-cert-file")
    credentials, _ = server_credentials(options.tls)
    mtls = options.tls.client_ca_file is not None
    policy = dataclasses.replace(options.access, mtls=mtls)
    if mtls:
        return (
            credentials,
            policy,
            f"mutual TLS: proxies are identified by their SPIFFE ID in trust domain"
            f" {policy.trust_domain}",
        )
    return credentials, policy, "TLS without client certificates: proxies are not identified"


def split_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]") or "0.0.0.0", int(port)


class StartupError(Exception):
    """``serve`` could not start; the message says why, in one line."""


def _server_options(options: ServeOptions) -> ServerOptions:
    return ServerOptions(
        max_concurrent_streams=options.max_concurrent_streams,
        max_receive_bytes=options.max_receive_bytes,
        max_connection_age_s=options.max_connection_age,
        max_connection_age_grace_s=options.max_connection_age_grace,
        stream_limits=StreamLimits(max_names=options.max_names_per_stream),
    )


def _reason(err: OSError) -> str:
    return str(err.strerror or err) if err.filename is None else f"{err.filename}: {err.strerror}"


async def serve(
    options: ServeOptions,
    plane: ControlPlane | None = None,
    stop: asyncio.Event | None = None,
    ready: asyncio.Event | None = None,
) -> None:
    """Serve until ``stop`` is set — by default on SIGTERM or SIGINT — then drain and stop.

    ``ready`` is set once the servers are bound and the sources started (embedders such as the
    demo pass their own ``plane`` and ``stop``). Raises ``StartupError`` — before anything is
    served — when a port cannot be bound, the Kubernetes configuration cannot be loaded or the
    folder cannot be read.
    """
    plane = plane or ControlPlane(
        translate_options=Options(
            only_lb_class=options.only_lb_class, gateway_names=frozenset(options.gateway_names)
        ),
        max_groups=options.max_groups,
        group_grace=options.group_grace,
    )
    credentials, policy, transport = xds_transport(options)
    kube = None if options.config_dir is not None else kubernetes_clients(options)
    loop = asyncio.get_running_loop()
    signals = stop is None
    stop = stop or asyncio.Event()
    if signals:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)

    plane.load_reporting.interval = options.load_report_interval
    started: list[Stopper] = []  # what to stop, last started first

    async def stop_started() -> None:
        for stop_one in reversed(started):
            await stop_one()

    try:
        server, xds_port = await start_xds_server(
            plane.cache,
            plane.clients_registry,
            options.xds_address,
            _server_options(options),
            credentials=credentials,
            access=AccessControl(policy, on_refused=plane.metrics.stream_refused),
            load_reporting=plane.load_reporting,
        )
        started.append(lambda: server.stop(options.drain_seconds))
        debug_host, debug_port = split_address(options.debug_address)
        auth = _debug_auth(options, debug_host, kube)
        ssl_context = None
        if options.debug_tls and options.tls is not None:
            ssl_context = ReloadingSslContext(options.tls).context
        try:
            debug = start_debug_server(
                plane,
                debug_host,
                debug_port,
                auth=auth,
                ssl_context=ssl_context,
                pacer=plane.debug_pacer,
            )
        except OSError as err:
            raise OSError(
                err.errno,
                f"cannot listen for the debug endpoint on {options.debug_address}: {_reason(err)}",
            ) from None

        async def stop_debug() -> None:
            await asyncio.to_thread(debug.stop)

        started.append(stop_debug)
        plane.xds_port = xds_port
        plane.debug_port = debug.port
        if options.admission_address:
            started.append(await _start_admission(options, plane, loop))
        started.append(await _start_sources(options, plane, loop, kube))
    except (OSError, StartupError) as err:
        await stop_started()
        if signals:
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(signum)
        raise StartupError(_reason(err) if isinstance(err, OSError) else str(err)) from None
    log.log(
        logging.WARNING if options.insecure_xds else logging.INFO,
        "serving",
        extra={
            "xds_port": xds_port,
            "xds_transport": transport,
            "debug_address": f"{debug_host}:{plane.debug_port}",
        },
    )
    if ready is not None:
        ready.set()
    try:
        await stop.wait()
    finally:
        log.info("draining", extra={"seconds": options.drain_seconds})
        if signals:
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(signum)
        # Sources first (nothing new comes in), then the store, the debug endpoint and xDS.
        await started.pop()()
        plane.store.close()
        await stop_started()
        if signals:
            await _streams_finished()
        log.info("stopped")


async def _start_admission(
    options: ServeOptions, plane: ControlPlane, loop: asyncio.AbstractEventLoop
) -> Stopper:
    """Start the validating admission webhook; returns what stops it."""
    from xds_server.kube.admission import AdmissionServer, mesh_from_loop

    host, port = split_address(options.admission_address)
    admission = AdmissionServer(
        host,
        port,
        options.admission_cert,
        options.admission_key,
        mesh_from_loop(plane.store.objects, loop),
        options=plane.translate_options,
    )
    await admission.start()
    return admission.stop


async def _streams_finished(timeout_s: float = 5.0) -> None:
    """Wait (a while) for the tasks still running — the streams the stop cancelled, finishing
    their calls: ``asyncio.run`` would cancel them as it returns, and gRPC logs each such
    cancellation as an error with a traceback."""
    current = asyncio.current_task()
    pending = [task for task in asyncio.all_tasks() if task is not current]
    if pending:
        await asyncio.wait(pending, timeout=timeout_s)


@dataclass(frozen=True)
class KubernetesClients:
    """One client for the watches and one for the status writes."""

    watch: ApiClient
    write: ApiClient
    auth: ApiClient  # the debug endpoint's TokenReviews and SubjectAccessReviews


def kubernetes_clients(options: ServeOptions) -> KubernetesClients:
    """Clients for the cluster ``options`` name; ``StartupError`` saying why there is none."""
    from kubernetes.config import ConfigException

    from xds_server.sources.kubernetes import api_client_from_flags

    if options.in_cluster:
        where = "--in-cluster"
    else:
        where = f"kubeconfig {options.kubeconfig}" if options.kubeconfig else _default_kubeconfig()
        if options.kubeconfig and not os.path.isfile(options.kubeconfig):
            raise StartupError(f"--kubeconfig {options.kubeconfig}: no such file")

    def client() -> ApiClient:
        return api_client_from_flags(
            kubeconfig=options.kubeconfig, in_cluster=options.in_cluster, context=options.context
        )

    try:
        return KubernetesClients(client(), client(), client())
    except ConfigException as err:
        if options.in_cluster:
            raise StartupError(
                f"--in-cluster: not running in a Kubernetes cluster ({err}); use --kubeconfig"
                " PATH or --config-dir DIR outside one"
            ) from None
        raise StartupError(f"{where}: {err}") from None
    except (OSError, ValueError) as err:
        raise StartupError(f"{where}: {err}") from None


def _default_kubeconfig() -> str:
    """The kubeconfig kubectl would use, or ``StartupError`` when there is none."""
    listed = os.environ.get("KUBECONFIG", "")
    paths = [p for p in listed.split(os.pathsep) if p] or [os.path.expanduser("~/.kube/config")]
    if not any(os.path.isfile(path) for path in paths):
        where = "$KUBECONFIG (" + listed + ")" if listed else "~/.kube/config"
        raise StartupError(
            f"no kubeconfig: {where} does not exist; give --kubeconfig PATH, --in-cluster or"
            " --config-dir DIR"
        )
    return "kubeconfig " + os.pathsep.join(paths)


def _debug_auth(
    options: ServeOptions, host: str, kube: KubernetesClients | None = None
) -> DebugAuth | None:
    """None on loopback; elsewhere TokenReview and SubjectAccessReview through the API of the
    cluster served (``kube``'s, else one made from ``options``), and with ``--debug-tls`` first a
    status reader's client certificate (the only credentials taken when there is no API, with a
    folder)."""
    if is_loopback(host):
        return None
    policy = options.access
    if options.config_dir is not None and options.debug_tls:
        return with_client_certificates(None, policy.trust_domain, policy.status_readers)
    if options.config_dir is not None:
        raise ValueError(
            f"--debug-address {host}: off loopback the debug endpoint authenticates clients"
            " with the Kubernetes API; use --kubeconfig or --in-cluster, or a loopback address"
        )
    api = (kube or kubernetes_clients(options)).auth
    resource = options.debug_auth_resource
    auth = kubernetes_debug_auth(
        api,
        protect_metrics=options.debug_protect_metrics,
        resource=parse_resource_attributes(resource) if resource else None,
    )
    if options.debug_tls:
        return with_client_certificates(auth, policy.trust_domain, policy.status_readers)
    return auth


async def _start_sources(
    options: ServeOptions,
    plane: ControlPlane,
    loop: asyncio.AbstractEventLoop,
    kube: KubernetesClients | None,
) -> Stopper:
    if options.config_dir is not None:
        from xds_server.sources.directory import DirectorySource

        directory = DirectorySource(options.config_dir, plane.store)
        plane.positions = directory.position
        try:
            # What the first read makes lives until files change: it is read without collections
            # and frozen (see `collector`), so the first translation's collection skips it.
            with collector.long_lived():
                await directory.start()
        except OSError as err:
            raise StartupError(f"--config-dir {options.config_dir}: {err.strerror}") from None
        log.info("watching folder", extra={"config_dir": str(options.config_dir)})

        async def stop_directory() -> None:
            await directory.stop()

        return stop_directory

    # Only a cluster needs the Kubernetes client: a folder is served without loading it.
    from xds_server.kube.loadbalancer_status import LoadBalancerStatus, StatusSettings
    from xds_server.kube.writes import LeaseClaim
    from xds_server.sources.kubernetes import KubernetesSource

    assert kube is not None

    def call_soon(call: Callable[[], None]) -> None:
        loop.call_soon_threadsafe(call)

    source = KubernetesSource(
        kube.watch, plane.store, namespaces=options.namespaces, call_soon=call_soon
    )
    plane.store.register_source(source.name)
    source.start()
    log.info("watching Kubernetes", extra={"namespaces": list(options.namespaces) or "all"})
    status = LoadBalancerStatus(
        kube.write,
        StatusSettings(
            lease=LeaseClaim(
                options.lease_namespace
                or os.environ.get("POD_NAMESPACE")
                or DEFAULT_LEASE_NAMESPACE,
                LEASE_NAME,
                os.environ.get("POD_NAME") or socket.gethostname(),
            ),
            fleet=parse_fleet_service(options.fleet_service),
            only_lb_class=options.only_lb_class,
            gateway_names=frozenset(options.gateway_names),
        ),
        services=lambda: plane.store.objects_of("Service"),
        ingresses=lambda: plane.store.objects_of("Ingress"),
        ingress_classes=lambda: plane.store.objects_of("IngressClass"),
        config=lambda: [
            *plane.store.objects_of("VirtualService"),
            *plane.store.objects_of("DestinationRule"),
        ],
        diagnostics=plane.diagnostics,
    )
    await status.start()

    async def stop_kubernetes() -> None:
        await status.stop()
        await asyncio.to_thread(source.stop)

    return stop_kubernetes


def add_arguments(parser: argparse.ArgumentParser) -> None:
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--config-dir",
        type=Path,
        metavar="DIR",
        help="watch a folder of YAML files (*.yaml, *.yml, multi-document) instead of a cluster",
    )
    where.add_argument(
        "--kubeconfig",
        metavar="PATH",
        help="watch the Kubernetes cluster this kubeconfig names (default: $KUBECONFIG, else"
        " ~/.kube/config, as kubectl)",
    )
    where.add_argument(
        "--in-cluster",
        action="store_true",
        help="watch the cluster the server runs in (its service account)",
    )
    parser.add_argument(
        "--context",
        metavar="NAME",
        help="the kubeconfig context to use (default: its current-context)",
    )
    parser.add_argument(
        "--namespace",
        action="append",
        default=[],
        metavar="NS",
        help="watch only this namespace (repeatable; default: all namespaces)",
    )
    parser.add_argument(
        "--xds-address",
        metavar="HOST:PORT",
        help=f"where Envoy and gRPC clients connect for ADS and CSDS (default: 0.0.0.0:{TLS_PORT}"
        f" with TLS, 0.0.0.0:{PLAINTEXT_PORT} with --insecure-xds, else"
        f" 127.0.0.1:{PLAINTEXT_PORT})",
    )
    parser.add_argument(
        "--tls-cert-file",
        type=Path,
        metavar="FILE",
        help="serve xDS over TLS with this certificate chain (PEM); re-read when it changes",
    )
    parser.add_argument(
        "--tls-key-file",
        type=Path,
        metavar="FILE",
        help="the private key (PEM) of --tls-cert-file; re-read when it changes",
    )
    parser.add_argument(
        "--client-ca-file",
        type=Path,
        metavar="FILE",
        help="require client certificates issued by these CAs (PEM), mutual TLS: a proxy's"
        " identity is its certificate's SPIFFE ID; re-read when it changes",
    )
    parser.add_argument(
        "--insecure-xds",
        action="store_true",
        help="serve xDS in plaintext on a non-loopback address (any client can connect and claim"
        " any namespace)",
    )
    parser.add_argument(
        "--trust-domain",
        default=DEFAULT_TRUST_DOMAIN,
        metavar="DOMAIN",
        help="SPIFFE trust domain of client certificates (default %(default)s)",
    )
    parser.add_argument(
        "--gateway-service-account",
        action="append",
        metavar="NS/NAME",
        help="with mutual TLS, a service account allowed to take the gateway role (repeatable;"
        f" default {', '.join(map(str, sorted(DEFAULT_GATEWAY_ACCOUNTS)))})",
    )
    parser.add_argument(
        "--status-reader",
        action="append",
        metavar="NS/NAME",
        help="with mutual TLS, a service account allowed to read client status over CSDS"
        f" (repeatable; default {', '.join(map(str, sorted(DEFAULT_STATUS_READERS)))});"
        " without it, CSDS answers loopback connections only",
    )
    parser.add_argument(
        "--debug-address",
        default="127.0.0.1:15014",
        metavar="HOST:PORT",
        help="debug HTTP endpoint, /metrics and probes (default 127.0.0.1:15014); off"
        " loopback it requires a bearer token (TokenReview, then SubjectAccessReview), except"
        " for /healthz, /readyz and /metrics",
    )
    parser.add_argument(
        "--debug-tls",
        action="store_true",
        help="serve the debug endpoint over HTTPS with --tls-cert-file/--tls-key-file; a client"
        " certificate from --client-ca-file whose SPIFFE ID is a --status-reader is then let in"
        " without a token (with --config-dir, it is the only credential off loopback)",
    )
    parser.add_argument(
        "--debug-protect-metrics",
        action="store_true",
        help="off loopback, /metrics requires a token too",
    )
    parser.add_argument(
        "--debug-auth-resource",
        default="",
        metavar="KEY=VALUE,...",
        help="authorize debug requests as this verb on a resource instead of by path, e.g."
        " namespace=splitplane-system,resource=services,subresource=proxy,name=splitplane"
        " (keys: namespace, group, version, resource, subresource, name)",
    )
    parser.add_argument(
        "--max-streams",
        type=int,
        default=10_000,
        metavar="N",
        help="cap on concurrent xDS streams (default 10000)",
    )
    parser.add_argument(
        "--max-groups",
        type=_positive_int,
        default=DEFAULT_MAX_GROUPS,
        metavar="N",
        help="cap on node groups in use at once (a group: role and port from node metadata);"
        f" a stream that would make one more is refused (default {DEFAULT_MAX_GROUPS})",
    )
    parser.add_argument(
        "--group-grace",
        type=_seconds,
        default=DEFAULT_GROUP_GRACE_S,
        metavar="SECONDS",
        help="how long a node group no stream holds is kept before it is dropped"
        f" (default {DEFAULT_GROUP_GRACE_S:g})",
    )
    parser.add_argument(
        "--max-request-bytes",
        type=_positive_int,
        default=DEFAULT_MAX_RECEIVE_BYTES,
        metavar="N",
        help=f"largest xDS request accepted (default {DEFAULT_MAX_RECEIVE_BYTES}: 4 MiB)",
    )
    parser.add_argument(
        "--max-names-per-stream",
        type=_positive_int,
        default=DEFAULT_MAX_NAMES,
        metavar="N",
        help="cap on the resource names one xDS stream subscribes to, over all types"
        f" (default {DEFAULT_MAX_NAMES})",
    )
    parser.add_argument(
        "--max-connection-age",
        type=_seconds,
        default=DEFAULT_MAX_CONNECTION_AGE_S,
        metavar="SECONDS",
        help="ask a proxy to reconnect after this long, so proxies spread over the replicas"
        f" after a rollout; 0: never (default {DEFAULT_MAX_CONNECTION_AGE_S:g}, 30 minutes)",
    )
    parser.add_argument(
        "--max-connection-age-grace",
        type=_seconds,
        default=DEFAULT_MAX_CONNECTION_AGE_GRACE_S,
        metavar="SECONDS",
        help="how long a connection past its age may finish before it is closed"
        f" (default {DEFAULT_MAX_CONNECTION_AGE_GRACE_S:g})",
    )
    parser.add_argument(
        "--load-report-interval",
        type=float,
        default=DEFAULT_REPORT_INTERVAL,
        metavar="SECONDS",
        help="how often each proxy reports the traffic its clusters got (Envoy's load reporting"
        f" service; default {DEFAULT_REPORT_INTERVAL:g})",
    )
    parser.add_argument(
        "--fleet-service",
        default=DEFAULT_FLEET_SERVICE,
        metavar="NAMESPACE/NAME",
        help="the load-balancer fleet's headless Service; its endpoints are the addresses written"
        " into the status of LoadBalancer Services and Ingresses"
        f" (default {DEFAULT_FLEET_SERVICE})",
    )
    parser.add_argument(
        "--lease-namespace",
        default="",
        metavar="NS",
        help="namespace of the leader-election Lease (default $POD_NAMESPACE, else"
        f" {DEFAULT_LEASE_NAMESPACE})",
    )
    parser.add_argument(
        "--only-lb-class",
        action="store_true",
        help="serve only LoadBalancer Services with loadBalancerClass splitplane.io/envoy",
    )
    parser.add_argument(
        "--gateway-name",
        action="append",
        metavar="NAMESPACE/NAME",
        help="a gateway whose VirtualServices the load-balancer fleet serves (repeatable; default"
        f" {DEFAULT_GATEWAY}); one bound to any other gateway is left to its owner",
    )
    parser.add_argument(
        "--admission-address",
        default="",
        metavar="HOST:PORT",
        help="serve the validating admission webhook (POST /validate, HTTPS) here, once the files"
        " of --admission-cert and --admission-key exist (default: off)",
    )
    parser.add_argument(
        "--admission-cert", default="", metavar="PATH", help="the webhook's TLS certificate (PEM)"
    )
    parser.add_argument(
        "--admission-key", default="", metavar="PATH", help="the webhook's TLS private key (PEM)"
    )
    parser.add_argument(
        "--log-level",
        default="info",
        choices=("debug", "info", "warning", "error"),
        help="log level (default info); logs are JSON unless stderr is a terminal",
    )


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text} is not a positive number")
    return value


def _seconds(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"{text} is not a number of seconds")
    return value


def _address_problem(flag: str, address: str) -> str | None:
    """Why ``address`` (given to ``flag``) is not HOST:PORT, or None."""
    _host, colon, port = address.rpartition(":")
    if not colon or not port.isdigit() or int(port) > 65535:
        return f"{flag} {address}: not HOST:PORT"
    return None


def run(args: argparse.Namespace) -> int:
    """``splitplane serve``: 0 after a clean stop; 2 for a bad flag, 1 when it cannot start
    (each with one line saying why)."""
    configure_logging(args.log_level)
    collector.tune()
    try:
        parse_fleet_service(args.fleet_service)
    except ValueError as err:
        log.error("--fleet-service: %s", err)
        return 2
    gateway_names = tuple(args.gateway_name or (DEFAULT_GATEWAY,))
    malformed = [name for name in gateway_names if name.count("/") != 1 or "" in name.split("/")]
    if malformed:
        log.error("--gateway-name %s: write NAMESPACE/NAME", malformed[0])
        return 2
    if args.admission_address and not (args.admission_cert and args.admission_key):
        log.error("--admission-address needs --admission-cert and --admission-key")
        return 2
    for flag, address in (
        ("--xds-address", args.xds_address),
        ("--debug-address", args.debug_address),
        ("--admission-address", args.admission_address),
    ):
        if address and (problem := _address_problem(flag, address)) is not None:
            log.error(problem)
            return 2
    if not 0.1 <= args.load_report_interval <= 3600:
        log.error("--load-report-interval: give from 0.1 to 3600 seconds")
        return 2
    if args.config_dir is not None and not args.config_dir.is_dir():
        log.error("--config-dir %s is not a folder", args.config_dir)
        return 2
    if args.debug_auth_resource:
        try:
            parse_resource_attributes(args.debug_auth_resource)
        except ValueError as err:
            log.error("--debug-auth-resource: %s", err)
            return 2
    debug_host, _ = split_address(args.debug_address)
    if args.debug_tls and args.client_ca_file is None:
        log.error("--debug-tls needs --tls-cert-file, --tls-key-file and --client-ca-file")
        return 2
    if args.config_dir is not None and not is_loopback(debug_host) and not args.debug_tls:
        log.error(
            "--debug-address %s is not loopback: the debug endpoint then authenticates clients"
            " with the Kubernetes API (--kubeconfig or --in-cluster) or client certificates"
            " (--debug-tls); use 127.0.0.1",
            args.debug_address,
        )
        return 2
    try:
        tls, access = _tls_and_access(args)
    except ValueError as err:
        log.error("%s", err)
        return 2
    xds_address = args.xds_address or (
        f"0.0.0.0:{TLS_PORT}"
        if tls is not None
        else f"0.0.0.0:{PLAINTEXT_PORT}"
        if args.insecure_xds
        else f"127.0.0.1:{PLAINTEXT_PORT}"
    )
    if args.context is not None and (args.config_dir is not None or args.in_cluster):
        log.error("--context names a kubeconfig context: it goes without --config-dir and"
                  " --in-cluster")  # fmt: skip
        return 2
    options = ServeOptions(
        config_dir=args.config_dir,
        kubeconfig=args.kubeconfig,
        context=args.context,
        in_cluster=args.in_cluster,
        namespaces=tuple(args.namespace),
        xds_address=xds_address,
        debug_address=args.debug_address,
        max_concurrent_streams=args.max_streams,
        max_groups=args.max_groups,
        group_grace=args.group_grace,
        max_receive_bytes=args.max_request_bytes,
        max_names_per_stream=args.max_names_per_stream,
        max_connection_age=args.max_connection_age,
        max_connection_age_grace=args.max_connection_age_grace,
        load_report_interval=args.load_report_interval,
        fleet_service=args.fleet_service,
        lease_namespace=args.lease_namespace,
        only_lb_class=args.only_lb_class,
        debug_protect_metrics=args.debug_protect_metrics,
        debug_auth_resource=args.debug_auth_resource,
        tls=tls,
        insecure_xds=args.insecure_xds,
        access=access,
        debug_tls=args.debug_tls,
        gateway_names=gateway_names,
        admission_address=args.admission_address,
        admission_cert=args.admission_cert,
        admission_key=args.admission_key,
    )
    try:
        xds_transport(options)  # refuse a bad transport before anything starts
    except (ValueError, TlsFilesError) as err:
        log.error("%s", err)
        return 2
    # The debug endpoint's and gRPC's threads share the interpreter with the xDS loop: turns of
    # 1 ms (Python's default is 5) let a probe or a push through sooner when they contend.
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    try:
        asyncio.run(serve(options))
    except StartupError as err:
        log.error("cannot start: %s", err)
        return 1
    return 0


def _tls_and_access(args: argparse.Namespace) -> tuple[TlsFiles | None, AccessPolicy]:
    """The TLS files and access policy the flags ask for; ``ValueError`` for bad flags."""
    if (args.tls_cert_file is None) != (args.tls_key_file is None):
        raise ValueError("--tls-cert-file and --tls-key-file go together")
    if args.client_ca_file is not None and args.tls_cert_file is None:
        raise ValueError("--client-ca-file needs --tls-cert-file and --tls-key-file")
    tls = None
    if args.tls_cert_file is not None:
        tls = TlsFiles(args.tls_cert_file, args.tls_key_file, args.client_ca_file)
    gateways = args.gateway_service_account
    readers = args.status_reader
    try:
        policy = AccessPolicy(
            trust_domain=args.trust_domain,
            gateway_accounts=DEFAULT_GATEWAY_ACCOUNTS
            if gateways is None
            else frozenset(parse_service_account(text) for text in gateways),
            status_readers=DEFAULT_STATUS_READERS
            if readers is None
            else frozenset(parse_service_account(text) for text in readers),
        )
    except ValueError as err:
        raise ValueError(f"--gateway-service-account/--status-reader: {err}") from None
    if not args.trust_domain or "/" in args.trust_domain:
        raise ValueError(f"--trust-domain {args.trust_domain!r} is not a trust domain name")
    return tls, policy
