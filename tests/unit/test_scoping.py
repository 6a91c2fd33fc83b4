"""Namespace scoping: what a client in each namespace sees, by Istio's ``exportTo`` rules."""

from __future__ import annotations

from typing import Any

import pytest

from tests.unit.objects import (
    Obj,
    destination,
    destination_rule,
    endpoint_slice,
    http_route,
    service,
    service_port,
    slice_endpoint,
    virtual_service,
)
from translators.build import ResourceBuilder
from translators.diagnostics import Severity
from translators.incremental import Translator
from translators.model import MeshModel, NodeGroup, Role
from translators.resolve_scopes import scoped_model
from translators.resources import serialize
from translators.translate import Translation, translate
from translators.visibility import EVERYWHERE, ExportTo, config_export_to, service_export_to

REVIEWS = "reviews.default.svc.cluster.local"
DEFAULT_CLUSTER = f"outbound|80||{REVIEWS}"
V1 = f"outbound|80|v1|{REVIEWS}"


def run(*objects: Obj) -> Translation:
    return translate(list(objects))


def seen_by(translation: Translation, namespace: str) -> MeshModel:
    """The model as a client in ``namespace`` sees it ("" for one that names none)."""
    model = translation.model
    view = model.view_for(namespace)
    return scoped_model(model, view) if view is not None else model


def route_of(model: MeshModel, hostname: str = REVIEWS) -> list[str]:
    """The clusters the first route of ``hostname``'s port 80 sends to; [] without one."""
    for vhost in model.mesh_hosts:
        if vhost.name == f"{hostname}:80":
            return [d.cluster for d in vhost.routes[0].destinations]
    return []


def exported(name: str, namespace: str, export_to: list[str], created: str = "") -> Obj:
    """A VirtualService sending ``reviews`` to its subset ``v1``, exported as given."""
    return virtual_service(
        name,
        [REVIEWS],
        [http_route(destination(REVIEWS, "v1"))],
        namespace=namespace,
        created=created or None,
        exportTo=export_to,
    )


def reviews_with_subsets(*more: Obj) -> list[Obj]:
    return [
        service("reviews"),
        destination_rule("reviews", "reviews", {"v1": {"version": "v1"}}),
        *more,
    ]


def annotated(name: str, namespace: str, export_to: Any) -> Obj:
    obj = service(name, namespace)
    obj["metadata"]["annotations"] = {"networking.istio.io/exportTo": export_to}
    return obj


# ------------------------------------------------------------------------------------------------
# Reading exportTo


@pytest.mark.parametrize(
    ("entries", "expected"),
    [
        ([], EVERYWHERE),
        (["*"], EVERYWHERE),
        (["."], ExportTo(False, frozenset({"shop"}))),
        (["shop"], ExportTo(False, frozenset({"shop"}))),
        ([".", "web"], ExportTo(False, frozenset({"shop", "web"}))),
        (["web", "books"], ExportTo(False, frozenset({"web", "books"}))),
    ],
    ids=["not-given", "everywhere", "own-namespace", "own-namespace-by-name", "own-and-web", "two"],
)
def test_export_to_of_a_virtual_service_or_destination_rule(
    entries: list[str], expected: ExportTo
) -> None:
    problems: list[str] = []
    assert config_export_to(entries, "shop", problems.append) == expected
    assert problems == []


@pytest.mark.parametrize(
    ("entries", "fragment"),
    [
        (["~"], "only allowed for services"),
        (["*", "web"], "cannot be given with other entries"),
        ([".", "default"], "'.' and default are the same namespace"),
        (["web", "web"], "'web' is given twice"),
        (["Web_Team"], "not '*', '.' or a namespace name"),
    ],
    ids=["none", "everywhere-and-more", "dot-and-own-name", "twice", "not-a-namespace"],
)
def test_export_to_istio_refuses_is_an_error(entries: list[str], fragment: str) -> None:
    vs = virtual_service(
        "reviews", ["reviews"], [http_route(destination("reviews"))], exportTo=entries
    )
    result = run(service("reviews"), vs)
    found = [d for d in result.diagnostics if d.field == "spec.exportTo"]
    assert found
    assert found[0].severity is Severity.ERROR
    assert fragment in found[0].message
    assert route_of(result.model) == [DEFAULT_CLUSTER]  # the VirtualService is left out


