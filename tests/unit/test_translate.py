"""translate(): the resolvers together, the bad-input rule, determinism, the endpoint fast path."""

from __future__ import annotations

import copy
import itertools
import random
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.unit.objects import (
    Obj,
    destination,
    destination_rule,
    endpoint_slice,
    http_route,
    pod,
    service,
    service_port,
    slice_endpoint,
    versioned_service,
    virtual_service,
)
from translators.diagnostics import STILL_SERVING, Severity
from translators.incremental import Translator
from translators.model import TcpListener, WeightedCluster
from translators.resolve_services import ObjectKey
from translators.translate import (
    Options,
    Translation,
    translate,
)

REVIEWS = "reviews.default.svc.cluster.local"
V1 = f"outbound|80|v1|{REVIEWS}"
V2 = f"outbound|80|v2|{REVIEWS}"


def canary(v1: int = 90, v2: int = 10, **meta: Any) -> Obj:
    dests = [destination("reviews", "v1", weight=v1), destination("reviews", "v2", weight=v2)]
    return virtual_service("reviews", ["reviews"], [http_route(*dests)], **meta)


def mesh(*extra: Obj) -> list[Obj]:
    """Two services with subsets and a canary, plus ``extra``."""
    return [
        *versioned_service("reviews"),
        *versioned_service("ratings", base_ip="10.0.1"),
        canary(),
        *extra,
    ]


def reviews_split(translation: Translation) -> tuple[tuple[str, int], ...]:
    host = next(v for v in translation.model.mesh_hosts if v.name == f"{REVIEWS}:80")
    return tuple((d.cluster, d.weight) for d in host.routes[0].destinations)


# ------------------------------------------------------------------------------------------------
# The whole pipeline


def test_objects_of_other_kinds_and_foreign_api_groups_are_ignored() -> None:
    foreign = {**canary(), "apiVersion": "example.com/v1"}
    noise: list[Any] = [
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}},
        foreign,
        "not an object",
        None,
    ]
    assert translate(mesh(*noise)) == translate(mesh())


def test_the_cluster_domain_is_an_option() -> None:
    model = translate(mesh(), options=Options(domain="example.internal")).model
    assert "outbound|80||reviews.default.svc.example.internal" in {c.name for c in model.clusters}


def test_a_load_balancer_service_port_becomes_a_gateway_tcp_listener() -> None:
    lb = service("edge", ports=[service_port(443, "tcp-tls")], type="LoadBalancer")
    assert translate(mesh(lb)).model.gateway_tcp == (
        TcpListener(
            "default/edge:443",
            443,
            (WeightedCluster("outbound|443||edge.default.svc.cluster.local", 100),),
        ),
    )


def test_same_input_in_any_order_gives_an_identical_translation() -> None:
    objects = mesh(
        virtual_service("other", ["shop.example.com"], [http_route(destination("ratings", "v2"))]),
        endpoint_slice("r", "ratings", [slice_endpoint("10.0.1.7", pod="ratings-v1")]),
        destination_rule("dup", "reviews", {"v3": {"version": "v3"}}),
    )
    expected = translate(objects)
    for seed in range(5):
        shuffled = objects[:]
        random.Random(seed).shuffle(shuffled)
        assert translate(shuffled) == expected
    assert list(expected.diagnostics) == sorted(expected.diagnostics)


def test_accepted_holds_every_valid_service_virtual_service_and_destination_rule() -> None:
    accepted = translate(mesh()).accepted
    assert sorted(accepted) == [
        ObjectKey("DestinationRule", "default", "ratings"),
        ObjectKey("DestinationRule", "default", "reviews"),
        ObjectKey("Service", "default", "ratings"),
        ObjectKey("Service", "default", "reviews"),
        ObjectKey("VirtualService", "default", "reviews"),
    ]


# ------------------------------------------------------------------------------------------------
# The bad-input rule: the last good version keeps serving


