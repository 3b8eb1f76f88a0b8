"""The SQLite state store on real files: records, ledger, outbox rules, errors, crashes, concurrency."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from redflags.state.feedback import SqliteFeedbackStore
from redflags.state.model import (
    ActiveAlert,
    Delivery,
    Evaluated,
    NewDelivery,
    StateStore,
    StateStoreError,
    Transition,
)
from redflags.state.sqlite_store import SCHEMA_VERSION, SqliteStateStore
from redflags.state.stores import open_state as open_store

REPO = Path(__file__).resolve().parents[1]
P1, P2 = "Patient/1", "Patient/2"


@pytest.fixture
def store(tmp_path: Path):
    s = SqliteStateStore.open(tmp_path / "state.db")
    yield s
    s.close()


def alert(patient: str, rule: str, tier: str = "urgent", since: int = 100) -> ActiveAlert:
    return ActiveAlert(
        patient=patient,
        rule=rule,
        tier=tier,
        severity="high",
        flag={"resourceType": "Flag", "identifier": [{"value": f"{rule}-flag"}], "period": {"start": "x"}},
        careplan={"resourceType": "CarePlan", "status": "active"},
        since=since,
        evidence=("Observation/1", "Condition/2"),
    )


def delivery(patient: str, rule: str, change: str = "raised", n: int = 0) -> NewDelivery:
    return NewDelivery(patient, rule, change, {"resourceType": "Bundle", "type": "transaction", "n": n})  # type: ignore[arg-type]


def outbox(store: StateStore, *items: NewDelivery, now: int = 100) -> list[int]:
    """One commit per item (of its patient), so each gets its own evaluation."""
    return [i for d in items for i in store.commit(Evaluated(d.patient, now, deliveries=[d]))]


# -- records -----------------------------------------------------------------------------------


def test_open_store_returns_a_state_store_and_every_record_round_trips(tmp_path: Path) -> None:
    s = open_store(tmp_path / "sub" / "state.db")
    assert isinstance(s, SqliteStateStore)
    a = alert(P1, "cauda-equina")
    t = Transition(P1, "cauda-equina", "raised", "urgent", 100, "service:req-1", ("Observation/1",), "new")
    w = Transition(P1, "gbs", "withdrawn", None, 100, "cli")
    d = NewDelivery(P1, "cauda-equina", "raised", {"resourceType": "Bundle", "entry": [{"a": [1, 2.5]}]})
    facts = {"Observation/1": [{"code": "x", "value": 1.5, "ts": 90, "nested": {"a": [None, True]}}]}
    ids = s.commit(
        Evaluated(P1, 100, facts=facts, active={"cauda-equina": a}, transitions=[t, w], deliveries=[d])
    )
    assert ids == [1]
    s.close()

    s = open_store(tmp_path / "sub" / "state.db")
    assert s.history(P1) == facts["Observation/1"]
    assert s.active(P1) == {"cauda-equina": a}
    assert s.transitions(P1) == [t, w]
    assert s.deliveries() == [
        Delivery(1, P1, "cauda-equina", "raised", d.bundle, "pending", 0, 0, 100),
    ]
    assert s.history(P2) == [] and s.active(P2) == {} and s.transitions(P2) == []
    s.close()
    s.close()  # twice is harmless
    with pytest.raises(StateStoreError, match="closed"):
        s.history(P1)


def test_a_resource_sent_again_replaces_its_facts(store: SqliteStateStore) -> None:
    store.commit(
        Evaluated(P1, 1, facts={"Observation/1": [{"f": "a"}, {"f": "b"}], "Observation/2": [{"f": "c"}]})
    )
    store.commit(Evaluated(P2, 1, facts={"Observation/1": [{"f": "other patient"}]}))
    store.commit(Evaluated(P1, 2, facts={"Observation/1": [{"f": "d"}]}))
    assert store.history(P1) == [{"f": "c"}, {"f": "d"}]  # insertion order: the replaced resource moves last
    store.commit(Evaluated(P1, 3, facts={"Observation/2": []}))  # an empty list erases
    assert store.history(P1) == [{"f": "d"}]
    assert store.history(P2) == [{"f": "other patient"}]


def test_history_excludes_the_resources_being_sent_now(store: SqliteStateStore) -> None:
    store.commit(
        Evaluated(P1, 1, facts={"Observation/1": [{"f": 1}], "Condition/1": [{"f": 2}], "X/1": [{"f": 3}]})
    )
    assert store.history(P1, exclude=["Observation/1", "X/1"]) == [{"f": 2}]
    assert store.history(P1, exclude=()) == [{"f": 1}, {"f": 2}, {"f": 3}]


def test_prune_uses_ts_or_else_the_time_the_fact_was_stored(store: SqliteStateStore) -> None:
    store.commit(Evaluated(P1, 15, facts={"A/1": [{"ts": 10}, {"ts": 20}, {"no": "ts"}, {"ts": "bad"}]}))
    store.commit(Evaluated(P2, 30, facts={"A/1": [{"no": "ts"}]}))
    assert store.prune(16) == 3  # ts 10, and the two without a numeric ts stored at 15
    assert store.history(P1) == [{"ts": 20}]
    assert store.history(P2) == [{"no": "ts"}]
    assert store.prune(16) == 0


def test_the_active_ledger_is_replaced_per_patient(store: SqliteStateStore) -> None:
    store.commit(Evaluated(P1, 1, active={"r1": alert(P1, "r1"), "r2": alert(P1, "r2")}))
    store.commit(Evaluated(P2, 1, active={"r1": alert(P2, "r1")}))
    updated = alert(P1, "r2", tier="emergency")
    store.commit(Evaluated(P1, 2, active={"r2": updated}))
    assert store.active(P1) == {"r2": updated}
    store.commit(Evaluated(P1, 3))
    assert store.active(P1) == {}
    assert store.active(P2) == {"r1": alert(P2, "r1")}


def test_transitions_append_in_order(store: SqliteStateStore) -> None:
    t1 = Transition(P1, "r", "raised", "urgent", 1, "cli")
    t2 = Transition(P2, "r", "raised", "urgent", 2, "cli")
    t3 = Transition(P1, "r", "withdrawn", None, 3, "cli", reason="Observation/1 no longer holds")
    for t in (t1, t2, t3):
        store.commit(Evaluated(t.patient, t.at, transitions=[t]))
    assert store.transitions() == [t1, t2, t3]
    assert store.transitions(P1) == [t1, t3]


def test_forget_erases_everything_of_one_patient(store: SqliteStateStore) -> None:
    for patient in (P1, P2):
        store.commit(
            Evaluated(
                patient,
                1,
                facts={"A/1": [{"f": 1}, {"f": 2}]},
                active={"r": alert(patient, "r")},
                transitions=[Transition(patient, "r", "raised", "urgent", 1, "cli")],
                deliveries=[delivery(patient, "r"), delivery(patient, "q")],
            )
        )
    store.mark_delivered(1, 2)
    assert store.forget(P1, force=True) == 2 + 1 + 1 + 2  # an active alert, a pending item
    assert store.history(P1) == [] and store.active(P1) == {} and store.transitions(P1) == []
    assert {d.patient for d in store.deliveries()} == {P2}
    assert store.history(P2) == [{"f": 1}, {"f": 2}] and len(store.transitions()) == 1
    assert store.forget(P1) == 0
    store.mark_delivered(2, 3)  # in flight when forgotten: a no-op, not an error
    assert store.counts() == {"pending": 2, "delivered": 0, "failed": 0}
    # ids are never reused, even once the newest rows were forgotten
    store.forget(P2, force=True)
    assert outbox(store, delivery(P1, "r")) == [5]


def test_a_bad_evaluation_stores_nothing(store: SqliteStateStore) -> None:
    store.commit(Evaluated(P1, 1, facts={"A/1": [{"f": 1}]}))
    with pytest.raises(StateStoreError, match=r"state\.db: cannot store"):
        store.commit(
            Evaluated(P1, 2, facts={"A/1": [{"f": {1, 2}}]}, deliveries=[delivery(P1, "r")])  # a set
        )
    with pytest.raises(ValueError, match="another patient"):
        store.commit(Evaluated(P1, 2, deliveries=[delivery(P2, "r")]))
    with pytest.raises(ValueError, match="keyed"):
        store.commit(Evaluated(P1, 2, active={"x": alert(P1, "r")}))
    assert store.history(P1) == [{"f": 1}]
    assert store.deliveries() == []


# -- opening -----------------------------------------------------------------------------------


def test_refuses_files_that_are_not_a_state_database(tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("hello, I am not SQLite at all " * 100)
    foreign = tmp_path / "foreign.db"
    with sqlite3.connect(foreign) as conn:
        conn.execute("CREATE TABLE foo (x)")
    feedback = tmp_path / "feedback.db"
    SqliteFeedbackStore.open(feedback).close()  # has a schema_version table of its own
    for path in (text, foreign, feedback):
        with pytest.raises(StateStoreError) as info:
            SqliteStateStore.open(path)
        message = str(info.value)
        assert str(path) in message and "\n" not in message and "not a" in message
    with sqlite3.connect(foreign) as conn:  # left as found: not switched to WAL
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"


def test_refuses_another_schema_version(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    SqliteStateStore.open(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION + 1,))
    newer = rf"schema version \[{SCHEMA_VERSION + 1}\].*reads version {SCHEMA_VERSION}"
    with pytest.raises(StateStoreError, match=newer) as info:
        SqliteStateStore.open(path)
    assert str(path) in str(info.value)


def test_opens_in_wal_with_full_sync(store: SqliteStateStore) -> None:
    conn = store._conn
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert conn.execute("PRAGMA busy_timeout").fetchone()[0] >= 1000


def test_an_unopenable_path_is_a_state_store_error(tmp_path: Path) -> None:
    with pytest.raises(StateStoreError, match="cannot open"):
        SqliteStateStore.open(tmp_path)  # a directory


# -- outbox ------------------------------------------------------------------------------------


def test_counts_always_has_every_status(store: SqliteStateStore) -> None:
    assert store.counts() == {"pending": 0, "delivered": 0, "failed": 0}


def test_due_is_oldest_first_and_one_item_per_patient_and_rule(store: SqliteStateStore) -> None:
    ids = outbox(
        store,
        delivery(P1, "r1", "raised"),  # 1
        delivery(P1, "r1", "updated"),  # 2: waits for 1
        delivery(P1, "r2"),  # 3
        delivery(P2, "r1"),  # 4
        delivery(P1, "r1", "withdrawn"),  # 5: waits for 1 and 2
    )
    assert ids == [1, 2, 3, 4, 5]
    assert [d.id for d in store.due(0)] == [1, 3, 4]  # new items are due at once, whatever the clock
    assert [d.id for d in store.due(100, limit=2)] == [1, 3]

    store.mark_retry(1, next_attempt=200, error="503")
    assert [d.id for d in store.due(150)] == [3, 4]  # 2 still waits behind 1, not yet due
    assert [d.id for d in store.due(200)] == [1, 3, 4]

    store.mark_delivered(1, 201)
    assert [d.id for d in store.due(201)] == [2, 3, 4]
    store.mark_failed(2, "422 Unprocessable", {"resourceType": "OperationOutcome"})
    assert [d.id for d in store.due(201)] == [3, 4, 5]  # a failed item no longer blocks


def test_retry_delivered_and_failed_transitions(store: SqliteStateStore) -> None:
    a, b, c = outbox(store, delivery(P1, "a"), delivery(P1, "b"), delivery(P1, "c"), now=100)
    store.mark_retry(a, 160, "timeout")
    store.mark_retry(a, 220, "503 Service Unavailable")
    (item,) = [d for d in store.deliveries("pending") if d.id == a]
    assert (item.status, item.attempts, item.next_attempt, item.last_error) == (
        "pending",
        2,
        220,
        "503 Service Unavailable",
    )
    store.mark_delivered(a, 230)
    (item,) = store.deliveries("delivered")
    assert (item.id, item.attempts, item.delivered, item.last_error, item.created) == (a, 3, 230, None, 100)

    outcome = {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "invalid"}]}
    store.mark_failed(b, "400 Bad Request", outcome)
    (item,) = store.deliveries("failed")
    assert (item.id, item.attempts, item.last_error, item.outcome) == (b, 1, "400 Bad Request", outcome)

    # marks only move pending items: nothing is resurrected or marked twice
    store.mark_retry(a, 999, "late")
    store.mark_delivered(b, 999)
    store.mark_failed(a, "late", None)
    store.mark_delivered(12345, 1)
    assert store.counts() == {"pending": 1, "delivered": 1, "failed": 1}
    assert [d.id for d in store.deliveries("pending")] == [c]
    assert [d.id for d in store.deliveries()] == [a, b, c]
    assert store.deliveries("delivered")[0].next_attempt == 220


def test_retry_now_makes_every_pending_item_due(store: SqliteStateStore) -> None:
    a, b, c = outbox(store, delivery(P1, "a"), delivery(P1, "b"), delivery(P1, "c"))
    store.mark_retry(a, 1000, "x")
    store.mark_retry(b, 2000, "x")
    store.mark_failed(c, "x", None)
    assert store.due(500) == []
    assert store.retry_now(500) == 2
    assert [d.id for d in store.due(500)] == [a, b]
    assert store.retry_now(500) == 0
    assert store.counts()["failed"] == 1


def test_claim_hands_an_item_to_one_deliverer_for_a_lease(tmp_path: Path) -> None:
    one, two = SqliteStateStore.open(tmp_path / "s.db"), SqliteStateStore.open(tmp_path / "s.db")
    a, b = outbox(one, delivery(P1, "a"), delivery(P2, "a"))
    assert [d.id for d in one.claim(100, limit=1, lease=60)] == [a]
    assert [d.id for d in two.claim(100, lease=60)] == [b]
    assert two.claim(159) == []
    assert [d.id for d in two.claim(160)] == [a, b]  # their deliverers died: due again
    one.close()
    two.close()


# -- sharing -----------------------------------------------------------------------------------


def test_two_store_objects_on_one_file_see_each_others_commits(tmp_path: Path) -> None:
    one, two = SqliteStateStore.open(tmp_path / "s.db"), SqliteStateStore.open(tmp_path / "s.db")
    (item,) = one.commit(Evaluated(P1, 5, facts={"A/1": [{"f": 1}]}, deliveries=[delivery(P1, "r")]))
    assert two.history(P1) == [{"f": 1}]
    assert [d.id for d in two.due(5)] == [item]
    two.mark_delivered(item, 6)
    assert one.counts() == {"pending": 0, "delivered": 1, "failed": 0}
    one.close()
    two.close()


def test_threads_share_one_store(store: SqliteStateStore) -> None:
    def work(n: int) -> None:
        for i in range(20):
            patient = f"Patient/{n}"
            store.commit(
                Evaluated(patient, i, facts={f"A/{i}": [{"i": i}]}, deliveries=[delivery(patient, "r")])
            )
            store.due(i)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert store.counts()["pending"] == 80
    assert all(len(store.history(f"Patient/{n}")) == 20 for n in range(4))


# -- crashes and processes ---------------------------------------------------------------------

_WRITER = """
import sys, time
from pathlib import Path
from redflags.state.model import Evaluated, NewDelivery, Transition
from redflags.state.sqlite_store import SqliteStateStore