@pytest.mark.parametrize(
    ("annotation", "expected"),
    [
        ("*", EVERYWHERE),
        ("", EVERYWHERE),
        (".", ExportTo(False, frozenset({"shop"}))),
        ("~", ExportTo(False, frozenset())),
        ("web, .", ExportTo(False, frozenset({"web", "shop"}))),
        ("web,books", ExportTo(False, frozenset({"web", "books"}))),
    ],
    ids=["everywhere", "empty", "own-namespace", "nobody", "web-and-own", "two"],
)
def test_export_to_annotation_of_a_service(annotation: str, expected: ExportTo) -> None:
    problems: list[str] = []
    annotations = {"networking.istio.io/exportTo": annotation}
    assert service_export_to(annotations, "shop", problems.append) == expected
    assert problems == []


def test_an_annotation_entry_that_is_no_namespace_is_left_out_with_a_warning() -> None:
    result = run(annotated("reviews", "default", "web, not a name"))
    field = "metadata.annotations[networking.istio.io/exportTo]"
    assert [d.severity for d in result.diagnostics if d.field == field] == [Severity.WARNING]
    assert route_of(seen_by(result, "web")) == [DEFAULT_CLUSTER]
    assert route_of(seen_by(result, "default")) == []


# ------------------------------------------------------------------------------------------------
# Who sees what


@pytest.mark.parametrize(
    ("export_to", "client", "sees_rule"),
    [
        (["."], "shop", True),
        (["."], "web", False),
        (["."], "", False),
        (["web"], "web", True),
        (["web"], "shop", False),
        ([".", "web"], "web", True),
        ([".", "web"], "books", False),
        (["*"], "books", True),
        ([], "", True),
    ],
    ids=[
        "private-own-namespace",
        "private-other-namespace",
        "private-node-without-namespace",
        "named-namespace",
        "named-not-the-owner",
        "own-and-named-named",
        "own-and-named-other",
        "everywhere",
        "not-given",
    ],
)
def test_a_virtual_service_applies_to_the_namespaces_it_is_exported_to(
    export_to: list[str], client: str, sees_rule: bool
) -> None:
    """A client that does not see the VirtualService keeps the service's default route."""
    result = run(*reviews_with_subsets(exported("canary", "shop", export_to)))
    expected = [V1] if sees_rule else [DEFAULT_CLUSTER]
    assert route_of(seen_by(result, client)) == expected
    assert not result.has_errors


def test_a_private_virtual_service_comes_before_one_exported_by_name_then_a_public_one() -> None:
    public = exported("public", "books", ["*"], created="2024-01-01T00:00:00Z")
    named = virtual_service(
        "named",
        [REVIEWS],
        [http_route(destination(REVIEWS, "v1", weight=100), destination(REVIEWS, weight=0))],
        namespace="books",
        created="2024-02-01T00:00:00Z",
        exportTo=["shop", "web"],
    )
    private = virtual_service(
        "private",
        [REVIEWS],
        [http_route(destination(REVIEWS, weight=100), destination(REVIEWS, "v1", weight=0))],
        namespace="shop",
        created="2024-03-01T00:00:00Z",
        exportTo=["."],
    )
    result = run(*reviews_with_subsets(public, named, private))
    assert route_of(seen_by(result, "shop")) == [DEFAULT_CLUSTER]  # private, though youngest
    assert route_of(seen_by(result, "web")) == [V1]  # exported to web by name
    assert seen_by(result, "web").mesh_hosts != result.model.mesh_hosts
    assert route_of(seen_by(result, "books")) == [V1]  # the public one
    assert not result.has_errors