def test_an_invalid_object_with_an_accepted_version_keeps_serving_that_version() -> None:
    first = translate(mesh())
    broken = canary(v1=-1, v2=10)
    second = translate([*mesh()[:-1], broken], previous=first)
    assert reviews_split(second) == ((V1, 90), (V2, 10))
    assert any(
        (d.kind, d.name, d.severity, d.message)
        == ("VirtualService", "reviews", Severity.WARNING, STILL_SERVING)
        for d in second.diagnostics
    )
    assert any(d.is_error and d.field == "spec.http[0].route[0].weight" for d in second.diagnostics)
    assert second.accepted[ObjectKey("VirtualService", "default", "reviews")] is not broken


def test_the_rest_of_the_mesh_updates_while_an_object_is_invalid() -> None:
    first = translate(mesh())
    objects = [o for o in mesh() if o["kind"] != "VirtualService"]
    objects += [
        canary(v1=-1),
        virtual_service("ratings", ["ratings"], [http_route(destination("ratings", "v2"))]),
    ]
    second = translate(objects, previous=first)
    ratings = next(v for v in second.model.mesh_hosts if v.name.startswith("ratings."))
    assert ratings.routes[0].destinations == (
        WeightedCluster("outbound|80|v2|ratings.default.svc.cluster.local", 100),
    )


def test_a_new_invalid_object_is_left_out() -> None:
    result = translate([*mesh()[:-1], canary(v1=-1)])
    assert reviews_split(result) == ((f"outbound|80||{REVIEWS}", 100),)
    assert ObjectKey("VirtualService", "default", "reviews") not in result.accepted
    assert not any(d.message == STILL_SERVING for d in result.diagnostics)


def test_a_deleted_object_is_gone() -> None:
    first = translate(mesh())
    second = translate(mesh()[:-1], previous=first)
    assert reviews_split(second) == ((f"outbound|80||{REVIEWS}", 100),)
    assert ObjectKey("VirtualService", "default", "reviews") not in second.accepted


def test_a_fixed_object_replaces_the_accepted_version() -> None:
    first = translate(mesh())
    broken = translate([*mesh()[:-1], canary(v1=-1)], previous=first)
    fixed = translate([*mesh()[:-1], canary(50, 50)], previous=broken)
    assert reviews_split(fixed) == ((V1, 50), (V2, 50))
    assert not fixed.has_errors


@pytest.mark.parametrize(
    ("replace_index", "broken"),
    [
        (0, service("reviews", ports=[{"name": "http", "port": "eighty"}])),
        (3, destination_rule("reviews", "reviews", {"v1": {"version": "v1"}}, unknownField=1)),
    ],
    ids=[
        "an-invalid-service-keeps-its-last-version",
        "an-invalid-destination-rule-keeps-its-last-version",
    ],
)
def test_last_good_applies_to_services_and_destination_rules(
    replace_index: int, broken: Obj
) -> None:
    first = translate(mesh())
    objects = mesh()
    objects[replace_index] = broken
    second = translate(objects, previous=first)
    assert second.model == first.model
    assert any(d.message == STILL_SERVING for d in second.diagnostics)


def reviews_endpoints(translation: Translation) -> set[tuple[str, int]]:
    found = next(e for e in translation.model.endpoints if e.cluster == f"outbound|80||{REVIEWS}")
    return {(e.address, e.port) for e in found.endpoints}


def reviews_slice(port: object) -> Obj:
    endpoints = [slice_endpoint("10.0.0.1", pod="reviews-v1")]
    return endpoint_slice("reviews-abc", "reviews", endpoints, ports={"http": port})  # type: ignore[dict-item]


