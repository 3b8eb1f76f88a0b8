"""A connection the server drops mid-statement (``pg_terminate_backend`` from another
connection, as a restart or a DBA would): a read is tried once more on a fresh connection and
succeeds; a write in a transaction is refused as unavailable with nothing half-written, and
the next call works (tests/pg_server.py runs the server).

The store's statement is held mid-way by a table lock the test takes, so the test knows its
backend is inside that statement when it terminates it (found in ``pg_stat_activity``)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import psycopg
import pytest

from redflags.state.model import Evaluated, StateStoreUnavailable
from redflags.state.stores import open_state

from .test_state_store import delivery

BOUND_S = 30.0
APP = "redflags-state"  # the state store's application_name


@contextmanager
def locked(url: str, table: str) -> Iterator[psycopg.Connection]:
    """``table`` locked against everyone until the block ends (the lock is then released)."""
    with psycopg.connect(url) as conn:
        conn.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
        try:
            yield conn
        finally:
            conn.rollback()


def blocked_backend(url: str, other_than: set[int]) -> int:
    """The pid of the store's backend waiting on a lock (polled: the condition, not a time)."""
    end = time.monotonic() + BOUND_S
    with psycopg.connect(url, autocommit=True) as conn:
        while time.monotonic() < end:
            rows = conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE application_name = %s AND wait_event_type = 'Lock'",
                (APP,),
            ).fetchall()
            found = [int(r[0]) for r in rows if int(r[0]) not in other_than]
            if found:
                return found[0]
            time.sleep(0.01)
    raise AssertionError("the store's statement never waited on the lock")


def terminate(url: str, pid: int) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        assert conn.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone() == (True,)


class Call(threading.Thread):
    """``fn()`` in a thread; ``result()`` returns what it returned or raises what it raised."""

    def __init__(self, fn: Callable[[], object]) -> None:
        super().__init__(daemon=True)
        self.fn, self.value, self.error = fn, None, None

    def run(self) -> None:
        try:
            self.value = self.fn()
        except BaseException as exc:  # handed to the test
            self.error = exc

    def result(self) -> object:
        self.join(BOUND_S)
        assert not self.is_alive(), "the call hung"
        if self.error is not None:
            raise self.error
        return self.value


@pytest.mark.parametrize(
    ("table", "read"),
    [
        ("outbox", lambda store: [d.rule for d in store.deliveries()]),
        ("patient_seq", lambda store: store.snapshot("Patient/1").seq),
        ("outbox", lambda store: store.counts()["pending"]),
    ],
)
def test_a_read_whose_connection_is_dropped_is_read_again_once(pg_url: str, table: str, read) -> None:
    store = open_state(pg_url)
    try:
        store.commit(Evaluated("Patient/1", 100, deliveries=[delivery("Patient/1", "r")]))
        expected = read(store)
        with locked(pg_url, table):
            call = Call(lambda: read(store))
            call.start()
            first = blocked_backend(pg_url, set())
            terminate(pg_url, first)
            second = blocked_backend(pg_url, {first})  # read again, on a fresh connection
        assert second != first
        assert call.result() == expected
    finally:
        store.close()


def test_a_read_dropped_twice_is_unavailable(pg_url: str) -> None:
    """Once, not forever: the second loss is the caller's 503."""
    store = open_state(pg_url)
    try:
        with locked(pg_url, "outbox"):
            call = Call(store.deliveries)
            call.start()
            first = blocked_backend(pg_url, set())
            terminate(pg_url, first)
            terminate(pg_url, blocked_backend(pg_url, {first}))
            with pytest.raises(StateStoreUnavailable):
                call.result()
        assert store.deliveries() == []  # and the next call works
    finally:
        store.close()


def test_a_write_whose_connection_is_dropped_writes_nothing_and_the_next_one_works(pg_url: str) -> None:
    store = open_state(pg_url)
    try:
        store.commit(Evaluated("Patient/1", 100, deliveries=[delivery("Patient/1", "r")]))
        before = store.snapshot("Patient/1"), store.counts(), store.transitions()
        second = Evaluated("Patient/1", 200, deliveries=[delivery("Patient/1", "r", "updated")], seen=1)
        with locked(pg_url, "outbox"):  # the commit's seq bump and facts are written, its outbox row waits
            call = Call(lambda: store.commit(second))
            call.start()
            terminate(pg_url, blocked_backend(pg_url, set()))
            with pytest.raises(StateStoreUnavailable):
                call.result()
        assert (
            store.snapshot("Patient/1"),
            store.counts(),
            store.transitions(),
        ) == before  # nothing half-done
        assert len(store.commit(second)) == 1  # the same evaluation commits on a fresh connection
        assert store.snapshot("Patient/1").seq == 2 and store.counts()["pending"] == 2
    finally:
        store.close()


def test_a_read_under_the_patient_lock_is_not_read_again(pg_url: str) -> None:
    """The lock went with the connection: reading again elsewhere would read unlocked."""
    store = open_state(pg_url)
    try:

        def locked_read() -> object:
            with store.patient_lock("Patient/1"):
                return store.snapshot("Patient/1")

        with locked(pg_url, "patient_seq"):
            call = Call(locked_read)
            call.start()
            terminate(pg_url, blocked_backend(pg_url, set()))
            with pytest.raises(StateStoreUnavailable):
                call.result()
        assert store.snapshot("Patient/1").seq == 0
    finally:
        store.close()
