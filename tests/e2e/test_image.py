"""`make image`: the OCI image archive built from this repository (mmdebstrap, umoci) unpacks to
a root filesystem on which `splitplane serve` runs as UID 65532 with the root filesystem mounted
read-only (only /tmp writable, as deploy/control-plane.yaml mounts it) until /readyz answers 200.

Needs root, mmdebstrap, umoci and a Debian mirror (.ci/run installs the tools); it takes a couple
of minutes; it shares an xdist group with the other wheel build (test_install)."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.backends import free_port

REPO = Path(__file__).resolve().parents[2]
VERSION = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]

# Builds the wheel in the source tree: one worker with test_install, which builds one too.
pytestmark = [pytest.mark.image, pytest.mark.xdist_group("wheel")]


def deployed_image() -> str:
    documents = yaml.safe_load_all((REPO / "deploy" / "control-plane.yaml").read_text())
    (deployment,) = (d for d in documents if d["kind"] == "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    image: str = container["image"]
    return image


@pytest.fixture(scope="module")
def image_archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    missing = [tool for tool in ("mmdebstrap", "umoci") if shutil.which(tool) is None]
    assert not missing, f"apt-get install {' '.join(missing)} (.ci/run does)"
    assert os.geteuid() == 0, "building and unpacking the image needs root (CI runs as root)"
    work = tmp_path_factory.mktemp("image")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
         "--wheel-dir", str(work), str(REPO)],
        check=True,
    )  # fmt: skip
    (wheel,) = work.glob("splitplane-*.whl")
    archive = work / "splitplane-image.tar"
    subprocess.run(
        [str(REPO / "deploy" / "image" / "build"), str(wheel), str(archive), deployed_image()],
        check=True,
        env={**os.environ, "PYTHON": sys.executable},
        timeout=600,
    )
    return archive


@pytest.fixture(scope="module")
def bundle(image_archive: Path) -> Path:
    """The image unpacked by umoci: ``rootfs/`` and the runtime ``config.json``."""
    layout = image_archive.with_suffix("")
    with tarfile.open(image_archive) as tar:
        tar.extractall(layout, filter="tar")
    target = image_archive.parent / "bundle"
    subprocess.run(
        ["umoci", "unpack", "--image", f"{layout}:{VERSION}", str(target)],
        check=True,
        capture_output=True,
    )
    return target


def test_the_archive_is_named_as_the_deployment_runs_it(image_archive: Path) -> None:
    with tarfile.open(image_archive) as tar:
        member = tar.extractfile("./index.json")
        assert member is not None
        index = json.load(member)
    (manifest,) = index["manifests"]

    assert deployed_image() == f"splitplane:{VERSION}"
    assert manifest["annotations"] == {
        "org.opencontainers.image.ref.name": VERSION,
        "io.containerd.image.name": f"docker.io/library/splitplane:{VERSION}",
    }


def test_the_image_runs_as_65532_with_splitplane_as_its_entrypoint(bundle: Path) -> None:
    process = json.loads((bundle / "config.json").read_text())["process"]

    assert (process["user"]["uid"], process["user"]["gid"]) == (65532, 65532)
    assert process["args"] == ["splitplane", "serve", "--in-cluster"]
    assert "PYTHONDONTWRITEBYTECODE=1" in process["env"]
    assert not (bundle / "rootfs" / "usr" / "bin" / "pip").exists()


@pytest.fixture
def serving(bundle: Path) -> Iterator[int]:
    """``splitplane serve`` of the local canary, run from the image's root filesystem mounted
    read-only in a private mount namespace, as the image's user; yields the debug port."""
    process: dict[str, Any] = json.loads((bundle / "config.json").read_text())["process"]
    rootfs = bundle / "rootfs"
    xds_port, debug_port = free_port(), free_port()
    user = f"{process['user']['uid']}:{process['user']['gid']}"
    command = [
        process["args"][0], "serve", "--config-dir", "/tmp/mesh",
        "--xds-address", f"127.0.0.1:{xds_port}", "--debug-address", f"127.0.0.1:{debug_port}",
    ]  # fmt: skip
    canary = REPO / "deploy" / "examples" / "local" / "canary.yaml"
    script = " && ".join(
        [
            f"mount --bind {rootfs} {rootfs}",
            f"mount -o remount,bind,ro {rootfs}",
            f"mount -t tmpfs -o size=64m tmpfs {rootfs}/tmp",
            f"mkdir {rootfs}/tmp/mesh",
            f"cp {canary} {rootfs}/tmp/mesh/",
            f"exec env -i {shlex.join(process['env'])} {shutil.which('chroot')} "
            f"--userspec={user} {rootfs} " + shlex.join(command),
        ]
    )
    log = bundle / "serve.log"
    with log.open("wb") as out:
        server = subprocess.Popen(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield debug_port
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        print(log.read_text(errors="replace")[-3000:])


def readyz(port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as response:
            status: int = response.status
            return status
    except urllib.error.HTTPError as err:
        return err.code
    except OSError:
        return 0


def test_serve_runs_from_the_read_only_root_filesystem_until_ready(
    serving: int, bundle: Path
) -> None:
    deadline = time.monotonic() + 90
    while (status := readyz(serving)) != 200 and time.monotonic() < deadline:
        time.sleep(0.2)

    assert status == 200, (bundle / "serve.log").read_text(errors="replace")[-3000:]
    with urllib.request.urlopen(f"http://127.0.0.1:{serving}/debug/diagnostics") as response:
        assert json.load(response)["diagnostics"] == []
