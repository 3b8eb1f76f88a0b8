"""The StateStore contract, run against both implementations: SQLite (a file) and PostgreSQL (a
fresh database of the test server, tests/pg_server.py).

The behaviour tests of ``test_state_store`` and ``test_tenant_store`` that only use the
``store`` fixture are imported and run again here on both (the fixture below replaces theirs);
the tests written here cover what those leave to one implementation's own file: claims and
leases, the outbox's audit trail, tenants, refusing a newer schema.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from redflags.state.model import (
    DEFAULT_TENANT,
    Evaluated,
    StaleRead,
    StateStore,
    StateStoreError,
)
from redflags.state.stores import open_state

from .test_state_store import (  # noqa: F401  (collected again here, on both stores)
    P1,
    P2,
    alert,
    delivery,
    outbox,
    test_a_resource_sent_again_replaces_its_facts,
    test_counts_always_has_every_status,
    test_due_is_oldest_first_and_one_item_per_patient_and_rule,
    test_forget_erases_everything_of_one_patient,
    test_history_excludes_the_resources_being_sent_now,
    test_prune_uses_ts_or_else_the_time_the_fact_was_stored,
    test_retry_delivered_and_failed_transitions,
    test_retry_now_makes_every_pending_item_due,
    test_the_active_ledger_is_replaced_per_patient,
    test_threads_share_one_store,
    test_transitions_append_in_order,
)
from .test_tenant_store import (  # noqa: F401
    test_a_commit_after_another_of_the_same_patient_is_refused,
    test_forget_in_one_tenant_keeps_the_other,
    test_one_patient_id_in_two_tenants_is_two_patients,
    test_prune_of_one_tenant_keeps_the_others_history,
)

KINDS = ["sqlite", "postgresql"]


def location(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> str | Path:
    """Where a store of ``kind`` lives for one test: a file, or a fresh database's URL."""
    return tmp_path / "state.db" if kind == "sqlite" else request.getfixturevalue("pg_url")


@pytest.fixture(params=KINDS)
def where(request: pytest.FixtureRequest, tmp_path: Path) -> str | Path:
    return location(request.param, request, tmp_path)


@pytest.fixture
def store(where: str | Path) -> Iterator[StateStore]:
    s = open_state(where)
    yield s
    s.close()


def test_two_store_objects_see_each_others_commits_and_claims(where: str | Path) -> None:
    one, two = open_state(where), open_state(where)
    try:
        a, b = outbox(one, delivery(P1, "a"), delivery(P2, "a"))
        assert two.history(P1) == []
        assert [d.id for d in one.claim(100, limit=1, lease=60)] == [a]
        assert [d.id for d in two.claim(100, lease=60)] == [b]
        assert two.claim(159) == [] and one.claim_ids(159) == []
        assert [d.id for d in two.claim(160)] == [a, b]  # their deliverers died: due again
        assert one.claim_ids(220, lease=10) == [a, b]
        two.mark_delivered(a, 221)
        assert one.counts() == {"pending": 1, "delivered": 1, "failed": 0}
    finally:
        one.close()
        two.close()


def test_ids_reads_and_next_due(store: StateStore) -> None:
    a, b, c = outbox(store, delivery(P1, "a"), delivery(P1, "a", "updated", 1), delivery(P2, "b"))
    assert store.due_ids(100) == [a, c]  # b waits behind a (same patient and rule)
    assert store.next_due() == 0
    store.mark_retry(a, 500, "503")
    store.mark_retry(c, 400, "503")
    assert store.next_due() == 400
    item = store.delivery(b)
    assert item is not None and item.bundle["n"] == 1 and item.status == "pending"
    assert store.delivery(999_999) is None


def test_revise_and_revise_active(store: StateStore) -> None:
    flag, plan = alert(P1, "r").flag, alert(P1, "r").careplan
    (item,) = store.commit(Evaluated(P1, 100, active={"r": alert(P1, "r")}, deliveries=[delivery(P1, "r")]))
    assert store.revise(item, {"resourceType": "Bundle", "new": True}, {"resourceType": "OperationOutcome"})
    revised = store.delivery(item)
    assert revised is not None and revised.bundle == {"resourceType": "Bundle", "new": True}
    assert revised.outcome == {"resourceType": "OperationOutcome"}
    after = {"Flag": {**flag, "id": "f1"}, "CarePlan": {**plan, "id": "c1"}}
    assert store.revise_active(item, {"Flag": flag, "CarePlan": plan}, after)
    assert store.active(P1)["r"].flag["id"] == "f1"
    assert not store.revise_active(item, {"Flag": flag, "CarePlan": plan}, after)  # changed since
    store.mark_delivered(item, 200)
    assert not store.revise(item, {}, {})  # only a pending item is revised
    assert store.purge_delivered(201) == 1 and store.delivery(item) is None