@pytest.mark.parametrize("path", ["translate", "one change"])
def test_an_invalid_endpoint_slice_keeps_its_last_accepted_version(path: str) -> None:
    first = translate(mesh(reviews_slice(8080)))
    objects = mesh(reviews_slice(70000))  # a port out of range
    if path == "translate":
        second = translate(objects, previous=first)
    else:
        translator = Translator()
        first = translator.reset(keyed(mesh(reviews_slice(8080))))
        second = translator.apply({("EndpointSlice", "default", "reviews-abc"): objects[-1]})
        assert translator.paths["endpoints"] == 1
    assert reviews_endpoints(second) == {("10.0.0.1", 8080)}
    assert second.model == first.model
    key = ObjectKey("EndpointSlice", "default", "reviews-abc")
    assert [(d.severity, d.field) for d in second.diagnostics if (d.kind, d.name) == key[::2]] == [
        (Severity.WARNING, ""),
        (Severity.ERROR, "ports[0].port"),
    ]
    assert any(d.message == STILL_SERVING and d.name == "reviews-abc" for d in second.diagnostics)
    assert second.accepted[key] == reviews_slice(8080)

    fixed = translate(mesh(reviews_slice(9090)), previous=second)
    assert reviews_endpoints(fixed) == {("10.0.0.1", 9090)}


def test_a_new_invalid_endpoint_slice_is_left_out() -> None:
    result = translate(mesh(reviews_slice(70000)), previous=translate(mesh()))
    assert reviews_endpoints(result) == reviews_endpoints(translate(mesh()))
    assert not any(d.message == STILL_SERVING for d in result.diagnostics)


def without(objects: list[Obj], kind: str, name: str) -> list[Obj]:
    return [o for o in objects if (o["kind"], o["metadata"]["name"]) != (kind, name)]


@pytest.mark.parametrize(
    ("edit", "kind", "message"),
    [
        (
            lambda objects: [
                *without(objects, "DestinationRule", "reviews"),
                destination_rule("reviews", "reviews", {"v1": {"version": "v1"}}),
            ],
            "DestinationRule",
            "changing it breaks VirtualService default/reviews (spec.http[0].route[1].destination"
            ".subset: subset 'v2' is not defined in a DestinationRule for"
            f" {REVIEWS}); still serving the last accepted version",
        ),
        (
            lambda objects: without(objects, "DestinationRule", "reviews"),
            "DestinationRule",
            "removing it breaks VirtualService default/reviews (spec.http[0].route[0].destination"
            ".subset: subset 'v1' is not defined in a DestinationRule for"
            f" {REVIEWS}); still serving the last accepted version",
        ),
        (
            lambda objects: [
                *without(objects, "Service", "reviews"),
                service("reviews", ports=[]),
            ],
            "Service",
            "changing it breaks VirtualService default/reviews (spec.http[0].route[0].destination"
            f".port: {REVIEWS} has 0 ports; name one with port.number); still serving the last"
            " accepted version",
        ),
    ],
    ids=["subset-removed", "rule-removed", "ports-removed"],
)
def test_a_change_that_breaks_a_serving_virtual_service_keeps_the_last_accepted_version(
    edit: Any, kind: str, message: str
) -> None:
    first = translate(mesh())
    second = translate(edit(mesh()), previous=first)
    assert reviews_split(second) == ((V1, 90), (V2, 10))
    errors = [d for d in second.diagnostics if d.is_error]
    assert [(d.kind, d.name, d.message) for d in errors] == [(kind, "reviews", message)]
    # Once the VirtualService no longer needs it, the change goes through.
    third = translate(without(edit(mesh()), "VirtualService", "reviews"), previous=second)
    assert not third.has_errors


def test_a_rule_change_is_held_back_while_the_last_accepted_virtual_service_needs_it() -> None:
    first = translate(mesh())
    objects = [
        *without(mesh(), "VirtualService", "reviews"),
        virtual_service("reviews", ["reviews"], [http_route(destination("reviews", "v9"))]),
    ]
    objects = [*without(objects, "DestinationRule", "reviews")]
    objects.append(destination_rule("reviews", "reviews", {"v1": {"version": "v1"}}))
    second = translate(objects, previous=first)
    # The VirtualService keeps its last version (which needs subset v2): the rule is held back.
    assert reviews_split(second) == ((V1, 90), (V2, 10))


# ------------------------------------------------------------------------------------------------
# The endpoint fast path


