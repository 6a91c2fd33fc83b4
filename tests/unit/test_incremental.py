"""Translating one change at a time gives what translating everything gives.

A `Translator` follows EndpointSlice and Pod changes to the services they touch, and a change to
one VirtualService's rules to its virtual hosts. Hundreds of seeded random changes to a mesh
with the shapes real clusters have (services with and without EndpointSlices, endpoints without
zones, several namespaces, exportTo, conflicting and delegating VirtualServices, gateways,
Ingresses, TCP rules, invalid objects) are translated both ways, change by change: the model,
the diagnostics and the accepted versions must be equal every time, and the short paths must
actually be taken.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.unit.objects import (
    destination,
    destination_rule,
    endpoint_slice,
    http_route,
    pod,
    service,
    slice_endpoint,
    virtual_service,
)
from translators.build import ResourceBuilder, build_group
from translators.incremental import Translator
from translators.model import NodeGroup, Role
from translators.translate import Translation, translate
from xds_server.xds.cache import Serializer, snapshot_from_messages

Obj = dict[str, Any]
Key = tuple[str, str, str]


def key_of(obj: Obj) -> Key:
    meta = obj["metadata"]
    return (obj["kind"], meta.get("namespace") or "default", meta.get("name", ""))


def mesh() -> list[Obj]:
    """Services in two namespaces: some with EndpointSlices (some endpoints without a zone or a
    pod), some with Pods only; their DestinationRules and VirtualServices; and the shapes that
    make routing reach across objects."""
    objects: list[Obj] = []
    for n in range(8):
        name, namespace = f"svc-{n}", ("shop" if n % 2 else "default")
        objects.append(service(name, namespace))
        pods = [
            pod(
                f"{name}-{v}-{r}",
                f"10.{n}.{i}.{r}",
                {"app": name, "version": v},
                namespace=namespace,
            )
            for i, v in enumerate(("v1", "v2"))
            for r in range(2)
        ]
        objects += pods
        if n % 3 != 2:  # every third service has no EndpointSlice: its pods are its endpoints
            endpoints = [
                slice_endpoint(
                    p["status"]["podIP"],
                    ready=True,
                    pod=p["metadata"]["name"],
                    zone="zone-a" if i % 2 else None,
                )
                for i, p in enumerate(pods)
            ]
            endpoints.append(slice_endpoint(f"10.{n}.9.9"))  # no pod, no zone
            objects.append(endpoint_slice(f"{name}-abc", name, endpoints, namespace=namespace))
        objects.append(
            destination_rule(
                name, name, {"v1": {"version": "v1"}, "v2": {"version": "v2"}}, namespace
            )
        )
        objects.append(
            virtual_service(
                name,
                [name],
                [
                    http_route(
                        destination(name, "v1", weight=90), destination(name, "v2", weight=10)
                    )
                ],
                namespace,
                created=f"2024-01-0{n % 9 + 1}T00:00:00Z",
            )
        )
    # a VirtualService for a host that is no service, and one for two services' names
    objects.append(
        virtual_service(
            "external", ["api.example.com"], [http_route(destination("svc-0", "v1"))], "default"
        )
    )
    # a younger VirtualService that also claims svc-2 (it loses the host)
    objects.append(
        virtual_service(
            "svc-2-again",
            ["svc-2"],
            [http_route(destination("svc-2", "v2"))],
            "default",
            created="2025-01-01T00:00:00Z",
        )
    )
    # a VirtualService exported to its own namespace only, and a Service exported likewise
    objects.append(
        virtual_service(
            "private",
            ["svc-4"],
            [http_route(destination("svc-4", "v2"))],
            "default",
            created="2023-01-01T00:00:00Z",
            exportTo=["."],
        )
    )
    private = service("hidden", "shop")
    private["metadata"]["annotations"] = {"networking.istio.io/exportTo": "."}
    objects.append(private)
    # a root that delegates to a VirtualService without hosts
    objects.append(
        virtual_service(
            "root",
            ["svc-6"],
            [{"match": [{"uri": {"prefix": "/"}}], "delegate": {"name": "leaf"}}],
            "default",
            created="2023-06-01T00:00:00Z",
        )
    )
    objects.append(virtual_service("leaf", [], [http_route(destination("svc-6", "v2"))], "default"))
    # a VirtualService bound to the load-balancer fleet, one with TCP rules
    objects.append(
        virtual_service(
            "edge",
            ["shop.example.com"],
            [http_route(destination("svc-1.shop.svc.cluster.local", "v1"))],
            "default",
            gateways=["splitplane-gateway"],
        )
    )
    objects.append(
        virtual_service(
            "tcp",
            ["svc-7.shop.svc.cluster.local"],
            None,
            "default",
            tcp=[{"route": [destination("svc-7.shop.svc.cluster.local", "v1")]}],
        )
    )
    return objects


def ingress(backend: str) -> Obj:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {
            "ingressClassName": "splitplane",
            "rules": [
                {
                    "host": "web.example.com",
                    "http": {
                        "paths": [
                            {
                                "path": "/",
                                "pathType": "Prefix",
                                "backend": {"service": {"name": backend, "port": {"number": 80}}},
                            }
                        ]
                    },
                }
            ],
        },
    }


Change = Callable[[random.Random, dict[Key, Obj]], tuple[Key, Obj | None] | None]


def _pick(rng: random.Random, objects: dict[Key, Obj], kind: str) -> Obj | None:
    keys = sorted(k for k in objects if k[0] == kind)
    return copy.deepcopy(objects[rng.choice(keys)]) if keys else None


def new_weights(rng: random.Random, objects: dict[Key, Obj]) -> tuple[Key, Obj | None] | None:
    vs = _pick(rng, objects, "VirtualService")
    routes = (vs["spec"].get("http") or [{}])[0].get("route") if vs is not None else None
    if vs is None or not routes:
        return None
    for route in routes:
        route["weight"] = rng.choice([0, 5, 10, 50, 90, 100])
    if all(r.get("weight") == 0 for r in routes):
        routes[0]["weight"] = 1
    return key_of(vs), vs


def broken_rules(rng: random.Random, objects: dict[Key, Obj]) -> tuple[Key, Obj | None] | None:
    vs = _pick(rng, objects, "VirtualService")
    if vs is None or not vs["spec"].get("http"):
        return None
    route = vs["spec"]["http"][0].get("route")
    if route:
        route[0]["destination"]["subset"] = rng.choice(["v3", "v1", 7])
        route[0]["weight"] = rng.choice([-5, 100, "x"])
    return key_of(vs), vs


def new_hosts(rng: random.Random, objects: dict[Key, Obj]) -> tuple[Key, Obj | None] | None:
    vs = _pick(rng, objects, "VirtualService")
    if vs is None or not vs["spec"].get("hosts"):
        return None
    vs["spec"]["hosts"] = rng.choice([["svc-3"], ["svc-0", "other.example.com"], ["svc-5.shop"]])
    return key_of(vs), vs


def retry_rules(rng: random.Random, objects: dict[Key, Obj]) -> tuple[Key, Obj | None] | None:
    vs = _pick(rng, objects, "VirtualService")
    if vs is None or not vs["spec"].get("http"):
        return None
    rule = vs["spec"]["http"][0]
    rule["retries"] = {"attempts": rng.randint(1, 4), "perTryTimeout": "2s"}
    rule["timeout"] = f"{rng.randint(1, 9)}s"
    return key_of(vs), vs


def moved_endpoint(rng: random.Random, objects: dict[Key, Obj]) -> tuple[Key, Obj | None] | None:
    es = _pick(rng, objects, "EndpointSlice")
    if es is None:
        return None
    endpoint = rng.choice(es["endpoints"])
    endpoint["addresses"] = [f"10.200.{rng.randint(0, 250)}.{rng.randint(1, 250)}"]
    endpoint["conditions"] = {"ready": rng.random() > 0.3}
    return key_of(es), es


def broken_slice(rng: random.Random, objects: dict[Key, Obj]) -> tuple[Key, Obj | None] | None:
    es = _pick(rng, objects, "EndpointSlice")
    if es is None:
        return None
    es["ports"][0]["port"] = rng.choice([70000, -1, "http"])
    return key_of(es), es


def gone_slice(rng: random.Random, objects: dict[Key, Obj]) -> tuple[Key, Obj | None] | None:
    es = _pick(rng, objects, "EndpointSlice")
    return (key_of(es), None) if es is not None else None


def relabelled_pod(rng: random.Random, objects: dict[Key, Obj]) -> tuple[Key, Obj | None] | None:
    found = _pick(rng, objects, "Pod")
    if found is None:
        return None
    found["metadata"]["labels"]["version"] = rng.choice(["v1", "v2", "v3"])
    if rng.random() < 0.3:
        found["status"]["conditions"][0]["status"] = rng.choice(["True", "False"])
    return key_of(found), found


def gone_pod(rng: random.Random, objects: dict[Key, Obj]) -> tuple[Key, Obj | None] | None:
    found = _pick(rng, objects, "Pod")
    return (key_of(found), None) if found is not None else None


def new_pod(rng: random.Random, objects: dict[Key, Obj]) -> tuple[Key, Obj | None] | None:
    n = rng.randint(0, 7)
    namespace = "shop" if n % 2 else "default"
    name = f"svc-{n}-new-{rng.randint(0, 3)}"
    labels = {"app": f"svc-{n}", "version": rng.choice(["v1", "v2"])}
    made = pod(name, f"10.{n}.7.{rng.randint(1, 9)}", labels, namespace=namespace)
    return key_of(made), made


def new_subsets(rng: random.Random, objects: dict[Key, Obj]) -> tuple[Key, Obj | None] | None:
    rule = _pick(rng, objects, "DestinationRule")
    if rule is None:
        return None
    if rng.random() < 0.5:
        rule["spec"]["subsets"] = rule["spec"]["subsets"][:1]
    else:
        rule["spec"]["trafficPolicy"] = {"loadBalancer": {"simple": "RANDOM"}}
    return key_of(rule), rule


def an_ingress(rng: random.Random, objects: dict[Key, Obj]) -> tuple[Key, Obj | None] | None:
    made = ingress(rng.choice(["svc-0", "svc-2"]))
    return key_of(made), (made if rng.random() < 0.7 else None)


CHANGES: list[tuple[Change, int]] = [
    (new_weights, 10),
    (retry_rules, 3),
    (broken_rules, 2),
    (new_hosts, 1),
    (moved_endpoint, 8),
    (broken_slice, 1),
    (gone_slice, 1),
    (relabelled_pod, 4),
    (gone_pod, 2),
    (new_pod, 2),
    (new_subsets, 1),
    (an_ingress, 1),
]


def changes(
    rng: random.Random, objects: dict[Key, Obj], count: int
) -> Iterator[dict[Key, Obj | None]]:
    kinds = [change for change, _ in CHANGES]
    weights = [weight for _, weight in CHANGES]
    made = 0
    while made < count:
        picked = rng.choices(kinds, weights)[0](rng, objects)
        if picked is None:
            continue
        key, obj = picked
        made += 1
        yield {key: obj}


def assert_same(one_by_one: Translation, everything: Translation, step: str) -> None:
    assert one_by_one.model == everything.model, step
    assert one_by_one.diagnostics == everything.diagnostics, step
    assert dict(one_by_one.accepted) == dict(everything.accepted), step


@pytest.mark.parametrize("seed", range(6))
def test_each_change_translated_on_its_own_equals_translating_everything(seed: int) -> None:
    rng = random.Random(seed)
    objects = {key_of(obj): obj for obj in mesh()}
    translator = Translator()
    reference = translator.reset(objects)
    for n, change in enumerate(changes(rng, objects, 120)):
        for key, obj in change.items():
            if obj is None:
                objects.pop(key, None)
            else:
                objects[key] = obj
        one_by_one = translator.apply(change)
        reference = translate(list(objects.values()), previous=reference)
        assert_same(one_by_one, reference, f"change {n}: {change}")
        hint = one_by_one.model.endpoints_change
        if hint is not None and hint.result is one_by_one.model.endpoints:
            replaced = zip(hint.source, hint.result, strict=True)
            assert hint.at == tuple(at for at, (a, b) in enumerate(replaced) if a is not b)
    assert translator.paths["endpoints"] > 20
    assert translator.paths["routes"] > 10
    assert translator.paths["full"] > 5


def test_a_weight_change_reuses_every_other_virtual_host_and_cluster() -> None:
    objects = {key_of(obj): obj for obj in mesh()}
    translator = Translator()
    before = translator.reset(objects)
    changed = copy.deepcopy(objects["VirtualService", "default", "svc-0"])
    changed["spec"]["http"][0]["route"][0]["weight"] = 50

    after = translator.apply({key_of(changed): changed})

    assert translator.paths["routes"] == 1
    assert after.model.clusters is before.model.clusters
    assert after.model.endpoints is before.model.endpoints
    renamed = [
        v.name
        for v, w in zip(before.model.mesh_hosts, after.model.mesh_hosts, strict=True)
        if v is not w
    ]
    assert renamed == ["svc-0.default.svc.cluster.local:80"]


def test_an_endpoint_change_rewrites_only_its_services_load_assignments() -> None:
    objects = {key_of(obj): obj for obj in mesh()}
    translator = Translator()
    before = translator.reset(objects)
    changed = copy.deepcopy(objects["EndpointSlice", "shop", "svc-1-abc"])
    changed["endpoints"][0]["addresses"] = ["10.99.99.99"]

    after = translator.apply({key_of(changed): changed})

    assert translator.paths["endpoints"] == 1
    assert after.model.clusters is before.model.clusters
    assert after.model.mesh_hosts is before.model.mesh_hosts
    rewritten = [
        e.cluster
        for e, f in zip(before.model.endpoints, after.model.endpoints, strict=True)
        if e is not f
    ]
    assert rewritten == [
        "outbound|80|v1|svc-1.shop.svc.cluster.local",
        "outbound|80||svc-1.shop.svc.cluster.local",
    ]
    # The model says so, for the builder: which assignments it replaced in which tuple.
    hint = after.model.endpoints_change
    assert hint is not None
    assert (hint.source, hint.result) == (before.model.endpoints, after.model.endpoints)
    assert [after.model.endpoints[at].cluster for at in hint.at] == sorted(
        rewritten, key=[e.cluster for e in after.model.endpoints].index
    )


def test_a_change_it_cannot_follow_alone_is_translated_in_full() -> None:
    objects = {key_of(obj): obj for obj in mesh()}
    translator = Translator()
    translator.reset(objects)
    changed = copy.deepcopy(objects["VirtualService", "default", "svc-0"])
    changed["spec"]["hosts"] = ["svc-0", "svc-5.shop"]  # a new host: claims change

    after = translator.apply({key_of(changed): changed})

    assert translator.paths == {"full": 2}
    objects[key_of(changed)] = changed
    assert after.model == translate(list(objects.values())).model


def test_snapshots_built_change_by_change_equal_snapshots_built_afresh() -> None:
    """The builder rewrites only the load assignments an endpoint change touched and the
    serializer hashes only the bytes it has not seen: what they publish is what a fresh build
    publishes, version for version."""
    rng = random.Random(7)
    objects = {key_of(obj): obj for obj in mesh()}
    translator = Translator()
    builder, serializer = ResourceBuilder(), Serializer()
    groups = [NodeGroup(Role.SIDECAR, 15001), NodeGroup(Role.GATEWAY, 8080)]
    translator.reset(objects)
    hashed: list[int] = []  # resources hashed for each change of endpoints alone
    for n, change in enumerate(changes(rng, objects, 60)):
        before = serializer.serialized
        for key, obj in change.items():
            if obj is None:
                objects.pop(key, None)
            else:
                objects[key] = obj
        model = translator.apply(change).model
        for group in groups:
            kept = snapshot_from_messages(builder.build_group(model, group), serializer)
            fresh = snapshot_from_messages(build_group(model, group))
            assert kept.versions == fresh.versions, f"change {n}: {change}"
            for type_url, resources in fresh.types.items():
                assert {name: r.body for name, r in kept.types[type_url].by_name.items()} == {
                    name: r.body for name, r in resources.by_name.items()
                }
        serializer.end_round()
        if {key[0] for key in change} <= {"EndpointSlice", "Pod"}:
            hashed.append(serializer.serialized - before)
    assert translator.paths["endpoints"] > 10
    assignments = len(translator.objects) // 2  # far more load assignments than one changes
    assert hashed and max(hashed) <= 6 < assignments


def test_after_a_change_that_failed_the_next_one_is_translated_in_full(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    objects = {key_of(obj): obj for obj in mesh()}
    translator = Translator()
    translator.reset(objects)
    lost = copy.deepcopy(objects["EndpointSlice", "default", "svc-0-abc"])
    lost["endpoints"][0]["addresses"] = ["10.99.0.1"]

    def failing(*args: Any) -> None:
        raise RuntimeError("a bug")

    with monkeypatch.context() as patched:
        patched.setattr(Translator, "_endpoints_changed", failing)
        with pytest.raises(RuntimeError):
            translator.apply({key_of(lost): lost})
    other = copy.deepcopy(objects["EndpointSlice", "shop", "svc-1-abc"])
    other["endpoints"][0]["addresses"] = ["10.99.0.2"]

    after = translator.apply({key_of(other): other})

    objects[key_of(lost)], objects[key_of(other)] = lost, other
    assert after.model == translate(list(objects.values())).model  # the lost change is in
    assert translator.paths["full"] == 2


def test_a_slice_without_a_usable_name_sends_its_services_changes_to_a_full_translation() -> None:
    # Its diagnostics name no key the store has: resolving its service again on its own would
    # report it twice.
    objects = {key_of(obj): obj for obj in mesh()}
    translator = Translator()
    translator.reset(objects)
    unnamed = copy.deepcopy(objects["EndpointSlice", "default", "svc-0-abc"])
    unnamed["metadata"]["name"] = None
    renamed = {
        ("EndpointSlice", "default", "svc-0-abc"): None,
        ("EndpointSlice", "default", "None"): unnamed,
    }
    translator.apply(renamed)
    gone = ("Pod", "default", "svc-0-v1-0")

    after = translator.apply({gone: None})

    objects.pop(("EndpointSlice", "default", "svc-0-abc"))
    objects.pop(gone)
    objects["EndpointSlice", "default", "None"] = unnamed
    reference = translate(list(objects.values()))
    assert after.diagnostics == reference.diagnostics
    assert translator.paths["endpoints"] == 0
