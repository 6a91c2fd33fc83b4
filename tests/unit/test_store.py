"""The object store: objects by kind/namespace/name, changes that change nothing trigger nothing,
the sync gate, and what the consumer is told."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from tests.unit.test_debounce import FakeTimer
from xds_server.sources.base import KubeObject, SourceProblem
from xds_server.store import ObjectStore, StoreChange

SOURCE = "directory"


def service(
    name: str = "reviews", namespace: str | None = "default", **extra: Any
) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name}
    if namespace is not None:
        metadata["namespace"] = namespace
    return {"apiVersion": "v1", "kind": "Service", "metadata": metadata, "spec": {}, **extra}


def virtual_service(weight_v1: int = 90, **metadata: Any) -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "reviews", "namespace": "default", **metadata},
        "spec": {"hosts": ["reviews"], "http": [{"route": [{"weight": weight_v1}]}]},
    }


def pod(ip: str = "10.0.0.1", ready: bool = True) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "reviews-1", "namespace": "default", "labels": {"app": "reviews"}},
        "status": {"podIP": ip, "conditions": [{"type": "Ready", "status": str(ready)}]},
    }


class Harness:
    """A store with a fake clock and the list of changes its consumer received."""

    def __init__(self, sources: tuple[str, ...] = (SOURCE,)) -> None:
        self.timer = FakeTimer()
        self.changes: list[StoreChange] = []
        self.store = ObjectStore(self.changes.append, sources=sources, timer=self.timer)

    def settle(self) -> list[StoreChange]:
        """Let every pending call happen; return the changes delivered meanwhile."""
        seen = len(self.changes)
        self.timer.advance_to(self.timer.time + 10.0)
        return self.changes[seen:]


@pytest.fixture
def synced() -> Harness:
    """A store whose only source has listed one Service and one VirtualService."""
    harness = Harness()
    harness.store.replace_all(SOURCE, [service(), virtual_service()])
    harness.store.mark_synced(SOURCE)
    harness.settle()
    return harness


def test_objects_are_kept_by_kind_namespace_and_name(synced: Harness) -> None:
    store = synced.store
    store.upsert(SOURCE, service("reviews", "shop"))
    assert store.get(("Service", "default", "reviews")) == service()
    assert store.get(("Service", "shop", "reviews")) == service("reviews", "shop")
    assert store.get(("VirtualService", "default", "reviews")) == virtual_service()
    assert [o["metadata"]["namespace"] for o in store.objects_of("Service")] == ["default", "shop"]
    assert [o["kind"] for o in store.objects()] == ["Service", "Service", "VirtualService"]


def test_objects_stay_ordered_by_key_as_objects_come_change_and_go(synced: Harness) -> None:
    store = synced.store

    def listed() -> list[tuple[str, str, int]]:
        return [
            (o["kind"], o["metadata"]["namespace"], o.get("spec", {}).get("weight", 0))
            for o in store.objects()
        ]

    assert listed() == [("Service", "default", 0), ("VirtualService", "default", 0)]
    store.upsert(SOURCE, service("reviews", "shop"))
    store.upsert(SOURCE, {**service("reviews", "alpha"), "spec": {"weight": 1}})
    assert listed() == [
        ("Service", "alpha", 1),
        ("Service", "default", 0),
        ("Service", "shop", 0),
        ("VirtualService", "default", 0),
    ]
    store.upsert(SOURCE, {**service("reviews", "alpha"), "spec": {"weight": 2}})
    store.delete(SOURCE, ("Service", "default", "reviews"))
    assert listed() == [
        ("Service", "alpha", 2),
        ("Service", "shop", 0),
        ("VirtualService", "default", 0),
    ]
    store.replace_all(SOURCE, [service("reviews", "zulu"), service("reviews", "shop")])
    assert listed() == [("Service", "shop", 0), ("Service", "zulu", 0)]


def test_an_object_without_namespace_is_stored_in_default(synced: Harness) -> None:
    synced.store.upsert(SOURCE, service("ratings", namespace=None))
    assert synced.store.get(("Service", "default", "ratings")) == service("ratings", None)


def test_first_release_after_sync_is_initial_and_names_every_object() -> None:
    harness = Harness()
    harness.store.replace_all(SOURCE, [service(), virtual_service()])
    harness.store.mark_synced(SOURCE)
    harness.timer.run_due()  # the next loop turn, no time passing
    assert harness.changes == [
        StoreChange(
            keys=frozenset(
                {("Service", "default", "reviews"), ("VirtualService", "default", "reviews")}
            ),
            initial=True,
        )
    ]


def test_sync_gate_holds_everything_until_every_registered_source_synced() -> None:
    harness = Harness(sources=("kubernetes/services", "kubernetes/pods"))
    harness.store.replace_all("kubernetes/services", [service()])
    harness.store.mark_synced("kubernetes/services")
    harness.store.upsert("kubernetes/pods", pod())
    harness.store.set_problems("kubernetes/pods", [SourceProblem("bad pod")])
    assert harness.settle() == []
    assert not harness.store.synced

    harness.store.mark_synced("kubernetes/pods")
    delivered = harness.settle()
    assert harness.store.synced
    assert len(delivered) == 1
    assert delivered[0].initial
    assert delivered[0].problems_changed
    assert delivered[0].keys == {("Service", "default", "reviews"), ("Pod", "default", "reviews-1")}


def test_a_source_reporting_before_registration_is_waited_for() -> None:
    harness = Harness(sources=())
    harness.store.replace_all("a", [service()])
    harness.store.upsert("b", pod())
    harness.store.mark_synced("a")
    assert harness.settle() == []
    harness.store.mark_synced("b")
    assert [change.initial for change in harness.settle()] == [True]


def test_an_empty_source_still_opens_the_gate() -> None:
    harness = Harness()
    harness.store.replace_all(SOURCE, [])
    harness.store.mark_synced(SOURCE)
    assert harness.settle() == [StoreChange(initial=True)]


@pytest.mark.parametrize(
    ("description", "rewrite"),
    [
        ("the very same content", lambda o: o),
        ("a new resourceVersion", lambda o: o["metadata"].update(resourceVersion="42")),
        ("new managedFields", lambda o: o["metadata"].update(managedFields=[{"manager": "x"}])),
        ("a new generation", lambda o: o["metadata"].update(generation=7)),
        ("a status on a VirtualService", lambda o: o.update(status={"conditions": []})),
    ],
)
def test_an_update_that_changes_nothing_triggers_nothing(
    synced: Harness, description: str, rewrite: Any
) -> None:
    updated = copy.deepcopy(virtual_service())
    rewrite(updated)
    synced.store.upsert(SOURCE, updated)
    synced.store.replace_all(SOURCE, [service(), copy.deepcopy(updated)])
    assert synced.settle() == [], description


def test_the_latest_copy_is_served_even_when_it_changes_nothing(synced: Harness) -> None:
    synced.store.upsert(SOURCE, virtual_service(resourceVersion="42"))
    served = synced.store.get(("VirtualService", "default", "reviews"))
    assert served is not None
    assert served["metadata"]["resourceVersion"] == "42"


@pytest.mark.parametrize(
    ("before", "after"),
    [
        (pod(ip="10.0.0.1"), pod(ip="10.0.0.2")),
        (pod(ready=True), pod(ready=False)),
    ],
)
def test_status_counts_for_pods(synced: Harness, before: KubeObject, after: KubeObject) -> None:
    synced.store.upsert(SOURCE, before)
    synced.settle()
    synced.store.upsert(SOURCE, after)
    assert synced.settle() == [StoreChange(keys=frozenset({("Pod", "default", "reviews-1")}))]


def test_a_real_change_is_delivered_with_its_key(synced: Harness) -> None:
    synced.store.upsert(SOURCE, virtual_service(weight_v1=0))
    assert synced.settle() == [
        StoreChange(keys=frozenset({("VirtualService", "default", "reviews")}))
    ]


def test_first_change_after_quiet_is_delivered_on_the_next_turn(synced: Harness) -> None:
    synced.store.upsert(SOURCE, virtual_service(weight_v1=0))
    assert synced.changes[-1].initial  # not called from inside upsert
    synced.timer.run_due()
    assert synced.changes[-1].keys == {("VirtualService", "default", "reviews")}


def test_each_delivery_names_only_what_changed_since_the_last(synced: Harness) -> None:
    synced.store.upsert(SOURCE, virtual_service(weight_v1=0))
    synced.settle()
    synced.store.upsert(SOURCE, pod())
    assert synced.settle() == [StoreChange(keys=frozenset({("Pod", "default", "reviews-1")}))]


def test_a_burst_reaches_the_consumer_coalesced(synced: Harness) -> None:
    synced.store.upsert(SOURCE, virtual_service(weight_v1=10))
    synced.timer.run_due()
    for weight in (20, 30, 40):
        synced.timer.advance_to(synced.timer.time + 0.01)
        synced.store.upsert(SOURCE, virtual_service(weight_v1=weight))
        synced.store.upsert(SOURCE, service(spec={"ports": [{"port": weight}]}))
    delivered = synced.settle()
    assert len(delivered) == 1
    assert delivered[0].keys == {
        ("VirtualService", "default", "reviews"),
        ("Service", "default", "reviews"),
    }
    vs = synced.store.get(("VirtualService", "default", "reviews"))
    assert vs is not None
    assert vs["spec"]["http"][0]["route"][0]["weight"] == 40


def test_replace_all_reports_additions_changes_and_removals(synced: Harness) -> None:
    synced.store.replace_all(SOURCE, [virtual_service(weight_v1=5), service("ratings")])
    assert synced.settle() == [
        StoreChange(
            keys=frozenset(
                {
                    ("Service", "default", "reviews"),
                    ("Service", "default", "ratings"),
                    ("VirtualService", "default", "reviews"),
                }
            )
        )
    ]
    assert synced.store.get(("Service", "default", "reviews")) is None
    assert [o["metadata"]["name"] for o in synced.store.objects_of("Service")] == ["ratings"]


def test_deleting_an_object_is_a_change_and_deleting_nothing_is_not(synced: Harness) -> None:
    synced.store.delete(SOURCE, ("Service", "default", "nonexistent"))
    assert synced.settle() == []
    synced.store.delete(SOURCE, ("Service", "default", "reviews"))
    assert synced.settle() == [StoreChange(keys=frozenset({("Service", "default", "reviews")}))]
    assert synced.store.objects_of("Service") == []


def test_a_change_undone_within_one_burst_triggers_nothing(synced: Harness) -> None:
    synced.store.upsert(SOURCE, service("ratings"))
    synced.store.delete(SOURCE, ("Service", "default", "ratings"))
    synced.store.upsert(SOURCE, virtual_service(weight_v1=0))
    synced.store.upsert(SOURCE, virtual_service())
    synced.store.set_problems(SOURCE, [SourceProblem("half-written")])
    synced.store.set_problems(SOURCE, [])
    assert synced.settle() == []


def test_problems_are_kept_per_source_and_a_new_list_is_a_change(synced: Harness) -> None:
    problem = SourceProblem("invalid YAML at line 3, column 1", file="mesh/vs.yaml")
    synced.store.set_problems(SOURCE, [problem])
    assert synced.settle() == [StoreChange(problems_changed=True)]
    assert synced.store.problems() == [problem]

    synced.store.set_problems(SOURCE, [problem])
    assert synced.settle() == []

    synced.store.set_problems(SOURCE, [])
    assert synced.settle() == [StoreChange(problems_changed=True)]
    assert synced.store.problems() == []


def test_problems_of_all_sources_are_listed_in_registration_order() -> None:
    harness = Harness(sources=("a", "b"))
    harness.store.set_problems("b", [SourceProblem("from b")])
    harness.store.set_problems("a", [SourceProblem("from a")])
    assert [p.message for p in harness.store.problems()] == ["from a", "from b"]


def test_when_two_sources_hold_a_key_the_first_registered_wins() -> None:
    harness = Harness(sources=("first", "second"))
    harness.store.upsert("second", virtual_service(weight_v1=2))
    harness.store.upsert("first", virtual_service(weight_v1=1))
    harness.store.mark_synced("first")
    harness.store.mark_synced("second")
    harness.settle()

    def weight() -> int:
        vs = harness.store.get(("VirtualService", "default", "reviews"))
        assert vs is not None
        return int(vs["spec"]["http"][0]["route"][0]["weight"])

    assert weight() == 1
    harness.store.upsert("second", virtual_service(weight_v1=3))
    assert harness.settle() == []
    harness.store.delete("first", ("VirtualService", "default", "reviews"))
    assert harness.settle() == [
        StoreChange(keys=frozenset({("VirtualService", "default", "reviews")}))
    ]
    assert weight() == 3


@pytest.mark.parametrize(
    ("change", "endpoints_only"),
    [
        (StoreChange(keys=frozenset({("Pod", "default", "a")})), True),
        (StoreChange(keys=frozenset({("EndpointSlice", "default", "a-1")})), True),
        (
            StoreChange(
                keys=frozenset({("Pod", "default", "a"), ("EndpointSlice", "default", "a-1")})
            ),
            True,
        ),
        (
            StoreChange(keys=frozenset({("Pod", "default", "a"), ("Service", "default", "a")})),
            False,
        ),
        (StoreChange(keys=frozenset({("Pod", "default", "a")}), initial=True), False),
        (StoreChange(problems_changed=True), False),
    ],
)
def test_endpoint_only_changes_are_recognised(change: StoreChange, endpoints_only: bool) -> None:
    assert change.endpoints_only is endpoints_only


def test_change_lists_its_kinds() -> None:
    change = StoreChange(keys=frozenset({("Pod", "default", "a"), ("Service", "shop", "b")}))
    assert change.kinds == {"Pod", "Service"}


def test_a_failing_consumer_gets_the_same_keys_with_the_next_change(synced: Harness) -> None:
    received: list[StoreChange] = []

    def consumer(change: StoreChange) -> None:
        received.append(change)
        if len(received) == 1:
            raise RuntimeError("translation failed")

    timer = FakeTimer()
    store = ObjectStore(consumer, sources=(SOURCE,), timer=timer)
    store.mark_synced(SOURCE)
    with pytest.raises(RuntimeError, match="translation failed"):
        timer.run_due()
    store.upsert(SOURCE, service())
    timer.advance_to(10.0)
    assert received[1] == StoreChange(
        keys=frozenset({("Service", "default", "reviews")}), initial=True
    )


def test_close_drops_a_pending_delivery(synced: Harness) -> None:
    synced.store.upsert(SOURCE, virtual_service(weight_v1=0))
    synced.store.close()
    assert synced.settle() == []
