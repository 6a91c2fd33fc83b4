"""`splitplane translate`: what each kind of proxy would receive, offline, and the short tables."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from xds_server.cli import config_tables
from xds_server.cli.main import main

MESH = """\
apiVersion: v1
kind: Service
metadata: {name: reviews}
spec:
  selector: {app: reviews}
  ports: [{name: http, port: 80}]
---
apiVersion: v1
kind: Pod
metadata: {name: reviews-v1, labels: {app: reviews, version: v1}}
status:
  podIP: 10.0.0.1
  phase: Running
  conditions: [{type: Ready, status: "True"}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews, subset: v1}
      weight: 75
    - destination: {host: reviews, subset: v2}
      weight: 25
"""


def translate(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["translate", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_a_sidecar_gets_the_weighted_route_and_its_clusters(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "mesh.yaml").write_text(MESH)

    code, out, _ = translate(capsys, "-f", str(tmp_path), "-o", "table", "--type", "routes")

    assert code == 0
    assert out.splitlines() == [
        "NAME                                     VHOST NAME                            DOMAINS"
        "          MATCH  DESTINATION",
        "15001/reviews.default.svc.cluster.local  reviews.default.svc.cluster.local:80"
        "  reviews +7 more  /*     "
        "outbound|80|v1|reviews.default.svc.cluster.local 75%, "
        "outbound|80|v2|reviews.default.svc.cluster.local 25%",
    ]


def test_wide_lists_every_domain(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "mesh.yaml").write_text(MESH)

    _, out, _ = translate(capsys, "-f", str(tmp_path), "-o", "wide", "--type", "routes")

    assert "  reviews, reviews.default, reviews.default.svc, " in out.splitlines()[1]


def test_a_proxyless_client_gets_an_api_listener_per_target(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "mesh.yaml").write_text(MESH)

    code, out, _ = translate(
        capsys, str(tmp_path), "--role", "proxyless", "-o", "table", "--type", "listeners"
    )

    assert code == 0
    rows = [line.split() for line in out.splitlines()[1:]]
    table = "reviews.default.svc.cluster.local:80"
    assert ["reviews.default.svc.cluster.local:80", "-", "Route:", table] in rows
    assert ["reviews", "-", "Route:", table] in rows


def test_the_gateway_serves_what_is_bound_to_it_on_its_own_port(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "mesh.yaml").write_text(
        MESH.replace(
            "hosts: [reviews]",
            "hosts: [shop.example.com]\n  gateways: [splitplane-system/splitplane]",
        )
    )

    _, sidecar, _ = translate(capsys, str(tmp_path), "-o", "json")
    _, gateway, _ = translate(capsys, str(tmp_path), "--role", "gateway", "-o", "table")

    assert "shop.example.com" not in sidecar
    assert ["0.0.0.0", "8080", "Route:", "8080"] in [line.split() for line in gateway.splitlines()]
    assert "shop.example.com" in gateway


def test_json_is_a_config_dump_of_the_types_asked_for(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "mesh.yaml").write_text(MESH)

    _, out, _ = translate(capsys, str(tmp_path), "-o", "json", "--type", "clusters")
    [section] = json.loads(out)["configs"]

    assert section["@type"].endswith(".ClustersConfigDump")
    names = [c["cluster"]["name"] for c in section["dynamic_active_clusters"]]
    assert "outbound|80|v2|reviews.default.svc.cluster.local" in names


def test_stdin_and_diagnostics_on_stderr(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    text = MESH.replace("weight: 25", "weight: -25")
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(text.encode())))

    code, out, err = translate(capsys, "-f", "-", "-o", "table", "--type", "clusters")

    assert code == 0
    assert "<stdin>:23: error [SP-VirtualService-spec.http.route.weight]" in err
    assert "reviews.default.svc.cluster.local  80    v1" in out  # the rest is still built


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_colour_only_on_a_terminal_and_never_with_no_color(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    assert config_tables.use_colour(Terminal())
    assert not config_tables.use_colour(io.StringIO())
    monkeypatch.setenv("NO_COLOR", "1")
    assert not config_tables.use_colour(Terminal())


def test_a_coloured_table_keeps_its_columns_lined_up() -> None:
    table = (["NAME", "CDS"], [["a", "SYNCED (1)"], ["bb", "NACKED (2)"]])

    plain = config_tables.render(table)
    coloured = config_tables.render(table, colour=True)

    assert "\x1b[31mNACKED (2)\x1b[0m" in coloured
    strip = coloured.replace("\x1b[1m", "").replace("\x1b[0m", "")
    assert strip.replace("\x1b[32m", "").replace("\x1b[31m", "") == plain


def test_a_proxy_sees_what_is_exported_to_its_namespace(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "mesh.yaml").write_text(
        MESH.replace("hosts: [reviews]", 'hosts: [reviews]\n  exportTo: ["."]')
    )

    _, in_default, _ = translate(
        capsys, str(tmp_path), "--namespace", "default", "-o", "table", "--type", "routes"
    )
    _, in_shop, _ = translate(
        capsys, str(tmp_path), "--namespace", "shop", "-o", "table", "--type", "routes"
    )

    assert "75%" in in_default
    assert "75%" not in in_shop