def test_an_endpoint_change_translated_on_its_own_equals_a_full_translate() -> None:
    before = mesh(
        endpoint_slice("reviews-1", "reviews", [slice_endpoint("10.0.0.1", pod="reviews-v1")])
    )
    first = translate(before)
    after = [
        *mesh(),
        endpoint_slice(
            "reviews-1",
            "reviews",
            [
                slice_endpoint("10.0.0.1", pod="reviews-v1"),
                slice_endpoint("10.0.0.2", pod="reviews-v2"),
            ],
        ),
        pod("ratings-v3", "10.0.1.3", {"app": "ratings", "version": "v3"}),
    ]
    translator = Translator()
    first = translator.reset(keyed(before))
    fast = translator.apply(changes_between(before, after))
    assert translator.paths["endpoints"] == 1
    assert fast == translate(after, previous=first)
    assert fast.model.clusters is first.model.clusters
    assert fast.model.endpoints != first.model.endpoints


def test_an_endpoint_change_updates_endpoint_warnings() -> None:
    translator = Translator()
    first = translator.reset(keyed([service("lonely")]))
    assert any("no ready endpoints" in d.message for d in first.diagnostics)
    fed = translator.apply({("Pod", "default", "l-1"): pod("l-1", "10.9.0.1", {"app": "lonely"})})
    assert translator.paths["endpoints"] == 1
    assert not any("no ready endpoints" in d.message for d in fed.diagnostics)
    assert fed == translate([service("lonely"), pod("l-1", "10.9.0.1", {"app": "lonely"})])


# ------------------------------------------------------------------------------------------------
# Bad input, each with the diagnostic it gives


def _unknown_field() -> Obj:
    vs = canary()
    vs["spec"]["http"][0]["colour"] = "blue"
    return vs


def _missing_destination_host() -> Obj:
    return virtual_service("reviews", ["reviews"], [http_route({"destination": {"subset": "v1"}})])


def _regex_match(match: Obj) -> Obj:
    route = {**http_route(destination("reviews", "v1")), "match": [match]}
    return virtual_service("reviews", ["reviews"], [route])


def _late_duplicate() -> Obj:
    route = http_route(destination("reviews", "v2"))
    return virtual_service("late", ["reviews"], [route], created="2030-01-01T00:00:00Z")


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (
            _unknown_field(),
            ("VirtualService", "reviews", "spec.http[0].colour", Severity.ERROR, "unknown"),
        ),
        (
            canary(v1=-10),
            (
                "VirtualService",
                "reviews",
                "spec.http[0].route[0].weight",
                Severity.ERROR,
                "negative",
            ),
        ),
        (
            canary(0, 0),
            ("VirtualService", "reviews", "spec.http[0].route", Severity.ERROR, "sum to 0"),
        ),
        (
            virtual_service("reviews", ["reviews"], [http_route(destination("reviews", "v7"))]),
            (
                "VirtualService",
                "reviews",
                "spec.http[0].route[0].destination.subset",
                Severity.ERROR,
                "v7",
            ),
        ),
        (
            _missing_destination_host(),
            (
                "VirtualService",
                "reviews",
                "spec.http[0].route[0].destination.host",
                Severity.ERROR,
                "required",
            ),
        ),
        (
            virtual_service("reviews", [], [http_route(destination("reviews"))]),
            # A delegate (as in Istio), of no use unless a root delegates to it.
            ("VirtualService", "reviews", "spec.hosts", Severity.WARNING, "delegate"),
        ),
        (
            service("web", ports=[service_port(80, "http", "www")]),
            ("Service", "web", "", Severity.INFO, "no ready endpoints"),
        ),
        (
            [canary(created="2024-01-01T00:00:00Z"), _late_duplicate()],
            ("VirtualService", "late", "spec.hosts[0]", Severity.ERROR, "already routed"),
        ),
        (
            {
                "apiVersion": "networking.istio.io/v1",
                "kind": "VirtualService",
                "metadata": {},
                "spec": {},
            },
            ("VirtualService", "", "metadata.name", Severity.ERROR, "non-empty"),
        ),
        (
            {**canary(), "spec": "hosts: reviews"},
            ("VirtualService", "reviews", "spec", Severity.ERROR, "object"),
        ),
        (
            _regex_match({"uri": {"regex": "/api/(?!internal).*"}}),
            ("VirtualService", "reviews", "spec.http[0].match[0].uri.regex", Severity.ERROR, "RE2"),
        ),
        (
            _regex_match({"headers": {"x-id": {"regex": "(a|b|c|d|e|f|g|h){30,40}"}}}),
            (
                "VirtualService",
                "reviews",
                "spec.http[0].match[0].headers[x-id].regex",
                Severity.ERROR,
                "too complex for Envoy",
            ),
        ),
    ],
    ids=[
        "unknown-field",
        "negative-weight",
        "all-zero-weights",
        "missing-subset",
        "missing-destination-host",
        "missing-hosts",
        "service-with-no-endpoints",
        "duplicate-hosts",
        "missing-name",
        "spec-not-a-mapping",
        "regex-envoy-cannot-run",
        "regex-too-complex-for-envoy",
    ],
)
def test_bad_input(extra: Obj | list[Obj], expected: tuple[str, str, str, Severity, str]) -> None:
    kind, name, field, severity, fragment = expected
    objects = [*versioned_service("reviews"), *versioned_service("ratings", base_ip="10.0.1")]
    result = translate([*objects, *(extra if isinstance(extra, list) else [extra])])
    assert any(
        (d.kind, d.namespace, d.name, d.field, d.severity)
        == (kind, "default", name, field, severity)
        and fragment in d.message
        for d in result.diagnostics
    ), [d.render() for d in result.diagnostics]


