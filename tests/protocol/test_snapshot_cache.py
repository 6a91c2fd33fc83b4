"""The snapshot cache: content-hash versions, consistency, groups."""

from __future__ import annotations

from tests.protocol.test_sotw import mesh
from tests.support.envoy_resources import (
    eds_cluster,
    http_listener,
    load_assignment,
    weighted_routes,
)
from xds_server.xds.cache import (
    CLUSTER,
    ENDPOINT,
    LISTENER,
    ROUTE,
    Serializer,
    SnapshotCache,
    snapshot_from_messages,
)


def test_the_same_config_gets_the_same_versions_whatever_the_order() -> None:
    clusters = [eds_cluster("a"), eds_cluster("b")]
    endpoints = [load_assignment("a", [("127.0.0.1", 1)]), load_assignment("b", [])]
    one = snapshot_from_messages({CLUSTER: clusters, ENDPOINT: endpoints})
    other = snapshot_from_messages({ENDPOINT: endpoints[::-1], CLUSTER: clusters[::-1]})
    assert one.versions == other.versions
    assert one.of_type(CLUSTER).by_name["a"] == other.of_type(CLUSTER).by_name["a"]


def test_a_changed_resource_changes_its_version_and_its_types_version_only() -> None:
    before = mesh("a", "b")
    after = mesh("a", "b", first_port=9100)
    assert before.of_type(CLUSTER).version == after.of_type(CLUSTER).version
    assert before.of_type(ENDPOINT).version != after.of_type(ENDPOINT).version
    assert (
        before.of_type(ENDPOINT).by_name["a"].version
        != after.of_type(ENDPOINT).by_name["a"].version
    )


def test_resources_are_serialized_deterministically() -> None:
    route = weighted_routes("80", ["*"], {"a": 90, "b": 10})
    snapshot = snapshot_from_messages({ROUTE: [route]})
    resource = snapshot.of_type(ROUTE).by_name["80"]
    assert resource.body == route.SerializeToString(deterministic=True)
    assert resource.as_any().type_url == ROUTE


def test_a_snapshot_with_a_cluster_missing_its_endpoints_is_refused() -> None:
    cache = SnapshotCache()
    good = mesh("a")
    assert cache.set_snapshot("g", good)
    broken = snapshot_from_messages({CLUSTER: [eds_cluster("a"), eds_cluster("b")]})
    assert not cache.set_snapshot("g", broken)
    assert cache.snapshot("g") is good
    assert "b" in cache.rejections["g"]


def test_a_snapshot_with_a_listener_missing_its_routes_is_refused() -> None:
    cache = SnapshotCache()
    broken = snapshot_from_messages({LISTENER: [http_listener("l", 8080, "8080")]})
    assert not cache.set_snapshot("g", broken)
    assert cache.snapshot("g") is None
    assert "8080" in cache.rejections["g"]


def test_watchers_hear_of_changes_to_their_group_only() -> None:
    cache = SnapshotCache()
    heard: list[str] = []
    stop = cache.watch("g", lambda: heard.append("g"))
    cache.watch("other", lambda: heard.append("other"))
    cache.set_snapshot("g", mesh("a"))
    cache.set_snapshot("g", mesh("a"))  # same content: nothing to tell
    cache.set_snapshot("g", mesh("b"))
    stop()
    cache.set_snapshot("g", mesh("c"))
    assert heard == ["g", "g"]


def test_a_group_asked_for_before_it_exists_is_reported_once() -> None:
    requested: list[str] = []
    cache = SnapshotCache(on_group_requested=requested.append)
    cache.watch("gateway", lambda: None)
    cache.watch("gateway", lambda: None)
    assert requested == ["gateway"]
    assert cache.groups_requested() == {"gateway"}


def test_a_message_object_is_serialized_once_across_groups_and_versions() -> None:
    serializer = Serializer()
    clusters = [eds_cluster("a"), eds_cluster("b")]
    endpoints = [load_assignment("a", []), load_assignment("b", [])]
    sidecar = snapshot_from_messages({CLUSTER: clusters, ENDPOINT: endpoints}, serializer)
    gateway = snapshot_from_messages({CLUSTER: clusters, ENDPOINT: endpoints}, serializer)
    serializer.end_round()
    assert serializer.serialized == 4
    assert sidecar.of_type(CLUSTER).by_name["a"] is gateway.of_type(CLUSTER).by_name["a"]

    moved = [load_assignment("a", [("127.0.0.1", 1)]), endpoints[1]]
    next_version = snapshot_from_messages({CLUSTER: clusters, ENDPOINT: moved}, serializer)
    serializer.end_round()

    assert serializer.serialized == 5  # only the changed load assignment
    assert next_version.of_type(CLUSTER).by_name["b"] is sidecar.of_type(CLUSTER).by_name["b"]


def test_the_serializer_forgets_what_the_last_round_did_not_use() -> None:
    serializer = Serializer()
    old = eds_cluster("a")
    snapshot_from_messages({CLUSTER: [old], ENDPOINT: [load_assignment("a", [])]}, serializer)
    serializer.end_round()
    snapshot_from_messages({CLUSTER: [eds_cluster("b")]}, serializer)
    serializer.end_round()
    snapshot_from_messages({CLUSTER: [old]}, serializer)
    assert serializer.serialized == 4  # "a" was dropped after the round that did not use it


class ListenerRequests:
    """The groups a cache asked to build listeners for."""

    def __init__(self) -> None:
        self.groups: list[str] = []
        self.cache = SnapshotCache(on_listeners_requested=self.groups.append)


def test_a_listener_name_new_to_a_group_asks_for_a_build_once() -> None:
    asked = ListenerRequests()

    asked.cache.subscribed("proxyless", LISTENER, ["a:80"])
    asked.cache.subscribed("proxyless", LISTENER, ["a:80"])  # a second stream, the same name
    asked.cache.subscribed("proxyless", CLUSTER, ["c"])  # only listener names count

    assert asked.groups == ["proxyless"]
    assert asked.cache.listener_names("proxyless") == {"a:80"}


def test_a_name_no_stream_holds_is_kept_among_the_last_released() -> None:
    asked = ListenerRequests()
    asked.cache.RELEASED_NAMES_KEPT = 2
    asked.cache.subscribed("proxyless", LISTENER, ["a:80", "b:80", "c:80", "held:80"])
    asked.cache.subscribed("proxyless", LISTENER, ["held:80"])  # a second stream holds it too

    asked.cache.subscribed("proxyless", LISTENER, (), ["a:80", "b:80", "c:80", "held:80"])

    # the oldest release goes beyond the limit; a name another stream holds stays
    assert asked.cache.listener_names("proxyless") == {"b:80", "c:80", "held:80"}
    asked.cache.subscribed("proxyless", LISTENER, ["b:80"])  # a client reconnects: built already
    assert asked.groups == ["proxyless"]
    asked.cache.subscribed("proxyless", LISTENER, ["a:80"])  # dropped, so new again
    assert asked.groups == ["proxyless", "proxyless"]
