"""Fixtures: a fake API server per test, a client configured from a kubeconfig, a source."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from tests.kube.apiserver import FakeApiServer
from tests.kube.recording_sink import RecordingSink
from xds_server.sources.kubernetes import (
    Backoff,
    KubernetesSource,
    WatchSettings,
    api_client_from_flags,
)

# Fast enough for tests, still exponential with jitter.
FAST = WatchSettings(timeout_seconds=30, page_size=2, backoff=Backoff(initial=0.05, maximum=0.4))

SourceFactory = Callable[..., KubernetesSource]


@pytest.fixture
def apiserver() -> Iterator[FakeApiServer]:
    server = FakeApiServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def kubeconfig(apiserver: FakeApiServer, tmp_path: Path) -> Path:
    return apiserver.write_kubeconfig(tmp_path / "kubeconfig")


@pytest.fixture
def api(kubeconfig: Path) -> Iterator[client.ApiClient]:
    api_client = api_client_from_flags(kubeconfig=str(kubeconfig))
    try:
        yield api_client
    finally:
        api_client.close()  # type: ignore[no-untyped-call]


@pytest.fixture
def sink() -> RecordingSink:
    return RecordingSink()


@pytest.fixture
def start_source(kubeconfig: Path, sink: RecordingSink) -> Iterator[SourceFactory]:
    """Start a KubernetesSource on its own client; stopped (and checked stopped) at teardown."""
    started: list[tuple[KubernetesSource, client.ApiClient]] = []

    def start(**kwargs: Any) -> KubernetesSource:
        api_client = api_client_from_flags(kubeconfig=str(kubeconfig))
        kwargs.setdefault("settings", FAST)
        source = KubernetesSource(api_client, sink, **kwargs)
        started.append((source, api_client))
        source.start()
        return source

    try:
        yield start
    finally:
        for source, api_client in started:
            source.stop()
            api_client.close()  # type: ignore[no-untyped-call]
        assert not any(source.running for source, _ in started)