path, tag, count, go = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
store = SqliteStateStore.open(path)
while go != "-" and not Path(go).exists():
    time.sleep(0.001)
i = 0
while count < 0 or i < count:
    patient = f"Patient/{tag}-{i % 3}"
    rule = f"{tag}-{i}"
    store.commit(Evaluated(
        patient, i,
        facts={f"Observation/{tag}-{i}": [{"eval": rule, "ts": i, "pad": "x" * 2000}] * 3},
        transitions=[Transition(patient, rule, "raised", "urgent", i, "crash:" + rule)],
        deliveries=[
            NewDelivery(patient, rule, "raised", {"eval": rule, "n": n, "pad": "y" * 20000}) for n in (0, 1)
        ],
    ))
    print(i, flush=True)
    i += 1
store.close()
"""


def _writer(path: Path, tag: str, count: int, go: Path | None = None) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    args = [sys.executable, "-c", _WRITER, str(path), tag, str(count), str(go) if go else "-"]
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _evaluations(store: SqliteStateStore) -> tuple[set[str], dict[str, int], set[str]]:
    """(evaluations with a transition, outbox items per evaluation, evaluations with facts)."""
    transitions = {t.rule for t in store.transitions()}
    items: dict[str, int] = {}
    for d in store.deliveries():
        items[d.bundle["eval"]] = items.get(d.bundle["eval"], 0) + 1
    facts: set[str] = set()
    for patient in {d.patient for d in store.deliveries()} | {t.patient for t in store.transitions()}:
        facts |= {str(f["eval"]) for f in store.history(patient)}
    return transitions, items, facts


def test_a_killed_writer_leaves_only_whole_commits(tmp_path: Path) -> None:
    """Several writers killed at random moments, each after some acknowledged commits."""
    path = tmp_path / "state.db"
    SqliteStateStore.open(path).close()
    rng = random.Random(5)
    for round in range(6):
        tag = f"c{round}"
        proc = _writer(path, tag, -1)
        assert proc.stdout is not None
        acknowledged = -1
        wanted = rng.randint(5, 15)
        deadline = time.monotonic() + 10
        while acknowledged < wanted and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            acknowledged = int(line)
        time.sleep(rng.random() * 0.005)  # land anywhere in a commit, or between two
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert acknowledged >= wanted, proc.stderr.read() if proc.stderr else ""

        with sqlite3.connect(path) as conn:
            assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        store = SqliteStateStore.open(path)
        transitions, items, facts = _evaluations(store)
        store.close()
        assert transitions == set(items) == facts  # never an outbox item without its transition and facts
        assert all(n == 2 for n in items.values())
        mine = {t for t in transitions if t.startswith(f"{tag}-")}
        assert mine == {f"{tag}-{i}" for i in range(len(mine))}  # commits are sequential
        assert len(mine) >= acknowledged + 1  # every acknowledged commit survived


def test_two_processes_commit_to_one_file_at_once(tmp_path: Path) -> None:
    path, go = tmp_path / "state.db", tmp_path / "go"
    SqliteStateStore.open(path).close()
    procs = [_writer(path, tag, 40, go) for tag in ("a", "b")]
    time.sleep(0.3)  # let both open the store and wait
    go.touch()
    for proc in procs:
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        assert out.split()[-1] == "39"
    store = SqliteStateStore.open(path)
    transitions, items, facts = _evaluations(store)
    assert store.counts() == {"pending": 160, "delivered": 0, "failed": 0}
    store.close()
    expected = {f"{tag}-{i}" for tag in ("a", "b") for i in range(40)}
    assert transitions == set(items) == facts == expected
