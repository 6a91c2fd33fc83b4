"""A real grpcio xDS client that only subscribes: ``python -m tests.support.grpc_subscriber
TARGET...`` opens a channel to each ``xds:///`` target and makes it connect, which makes gRPC's
xDS resolver fetch the target's listener, route table, clusters and endpoints (and ACK or NACK
each response). It runs until its stdin closes.

Run it with ``GRPC_XDS_BOOTSTRAP`` set; the test process itself never sets it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import grpc

REPO_ROOT = Path(__file__).resolve().parents[2]


@contextmanager
def subscribing(bootstrap_path: Path, targets: Sequence[str]) -> Iterator[subprocess.Popen[str]]:
    """The subscriber subprocess for ``targets``; stopped on exit."""
    env = {**os.environ, "GRPC_XDS_BOOTSTRAP": str(bootstrap_path)}
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.support.grpc_subscriber", *targets],
        cwd=REPO_ROOT,
        env=env,
        stdin=subprocess.PIPE,
        text=True,
    )
    try:
        yield process
    finally:
        if process.stdin is not None:
            process.stdin.close()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _subscribe(targets: Sequence[str]) -> None:
    channels = [grpc.insecure_channel(target) for target in targets]
    for channel in channels:
        channel.subscribe(lambda _state: None, try_to_connect=True)
    sys.stdin.read()  # until the test closes stdin
    for channel in channels:
        channel.close()


if __name__ == "__main__":
    _subscribe(sys.argv[1:])
