"""`splitplane validate PATH...`: every diagnostic, offline; exit 1 on any error."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import yaml

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
OTHER_SLICE = """\
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: ratings-1, labels: {kubernetes.io/service-name: ratings}}
addressType: IPv4
endpoints: [{addresses: [10.0.0.9]}]
ports: [{name: http, port: 9080}]
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
    code = main(["validate", "--output-threshold", "info", *map(str, args)])
    return code, capsys.readouterr().out.splitlines()


def test_a_valid_folder_exits_zero(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "mesh.yaml").write_text("---\n".join([SERVICE, POD, CANARY]))

    code, lines = validate(capsys, tmp_path)

    assert code == 0
    assert lines == ["0 error(s), 0 warning(s), 0 info(s)"]


def test_warnings_alone_still_exit_zero(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # A slice of another service: the input holds endpoints, so an empty Service is worth a word.
    (tmp_path / "svc.yaml").write_text(SERVICE + "---\n" + OTHER_SLICE)

    code, lines = validate(capsys, tmp_path / "svc.yaml")

    assert code == 0
    assert lines[0] == (
        f"{tmp_path / 'svc.yaml'}:1: info [SP-Service]: Service/default/reviews"
        " no ready endpoints; its clusters have empty load assignments"
    )


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
        f"{tmp_path / 'mesh.yaml'}:23: error [SP-VirtualService-spec.http.route.weight]:"
        " VirtualService/default/reviews spec.http[0].route[1].weight:"
        " must not be negative (got -10)"
    ) in lines
    assert lines[-1] == "1 error(s), 0 warning(s), 0 info(s)"


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


def test_stdin_is_read_with_dash_f(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    text = SERVICE + "---\n" + CANARY.replace("weight: 10", "weight: -10")
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(text.encode())))

    code, lines = validate(capsys, "-f", "-")

    assert code == 1
    assert (
        "<stdin>:15: error [SP-VirtualService-spec.http.route.weight]:"
        " VirtualService/default/reviews spec.http[0].route[1].weight:"
        " must not be negative (got -10)"
    ) in lines


def test_a_problem_in_a_file_names_the_line_of_its_document(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "mesh.yaml").write_text(
        SERVICE + "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\n"
        "metadata: {namespace: x}\n"
    )

    code, lines = validate(capsys, tmp_path)

    assert code == 1
    assert lines[0] == (
        f"{tmp_path / 'mesh.yaml'}:8: error [SP-VirtualService-metadata.name]: VirtualService"
        " metadata.name: document 2 (line 8): VirtualService has no metadata.name"
    )


def test_a_duplicate_names_the_line_of_the_definition_that_loses(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "a.yaml").write_text(SERVICE)
    (tmp_path / "b.yaml").write_text(
        "# another Service of that name\n" + SERVICE.replace("80", "81")
    )

    validate(capsys, tmp_path)
    _, lines = validate(capsys, tmp_path)

    assert any(line.startswith(f"{tmp_path / 'b.yaml'}:2: error [SP-Service]:") for line in lines)


def test_kinds_splitplane_does_not_read_are_counted_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    deployment = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d%d}\n"
    account = "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: a}\n"
    (tmp_path / "app.yaml").write_text("---\n".join([deployment % 1, deployment % 2, account]))
    (tmp_path / "mesh.yaml").write_text("---\n".join([SERVICE, POD, CANARY]))

    code, lines = validate(capsys, tmp_path)

    assert code == 0
    assert lines == [
        "info [SP-File-unreadKinds]: unreadKinds: 3 object(s) of kinds splitplane does not read"
        " were skipped: Deployment 2, ServiceAccount 1",
        "0 error(s), 0 warning(s), 1 info(s)",
    ]


def test_no_endpoint_warnings_when_the_input_holds_no_endpoints(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "mesh.yaml").write_text("---\n".join([SERVICE, CANARY]))  # as in a git repository

    code, lines = validate(capsys, tmp_path)

    assert (code, lines) == (0, ["0 error(s), 0 warning(s), 0 info(s)"])