def test_unknown_target_port_name_is_reported() -> None:
    web = service("web", ports=[service_port(80, "http", "www")])
    result = translate(
        [web, pod("web-1", "10.2.0.1", {"app": "web"}, container_ports={"api": 8080})]
    )
    assert any(
        (d.kind, d.name, d.field) == ("Service", "web", "spec.ports[0].targetPort")
        and "'www'" in d.message
        for d in result.diagnostics
    )


# ------------------------------------------------------------------------------------------------
# Properties: nothing a user writes makes translate raise, and every error has a field path

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**40), 2**40)
    | st.floats(allow_nan=True)
    | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)
KINDS = ["Service", "Pod", "EndpointSlice", "VirtualService", "DestinationRule"]
API_VERSIONS = {
    "Service": "v1",
    "Pod": "v1",
    "EndpointSlice": "discovery.k8s.io/v1",
    "VirtualService": "networking.istio.io/v1beta1",
    "DestinationRule": "networking.istio.io/v1alpha3",
}


@st.composite
def arbitrary_objects(draw: st.DrawFn) -> Obj:
    kind = draw(st.sampled_from(KINDS))
    obj: Obj = {"apiVersion": API_VERSIONS[kind], "kind": kind}
    obj["metadata"] = draw(
        st.one_of(json_values, st.fixed_dictionaries({"name": st.sampled_from(["reviews", "a"])}))
    )
    obj["spec"] = draw(json_values)
    obj.update(
        draw(
            st.dictionaries(
                st.sampled_from(["status", "endpoints", "ports", "addressType"]), json_values
            )
        )
    )
    return obj


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            found += _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += _paths(item, (*prefix, index))
    return found


@st.composite
def mutated_mesh(draw: st.DrawFn) -> list[Obj]:
    objects = copy.deepcopy(
        mesh(endpoint_slice("r", "reviews", [slice_endpoint("10.0.0.1", pod="reviews-v1")]))
    )
    for _ in range(draw(st.integers(1, 3))):
        target = draw(st.sampled_from(objects))
        path = draw(st.sampled_from(_paths(target)[1:]))
        parent = target
        for step in path[:-1]:
            parent = parent[step]
        parent[path[-1]] = draw(json_values)
    return objects


def _check(objects: list[Any], previous: Translation | None = None) -> Translation:
    result = translate(objects, previous=previous)
    errors_without_field = [d for d in result.diagnostics if d.is_error and not d.field]
    assert not errors_without_field
    return result


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(arbitrary_objects(), max_size=6))
def test_arbitrary_objects_never_make_translate_raise(objects: list[Obj]) -> None:
    _check(objects)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_mesh())
