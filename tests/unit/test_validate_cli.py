"""`splitplane validate PATH...`: every diagnostic, offline; exit 1 on any error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from xds_server.cli.main import main

SERVICE = """\
apiVersion: v1
kind: Service
metadata: {name: reviews}
spec:
  selector: {app: reviews}
  ports: [{name: http, port: 80}]
"""
CANARY = """\
apiVersion: networking.istio.io/v1alpha3
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]
---
apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews, subset: v1}
      weight: 90
    - destination: {host: reviews, subset: v2}
      weight: 10
"""
POD = """\
apiVersion: v1
kind: Pod
metadata: {name: reviews-v1, labels: {app: reviews, version: v1}}
status:
  podIP: 10.0.0.1
  phase: Running
  conditions: [{type: Ready, status: "True"}]
"""


def validate(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, list[str]]:
    code = main(["validate", *map(str, args)])
    return code, capsys.readouterr().out.splitlines()


def test_a_valid_folder_exits_zero(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "mesh.yaml").write_text("---\n".join([SERVICE, POD, CANARY]))

    code, lines = validate(capsys, tmp_path)

    assert code == 0
    assert lines == ["0 error(s), 0 warning(s)"]


def test_warnings_alone_still_exit_zero(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "svc.yaml").write_text(
        SERVICE + "---\napiVersion: example.com/v1\nkind: VirtualServce\nmetadata: {name: x}\n"
    )

    code, lines = validate(capsys, tmp_path / "svc.yaml")

    assert code == 0
    assert "warning: VirtualServce/default/x" in lines[0]
    assert "did you mean VirtualService?" in lines[0]
    assert lines[-1] == "0 error(s), 1 warning(s)"


def test_infos_show_only_at_the_info_threshold(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "svc.yaml").write_text(SERVICE)  # no pods: no ready endpoints, an info

    assert validate(capsys, tmp_path / "svc.yaml") == (0, ["0 error(s), 0 warning(s)"])
    code, lines = validate(capsys, "--output-threshold", "info", tmp_path / "svc.yaml")

    assert code == 0
    assert lines[0].startswith("info: Service/default/reviews")
    assert "no ready endpoints" in lines[0]
    assert lines[-1] == "0 error(s), 0 warning(s)"


def test_malformed_yaml_names_the_file_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: Service\nmetadata:\n  name: [unclosed\n")
    (tmp_path / "good.yaml").write_text(SERVICE)

    code, lines = validate(capsys, tmp_path)

    assert code == 1
    [problem] = [line for line in lines if line.startswith(str(bad))]
    assert "error" in problem and "line" in problem


def test_an_invalid_object_names_kind_namespace_name_and_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "mesh.yaml").write_text(
        "---\n".join([SERVICE, POD, CANARY.replace("weight: 10", "weight: -10")])
    )

    code, lines = validate(capsys, tmp_path)

    assert code == 1
    assert (
        "error: VirtualService/default/reviews spec.http[0].route[1].weight:"
        " must not be negative (got -10)"
    ) in lines
    assert lines[-1] == "1 error(s), 0 warning(s)"


def test_json_output_lists_every_diagnostic(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "vs.yaml").write_text(CANARY.replace("subset: v2", "subset: v3"))
    (tmp_path / "svc.yaml").write_text(SERVICE)

    code = main(["validate", "-o", "json", str(tmp_path)])
    diagnostics = json.loads(capsys.readouterr().out)

    assert code == 1
    assert {
        "severity": "error",
        "kind": "VirtualService",
        "namespace": "default",
        "name": "reviews",
        "field": "spec.http[0].route[1].destination.subset",
    }.items() <= next(d for d in diagnostics if d["severity"] == "error").items()


def test_a_missing_path_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, lines = validate(capsys, tmp_path / "nope.yaml")

    assert code == 1
    assert "no such file or directory" in lines[0]