def test_weights_that_do_not_sum_to_100_get_the_effective_percentages(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "mesh.yaml").write_text(
        "---\n".join([SERVICE, POD, CANARY.replace("weight: 90", "weight: 2").replace("10", "1")])
    )

    code, lines = validate(capsys, tmp_path)

    assert code == 0
    assert lines[0] == (
        f"{tmp_path / 'mesh.yaml'}:23: info [SP-VirtualService-spec.http.route]:"
        " VirtualService/default/reviews spec.http[0].route: weights sum to 3, not 100; they are"
        " relative: reviews v1 66.7 %, reviews v2 33.3 %"
    )


INGRESS = """\
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: web}
spec:
  %s
  defaultBackend: {service: {name: reviews, port: {number: 80}}}
"""


@pytest.mark.parametrize(
    ("class_line", "field", "why"),
    [
        (
            "ingressClassName: nginx",
            "spec.ingressClassName",
            "not served by splitplane: class 'nginx' is another controller's (splitplane serves"
            " splitplane)",
        ),
        (
            "{}",
            "spec.ingressClassName",
            "not served by splitplane: it names no class and no IngressClass of splitplane's"
            " (controller splitplane.io/ingress-controller) is marked default"
            ' (ingressclass.kubernetes.io/is-default-class: "true"); set ingressClassName to one'
            " of: splitplane",
        ),
    ],
)
def test_an_ingress_splitplane_will_not_serve_gets_an_info_saying_why(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], class_line: str, field: str, why: str
) -> None:
    body = (INGRESS % class_line).replace("  {}\n", "")
    (tmp_path / "mesh.yaml").write_text("---\n".join([SERVICE, POD, body]))

    code, lines = validate(capsys, tmp_path)

    assert code == 0
    assert lines[0] == (
        f"{tmp_path / 'mesh.yaml'}:16: info [SP-Ingress-{field}]: Ingress/default/web {field}:"
        f" {why}"
    )


def test_an_ingress_without_a_class_is_served_when_splitplanes_class_is_default(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ingress_class = (
        "apiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata:\n  name: edge\n"
        '  annotations: {ingressclass.kubernetes.io/is-default-class: "true"}\n'
        "spec: {controller: splitplane.io/ingress-controller}\n"
    )
    body = (INGRESS % "{}").replace("  {}\n", "")
    (tmp_path / "mesh.yaml").write_text("---\n".join([SERVICE, POD, ingress_class, body]))

    code, lines = validate(capsys, tmp_path)

    assert (code, lines) == (0, ["0 error(s), 0 warning(s), 0 info(s)"])


@pytest.mark.parametrize(("threshold", "expected"), [("error", 0), ("warning", 1), ("info", 1)])
def test_failure_threshold_sets_what_fails_like_istioctl(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], threshold: str, expected: int
) -> None:
    (tmp_path / "dr.yaml").write_text(
        CANARY.split("---", maxsplit=1)[0]
    )  # one warning: an unknown host

    code, lines = validate(capsys, "--failure-threshold", threshold, tmp_path)

    assert lines[-1] == "0 error(s), 1 warning(s), 0 info(s)"

    assert code == expected


def test_info_alone_fails_only_at_the_info_threshold(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "d.yaml").write_text("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\n")

    assert validate(capsys, "--failure-threshold", "warning", tmp_path)[0] == 0
    assert validate(capsys, "--failure-threshold", "info", tmp_path)[0] == 1


def test_output_threshold_hides_less_severe_lines_but_counts_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "d.yaml").write_text("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\n")

    _, lines = validate(capsys, "--output-threshold", "warning", tmp_path)

    assert lines == ["0 error(s), 0 warning(s), 1 info(s)"]


@pytest.mark.parametrize("output", ["json", "yaml"])
def test_machine_output_carries_code_file_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], output: str
) -> None:
    (tmp_path / "mesh.yaml").write_text("---\n".join([SERVICE, POD, CANARY.replace("v2}", "v3}")]))

    main(["validate", "-o", output, str(tmp_path)])
    text = capsys.readouterr().out
    [record] = json.loads(text) if output == "json" else yaml.safe_load(text)

    assert record == {
        "code": "SP-VirtualService-spec.http.route.destination.subset",
        "severity": "error",
        "kind": "VirtualService",
        "namespace": "default",
        "name": "reviews",
        "field": "spec.http[0].route[1].destination.subset",
        "message": "subset 'v3' is not defined in a DestinationRule for"
        " reviews.default.svc.cluster.local",
        "file": str(tmp_path / "mesh.yaml"),
        "line": 23,
    }
