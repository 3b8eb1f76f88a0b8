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
- Errors: ``StateStoreUnavailable`` when the database is unreachable or restarting (503),
  ``StateStoreError`` otherwise; one line naming host and database.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from types import TracebackType
from typing import Any, cast

import orjson
import psycopg
import structlog

from redflags.state import sql_rows as rows
from redflags.state.keyed_lock import KeyedLocks
from redflags.state.model import (
    DEFAULT_TENANT,
    ActiveAlert,
    Delivery,
    Evaluated,
    Fact,
    OutboxEvent,
    Snapshot,
    StaleRead,
    StateStoreError,
    StateStoreUnavailable,
    Status,
    Transition,
)
from redflags.state.postgres_db import Database, Schema

log = structlog.get_logger("redflags.state")

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
#: The advisory lock of one tenant's patient (both the session and the transaction form).
_PATIENT_KEY = "hashtextextended(%s || chr(31) || %s, 7)"


def _due_sql(columns: str, tenant: str | None, *, claim: bool = False) -> str:
    """``sql_rows.due_sql``; a claim locks the rows it takes, passing over another claimer's."""
    sql = _SQL.sql(rows.due_sql(columns, of_tenant=tenant is not None))
    return sql + (" FOR UPDATE OF o SKIP LOCKED" if claim else "")


