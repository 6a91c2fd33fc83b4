"""The committed generated files (API module, stub, CRDs) match the proto they come from."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]
GENERATOR = ROOT / "proto" / "generate.py"


def load_generator() -> ModuleType:
    """``proto/generate.py`` as a module (it is a script, not part of a package)."""
    name = "splitplane_proto_generate"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, GENERATOR)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def test_generated_files_are_up_to_date() -> None:
    result = subprocess.run(
        [sys.executable, str(GENERATOR), "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )

    assert result.returncode == 0, f"{result.stderr}\nRegenerate with: make generate"


def test_generation_is_deterministic() -> None:
    generator = load_generator()

    assert generator.generated_files() == generator.generated_files()


def test_generated_files_cover_the_api_module_and_every_crd() -> None:
    generator = load_generator()

    names = sorted(path.relative_to(ROOT).as_posix() for path in generator.generated_files())

    assert names == [
        "deploy/crds/destinationrules.networking.istio.io.yaml",
        "deploy/crds/sidecars.networking.istio.io.yaml",
        "deploy/crds/virtualservices.networking.istio.io.yaml",
        "translators/api/networking_pb2.py",
        "translators/api/networking_pb2.pyi",
    ]


def test_stale_files_are_the_changed_and_the_missing_ones(tmp_path: Path) -> None:
    generator = load_generator()
    current, changed, missing = tmp_path / "current", tmp_path / "changed", tmp_path / "missing"
    current.write_bytes(b"same")
    changed.write_bytes(b"old")

    stale = generator.stale_files({current: b"same", changed: b"new", missing: b"new"})

    assert stale == [changed, missing]