def test_two_public_virtual_services_for_one_host_stay_an_error() -> None:
    older = exported("older", "shop", ["*"], created="2024-01-01T00:00:00Z")
    younger = exported("younger", "web", ["*"], created="2024-02-01T00:00:00Z")
    result = run(*reviews_with_subsets(older, younger))
    assert [d.name for d in result.diagnostics if d.is_error] == ["younger"]


@pytest.mark.parametrize(
    ("annotation", "client", "sees_service"),
    [
        (".", "default", True),
        (".", "web", False),
        ("web", "web", True),
        ("web", "default", False),
        ("~", "default", False),
        ("*", "web", True),
    ],
    ids=["private-own", "private-other", "named", "named-not-owner", "nobody", "everywhere"],
)
def test_a_service_is_seen_in_the_namespaces_it_is_exported_to(
    annotation: str, client: str, sees_service: bool
) -> None:
    """A client that does not see a service has neither its clusters nor its virtual hosts."""
    result = run(annotated("reviews", "default", annotation), service("ratings"))
    model = seen_by(result, client)
    assert (DEFAULT_CLUSTER in [c.name for c in model.clusters]) is sees_service
    assert (route_of(model) == [DEFAULT_CLUSTER]) is sees_service
    assert route_of(model, "ratings.default.svc.cluster.local")  # others unchanged


def rule(namespace: str, subset: str, **spec: Any) -> Obj:
    return destination_rule(
        f"reviews-{namespace}", REVIEWS, {subset: {"version": subset}}, namespace, **spec
    )


@pytest.mark.parametrize(
    ("rules", "client", "subset"),
    [
        ([rule("default", "own")], "web", "own"),
        ([rule("default", "own", exportTo=["."])], "default", "own"),
        ([rule("default", "own", exportTo=["."])], "web", None),
        ([rule("default", "own"), rule("web", "web")], "web", "web"),
        ([rule("default", "own"), rule("web", "web")], "books", "own"),
        ([rule("web", "web")], "books", None),
        ([rule("istio-system", "root")], "books", "root"),
        ([rule("istio-system", "root"), rule("default", "own")], "books", "own"),
        ([rule("default", "own", exportTo=["web"])], "web", "own"),
        ([rule("default", "own", exportTo=["web"])], "default", None),
        ([rule("default", "own", exportTo=["web"]), rule("istio-system", "root")], "books", "root"),
    ],
    ids=[
        "service-namespace-everywhere",
        "service-namespace-private-own",
        "service-namespace-private-other",
        "client-namespace-first",
        "client-namespace-rule-not-for-others",
        "other-namespace-rule-applies-nowhere-else",
        "root-namespace",
        "service-namespace-before-root",
        "service-namespace-exported-by-name",
        "exported-elsewhere-only-not-own",
        "root-when-service-namespace-not-exported",
    ],
)
def test_which_destination_rule_a_client_gets(
    rules: list[Obj], client: str, subset: str | None
) -> None:
    """As Istio picks it: the client's namespace, then the service's, then the root's."""
    result = run(service("reviews"), *rules)
    subsets = [c.subset for c in seen_by(result, client).clusters if c.subset]
    assert subsets == ([subset] if subset else [])
    assert not result.has_errors


# ------------------------------------------------------------------------------------------------
# Sharing


def test_namespaces_that_see_the_same_share_one_view() -> None:
    result = run(
        *reviews_with_subsets(
            exported("canary", "shop", [".", "web"]), annotated("ratings", "books", ".")
        )
    )
    assert [view.namespaces for view in result.model.views] == [("books",), ("shop", "web")]
    assert result.model.view_for("elsewhere") is None


