"""The PostgreSQL stores' pools: sized by the URL's ``pool_*`` parameters (bad ones are one line,
exit 2), and a call waiting for a connection gives up as unavailable within its deadline
(``redflags.state.call_deadline``), never after (tests/pg_server.py runs the server)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from redflags.state import call_deadline
from redflags.state.location import UnsupportedLocation
from redflags.state.model import StateStoreUnavailable
from redflags.state.postgres_db import where
from redflags.state.postgres_url import InvalidPoolSetting, PoolSettings, split
from redflags.state.stores import open_feedback, open_state

from .conftest import ROOT

#: Bound on a call that must give up at its deadline: far above it (a hang detector, not a
#: timing assertion), far below the pool's own 10 s wait that the call would otherwise take.
HANG_S = 8.0


def backends(url: str, name: str) -> list[int]:
    """Pids of the server's backends of this database whose application_name is ``name``."""
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND application_name = %s",
            (name,),
        ).fetchall()
    return [int(row[0]) for row in rows]


def test_pool_parameters_are_read_and_taken_out_of_the_url() -> None:
    url = "postgresql://rf:pw@db:5432/site?sslmode=require&pool_max=16&options=-c%20x%3D1&pool_min=2"
    assert split(url) == (
        "postgresql://rf:pw@db:5432/site?sslmode=require&options=-c%20x%3D1",
        PoolSettings(min_size=2, max_size=16),
    )
    assert split("postgresql://db/site?pool_wait=2.5") == ("postgresql://db/site", PoolSettings(wait_s=2.5))
    assert split("postgresql://db/site") == ("postgresql://db/site", PoolSettings())
    assert where("postgresql://rf:pw@db:6432/site?pool_max=4&sslmode=require") == "db:6432/site"
    assert PoolSettings(max_size=2).sizes(8) == (1, 2)
    assert PoolSettings(min_size=3).sizes(2) == (2, 2)  # a store with a smaller default is not grown


@pytest.mark.parametrize(
    "query",
    ["pool_max=0", "pool_max=abc", "pool_max=8&pool_max=9", "pool_min=5&pool_max=2", "pool_size=4",
     "pool_wait=nan", "pool_wait=-1", "pool_max=99999"],
)  # fmt: skip
def test_a_bad_pool_parameter_is_one_line_naming_it(query: str) -> None:
    with pytest.raises(InvalidPoolSetting) as raised:
        split(f"postgresql://rf:s3cret@db/site?{query}")
    assert "\n" not in str(raised.value) and "pool_" in str(raised.value)
    with pytest.raises(UnsupportedLocation) as refused:
        open_state(f"postgresql://rf:s3cret@db/site?{query}")
    assert "s3cret" not in str(refused.value)


@pytest.mark.parametrize("args", [("outbox", "status", "--state"), ("feedback", "report", "--state")])
def test_the_cli_refuses_a_bad_pool_parameter_with_exit_2(args: tuple[str, ...], tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "redflags.cli",
            *args,
            "postgresql://rf:s3cret@127.0.0.1:1/site?pool_max=lots",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT), "XDG_STATE_HOME": str(tmp_path / "xdg")},
    )
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, done.stderr
    assert len(lines) == 1 and "pool_max='lots'" in lines[0] and "s3cret" not in done.stderr
    assert os.listdir(tmp_path) == []


def test_pool_min_opens_that_many_connections_and_pool_max_caps_them(pg_url: str) -> None:
    store = open_state(f"{pg_url}?pool_min=3&pool_max=3&application_name=rf-sized")
    try:
        db = store._db  # type: ignore[attr-defined]
        db._pool.wait(timeout=30)  # until pool_min connections are open
        assert len(backends(pg_url, "rf-sized")) == 3
        with db.connection(), db.connection(), db.connection():
            with pytest.raises(StateStoreUnavailable, match="no free connection"), call_deadline.within(1.0):
                store.counts()
        assert len(backends(pg_url, "rf-sized")) == 3  # never a fourth
    finally:
        store.close()


def _bounded(call: Callable[[], object]) -> BaseException | None:
    """Run ``call`` in a thread; what it raised (None: returned), or fail if it hangs."""
    raised: list[BaseException | None] = []

    def run() -> None:
        try:
            call()
            raised.append(None)
        except BaseException as exc:
            raised.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(HANG_S)
    assert raised, f"the call still waited after {HANG_S} s: its deadline was 1 s"
    return raised[0]


def test_a_saturated_pool_gives_up_within_the_call_deadline(pg_url: str) -> None:
    """Every connection of the pool held (by the test): a call with 1 s left is refused as
    unavailable by then, instead of waiting the pool's 10 s past the deadline."""
    store = open_state(f"{pg_url}?pool_max=1")
    try:
        with store._db.connection():  # type: ignore[attr-defined]  # the only connection, held

            def late_read() -> None:
                with call_deadline.within(1.0):
                    store.snapshot("Patient/1")

            raised = _bounded(late_read)
        assert isinstance(raised, StateStoreUnavailable), raised
        assert "no free connection in the pool" in str(raised)
        assert store.snapshot("Patient/1").seq == 0  # the pool serves again once one is free
    finally:
        store.close()


def test_a_call_past_its_deadline_is_refused_without_waiting(pg_url: str) -> None:
    feedback = open_feedback(f"{pg_url}?pool_max=1")
    try:

        def late_report() -> None:
            with call_deadline.until(0.0):  # long gone
                feedback.report()

        with feedback._db.connection():  # type: ignore[attr-defined]
            raised = _bounded(late_report)
        assert type(raised).__name__ == "FeedbackStoreUnavailable", raised
    finally:
        feedback.close()


def test_pool_wait_bounds_a_call_without_a_deadline(pg_url: str) -> None:
    store = open_state(f"{pg_url}?pool_max=1&pool_wait=0.5")
    try:
        with store._db.connection():  # type: ignore[attr-defined]
            raised = _bounded(store.counts)
        assert isinstance(raised, StateStoreUnavailable), raised
    finally:
        store.close()


def test_a_patient_locked_at_another_replica_is_waited_for_only_until_the_deadline(pg_url: str) -> None:
    """The other replica's evaluation holds the patient: a call with 1 s left gives up by then
    (the lock's own bound is the 15 s statement timeout), and the lock works after."""
    other, store = open_state(pg_url), open_state(pg_url)
    try:

        def late_lock() -> None:
            with call_deadline.within(1.0), store.patient_lock("Patient/1"):
                pass

        with other.patient_lock("Patient/1"):
            raised = _bounded(late_lock)
        assert isinstance(raised, StateStoreUnavailable), raised
        with call_deadline.within(5.0), store.patient_lock("Patient/1"):
            assert store.snapshot("Patient/1").seq == 0  # the bounded wait left a usable connection
        with store.patient_lock("Patient/2"):  # and without a deadline as before
            pass
    finally:
        other.close()
        store.close()