class PostgresStateStore:
    """``StateStore`` on a PostgreSQL database (see the module docstring)."""

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
            conn.execute(f"SELECT pg_advisory_lock({_PATIENT_KEY})", (tenant, patient))
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

    # -- history --------------------------------------------------------------------------
    def history(
        self, patient: str, exclude: Sequence[str] = (), *, tenant: str = DEFAULT_TENANT
    ) -> list[Fact]:
        skip = set(exclude)
        stored = self.facts_by_resource(patient, tenant=tenant)
        return [f for ref, facts in stored.items() if ref not in skip for f in facts]

    def facts_by_resource(self, patient: str, *, tenant: str = DEFAULT_TENANT) -> dict[str, list[Fact]]:
        with self._read() as conn:
            return _facts(conn, tenant, patient)

    def snapshot(self, patient: str, *, tenant: str = DEFAULT_TENANT) -> Snapshot:
        with self._read() as conn:
            with conn.pipeline():  # the three reads in one round trip
                facts = conn.execute(_FACTS, (tenant, patient))
                active = conn.execute(_ACTIVE, (tenant, patient))
                seq = conn.execute(_SEQ, (tenant, patient))
            stored, ledger = rows.facts_of(facts.fetchall()), rows.active_of(active.fetchall())
            return Snapshot(stored, ledger, rows.seq_of(seq.fetchone()))

    def forget(self, patient: str, *, tenant: str = DEFAULT_TENANT) -> int:
        with self._write() as conn:
            conn.execute(f"SELECT pg_advisory_xact_lock({_PATIENT_KEY})", (tenant, patient))
            removed = 0
            for table in rows.PATIENT_TABLES:
                deleted = conn.execute(
                    f"DELETE FROM {table} WHERE tenant = %s AND patient = %s",
                    (tenant, patient),
                )
                removed += deleted.rowcount if table not in rows.BOOKKEEPING else 0
        log.info("state.forget", rows=removed)
        return removed

    def tenants(self, patient: str | None = None) -> dict[str, int]:
        where, args = _SQL.where(("patient", patient))
        with self._read() as conn:
            found = conn.execute(_SQL.sql(rows.TENANTS.replace("{where}", where)), args).fetchall()
        return {tenant: int(n) for tenant, n in found}

    def prune(self, before: int, *, tenant: str | None = None) -> int:
        where, args = _SQL.and_where(("tenant", tenant))
        with self._write() as conn:
            removed = conn.execute(_SQL.sql(rows.PRUNE) + where, (before, *args)).rowcount
        log.info("state.prune", before=before, facts=removed)
        return removed

    # -- ledger ---------------------------------------------------------------------------
    def active(self, patient: str, *, tenant: str = DEFAULT_TENANT) -> dict[str, ActiveAlert]:
        with self._read() as conn:
            return _active(conn, tenant, patient)

    def transitions(self, patient: str | None = None, *, tenant: str | None = None) -> list[Transition]:
        where, args = _SQL.where(("tenant", tenant), ("patient", patient))
        with self._read() as conn:
            found = conn.execute(rows.TRANSITIONS + where + " ORDER BY id", args).fetchall()
        return rows.transitions_of(found)

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

    # -- outbox ---------------------------------------------------------------------------
    def due(self, now: int, limit: int = 100, *, tenant: str | None = None) -> list[Delivery]:
        with self._read() as conn:
            found = conn.execute(_due_sql(rows.OUTBOX_COLUMNS, tenant), rows.due_args(now, limit, tenant))
            return [rows.delivery(row) for row in found.fetchall()]

    def claim(
        self, now: int, limit: int = 100, lease: int = 60, *, tenant: str | None = None
    ) -> list[Delivery]:
        """``due``, locked (``SKIP LOCKED``: another claimer's rows are passed over, not waited
        for) and postponed by ``lease`` seconds in the same transaction."""
        with self._write() as conn:
            sql = _due_sql(rows.OUTBOX_COLUMNS, tenant, claim=True)
            items = [rows.delivery(row) for row in conn.execute(sql, rows.due_args(now, limit, tenant))]
            _postpone(conn, [item.id for item in items], now + lease)
        return items

    def mark_delivered(self, item: int, now: int, last_status: str | None = "delivered") -> None:
        self._mark(
            item,
            "delivered",
            _MARK_DELIVERED,
            (now, last_status, item),
            event=("pending", "delivered", "delivery", ""),
        )

    def mark_retry(
        self, item: int, next_attempt: int, error: str, last_status: str | None = None, audited: bool = False
    ) -> None:
        self._mark(
            item,
            "retry",
            _MARK_RETRY,
            (next_attempt, error, last_status, item),
            event=("pending", "pending", "delivery", error) if audited else None,
        )

    def mark_failed(
        self, item: int, error: str, outcome: dict[str, Any] | None, last_status: str | None = None
    ) -> None:
        self._mark(
            item,
            "failed",
            _MARK_FAILED,
            (error, rows.dumps(outcome) if outcome is not None else None, last_status, item),
            event=("pending", "failed", "delivery", error),
        )

    def _mark(
        self,
        item: int,
        what: str,
        sql: str,
        args: tuple[object, ...],
        event: tuple[str, str, str, str] | None = None,
    ) -> None:
        with self._write() as conn:
            changed = conn.execute(sql, args).rowcount
            if changed and event is not None:
                _record_events(conn, [item], int(time.time()), *event)
        if not changed:
            log.warning("state.outbox.mark_ignored", item=item, mark=what, reason="not a pending item")

    def retry_now(self, now: int, *, tenant: str | None = None) -> int:
        where, args = _SQL.and_where(("tenant", tenant))
        with self._write() as conn:
            return conn.execute(_SQL.sql(rows.RETRY_NOW) + where, (now, now, *args)).rowcount

    def counts(self, *, tenant: str | None = None) -> dict[Status, int]:
        where, args = _SQL.where(("tenant", tenant))
        with self._read() as conn:
            found = conn.execute(rows.COUNTS.replace("{where}", where), args).fetchall()
        return rows.counts_of(found)

    def deliveries(self, status: Status | None = None, *, tenant: str | None = None) -> list[Delivery]:
        where, args = _SQL.where(("tenant", tenant), ("status", status))
        with self._read() as conn:
            sql = f"SELECT {rows.OUTBOX_COLUMNS} FROM outbox{where} ORDER BY id"
            found = conn.execute(sql, args).fetchall()
        return [rows.delivery(row) for row in found]

    def ping(self) -> None:
        self._db.ping()

    def oldest_pending(self) -> int | None:
        with self._read() as conn:  # outbox_status (status, id): the first pending row, no scan
            row = conn.execute(rows.OLDEST_PENDING).fetchone()
        return int(row[0]) if row else None

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> PostgresStateStore:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- delivery ---------------------------------------------------------------------------
    def due_ids(self, now: int, limit: int = 100) -> list[int]:
        with self._read() as conn:
            found = conn.execute(_due_sql("o.id", None), (now, limit)).fetchall()
        return [int(row[0]) for row in found]

    def claim_ids(self, now: int, limit: int = 100, lease: int = 60) -> list[int]:
        with self._write() as conn:
            found = conn.execute(_due_sql("o.id", None, claim=True), (now, limit)).fetchall()
            ids = [int(row[0]) for row in found]
            _postpone(conn, ids, now + lease)
        return ids

    def delivery(self, item: int) -> Delivery | None:
        with self._read() as conn:
            row = conn.execute(_DELIVERY, (item,)).fetchone()
        return rows.delivery(row) if row is not None else None

    def next_due(self) -> int | None:
        with self._read() as conn:
            sql = f"SELECT MIN(next_attempt) FROM ({_due_sql('o.next_attempt', None)}) AS d"
            row = conn.execute(sql, (rows.FOREVER, None)).fetchone()
        return int(row[0]) if row and row[0] is not None else None

    def revise(self, item: int, bundle: dict[str, Any], note: dict[str, Any]) -> bool:
        with self._write() as conn:
            changed = conn.execute(_REVISE, (rows.dumps(bundle), rows.dumps(note), item)).rowcount
        return bool(changed)

    def revise_active(
        self, item: int, before: dict[str, dict[str, Any]], after: dict[str, dict[str, Any]]
    ) -> bool:
        with self._write() as conn:
            return rows.revise_alert(conn, _SQL, item, before, after, lock=" FOR UPDATE")

    def purge_delivered(self, before: int) -> int:
        with self._write() as conn:
            removed = conn.execute(_SQL.sql(rows.PURGE_DELIVERED), (before,)).rowcount
            if removed:
                conn.execute(rows.PURGE_EVENTS)
        if removed:
            log.info("state.outbox.purged", before=before, items=removed)
        return removed

    # -- operators ----------------------------------------------------------------------------
    def retry_failed(
        self,
        items: Sequence[int] | None,
        now: int,
        actor: str = "operator",
        *,
        tenant: str | None = None,
    ) -> list[int]:
        where, args = _SQL.and_where(("tenant", tenant))
        chosen = " AND id = ANY(%s)" if items is not None else ""
        picked = (*args, list(items)) if items is not None else args
        with self._write() as conn:
            sql = rows.FAILED + where + chosen + " ORDER BY id FOR UPDATE"
            ids = [int(row[0]) for row in conn.execute(sql, picked).fetchall()]
            with conn.cursor() as cur:
                cur.executemany(_SQL.sql(rows.UNFAIL), [(now, item) for item in ids])
            _record_events(conn, ids, now, "failed", "pending", actor, "retry by operator")
        if ids:
            log.info("state.outbox.retried", items=len(ids), actor=actor)
        return ids

    def outbox_events(self, item: int | None = None, *, tenant: str | None = None) -> list[OutboxEvent]:
        where, args = _SQL.where(("item", item), ("tenant", tenant))
        with self._read() as conn:
            found = conn.execute(rows.OUTBOX_EVENTS + where + " ORDER BY id", args).fetchall()
        return rows.events_of(found)


