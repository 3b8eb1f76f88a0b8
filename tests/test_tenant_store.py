"""Tenants in the state store: rows of one tenant are invisible to another, an old store migrates.

Issue 10, item 4: history, ledger and outbox were keyed by patient id alone, so ``Patient/1`` of
one EHR read and changed ``Patient/1`` of another. Real SQLite files throughout; the version 1
store in fixtures/state was written by redflags at 30fb331.
"""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest

from redflags.state.model import (
    DEFAULT_TENANT,
    ActiveAlert,
    Evaluated,
    NewDelivery,
    StaleRead,
    StateStoreError,
    Transition,
)
from redflags.state.sqlite_store import SCHEMA_VERSION, SqliteStateStore
from redflags.state.tenant_view import TenantView

from .conftest import FIXTURES

V1_STORE = FIXTURES / "state" / "store-v1-30fb331.sqlite"
P = "Patient/1"
A, B = "https://ehr-a.example/|https://fhir-a.example", "https://ehr-b.example/|https://fhir-b.example"


def alert(patient: str, rule: str = "r") -> ActiveAlert:
    flag, careplan = {"resourceType": "Flag"}, {"resourceType": "CarePlan"}
    return ActiveAlert(patient, rule, "A", "critical", flag, careplan, 1)


def evaluated(tenant: str, fact: int, *, seen: int | None = None, now: int = 100) -> Evaluated:
    return Evaluated(
        P,
        now,
        facts={f"Condition/{fact}": [{"f": fact, "ts": now}]},
        active={"r": alert(P)},
        transitions=[Transition(P, "r", "raised", "A", now, "test")],
        deliveries=[NewDelivery(P, "r", "raised", {"resourceType": "Bundle", "n": fact})],
        tenant=tenant,
        seen=seen,
    )


@pytest.fixture
def store(tmp_path: Path) -> SqliteStateStore:
    return SqliteStateStore.open(tmp_path / "state.sqlite")


def test_one_patient_id_in_two_tenants_is_two_patients(store: SqliteStateStore) -> None:
    store.commit(evaluated(A, 1))
    store.commit(evaluated(B, 2))
    assert store.history(P, tenant=A) == [{"f": 1, "ts": 100}]
    assert store.history(P, tenant=B) == [{"f": 2, "ts": 100}]
    assert store.history(P) == [] and store.active(P) == {}  # the default tenant has nothing
    assert [t.tenant for t in store.transitions(P, tenant=A)] == [A]
    assert [d.bundle["n"] for d in store.deliveries(tenant=B)] == [2]
    assert store.counts(tenant=A) == {"pending": 1, "delivered": 0, "failed": 0}
    assert store.tenants() == {A: 1, B: 1} and store.tenants(P) == {A: 1, B: 1}
    # both are due at once: one tenant's pending item never holds back the other's
    assert sorted(d.tenant for d in store.due(0)) == [A, B]
    assert [d.tenant for d in TenantView(store, A).claim(0)] == [A]


def test_forget_in_one_tenant_keeps_the_other(store: SqliteStateStore) -> None:
    store.commit(evaluated(A, 1))
    store.commit(evaluated(B, 2))
    assert store.forget(P, tenant=A, force=True) == 1 + 1 + 1 + 1  # fact, alert, transition, outbox item
    assert store.history(P, tenant=A) == [] and store.active(P, tenant=A) == {}
    assert store.history(P, tenant=B) == [{"f": 2, "ts": 100}] and "r" in store.active(P, tenant=B)
    assert [d.tenant for d in store.deliveries()] == [B]


def test_prune_of_one_tenant_keeps_the_others_history(store: SqliteStateStore) -> None:
    store.commit(evaluated(A, 1, now=100))
    store.commit(evaluated(B, 2, now=100))
    assert store.prune(1_000, tenant=A) == 1
    assert store.history(P, tenant=A) == [] and store.history(P, tenant=B) != []


def test_a_commit_after_another_of_the_same_patient_is_refused(store: SqliteStateStore) -> None:
    """The ledger race (--workers > 1): two evaluations read the patient, the second to commit
    must not overwrite what the first decided without seeing it."""
    first, second = store.snapshot(P, tenant=A), store.snapshot(P, tenant=A)
    assert first.seq == second.seq == 0
    store.commit(evaluated(A, 1, seen=first.seq))
    with pytest.raises(StaleRead):
        store.commit(evaluated(A, 2, seen=second.seq))
    assert store.history(P, tenant=A) == [{"f": 1, "ts": 100}]
    assert len(store.transitions(P, tenant=A)) == 1  # one "raised", not two
    store.commit(evaluated(B, 3, seen=0))  # another tenant's patient is another patient
    again = store.snapshot(P, tenant=A)
    assert again.seq == 1 and again.facts == {"Condition/1": [{"f": 1, "ts": 100}]} and "r" in again.active
    store.forget(P, tenant=A, force=True)  # an evaluation that read before a forget cannot bring it back
    with pytest.raises(StaleRead):
        store.commit(evaluated(A, 4, seen=again.seq))
    assert store.history(P, tenant=A) == []


def test_a_store_written_before_tenants_opens_with_its_rows_in_the_default_tenant(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    shutil.copy(V1_STORE, path)
    with sqlite3.connect(path) as raw:
        assert raw.execute("SELECT version FROM schema_version").fetchall() == [(1,)]
    store = SqliteStateStore.open(path)
    try:
        assert len(store.history("Patient/v03")) == 9
        assert list(store.active("Patient/v03")) == ["guillain_barre_syndrome"]
        assert [t.change for t in store.transitions("Patient/v03", tenant=DEFAULT_TENANT)] == ["raised"]
        (item,) = store.deliveries("pending")
        assert item.tenant == DEFAULT_TENANT and item.patient == "Patient/v03"
        assert store.tenants() == {DEFAULT_TENANT: 1}
        assert store.history("Patient/v03", tenant=A) == []
        # and it goes on being used: a new commit of that patient, then a stale one refused
        seen = store.snapshot("Patient/v03").seq
        store.commit(Evaluated("Patient/v03", 200, facts={"Condition/x": [{"x": 1}]}, seen=seen))
        with pytest.raises(StaleRead):
            store.commit(Evaluated("Patient/v03", 200, facts={"Condition/y": [{"y": 1}]}, seen=seen))
    finally:
        store.close()
    with sqlite3.connect(path) as raw:
        assert raw.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]
    SqliteStateStore.open(path).close()  # opening again changes nothing


def test_a_failed_migration_leaves_the_old_store_as_it_was(tmp_path: Path) -> None:
    """Forward-only and all-or-nothing: a step that fails rolls every step back."""
    path = tmp_path / "old.sqlite"
    shutil.copy(V1_STORE, path)
    with sqlite3.connect(path) as raw:  # a table in the way of the migration's new one
        raw.execute("CREATE TABLE patient_seq (x)")
    with pytest.raises(StateStoreError, match="not a readable redflags state database"):
        SqliteStateStore.open(path)
    with sqlite3.connect(path) as raw:
        assert raw.execute("SELECT version FROM schema_version").fetchall() == [(1,)]
        columns = [row[1] for row in raw.execute("PRAGMA table_info(fact)")]
        assert "tenant" not in columns and raw.execute("SELECT COUNT(*) FROM fact").fetchone() == (9,)
