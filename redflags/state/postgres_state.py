"""The networked ``StateStore``: history, ledger and outbox in PostgreSQL, shared by every host.

The same records and rules as ``sqlite_store`` (its docstring says which choices the protocol
leaves open; they are the same here), on a database any number of ``redflags serve`` replicas
and ``redflags outbox`` processes share. What differs, and why:

- Evaluations of one tenant's patient serialise across hosts: ``patient_lock`` holds a
  session advisory lock (keyed by a hash of tenant and patient) on one pooled connection, and
  the snapshot and commit of that evaluation run on the same connection. ``commit`` takes the
  same lock as a transaction lock and bumps ``patient_seq`` with ``RETURNING``, so a commit
  without the session lock is still refused when the patient changed since its read
  (``StaleRead``): the ledger never raises one alert twice.
- Outbox claims lock the rows they take (``FOR UPDATE SKIP LOCKED``) and postpone them by the
  lease in the same transaction: concurrent claimers get disjoint items without waiting on
  each other, and an item whose deliverer died comes back when its lease ends.
- Reads run in one ``REPEATABLE READ`` transaction (the facts, ledger and sequence number of a
  snapshot belong together).
- A connection the server drops mid-statement (a restart, ``pg_terminate_backend``, a proxy's
  idle cut): a read is tried once more on a fresh connection (reads change nothing, so twice
  is safe), unless it ran on the connection holding the patient lock (the lock went with it);
  a write is not (its transaction was rolled back with the connection; the caller sees
  ``StateStoreUnavailable`` and calls again).
- Errors: ``StateStoreUnavailable`` when the database is unreachable or restarting (503),
  ``StateStoreError`` otherwise; one line naming host and database.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any, ParamSpec, TypeVar, cast

import orjson
import psycopg

from engine.logger import get_logger
from redflags.state import call_deadline
from redflags.state import sql_rows as rows
from redflags.state.keyed_lock import KeyedLocks
from redflags.state.model import (
    DEFAULT_TENANT,
    Evaluated,
    Snapshot,
    StaleRead,
    StateStoreError,
    StateStoreUnavailable,
)
from redflags.state.postgres_db import DEADLINE_MARGIN_S, STATEMENT_TIMEOUT_MS, Database, Schema
from redflags.state.sql_store import SqlStateStore

log = get_logger("redflags.state")

_CHANGE = "CHECK (change IN ('raised', 'updated', 'withdrawn'))"
#: Version 1 is the SQLite store's version 3 (the first release on PostgreSQL has tenants and
#: the outbox's audit trail); later steps are added here as ``2: (...)``, never edited.
SCHEMA = Schema(
    kind="state",
    migrations={
        1: (
            "CREATE TABLE fact (id BIGSERIAL PRIMARY KEY, tenant TEXT NOT NULL, patient TEXT NOT NULL, "
            "ref TEXT NOT NULL, ts BIGINT NOT NULL, body BYTEA NOT NULL)",
            "CREATE INDEX fact_patient ON fact (tenant, patient, ref)",
            "CREATE INDEX fact_ts ON fact (ts)",
            "CREATE TABLE active_alert (tenant TEXT NOT NULL, patient TEXT NOT NULL, rule TEXT NOT NULL, "
            "body BYTEA NOT NULL, PRIMARY KEY (tenant, patient, rule))",
            "CREATE TABLE transition (id BIGSERIAL PRIMARY KEY, tenant TEXT NOT NULL, patient TEXT NOT NULL, "
            f"rule TEXT NOT NULL, change TEXT NOT NULL {_CHANGE}, tier TEXT, at BIGINT NOT NULL, "
            "actor TEXT NOT NULL, evidence BYTEA NOT NULL, reason TEXT NOT NULL)",
            "CREATE INDEX transition_patient ON transition (tenant, patient, id)",
            "CREATE TABLE outbox (id BIGSERIAL PRIMARY KEY, tenant TEXT NOT NULL, patient TEXT NOT NULL, "
            f"rule TEXT NOT NULL, change TEXT NOT NULL {_CHANGE}, bundle BYTEA NOT NULL, "
            "status TEXT NOT NULL CHECK (status IN ('pending', 'delivered', 'failed')), "
            "attempts INTEGER NOT NULL DEFAULT 0, next_attempt BIGINT NOT NULL, created BIGINT NOT NULL, "
            "delivered BIGINT, last_error TEXT, outcome BYTEA, last_status TEXT)",
            "CREATE INDEX outbox_status ON outbox (status, id)",
            "CREATE INDEX outbox_key ON outbox (tenant, patient, rule, status, id)",
            "CREATE TABLE patient_seq (tenant TEXT NOT NULL, patient TEXT NOT NULL, seq BIGINT NOT NULL, "
            "PRIMARY KEY (tenant, patient))",
            "CREATE TABLE outbox_event (id BIGSERIAL PRIMARY KEY, item BIGINT NOT NULL, "
            "tenant TEXT NOT NULL, patient TEXT NOT NULL, rule TEXT NOT NULL, at BIGINT NOT NULL, "
            "from_status TEXT NOT NULL, "
            "to_status TEXT NOT NULL, actor TEXT NOT NULL, reason TEXT NOT NULL)",
            "CREATE INDEX outbox_event_item ON outbox_event (item, id)",
            "CREATE INDEX outbox_event_patient ON outbox_event (tenant, patient)",
        ),
    },
)
SCHEMA_VERSION = SCHEMA.version
_SQL = rows.POSTGRES
P = ParamSpec("P")
T = TypeVar("T")
#: The reads (one read-only transaction each) tried again once on a fresh connection when the
#: server dropped theirs mid-statement.
RETRIED_READS = (
    "snapshot",
    "facts_by_resource",
    "active",
    "transitions",
    "tenants",
    "due",
    "due_ids",
    "delivery",
    "next_due",
    "counts",
    "deliveries",
    "oldest_pending",
    "outbox_events",
)
#: The advisory lock of one tenant's patient (both the session and the transaction form).
_PATIENT_KEY = "hashtextextended(%s || chr(31) || %s, 7)"


class PostgresStateStore(SqlStateStore):
    """``StateStore`` on a PostgreSQL database (see the module docstring)."""

    _SQL = rows.POSTGRES
    _FOR_UPDATE = " FOR UPDATE"
    #: A claim locks the rows it takes and passes over another claimer's, without waiting.
    _CLAIM = " FOR UPDATE OF o SKIP LOCKED"

    def __init__(self, db: Database) -> None:
        self._db = db
        self._held = threading.local()  # the connection holding this thread's patient lock
        self._patients = KeyedLocks()
        self.path = db.where  # what messages and ``redflags`` commands name

    @classmethod
    def open(cls, url: str, *, create: bool = True, max_size: int = 8) -> PostgresStateStore:
        """Connect, create or migrate the schema (``create`` is moot: a database is always there)."""
        db = Database(url, "state", StateStoreError, StateStoreUnavailable, max_size=max_size)
        migrated = db.open(SCHEMA)
        if migrated is not None:
            log.info("state.migrated", from_version=migrated, to_version=SCHEMA_VERSION)
        return cls(db)

    # -- plumbing -------------------------------------------------------------------------
    @contextmanager
    def _connection(self, what: str) -> Iterator[psycopg.Connection[Any]]:
        held = getattr(self._held, "conn", None)
        if held is not None:
            try:
                yield held
            except psycopg.Error as exc:
                raise self._db.failure(exc, what) from None
            return
        with self._db.connection(what) as conn:
            yield conn

    @contextmanager
    def _transaction(self, what: str, isolation: str = "") -> Iterator[psycopg.Connection[Any]]:
        with self._connection(what) as conn:
            try:
                with conn.transaction():
                    if isolation:
                        conn.execute(f"SET TRANSACTION ISOLATION LEVEL {isolation}")
                    yield conn
            except (orjson.JSONEncodeError, orjson.JSONDecodeError) as exc:
                why = rows.one_line(exc)
                raise StateStoreError(f"{self.path}: state database {what} failed: {why}") from None

    def _read(self) -> AbstractContextManager[psycopg.Connection[Any]]:
        return self._transaction("read", "REPEATABLE READ READ ONLY")

    def _write(self) -> AbstractContextManager[psycopg.Connection[Any]]:
        return self._transaction("write")

    @contextmanager
    def patient_lock(self, patient: str, *, tenant: str = DEFAULT_TENANT) -> Iterator[None]:
        """One pooled connection holds a session advisory lock of the patient until the block
        ends; this thread's reads and commit inside run on it. Threads of this process queue
        in the process first (one connection per patient, not one per waiting thread)."""
        if getattr(self._held, "conn", None) is not None:
            raise StateStoreError("patient_lock is not reentrant")
        with self._patients.hold((tenant, patient)), self._db.connection("lock") as conn:
            _wait_for_lock(conn, (tenant, patient))
            self._held.conn = conn
            try:
                yield
            finally:
                self._held.conn = None
                if not conn.closed:
                    try:
                        conn.execute(f"SELECT pg_advisory_unlock({_PATIENT_KEY})", (tenant, patient))
                    except psycopg.Error:
                        conn.close()  # the server drops a closed session's locks

    def snapshot(self, patient: str, *, tenant: str = DEFAULT_TENANT) -> Snapshot:
        with self._read() as conn:
            with conn.pipeline():  # the three reads in one round trip
                facts = conn.execute(_FACTS, (tenant, patient))
                active = conn.execute(_ACTIVE, (tenant, patient))
                seq = conn.execute(_SEQ, (tenant, patient))
            stored, ledger = rows.facts_of(facts.fetchall()), rows.active_of(active.fetchall())
            return Snapshot(stored, ledger, rows.seq_of(seq.fetchone()))

    # -- one evaluation -------------------------------------------------------------------
    def commit(self, evaluated: Evaluated) -> list[int]:
        """All or nothing; the new outbox ids in the order of ``evaluated.deliveries``."""
        encoded = rows.encode(evaluated, self.path)
        key = (evaluated.tenant, evaluated.patient)
        with self._write() as conn:
            # one round trip: every statement is sent at once (pipeline), the sequence number
            # checked after; a stale read then rolls the whole transaction back
            with conn.pipeline(), conn.cursor() as cur:
                conn.execute(f"SELECT pg_advisory_xact_lock({_PATIENT_KEY})", key)
                bumped = conn.execute(
                    "INSERT INTO patient_seq (tenant, patient, seq) VALUES (%s, %s, 1) "
                    "ON CONFLICT (tenant, patient) DO UPDATE SET seq = patient_seq.seq + 1 RETURNING seq",
                    key,
                )
                for ref, facts in encoded.facts:
                    cur.execute(_DELETE_FACTS, (*key, ref))
                    cur.executemany(_INSERT_FACT, [(*key, ref, ts, body) for ts, body in facts])
                cur.execute(_DELETE_ACTIVE, key)
                cur.executemany(_INSERT_ACTIVE, [(*key, rule, body) for rule, body in encoded.active])
                cur.executemany(_INSERT_TRANSITION, [(*key, *row) for row in encoded.transitions])
                added = [
                    conn.execute(_INSERT_OUTBOX, (*key, rule, change, bundle, evaluated.now))
                    for rule, change, bundle in encoded.deliveries
                ]
            row = bumped.fetchone()
            if evaluated.seen is not None and (row is None or int(row[0]) != evaluated.seen + 1):
                raise StaleRead(f"{self.path}: the patient changed after this evaluation read it")
            return [int(cast(tuple[int], item.fetchone())[0]) for item in added]

    def ping(self) -> None:
        self._db.ping()

    def close(self) -> None:
        self._db.close()

    # -- hooks of SqlStateStore -------------------------------------------------------------
    def _lock_patient(self, conn: psycopg.Connection[Any], tenant: str, patient: str) -> None:
        conn.execute(f"SELECT pg_advisory_xact_lock({_PATIENT_KEY})", (tenant, patient))

    def _executemany(self, conn: psycopg.Connection[Any], sql: str, args: list[tuple[object, ...]]) -> None:
        with conn.cursor() as cur:
            cur.executemany(sql, args)

    def _postpone(self, conn: psycopg.Connection[Any], ids: Sequence[int], until: int) -> None:
        if ids:
            conn.execute(
                "UPDATE outbox SET next_attempt = %s WHERE id = ANY(%s) AND status = 'pending'",
                (until, list(ids)),
            )

    def _record_events(
        self, conn: psycopg.Connection[Any], items: Sequence[int], audit: tuple[object, ...]
    ) -> None:
        """One audit row per item, in one statement."""
        if items:
            conn.execute(
                _SQL.sql(rows.RECORD_EVENTS) + "id = ANY(%s) ORDER BY id",
                (*audit, list(items)),
            )

    def _chosen(self, items: Sequence[int]) -> tuple[str, object]:
        return " AND id = ANY(%s)", list(items)


def _wait_for_lock(conn: psycopg.Connection[Any], key: tuple[str, str]) -> None:
    """Take the patient's session lock, waiting for another replica's evaluation of the patient
    at most the statement timeout, or less when the call's deadline is nearer (then the wait is
    bounded in a transaction of its own: the session lock outlives it)."""
    left = call_deadline.remaining()
    if left is None or left - DEADLINE_MARGIN_S >= STATEMENT_TIMEOUT_MS / 1000:
        conn.execute(f"SELECT pg_advisory_lock({_PATIENT_KEY})", key)
        return
    wait_ms = max(int((left - DEADLINE_MARGIN_S) * 1000), 1)
    with conn.transaction():
        conn.execute("SELECT set_config('statement_timeout', %s, true)", (str(wait_ms),))
        conn.execute(f"SELECT pg_advisory_lock({_PATIENT_KEY})", key)


def _read_again_once(read: Callable[P, T]) -> Callable[P, T]:
    """``read``, called once more when the server dropped its connection mid-statement (not
    under the patient lock: that connection held the lock, which is gone with it)."""

    @functools.wraps(read)
    def run(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return read(*args, **kwargs)
        except StateStoreUnavailable as exc:
            store = cast(PostgresStateStore, args[0])
            if not getattr(exc, "connection_lost", False) or getattr(store._held, "conn", None) is not None:
                raise
            log.warning("state.read_retried", read=read.__name__, reason="connection lost")
            return read(*args, **kwargs)

    return run


for _name in RETRIED_READS:
    setattr(PostgresStateStore, _name, _read_again_once(getattr(PostgresStateStore, _name)))


_FACTS = _SQL.sql(rows.FACTS)
_ACTIVE = _SQL.sql(rows.ACTIVE)
_SEQ = _SQL.sql(rows.SEQ)
_DELETE_FACTS = _SQL.sql(rows.DELETE_FACTS)
_INSERT_FACT = _SQL.sql(rows.INSERT_FACT)
_DELETE_ACTIVE = _SQL.sql(rows.DELETE_ACTIVE)
_INSERT_ACTIVE = _SQL.sql(rows.INSERT_ACTIVE)
_INSERT_TRANSITION = _SQL.sql(rows.INSERT_TRANSITION)
_INSERT_OUTBOX = _SQL.sql(rows.INSERT_OUTBOX) + " RETURNING id"