def test_groups_that_see_the_same_get_the_very_same_resources() -> None:
    model = run(*reviews_with_subsets(exported("canary", "shop", [".", "web"]))).model
    builder = ResourceBuilder()

    def built(namespace: str) -> dict[str, Any]:
        return dict(builder.build_group(model, NodeGroup(Role.SIDECAR, 15001, namespace)))

    shop, web, books, nowhere = built("shop"), built("web"), built("books"), built("")
    assert all(shop[url] is web[url] for url in shop)
    assert all(books[url] is nowhere[url] for url in books)
    assert shop != books
    # the view shares every cluster and load assignment it does not change, bytes and messages
    assert all(
        a is b
        for a, b in zip(
            shop["type.googleapis.com/envoy.config.cluster.v3.Cluster"],
            books["type.googleapis.com/envoy.config.cluster.v3.Cluster"],
            strict=True,
        )
    )


def test_two_private_virtual_services_for_one_host_in_one_namespace_are_an_error() -> None:
    older = exported("older", "shop", ["."], created="2024-01-01T00:00:00Z")
    younger = exported("younger", "shop", ["."], created="2024-02-01T00:00:00Z")
    result = run(*reviews_with_subsets(older, younger))
    assert [d.name for d in result.diagnostics if d.is_error] == ["younger"]
    assert route_of(seen_by(result, "shop")) == [V1]


def test_an_endpoint_change_reaches_the_views_as_a_full_translation_would() -> None:

    hidden = annotated("ledger", "shop", ".")
    before = [
        hidden,
        endpoint_slice("ledger-a", "ledger", [slice_endpoint("10.0.0.1")], namespace="shop"),
    ]
    after = [
        hidden,
        endpoint_slice("ledger-a", "ledger", [slice_endpoint("10.0.0.2")], namespace="shop"),
    ]
    translator = Translator()
    translator.reset(
        {("Service", "shop", "ledger"): hidden, ("EndpointSlice", "shop", "ledger-a"): before[1]}
    )
    changed = translator.apply({("EndpointSlice", "shop", "ledger-a"): after[1]})
    assert translator.paths["endpoints"] == 1
    assert changed.model == translate(after).model
    (view,) = translate(after).model.views
    assert [e.address for a in view.endpoints for e in a.endpoints] == ["10.0.0.2"]


def _meshes() -> list[list[Obj]]:
    two_ports = service("ledger", "shop", ports=[service_port(80), service_port(8080, "http-alt")])
    two_ports["metadata"]["annotations"] = {"networking.istio.io/exportTo": "."}
    alias = virtual_service(  # "ratings" in shop is no service, but a name ratings.default has
        "alias",
        [REVIEWS, "ratings"],
        [http_route(destination(REVIEWS, "v1"))],
        namespace="shop",
        exportTo=["."],
    )
    return [
        reviews_with_subsets(exported("canary", "shop", ["."])),
        [*reviews_with_subsets(), two_ports, service("ratings", "shop")],
        [
            *reviews_with_subsets(),
            rule("shop", "v1", exportTo=["."]),
            alias,
            service("ratings", "shop"),
        ],
    ]


@pytest.mark.parametrize("objects", _meshes(), ids=["private-route", "hidden-service", "alias"])
@pytest.mark.parametrize("role", [Role.SIDECAR, Role.PROXYLESS])
def test_a_view_is_built_as_its_model_would_be_on_its_own(objects: list[Obj], role: Role) -> None:
    """What a view shares with the rest of the mesh changes no byte of what its clients get."""
    model = run(*objects).model
    builder = ResourceBuilder()
    builder.build_group(model, NodeGroup(role, 15001 if role is Role.SIDECAR else 0))
    group = NodeGroup(role, 15001 if role is Role.SIDECAR else 0, "shop")
    view = model.view_for("shop")
    assert view is not None
    shared = builder.build_group(model, group)
    alone = ResourceBuilder().build_group(scoped_model(model, view), NodeGroup(role, group.port))
    for url, resources in alone.items():
        assert [serialize(m) for m in shared[url]] == [serialize(m) for m in resources], url
