"""`serve --gateway-name`: the load-balancer fleet serves the VirtualServices bound to the gateways
it is given (default splitplane-system/splitplane); one bound to any other gateway (Istio's
ingress gateway, say) gets an info diagnostic and is left to its owner."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.support.backends import free_port
from xds_server.app import ServeOptions, serve
from xds_server.cli.main import build_parser, main

MESH = """\
apiVersion: v1
kind: Service
metadata: {name: shop, namespace: default}
spec:
  ports: [{name: http, port: 80}]
  selector: {app: shop}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: public, namespace: default}
spec:
  hosts: [shop.example.com]
  gateways: [edge/public]
  http: [{route: [{destination: {host: shop}}]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: istio-ingress, namespace: default}
spec:
  hosts: [shop.istio.example.com]
  gateways: [istio-system/ingressgateway]
  http: [{route: [{destination: {host: shop}, weight: 0}]}]
"""


def status_of(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            status: int = response.status
            return status
    except urllib.error.HTTPError as err:
        return err.code


async def served_diagnostics(config_dir: Path, gateway_names: tuple[str, ...]) -> Any:
    debug_port = free_port()
    options = ServeOptions(
        config_dir=config_dir,
        xds_address="127.0.0.1:0",
        debug_address=f"127.0.0.1:{debug_port}",
        drain_seconds=0,
        gateway_names=gateway_names,
    )
    stop, ready = asyncio.Event(), asyncio.Event()
    server = asyncio.create_task(serve(options, stop=stop, ready=ready))
    try:
        await ready.wait()
        url = f"http://127.0.0.1:{debug_port}"
        while await asyncio.to_thread(status_of, f"{url}/readyz") != 200:
            await asyncio.sleep(0.05)
        snapshot = await asyncio.to_thread(
            lambda: json.load(urllib.request.urlopen(f"{url}/debug/diagnostics"))
        )
        model = await asyncio.to_thread(
            lambda: json.load(urllib.request.urlopen(f"{url}/debug/model"))
        )
        return snapshot["diagnostics"], model["model"]
    finally:
        stop.set()
        await server


async def test_serve_hands_the_fleet_the_gateway_names_it_was_given(tmp_path: Path) -> None:
    (tmp_path / "mesh.yaml").write_text(MESH)

    diagnostics, model = await served_diagnostics(tmp_path, ("edge/public", "edge/internal"))

    assert [(d["severity"], d["name"], d["field"]) for d in diagnostics] == [
        ("info", "shop", ""),  # no endpoints
        ("info", "istio-ingress", "spec.gateways[0]"),
    ]
    assert [h for v in model["gateway_hosts"] for h in v["hosts"]] == ["shop.example.com"]


def test_gateway_name_is_repeatable_and_defaults_to_splitplanes_own() -> None:
    parse = build_parser().parse_args
    given = parse(["serve", "--config-dir", ".", "--gateway-name", "a/b", "--gateway-name", "c/d"])

    assert given.gateway_name == ["a/b", "c/d"]
    assert parse(["serve", "--config-dir", "."]).gateway_name is None
    assert ServeOptions().gateway_names == ("splitplane-system/splitplane",)


@pytest.mark.parametrize("name", ["public", "edge/", "a/b/c"])
def test_a_gateway_name_without_its_namespace_is_refused(name: str, tmp_path: Path) -> None:
    assert main(["serve", "--config-dir", str(tmp_path), "--gateway-name", name]) == 2
