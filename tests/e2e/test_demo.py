"""`splitplane demo`: the canary walk a newcomer runs first, and its clean-up."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.envoy

DEMO = [str(Path(sys.executable).with_name("splitplane")), "demo"]


def processes_mentioning(text: str) -> list[str]:
    """Command lines of running processes that mention ``text`` (e.g. a temp folder)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if text in cmdline:
            found.append(cmdline)
    return found


def test_short_mode_walks_every_step_and_checks_each_split(tmp_path: Path) -> None:
    env = {**os.environ, "TMPDIR": str(tmp_path)}

    result = subprocess.run(
        [*DEMO, "--short"], capture_output=True, text=True, timeout=180, env=env, check=False
    )

    assert result.returncode == 0, result.stdout + result.stderr
    steps = [line for line in result.stdout.splitlines() if line.startswith("step ")]
    assert [line.split()[1] for line in steps] == ["100/0", "90/10", "50/50", "0/100"]
    assert all("0 failed" in line for line in steps)
    assert "propagated in" in steps[1]
    assert "every step split as configured" in result.stdout
    assert list(tmp_path.iterdir()) == [], "the demo left files behind"
    assert processes_mentioning(str(tmp_path)) == []


def test_ctrl_c_stops_everything_and_leaves_nothing_behind(tmp_path: Path) -> None:
    env = {**os.environ, "TMPDIR": str(tmp_path), "PYTHONUNBUFFERED": "1"}
    demo = subprocess.Popen(
        [*DEMO, "--requests", "100000"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    assert demo.stdout is not None
    deadline = time.monotonic() + 60
    for line in demo.stdout:
        if line.startswith("envoy sidecar:"):
            break
        assert time.monotonic() < deadline, "the demo never started Envoy"
    assert processes_mentioning(str(tmp_path)) != []  # Envoy runs with its config in TMPDIR

    demo.send_signal(signal.SIGINT)

    assert demo.wait(60) == 130
    assert "interrupted" in demo.stdout.read()
    assert processes_mentioning(str(tmp_path)) == []
    assert list(tmp_path.iterdir()) == []