def test_mutated_objects_never_make_translate_raise(objects: list[Obj]) -> None:
    _check(objects, previous=translate(mesh()))


def test_unchanged_parts_of_the_model_are_the_previous_objects() -> None:
    before = translate(mesh())
    objects = [*versioned_service("reviews"), *versioned_service("ratings", base_ip="10.0.1")]

    after = translate([*objects, canary(50, 50)], previous=before)

    assert after.model.clusters is before.model.clusters
    assert after.model.endpoints is before.model.endpoints
    reviews, ratings = (
        next(v for v in after.model.mesh_hosts if v.name.startswith(name))
        for name in ("reviews", "ratings")
    )
    assert any(ratings is v for v in before.model.mesh_hosts)
    assert not any(reviews is v for v in before.model.mesh_hosts)
    assert after.model == translate([*objects, canary(50, 50)]).model


@st.composite
def mesh_histories(draw: st.DrawFn) -> list[list[Obj]]:
    """A mesh and then a few changes to it: each change replaces, removes or restores some
    objects and hands every other object on as the very same dict, as the store does."""
    current = mesh(
        endpoint_slice("r", "reviews", [slice_endpoint("10.0.0.1", pod="reviews-v1")]),
        *versioned_service("details", versions=("v1",), base_ip="10.0.2"),
        virtual_service(
            "details", ["details"], [http_route(destination("details", "v1"))], created="2"
        ),
    )
    original = list(current)
    history = [list(current)]
    for _ in range(draw(st.integers(1, 4))):
        for _ in range(draw(st.integers(1, 2))):
            index = draw(st.integers(0, len(current) - 1))
            how = draw(st.sampled_from(["mutate", "remove", "restore"]))
            if how == "remove" and len(current) > 1:
                del current[index]
            elif how == "restore":
                restored = draw(st.sampled_from(original))
                if all(obj is not restored for obj in current):
                    current.append(restored)
            else:
                target = copy.deepcopy(current[index])
                path = draw(st.sampled_from(_paths(target)[1:]))
                parent = target
                for step in path[:-1]:
                    parent = parent[step]
                parent[path[-1]] = draw(json_values)
                current[index] = target
        history.append(list(current))
    return history


def without_reuse(translation: Translation) -> Translation:
    """``translation`` with only what the bad-input rule needs from it: no reusable results."""
    return Translation(
        model=translation.model,
        diagnostics=translation.diagnostics,
        accepted=translation.accepted,
        options=translation.options,
    )


def store_key(obj: Obj) -> tuple[str, str, str]:
    """The key the store holds an object under (see `xds_server.sources.base.object_key`)."""
    meta = obj.get("metadata")
    meta = meta if isinstance(meta, dict) else {}
    return (
        str(obj.get("kind", "")),
        str(meta.get("namespace") or "default"),
        str(meta.get("name", "")),
    )


def keyed(objects: list[Obj]) -> dict[tuple[str, str, str], Obj]:
    """The objects by key; of two with one key, the last, as a source's listing gives them."""
    return {store_key(obj): obj for obj in objects}


def changes_between(before: list[Obj], after: list[Obj]) -> dict[tuple[str, str, str], Obj | None]:
    """Each key whose object changed, with its new object (None: gone); as the store hands
    them on, an object that did not change is not handed on again."""
    old, new = keyed(before), keyed(after)
    return {key: new.get(key) for key in old.keys() | new.keys() if old.get(key) != new.get(key)}


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mesh_histories())
def test_results_reused_from_the_last_translation_change_nothing(history: list[list[Obj]]) -> None:
    translator = Translator()  # what the control plane does: one change at a time
    previous = translator.reset(keyed(history[0]))
    for before, after in itertools.pairwise(history):
        objects = list(keyed(after).values())  # one object per key, as the store holds them
        reusing = translator.apply(changes_between(before, after))
        from_scratch = translate(objects, previous=without_reuse(previous))

        assert reusing.model == from_scratch.model
        assert reusing.diagnostics == from_scratch.diagnostics
        previous = reusing
