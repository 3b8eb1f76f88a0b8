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

from engine.logger import get_logger
from redflags.state.keyed_lock import KeyedLocks
from redflags.state.model import (
    DEFAULT_TENANT,
    ActiveAlert,
    Change,
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
from redflags.state.sqlite_store import _alert, _alert_json, _check, _delivery, _fact_ts, _one_line

log = get_logger("redflags.state")

_STATUSES: tuple[Status, ...] = ("pending", "delivered", "failed")
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
_PATIENT_TABLES = ("fact", "active_alert", "transition", "outbox", "patient_seq", "outbox_event")
_BOOKKEEPING = frozenset({"patient_seq", "outbox_event"})
_OUTBOX_COLUMNS = (
    "id, patient, rule, change, bundle, status, attempts, next_attempt, created, delivered, "
    "last_error, outcome, tenant, last_status"
)
#: As ``sqlite_store._DUE_WHERE``: the oldest pending item of each (tenant, patient, rule) only.
_DUE_WHERE = """
WHERE o.status = 'pending' AND o.next_attempt <= %(now)s{tenant}
  AND NOT EXISTS (
      SELECT 1 FROM outbox e
      WHERE e.tenant = o.tenant AND e.patient = o.patient AND e.rule = o.rule
        AND e.status = 'pending' AND e.id < o.id
  )
ORDER BY o.id LIMIT %(limit)s
"""
_OF_TENANT = " AND o.tenant = %(tenant)s"
_NOT_SUPERSEDED = (
    " AND NOT EXISTS (SELECT 1 FROM outbox l WHERE l.tenant = o.tenant AND l.patient = o.patient"
    " AND l.rule = o.rule AND l.id > o.id)"
)
_FOREVER = 2**62
#: The advisory lock of one tenant's patient (both the session and the transaction form).
_PATIENT_KEY = "hashtextextended(%s || chr(31) || %s, 7)"


def _due_sql(columns: str, tenant: str | None, *, claim: bool = False) -> str:
    sql = f"SELECT {columns} FROM outbox o" + _DUE_WHERE.format(tenant=_OF_TENANT if tenant else "")
    return sql + (" FOR UPDATE OF o SKIP LOCKED" if claim else "")


def _where(*conditions: tuple[str, object]) -> tuple[str, tuple[object, ...]]:
    given = [(column, value) for column, value in conditions if value is not None]
    if not given:
        return "", ()
    return " WHERE " + " AND ".join(f"{column} = %s" for column, _ in given), tuple(v for _, v in given)


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
                why = _one_line(exc)
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
            stored, ledger = _facts_of(facts.fetchall()), _active_of(active.fetchall())
            return Snapshot(stored, ledger, _seq_of(seq.fetchone()))

    def forget(self, patient: str, *, tenant: str = DEFAULT_TENANT) -> int:
        with self._write() as conn:
            conn.execute(f"SELECT pg_advisory_xact_lock({_PATIENT_KEY})", (tenant, patient))
            removed = 0
            for table in _PATIENT_TABLES:
                deleted = conn.execute(
                    f"DELETE FROM {table} WHERE tenant = %s AND patient = %s",
                    (tenant, patient),
                )
                removed += deleted.rowcount if table not in _BOOKKEEPING else 0
        log.info("state.forget", rows=removed)
        return removed

    def tenants(self, patient: str | None = None) -> dict[str, int]:
        where, args = _where(("patient", patient))
        with self._read() as conn:
            rows = conn.execute(
                "SELECT tenant, COUNT(DISTINCT patient) FROM ("
                "SELECT tenant, patient FROM fact UNION SELECT tenant, patient FROM active_alert "
                "UNION SELECT tenant, patient FROM transition "
                f"UNION SELECT tenant, patient FROM outbox) AS p{where} "
                'GROUP BY tenant ORDER BY tenant COLLATE "C"',
                args,
            ).fetchall()
        return {tenant: int(n) for tenant, n in rows}

    def prune(self, before: int, *, tenant: str | None = None) -> int:
        where, args = _where(("tenant", tenant))
        with self._write() as conn:
            removed = conn.execute(
                "DELETE FROM fact WHERE ts < %s" + where.replace(" WHERE ", " AND "),
                (before, *args),
            ).rowcount
        log.info("state.prune", before=before, facts=removed)
        return removed

    # -- ledger ---------------------------------------------------------------------------
    def active(self, patient: str, *, tenant: str = DEFAULT_TENANT) -> dict[str, ActiveAlert]:
        with self._read() as conn:
            return _active(conn, tenant, patient)

    def transitions(self, patient: str | None = None, *, tenant: str | None = None) -> list[Transition]:
        sql = "SELECT patient, rule, change, tier, at, actor, evidence, reason, tenant FROM transition"
        where, args = _where(("tenant", tenant), ("patient", patient))
        with self._read() as conn:
            rows = conn.execute(sql + where + " ORDER BY id", args).fetchall()
        return [
            Transition(
                patient=p,
                rule=rule,
                change=cast(Change, change),
                tier=tier,
                at=at,
                actor=actor,
                evidence=tuple(orjson.loads(evidence)),
                reason=reason,
                tenant=t,
            )
            for p, rule, change, tier, at, actor, evidence, reason, t in rows
        ]

    # -- one evaluation -------------------------------------------------------------------
    def commit(self, evaluated: Evaluated) -> list[int]:
        """All or nothing; the new outbox ids in the order of ``evaluated.deliveries``."""
        _check(evaluated)
        patient, now, tenant = evaluated.patient, evaluated.now, evaluated.tenant
        try:
            facts = [
                (ref, [(_fact_ts(f, now), orjson.dumps(f)) for f in items])
                for ref, items in evaluated.facts.items()
            ]
            active = [(rule, _alert_json(alert)) for rule, alert in evaluated.active.items()]
            transitions = [
                (t.rule, t.change, t.tier, t.at, t.actor, orjson.dumps(list(t.evidence)), t.reason)
                for t in evaluated.transitions
            ]
            deliveries = [(d.rule, d.change, orjson.dumps(d.bundle)) for d in evaluated.deliveries]
        except orjson.JSONEncodeError as exc:
            raise StateStoreError(f"{self.path}: cannot store evaluation: {_one_line(exc)}") from None
        key = (tenant, patient)
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
                for ref, rows in facts:
                    cur.execute(
                        "DELETE FROM fact WHERE tenant = %s AND patient = %s AND ref = %s", (*key, ref)
                    )
                    cur.executemany(
                        "INSERT INTO fact (tenant, patient, ref, ts, body) VALUES (%s, %s, %s, %s, %s)",
                        [(*key, ref, ts, body) for ts, body in rows],
                    )
                cur.execute("DELETE FROM active_alert WHERE tenant = %s AND patient = %s", key)
                cur.executemany(
                    "INSERT INTO active_alert (tenant, patient, rule, body) VALUES (%s, %s, %s, %s)",
                    [(*key, rule, body) for rule, body in active],
                )
                cur.executemany(
                    "INSERT INTO transition (tenant, patient, rule, change, tier, at, actor, evidence, "
                    "reason) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                    [(*key, *row) for row in transitions],
                )
                added = [
                    conn.execute(
                        "INSERT INTO outbox (tenant, patient, rule, change, bundle, status, attempts, "
                        "next_attempt, created) VALUES (%s, %s, %s, %s, %s, 'pending', 0, 0, %s) "
                        "RETURNING id",
                        (*key, rule, change, bundle, now),
                    )
                    for rule, change, bundle in deliveries
                ]
            row = bumped.fetchone()
            if evaluated.seen is not None and (row is None or int(row[0]) != evaluated.seen + 1):
                raise StaleRead(f"{self.path}: the patient changed after this evaluation read it")
            return [int(cast(tuple[int], item.fetchone())[0]) for item in added]

    # -- outbox ---------------------------------------------------------------------------
    def due(self, now: int, limit: int = 100, *, tenant: str | None = None) -> list[Delivery]:
        with self._read() as conn:
            rows = conn.execute(
                _due_sql(_OUTBOX_COLUMNS, tenant),
                {"now": now, "limit": limit, "tenant": tenant},
            ).fetchall()
        return [_delivery(tuple(row)) for row in rows]

    def claim(
        self, now: int, limit: int = 100, lease: int = 60, *, tenant: str | None = None
    ) -> list[Delivery]:
        """``due``, locked (``SKIP LOCKED``: another claimer's rows are passed over, not waited
        for) and postponed by ``lease`` seconds in the same transaction."""
        with self._write() as conn:
            rows = conn.execute(
                _due_sql(_OUTBOX_COLUMNS, tenant, claim=True),
                {"now": now, "limit": limit, "tenant": tenant},
            ).fetchall()
            items = [_delivery(tuple(row)) for row in rows]
            _postpone(conn, [item.id for item in items], now + lease)
        return items

    def mark_delivered(self, item: int, now: int, last_status: str | None = "delivered") -> None:
        self._mark(
            item,
            "delivered",
            "UPDATE outbox SET status = 'delivered', delivered = %s, attempts = attempts + 1, "
            "last_error = NULL, last_status = %s WHERE id = %s AND status = 'pending'",
            (now, last_status, item),
            event=("pending", "delivered", "delivery", ""),
        )

    def mark_retry(
        self, item: int, next_attempt: int, error: str, last_status: str | None = None, audited: bool = False
    ) -> None:
        self._mark(
            item,
            "retry",
            "UPDATE outbox SET attempts = attempts + 1, next_attempt = %s, last_error = %s, last_status = %s "
            "WHERE id = %s AND status = 'pending'",
            (next_attempt, error, last_status, item),
            event=("pending", "pending", "delivery", error) if audited else None,
        )

    def mark_failed(
        self, item: int, error: str, outcome: dict[str, Any] | None, last_status: str | None = None
    ) -> None:
        self._mark(
            item,
            "failed",
            "UPDATE outbox SET status = 'failed', attempts = attempts + 1, last_error = %s, outcome = %s, "
            "last_status = %s WHERE id = %s AND status = 'pending'",
            (error, orjson.dumps(outcome) if outcome is not None else None, last_status, item),
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
        where, args = _where(("tenant", tenant))
        with self._write() as conn:
            return conn.execute(
                "UPDATE outbox SET next_attempt = %s WHERE status = 'pending' AND next_attempt > %s"
                + where.replace(" WHERE ", " AND "),
                (now, now, *args),
            ).rowcount

    def counts(self, *, tenant: str | None = None) -> dict[Status, int]:
        where, args = _where(("tenant", tenant))
        with self._read() as conn:
            sql = f"SELECT status, COUNT(*) FROM outbox{where} GROUP BY status"
            rows = conn.execute(sql, args).fetchall()
        found = {status: int(n) for status, n in rows}
        return {status: found.get(status, 0) for status in _STATUSES}

    def deliveries(self, status: Status | None = None, *, tenant: str | None = None) -> list[Delivery]:
        where, args = _where(("tenant", tenant), ("status", status))
        with self._read() as conn:
            rows = conn.execute(f"SELECT {_OUTBOX_COLUMNS} FROM outbox{where} ORDER BY id", args).fetchall()
        return [_delivery(tuple(row)) for row in rows]

    def ping(self) -> None:
        self._db.ping()

    def oldest_pending(self) -> int | None:
        with self._read() as conn:  # outbox_status (status, id): the first pending row, no scan
            row = conn.execute(
                "SELECT created FROM outbox WHERE status = 'pending' ORDER BY id LIMIT 1"
            ).fetchone()
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
            rows = conn.execute(_due_sql("o.id", None), {"now": now, "limit": limit}).fetchall()
        return [int(row[0]) for row in rows]

    def claim_ids(self, now: int, limit: int = 100, lease: int = 60) -> list[int]:
        with self._write() as conn:
            rows = conn.execute(
                _due_sql("o.id", None, claim=True),
                {"now": now, "limit": limit},
            ).fetchall()
            ids = [int(row[0]) for row in rows]
            _postpone(conn, ids, now + lease)
        return ids

    def delivery(self, item: int) -> Delivery | None:
        with self._read() as conn:
            row = conn.execute(f"SELECT {_OUTBOX_COLUMNS} FROM outbox WHERE id = %s", (item,)).fetchone()
        return _delivery(tuple(row)) if row is not None else None

    def next_due(self) -> int | None:
        with self._read() as conn:
            row = conn.execute(
                f"SELECT MIN(next_attempt) FROM ({_due_sql('o.next_attempt', None)}) AS d",
                {"now": _FOREVER, "limit": None},
            ).fetchone()
        return int(row[0]) if row and row[0] is not None else None

    def revise(self, item: int, bundle: dict[str, Any], note: dict[str, Any]) -> bool:
        with self._write() as conn:
            changed = conn.execute(
                "UPDATE outbox SET bundle = %s, outcome = %s WHERE id = %s AND status = 'pending'",
                (orjson.dumps(bundle), orjson.dumps(note), item),
            ).rowcount
        return bool(changed)

    def revise_active(
        self, item: int, before: dict[str, dict[str, Any]], after: dict[str, dict[str, Any]]
    ) -> bool:
        with self._write() as conn:
            row = conn.execute("SELECT tenant, patient, rule FROM outbox WHERE id = %s", (item,)).fetchone()
            if row is None:
                return False
            body = conn.execute(
                "SELECT body FROM active_alert WHERE tenant = %s AND patient = %s AND rule = %s FOR UPDATE",
                tuple(row),
            ).fetchone()
            if body is None:
                return False
            alert = orjson.loads(body[0])
            if alert["flag"] != before.get("Flag") or alert["careplan"] != before.get("CarePlan"):
                return False
            alert["flag"], alert["careplan"] = after["Flag"], after["CarePlan"]
            conn.execute(
                "UPDATE active_alert SET body = %s WHERE tenant = %s AND patient = %s AND rule = %s",
                (orjson.dumps(alert), *row),
            )
        return True

    def purge_delivered(self, before: int) -> int:
        with self._write() as conn:
            removed = conn.execute(
                "DELETE FROM outbox WHERE status = 'delivered' AND delivered < %s", (before,)
            ).rowcount
            if removed:
                conn.execute(
                    "DELETE FROM outbox_event e WHERE NOT EXISTS (SELECT 1 FROM outbox o WHERE o.id = e.item)"
                )
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
        where, args = _where(("tenant", tenant))
        chosen = " AND id = ANY(%s)" if items is not None else ""
        picked = (*args, list(items)) if items is not None else args
        with self._write() as conn:
            ids = [
                int(row[0])
                for row in conn.execute(
                    "SELECT id FROM outbox o WHERE status = 'failed'"
                    + _NOT_SUPERSEDED
                    + where.replace(" WHERE ", " AND ")
                    + chosen
                    + " ORDER BY id FOR UPDATE",
                    picked,
                ).fetchall()
            ]
            with conn.cursor() as cur:
                cur.executemany(
                    "UPDATE outbox SET status = 'pending', next_attempt = %s "
                    "WHERE id = %s AND status = 'failed'",
                    [(now, item) for item in ids],
                )
            _record_events(conn, ids, now, "failed", "pending", actor, "retry by operator")
        if ids:
            log.info("state.outbox.retried", items=len(ids), actor=actor)
        return ids

    def outbox_events(self, item: int | None = None, *, tenant: str | None = None) -> list[OutboxEvent]:
        where, args = _where(("item", item), ("tenant", tenant))
        with self._read() as conn:
            rows = conn.execute(
                "SELECT item, tenant, patient, rule, at, from_status, to_status, actor, reason "
                f"FROM outbox_event{where} ORDER BY id",
                args,
            ).fetchall()
        return [OutboxEvent(*row) for row in rows]


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
    if not items:
        return
    conn.execute(
        "INSERT INTO outbox_event (item, tenant, patient, rule, at, from_status, to_status, actor, reason) "
        "SELECT id, tenant, patient, rule, %s, %s, %s, %s, %s FROM outbox WHERE id = ANY(%s) ORDER BY id",
        (at, before, after, actor, reason, list(items)),
    )


_FACTS = "SELECT ref, body FROM fact WHERE tenant = %s AND patient = %s ORDER BY id"
_ACTIVE = 'SELECT rule, body FROM active_alert WHERE tenant = %s AND patient = %s ORDER BY rule COLLATE "C"'
_SEQ = "SELECT seq FROM patient_seq WHERE tenant = %s AND patient = %s"


def _facts_of(rows: Sequence[tuple[Any, ...]]) -> dict[str, list[Fact]]:
    found: dict[str, list[Fact]] = {}
    for ref, body in rows:
        found.setdefault(ref, []).append(orjson.loads(body))
    return found


def _active_of(rows: Sequence[tuple[Any, ...]]) -> dict[str, ActiveAlert]:
    return {rule: _alert(bytes(body)) for rule, body in rows}


def _seq_of(row: tuple[Any, ...] | None) -> int:
    return int(row[0]) if row else 0


def _facts(conn: psycopg.Connection[Any], tenant: str, patient: str) -> dict[str, list[Fact]]:
    return _facts_of(conn.execute(_FACTS, (tenant, patient)).fetchall())


def _active(conn: psycopg.Connection[Any], tenant: str, patient: str) -> dict[str, ActiveAlert]:
    return _active_of(conn.execute(_ACTIVE, (tenant, patient)).fetchall())
