"""The README's examples are true: the quickstart's backends answer "v1" and "v2" on loopback,
and its sample output (`splitplane status` versions, `splitplane snapshot --type routes`, the
diagnostic of a 0/0 canary) is what the code produces for deploy/examples/local.

`pytest tests/unit/test_readme_examples.py --update-golden` rewrites the status versions."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.backends import free_port
from translators.diagnostics import Severity
from translators.translate import translate
from xds_server.app import ControlPlane
from xds_server.cli.main import main
from xds_server.cli.validate import validate_paths
from xds_server.debug.views import snapshot_json
from xds_server.sources.directory import load_directory
from xds_server.xds.cache import PUSH_ORDER

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
LOCAL = REPO / "deploy" / "examples" / "local"
GROUP = "sidecar:15001/default"  # role, port and namespace
STATUS_ROW = re.compile(r"^(sidecar~127\.0\.0\.1~productpage-v1\S*\s.*)$", re.MULTILINE)


def block_after(text: str, marker: str) -> str:
    """The fenced block that follows ``marker`` in the README."""
    start = text.index("```", text.index(marker))
    body = text.index("\n", start) + 1
    return text[body : text.index("```", body)]


async def local_snapshot() -> Any:
    plane = ControlPlane(quiet=0.01, max_delay=0.05)
    plane.cache.watch(GROUP, lambda: None)
    objects, problems = load_directory([LOCAL])
    assert problems == []
    plane.store.replace_all("readme", objects)
    plane.store.mark_synced("readme")
    for _ in range(200):
        if (snapshot := plane.cache.snapshot(GROUP)) is not None:
            return snapshot
        await asyncio.sleep(0.01)
    raise AssertionError("no snapshot")


async def test_status_sample_shows_the_versions_the_local_example_gets(
    request: pytest.FixtureRequest,
) -> None:
    snapshot = await local_snapshot()
    versions = [snapshot.versions[type_url][:8] for type_url in PUSH_ORDER]
    readme = README.read_text()
    match = STATUS_ROW.search(readme)
    assert match, "README lacks the sample `splitplane status` row"
    shown = re.findall(r"SYNCED \((\w+)\)", match.group(1))
    if request.config.getoption("--update-golden") and shown != versions:
        row = match.group(1)
        for old, new in zip(shown, versions, strict=True):
            row = row.replace(f"({old})", f"({new})")
        README.write_text(readme[: match.start(1)] + row + readme[match.end(1) :])
        return
    assert shown == versions, "run: pytest tests/unit/test_readme_examples.py --update-golden"


async def test_snapshot_sample_is_an_excerpt_of_the_routes_the_local_example_gets() -> None:
    snapshot = await local_snapshot()
    data = json.loads(json.dumps(snapshot_json({GROUP: snapshot}, type_name="routes")))
    printed = yaml.safe_dump(data, sort_keys=False, width=100).splitlines()
    sample = block_after(README.read_text(), "`splitplane snapshot --type routes` shows").rstrip()
    chunks = [
        chunk.strip("\n").splitlines() for chunk in re.split(r"^\s*\.\.\.$", sample, flags=re.M)
    ]

    at = 0
    for chunk in chunks:
        found = next(
            (i for i in range(at, len(printed)) if printed[i : i + len(chunk)] == chunk), None
        )
        assert found is not None, f"not in `splitplane snapshot --type routes`: {chunk}"
        at = found + len(chunk)
    assert (
        "      - name: 15001/reviews.default.svc.cluster.local" in sample
    )  # the route configuration is named after the port


def test_diagnostic_sample_is_what_a_0_0_canary_gets() -> None:
    objects, _ = load_directory([LOCAL])
    for obj in objects:
        if obj["kind"] == "VirtualService":
            for destination in obj["spec"]["http"][0]["route"]:
                destination["weight"] = 0
    sample = json.loads(block_after(README.read_text(), "shown at `/debug/diagnostics`"))

    assert [d.as_dict() for d in translate(objects).diagnostics] == [sample]


def test_validate_of_the_examples_is_clean(capsys: pytest.CaptureFixture[str]) -> None:
    found = validate_paths([REPO / "deploy" / "examples"])

    assert [d for d in found if d.severity is not Severity.INFO] == []
    assert main(["validate", str(REPO / "deploy" / "examples")]) == 0
    assert capsys.readouterr().out == "0 error(s), 0 warning(s), 2 info(s)\n"


def quickstart_backends() -> list[str]:
    quickstart = block_after(README.read_text(), "## Quickstart without a cluster")
    lines = quickstart.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("mkdir"))
    end = max(i for i, line in enumerate(lines) if "http.server" in line)
    return lines[start : end + 1]


def test_quickstart_backends_answer_v1_and_v2_on_loopback(tmp_path: Path) -> None:
    commands = quickstart_backends()
    ports: dict[str, int] = {"8081": free_port(), "8082": free_port()}
    script = []
    for command in commands:
        line = command.split("#")[0].replace("/tmp/reviews", str(tmp_path / "reviews"))
        line = line.replace("python -m", f"exec {sys.executable} -m").rstrip(" &")
        for written, free in ports.items():
            line = line.replace(written, str(free))
        script.append(line)
    assert all("--bind 127.0.0.1" in line for line in commands if "http.server" in line)

    subprocess.run(["sh", "-c", " && ".join(script[:-2])], check=True)
    servers = [subprocess.Popen(["sh", "-c", line]) for line in script[-2:]]
    try:
        for version, free in zip(("v1", "v2"), ports.values(), strict=True):
            assert answer(free) == f"{version}\n"
    finally:
        for server in servers:
            server.terminate()
            server.wait()


def answer(port: int) -> str:
    for _ in range(200):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as response:
                text: str = response.read().decode()
                return text
        except OSError:
            subprocess.run(["sleep", "0.05"], check=True)
    raise AssertionError(f"nothing answers on 127.0.0.1:{port}")