def _postpone(conn: psycopg.Connection[Any], ids: list[int], until: int) -> None:
    if ids:
        conn.execute(
            "UPDATE outbox SET next_attempt = %s WHERE id = ANY(%s) AND status = 'pending'", (until, ids)
        )


def _record_events(
    conn: psycopg.Connection[Any],
    items: Sequence[int],
    at: int,
    before: str,
    after: str,
    actor: str,
    reason: str,
) -> None:
    """One audit row per item (``sql_rows.RECORD_EVENTS``), in one statement."""
    if not items:
        return
    conn.execute(
        _SQL.sql(rows.RECORD_EVENTS) + "id = ANY(%s) ORDER BY id",
        (at, before, after, actor, reason, list(items)),
    )


_FACTS = _SQL.sql(rows.FACTS)
_ACTIVE = _SQL.sql(rows.ACTIVE)
_SEQ = _SQL.sql(rows.SEQ)
_DELETE_FACTS = _SQL.sql(rows.DELETE_FACTS)
_INSERT_FACT = _SQL.sql(rows.INSERT_FACT)
_DELETE_ACTIVE = _SQL.sql(rows.DELETE_ACTIVE)
_INSERT_ACTIVE = _SQL.sql(rows.INSERT_ACTIVE)
_INSERT_TRANSITION = _SQL.sql(rows.INSERT_TRANSITION)
_INSERT_OUTBOX = _SQL.sql(rows.INSERT_OUTBOX) + " RETURNING id"
_MARK_DELIVERED = _SQL.sql(rows.MARK_DELIVERED)
_MARK_RETRY = _SQL.sql(rows.MARK_RETRY)
_MARK_FAILED = _SQL.sql(rows.MARK_FAILED)
_DELIVERY = _SQL.sql(rows.DELIVERY)
_REVISE = _SQL.sql(rows.REVISE)


def _facts(conn: psycopg.Connection[Any], tenant: str, patient: str) -> dict[str, list[Fact]]:
    return rows.facts_of(conn.execute(_FACTS, (tenant, patient)).fetchall())


def _active(conn: psycopg.Connection[Any], tenant: str, patient: str) -> dict[str, ActiveAlert]:
    return rows.active_of(conn.execute(_ACTIVE, (tenant, patient)).fetchall())
