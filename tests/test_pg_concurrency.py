"""The stores on PostgreSQL across connections, threads and processes: outbox claims, the
patient lock, jti replays, a database restart (tests/pg_server.py runs the server)."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import psycopg
import pytest

from redflags.state import postgres_db
from redflags.state.model import Evaluated, StateStoreUnavailable, StoreUnavailable
from redflags.state.stores import open_feedback, open_jti, open_state

from .conftest import FIXTURES
from .pg_server import PgServer
from .test_state_store import delivery

REPO = Path(__file__).resolve().parents[1]
WAIT_S = 60
HISTORY = FIXTURES / "history"
GBS = "guillain_barre_syndrome"


def test_concurrent_claimers_get_disjoint_items_and_all_of_them(pg_url: str) -> None:
    with open_state(pg_url) as setup:
        for n in range(120):
            setup.commit(Evaluated(f"Patient/{n}", 1, deliveries=[delivery(f"Patient/{n}", "r")]))
    claimed: list[list[int]] = [[] for _ in range(4)]
    errors: list[BaseException] = []

    def claimer(k: int) -> None:
        store = open_state(pg_url)
        try:
            while ids := store.claim_ids(10, limit=7, lease=600):
                claimed[k].extend(ids)
                for item in ids:
                    store.mark_delivered(item, 11)
        except BaseException as exc:
            errors.append(exc)
        finally:
            store.close()

    threads = [threading.Thread(target=claimer, args=(k,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT_S)
    assert not errors, errors
    every = [i for ids in claimed for i in ids]
    assert len(every) == len(set(every)) == 120  # none twice, none left
    with open_state(pg_url) as store:
        assert store.counts() == {"pending": 0, "delivered": 120, "failed": 0}


def _waiting_advisory_locks(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
        ).fetchone()
    return int(row[0]) if row else 0


def test_the_patient_lock_makes_a_second_store_wait(pg_url: str) -> None:
    one, two = open_state(pg_url), open_state(pg_url)
    acquired = threading.Event()
    release = threading.Event()

    def second() -> None:
        with two.patient_lock("Patient/1", tenant="t"):
            acquired.set()

    try:
        with one.patient_lock("Patient/1", tenant="t"):
            thread = threading.Thread(target=second)
            thread.start()
            for _ in range(600):  # until the server shows the second one waiting (bounded)
                if _waiting_advisory_locks(pg_url) == 1:
                    break
            assert _waiting_advisory_locks(pg_url) == 1 and not acquired.is_set()
            with two.patient_lock("Patient/2", tenant="t"):  # another patient does not wait
                release.set()
        thread.join(WAIT_S)
        assert acquired.is_set() and release.is_set()
    finally:
        one.close()
        two.close()


EVALUATE = """
import sys
from pathlib import Path
from fhir_adapters.intake import read_path
from fhir_adapters.times import parse_now
from redflags.pipeline import Pipeline
from redflags.state.stores import open_state
from redflags.stateful import Memory

url, source, now, name = sys.argv[1:5]
store = open_state(url)
tracker = Pipeline(memory=Memory(store, actor=name))
sys.stdin.readline()  # both processes start evaluating when the test says go
results = list(tracker.evaluate(read_path(Path(source)), parse_now(now)))
print(",".join(sorted(a.rule for r in results for a in r.alerts)))
store.close()
"""


def test_two_processes_evaluating_one_patient_raise_the_alert_once(pg_url: str) -> None:
    run = [sys.executable, "-c", EVALUATE, pg_url]
    monday = subprocess.run(
        [*run, str(HISTORY / "gbs-monday.json"), "2025-03-10T12:00:00Z", "monday"],
        input="go\n",
        capture_output=True,
        text=True,
        timeout=WAIT_S,
        cwd=REPO,
    )
    assert monday.returncode == 0, monday.stderr
    wednesday = [*run, str(HISTORY / "gbs-wednesday.json"), "2025-03-12T12:00:00Z"]
    procs = [
        subprocess.Popen(
            [*wednesday, f"p{k}"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO
        )
        for k in range(2)
    ]
    outs = [p.communicate("go\n", timeout=WAIT_S)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    assert [o.strip().splitlines()[-1] for o in outs] == [GBS, GBS]  # both see the alert ...
    with open_state(pg_url) as store:
        assert [t.change for t in store.transitions("Patient/v03")] == ["raised"]  # ... raised once
        assert [d.rule for d in store.deliveries()] == [GBS]
        assert list(store.active("Patient/v03")) == [GBS]


JTI = """
import sys
from redflags.state.stores import open_jti
store = open_jti(sys.argv[1])
print(store.first_use("iss", "token-1", 4e9))
"""


def test_a_jti_seen_by_one_process_is_refused_by_another(pg_url: str) -> None:
    here = open_jti(pg_url)
    try:
        assert here.first_use("iss", "token-1", 4e9) is True
        other = subprocess.run(
            [sys.executable, "-c", JTI, pg_url], capture_output=True, text=True, timeout=WAIT_S, cwd=REPO
        )
        assert other.returncode == 0, other.stderr
        assert other.stdout.strip() == "False"
        assert here.first_use("iss", "token-2", 4e9) is True
        assert here.first_use("iss", "token-1", 4e9) is False
        assert here.first_use("iss", "expired", 1.0) is True  # an expired id is taken over
        assert here.first_use("iss", "expired", 4e9) is True
    finally:
        here.close()  # type: ignore[attr-defined]


def test_a_database_restart_fails_calls_cleanly_and_the_pool_recovers(
    pg_server: PgServer, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(postgres_db, "WAIT_S", 2.0)
    store, feedback = open_state(pg_url), open_feedback(pg_url)
    try:
        store.commit(Evaluated("Patient/1", 1, facts={"A/1": [{"f": 1}]}))
        pg_server.restart()  # every pooled connection is dead now
        assert store.history("Patient/1") == [{"f": 1}]  # replaced when handed out, no error
        assert feedback.report().rules == ()
        pg_server.stop()
        try:
            with pytest.raises(StateStoreUnavailable) as down:
                store.history("Patient/1")
            assert "127.0.0.1" in str(down.value) and "\n" not in str(down.value)
            with pytest.raises(StoreUnavailable):
                feedback.report()
        finally:
            pg_server.start()
        assert store.history("Patient/1") == [{"f": 1}]  # the pool recovered by itself
    finally:
        store.close()
        feedback.close()


def test_an_unreachable_database_at_open_is_one_line_without_the_password() -> None:
    with socket_closed_port() as port:
        with pytest.raises(StateStoreUnavailable) as raised:
            open_state(f"postgresql://rf:s3cret@127.0.0.1:{port}/site")
    text = str(raised.value)
    assert f"127.0.0.1:{port}/site" in text and "s3cret" not in text and "\n" not in text


class socket_closed_port:
    """A loopback port nothing listens on (bound, never listened, so connects are refused)."""

    def __enter__(self) -> int:
        import socket

        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        return int(self._sock.getsockname()[1])

    def __exit__(self, *_: object) -> None:
        self._sock.close()