def test_retry_failed_and_the_audit_trail(store: StateStore) -> None:
    a, b = outbox(store, delivery(P1, "a"), delivery(P2, "b"))
    store.mark_failed(a, "400 bad", {"resourceType": "OperationOutcome"}, "400")
    store.mark_failed(b, "400 bad", None, "400")
    assert store.retry_failed([a], 300, "op") == [a]
    assert store.retry_failed(None, 301) == [b]
    events = store.outbox_events()
    assert [(e.item, e.before, e.after, e.actor) for e in events] == [
        (a, "pending", "failed", "delivery"),
        (b, "pending", "failed", "delivery"),
        (a, "failed", "pending", "op"),
        (b, "failed", "pending", "operator"),
    ]
    assert [e.item for e in store.outbox_events(a)] == [a, a]
    assert store.outbox_events(tenant="other") == []


def test_tenants_count_patients_of_every_table(store: StateStore) -> None:
    store.commit(Evaluated(P1, 1, facts={"A/1": [{"f": 1}]}))
    store.commit(Evaluated(P2, 1, deliveries=[delivery(P2, "r")], tenant="t2"))
    store.commit(Evaluated(P1, 1, facts={"A/1": [{"f": 1}]}, tenant="t2"))
    assert store.tenants() == {DEFAULT_TENANT: 1, "t2": 2}
    assert store.tenants(P2) == {"t2": 1}
    assert store.counts(tenant="t2")["pending"] == 1 and store.counts(tenant=DEFAULT_TENANT)["pending"] == 0


def test_the_patient_lock_is_held_across_read_and_commit(store: StateStore) -> None:
    with store.patient_lock(P1):
        seen = store.snapshot(P1)
        store.commit(Evaluated(P1, 1, facts={"A/1": [{"f": 1}]}, seen=seen.seq))
    with store.patient_lock(P1), pytest.raises(StaleRead):  # the seq check still holds under the lock
        store.commit(Evaluated(P1, 2, facts={"A/1": [{"f": 2}]}, seen=seen.seq))
    assert store.history(P1) == [{"f": 1}]


def test_a_store_of_a_newer_schema_is_refused_with_one_line(
    where: str | Path, request: pytest.FixtureRequest
) -> None:
    open_state(where).close()
    if isinstance(where, Path):
        import sqlite3

        with sqlite3.connect(where) as conn:
            conn.execute("UPDATE schema_version SET version = 99")
    else:
        import psycopg

        with psycopg.connect(str(where), autocommit=True) as conn:
            conn.execute("UPDATE schema_version SET version = 99 WHERE kind = 'state'")
    with pytest.raises(StateStoreError) as raised:
        open_state(where)
    assert "99" in str(raised.value) and "\n" not in str(raised.value)


def test_a_bad_evaluation_stores_nothing(store: StateStore) -> None:
    store.commit(Evaluated(P1, 1, facts={"A/1": [{"f": 1}]}))
    with pytest.raises(StateStoreError, match=r"cannot store evaluation"):
        store.commit(Evaluated(P1, 2, facts={"A/1": [{"f": {1, 2}}]}, deliveries=[delivery(P1, "r")]))
    with pytest.raises(ValueError, match="another patient"):
        store.commit(Evaluated(P1, 2, deliveries=[delivery(P2, "r")]))
    assert store.history(P1) == [{"f": 1}]
    assert store.deliveries() == []


def test_ping_answers_and_oldest_pending_is_the_first_item_still_waiting(store: StateStore) -> None:
    """What /readyz and /metrics read, on both implementations."""
    store.ping()
    assert store.oldest_pending() is None
    (first,) = store.commit(Evaluated(P1, 100, deliveries=[delivery(P1, "cauda_equina_syndrome")]))
    store.commit(Evaluated(P2, 200, deliveries=[delivery(P2, "cauda_equina_syndrome")]))
    assert store.oldest_pending() == 100
    store.mark_delivered(first, 300)
    assert store.oldest_pending() == 200


def test_a_closed_store_does_not_answer_its_ping(where: str | Path) -> None:
    s = open_state(where)
    s.ping()
    s.close()
    with pytest.raises(StateStoreError):
        s.ping()
