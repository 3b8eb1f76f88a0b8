"""The embedded ``StateStore``: one SQLite file shared by every redflags process of a site.

The HTTP service's engine processes, its delivery worker and ``redflags outbox flush`` may all
have the file open at once, so: WAL (readers never block the writer), a busy timeout (writers
queue instead of failing), ``BEGIN IMMEDIATE`` for every write (take the write lock up front,
so a transaction never fails half-way for want of it) and ``synchronous=FULL`` (a commit that
returned survives a power cut: it is what lets the service acknowledge an evaluation).

Choices the protocol leaves open:

- A fact's ``ts`` (epoch seconds) is its record time for ``prune``; a fact without a numeric
  ``ts`` is dated by the evaluation that stored it (``Evaluated.now``), so retention applies
  to every fact and nothing is kept forever by accident.
- ``forget`` removes every outbox row of the patient, delivered ones included: their bundles
  name the patient. An item being sent while it is forgotten is then marked on no row, which
  is a no-op (``mark_*`` only ever move a pending item).
- New outbox items are due at once (``next_attempt = 0``) whatever the deliverer's clock says:
  replays evaluate at simulated times. ``created`` is ``Evaluated.now``.
- Facts are stored as JSON (orjson): a tuple comes back as a list.
- Every row carries its tenant (``redflags.state.model``); each query names one tenant, except
  the operator's views (``counts``, ``deliveries``, ``due``/``claim`` for the one deliverer),
  which take every tenant unless given one. ``patient_seq`` numbers each patient's commits:
  ``commit`` compares it with what the evaluation read, inside its write transaction.
- The schema is versioned and only ever migrated forward, in the transaction that opens the
  file: a store of version 1 (before tenants) gets the tenant column, its rows the tenant
  ``default``. A file of a newer version is refused, never rewritten.

Nothing here logs a patient identifier; outbox item ids are logged, never their patient.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any, cast

import orjson
import structlog

from redflags.state import sql_rows as rows
from redflags.state import sqlite_file
from redflags.state.keyed_lock import KeyedLocks
from redflags.state.model import (
    DEFAULT_TENANT,
    ActiveAlert,
    Delivery,
    Evaluated,
    Fact,
    NoStateStore,
    OutboxEvent,
    Snapshot,
    StaleRead,
    StateStoreError,
    Status,
    Transition,
)

__all__ = ["SCHEMA_VERSION", "NoStateStore", "SqliteStateStore", "StateStoreError"]

log = structlog.get_logger("redflags.state")

SCHEMA_VERSION = 3  # the last key of _MIGRATIONS

#: Version 1, as 30fb331 created it. A new file is made at version 1 and migrated like an old
#: one, so there is one history of the schema and no second definition to drift from it.
_SCHEMA_V1 = """
CREATE TABLE schema_version (version INTEGER NOT NULL);
CREATE TABLE fact (
    id INTEGER PRIMARY KEY,
    patient TEXT NOT NULL,
    ref TEXT NOT NULL,
    ts INTEGER NOT NULL,
    body BLOB NOT NULL
);
CREATE INDEX fact_patient ON fact (patient, ref);
CREATE INDEX fact_ts ON fact (ts);
CREATE TABLE active_alert (
    patient TEXT NOT NULL,
    rule TEXT NOT NULL,
    body BLOB NOT NULL,
    PRIMARY KEY (patient, rule)
) WITHOUT ROWID;
CREATE TABLE transition (
    id INTEGER PRIMARY KEY,
    patient TEXT NOT NULL,
    rule TEXT NOT NULL,
    change TEXT NOT NULL CHECK (change IN ('raised', 'updated', 'withdrawn')),
    tier TEXT,
    at INTEGER NOT NULL,
    actor TEXT NOT NULL,
    evidence BLOB NOT NULL,
    reason TEXT NOT NULL
);
CREATE INDEX transition_patient ON transition (patient, id);
CREATE TABLE outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    patient TEXT NOT NULL,
    rule TEXT NOT NULL,
    change TEXT NOT NULL CHECK (change IN ('raised', 'updated', 'withdrawn')),
    bundle BLOB NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt INTEGER NOT NULL,
    created INTEGER NOT NULL,
    delivered INTEGER,
    last_error TEXT,
    outcome BLOB
);
CREATE INDEX outbox_status ON outbox (status, id);
CREATE INDEX outbox_key ON outbox (patient, rule, status, id);
"""
#: AUTOINCREMENT: an id is never reused, even after ``forget`` deleted the newest rows, so an
#: id seen by a deliverer always means the same item.
_TABLES_V1 = frozenset({"schema_version", "fact", "active_alert", "transition", "outbox"})
#: Forward-only steps: version -> the statements that make a store of version - 1 into it.
_MIGRATIONS: dict[int, tuple[str, ...]] = {
    2: (  # tenants: every row gets one (old rows: the default tenant); per-patient commit numbers
        f"ALTER TABLE fact ADD COLUMN tenant TEXT NOT NULL DEFAULT '{DEFAULT_TENANT}'",
        "DROP INDEX fact_patient",
        "CREATE INDEX fact_patient ON fact (tenant, patient, ref)",
        "CREATE TABLE active_alert_2 (tenant TEXT NOT NULL, patient TEXT NOT NULL, rule TEXT NOT NULL, "
        "body BLOB NOT NULL, PRIMARY KEY (tenant, patient, rule)) WITHOUT ROWID",
        f"INSERT INTO active_alert_2 SELECT '{DEFAULT_TENANT}', patient, rule, body FROM active_alert",
        "DROP TABLE active_alert",
        "ALTER TABLE active_alert_2 RENAME TO active_alert",
        f"ALTER TABLE transition ADD COLUMN tenant TEXT NOT NULL DEFAULT '{DEFAULT_TENANT}'",
        "DROP INDEX transition_patient",
        "CREATE INDEX transition_patient ON transition (tenant, patient, id)",
        f"ALTER TABLE outbox ADD COLUMN tenant TEXT NOT NULL DEFAULT '{DEFAULT_TENANT}'",
        "DROP INDEX outbox_key",
        "CREATE INDEX outbox_key ON outbox (tenant, patient, rule, status, id)",
        "CREATE TABLE patient_seq (tenant TEXT NOT NULL, patient TEXT NOT NULL, seq INTEGER NOT NULL, "
        "PRIMARY KEY (tenant, patient)) WITHOUT ROWID",
    ),
    3: (  # the outbox's audit trail (every change of an item's status, and who made it); the
        # status of each item's last attempt (HTTP status or kind of failure) in its own column
        "ALTER TABLE outbox ADD COLUMN last_status TEXT",
        "CREATE TABLE outbox_event (id INTEGER PRIMARY KEY, item INTEGER NOT NULL, "
        "tenant TEXT NOT NULL, patient TEXT NOT NULL, rule TEXT NOT NULL, at INTEGER NOT NULL, "
        "from_status TEXT NOT NULL, to_status TEXT NOT NULL, actor TEXT NOT NULL, reason TEXT NOT NULL)",
        "CREATE INDEX outbox_event_item ON outbox_event (item, id)",
        "CREATE INDEX outbox_event_patient ON outbox_event (tenant, patient)",
    ),
}
_TABLES = _TABLES_V1 | {"patient_seq", "outbox_event"}
_SCHEMA_SPEC = sqlite_file.Schema(
    kind="state", v1=_SCHEMA_V1, tables=_TABLES_V1, migrations=_MIGRATIONS, final_tables=_TABLES
)
_SQL = rows.SQLITE


class SqliteStateStore:
    """``StateStore`` on one SQLite file; one connection, shared by threads under one lock."""

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self._conn = conn
        self._lock = threading.RLock()
        self._closed = False
        self._patients = KeyedLocks()
        self.path = path
        self._identity = sqlite_file.identity(path)  # ping: still the file the path names

    # -- opening --------------------------------------------------------------------------
    @classmethod
    def open(cls, path: str | Path, *, busy_timeout_s: float = 30.0, create: bool = True) -> SqliteStateStore:
        """Open the database, creating file and schema if needed (``create``); anything wrong
        is a StateStoreError, a missing file without ``create`` a ``NoStateStore``."""
        path = Path(path)
        if not create and not path.is_file():
            raise NoStateStore(f"no state store at {path} (replay and serve create one)")
        new = not path.exists()
        try:  # schema checked (a foreign database is left as found) before the switch to WAL
            conn, migrated = sqlite_file.open_versioned(
                path, _SCHEMA_SPEC, create=create, busy_timeout_s=busy_timeout_s
            )
        except sqlite_file.CannotOpen as exc:
            raise StateStoreError(f"{path}: cannot open state database: {exc}") from None
        except sqlite_file.NotOurs as exc:
            raise StateStoreError(f"{path}: {exc}") from None
        except sqlite3.Error as exc:
            why = rows.one_line(exc)
            raise StateStoreError(f"{path}: not a readable redflags state database: {why}") from None
        if migrated is not None:
            log.info("state.migrated", from_version=migrated, to_version=SCHEMA_VERSION)
        if new:
            log.info("state.created", path=str(path))
        return cls(conn, path)

    # -- plumbing -------------------------------------------------------------------------
    @contextmanager
    def _transaction(self, mode: str = "IMMEDIATE") -> Iterator[sqlite3.Connection]:
        """IMMEDIATE (writes): take the write lock up front, waiting up to the busy timeout.

        DEFERRED (reads): one consistent snapshot without blocking writers.
        """
        with self._lock:
            if self._closed:
                raise StateStoreError(f"{self.path}: state database is closed")
            with sqlite_file.transaction(self._conn, self._lock, mode) as conn:
                yield conn

    @contextmanager
    def _guard(self, what: str, mode: str) -> Iterator[sqlite3.Connection]:
        """One transaction whose SQLite and JSON errors become one-line StateStoreErrors."""
        try:
            with self._transaction(mode) as conn:
                yield conn
        except sqlite3.Error as exc:
            raise StateStoreError(
                f"{self.path}: state database {what} failed: {rows.one_line(exc)}"
            ) from None
        except (orjson.JSONEncodeError, orjson.JSONDecodeError) as exc:
            raise StateStoreError(
                f"{self.path}: state database {what} failed: {rows.one_line(exc)}"
            ) from None

    def _read(self) -> AbstractContextManager[sqlite3.Connection]:
        return self._guard("read", "DEFERRED")

    def _write(self) -> AbstractContextManager[sqlite3.Connection]:
        return self._guard("write", "IMMEDIATE")

    # -- history --------------------------------------------------------------------------
    def history(
        self, patient: str, exclude: Sequence[str] = (), *, tenant: str = DEFAULT_TENANT
    ) -> list[Fact]:
        """In insertion order; a resource sent again moves to the end (its facts were replaced)."""
        skip = set(exclude)
        stored = self.facts_by_resource(patient, tenant=tenant)
        return [f for ref, facts in stored.items() if ref not in skip for f in facts]

    def facts_by_resource(self, patient: str, *, tenant: str = DEFAULT_TENANT) -> dict[str, list[Fact]]:
        with self._read() as conn:
            return _facts(conn, tenant, patient)

    def snapshot(self, patient: str, *, tenant: str = DEFAULT_TENANT) -> Snapshot:
        """One read transaction: the facts, ledger and sequence number belong together."""
        with self._read() as conn:
            facts = _facts(conn, tenant, patient)
            active = _active(conn, tenant, patient)
            seq = rows.seq_of(conn.execute(rows.SEQ, (tenant, patient)).fetchone())
        return Snapshot(facts, active, seq)

    def patient_lock(self, patient: str, *, tenant: str = DEFAULT_TENANT) -> AbstractContextManager[None]:
        """Threads of this process evaluate one patient in turn. Across processes on the file
        no lock is held through an evaluation (it would stop every other writer): ``commit``'s
        sequence check refuses the later of two and it is evaluated again (``StaleRead``)."""
        return self._patients.hold((tenant, patient))

    def forget(self, patient: str, *, tenant: str = DEFAULT_TENANT) -> int:
        """Also drops the patient's commit number, so an evaluation that read before fails to commit."""
        with self._write() as conn:
            removed = 0
            for table in rows.PATIENT_TABLES:  # the count is of records: patient_seq is bookkeeping
                deleted = conn.execute(
                    f"DELETE FROM {table} WHERE tenant = ? AND patient = ?", (tenant, patient)
                )
                removed += deleted.rowcount if table not in rows.BOOKKEEPING else 0
        log.info("state.forget", rows=removed)
        return removed

    def tenants(self, patient: str | None = None) -> dict[str, int]:
        where, args = _SQL.where(("patient", patient))
        with self._read() as conn:
            found = conn.execute(_SQL.sql(rows.TENANTS.replace("{where}", where)), args).fetchall()
        return dict(found)

    def prune(self, before: int, *, tenant: str | None = None) -> int:
        """Facts without a ``ts`` count as recorded when stored (see the module docstring).

        ``tenant``: that tenant's facts only (a replay at its own clock prunes its own tenant)."""
        where, args = _SQL.and_where(("tenant", tenant))
        with self._write() as conn:
            removed = conn.execute(rows.PRUNE + where, (before, *args)).rowcount
        log.info("state.prune", before=before, facts=removed)
        return removed

    # -- ledger ---------------------------------------------------------------------------
    def active(self, patient: str, *, tenant: str = DEFAULT_TENANT) -> dict[str, ActiveAlert]:
        with self._read() as conn:
            return _active(conn, tenant, patient)

    def transitions(self, patient: str | None = None, *, tenant: str | None = None) -> list[Transition]:
        where, args = _SQL.where(("tenant", tenant), ("patient", patient))
        with self._read() as conn:
            return rows.transitions_of(
                conn.execute(rows.TRANSITIONS + where + " ORDER BY id", args).fetchall()
            )

    # -- one evaluation -------------------------------------------------------------------
    def commit(self, evaluated: Evaluated) -> list[int]:
        """All or nothing; returns the new outbox ids in the order of ``evaluated.deliveries``."""
        encoded = rows.encode(evaluated, self.path)
        ids: list[int] = []
        key = (evaluated.tenant, evaluated.patient)
        with self._write() as conn:
            seq = rows.seq_of(conn.execute(rows.SEQ, key).fetchone())
            if evaluated.seen is not None and seq != evaluated.seen:
                raise StaleRead(f"{self.path}: the patient changed after this evaluation read it")
            conn.execute(
                "INSERT INTO patient_seq (tenant, patient, seq) VALUES (?, ?, ?) "
                "ON CONFLICT (tenant, patient) DO UPDATE SET seq = excluded.seq",
                (*key, seq + 1),
            )
            for ref, facts in encoded.facts:
                conn.execute(rows.DELETE_FACTS, (*key, ref))
                conn.executemany(rows.INSERT_FACT, [(*key, ref, ts, body) for ts, body in facts])
            conn.execute(rows.DELETE_ACTIVE, key)
            conn.executemany(rows.INSERT_ACTIVE, [(*key, rule, body) for rule, body in encoded.active])
            conn.executemany(rows.INSERT_TRANSITION, [(*key, *row) for row in encoded.transitions])
            for rule, change, bundle in encoded.deliveries:
                cursor = conn.execute(rows.INSERT_OUTBOX, (*key, rule, change, bundle, evaluated.now))
                ids.append(cast(int, cursor.lastrowid))
        return ids

    # -- outbox ---------------------------------------------------------------------------
    def due(self, now: int, limit: int = 100, *, tenant: str | None = None) -> list[Delivery]:
        with self._read() as conn:
            return [rows.delivery(row) for row in _due(conn, now, limit, tenant)]

    def claim(
        self, now: int, limit: int = 100, lease: int = 60, *, tenant: str | None = None
    ) -> list[Delivery]:
        """``due``, and postpone what it returns by ``lease`` seconds, in one write transaction.

        For several deliverers on one file: two never get the same item, and an item whose
        deliverer died without marking it becomes due again when the lease runs out. (Not in
        the ``StateStore`` protocol; ``due`` alone suits a single deliverer.)
        """
        with self._write() as conn:
            items = [rows.delivery(row) for row in _due(conn, now, limit, tenant)]
            _postpone(conn, [item.id for item in items], now + lease)
        return items

    def mark_delivered(self, item: int, now: int, last_status: str | None = "delivered") -> None:
        """The successful send counts as an attempt too: ``attempts`` is how many sends it took.
        Recorded in the audit trail (pending -> delivered)."""
        self._mark(
            item,
            "delivered",
            rows.MARK_DELIVERED,
            (now, last_status, item),
            event=("pending", "delivered", "delivery", ""),
        )

    def mark_retry(
        self, item: int, next_attempt: int, error: str, last_status: str | None = None, audited: bool = False
    ) -> None:
        """``audited``: also record the deferral in the audit trail (pending -> pending), for
        the rare ones an operator must see (a configuration error), not every transient retry."""
        self._mark(
            item,
            "retry",
            rows.MARK_RETRY,
            (next_attempt, error, last_status, item),
            event=("pending", "pending", "delivery", error) if audited else None,
        )

    def mark_failed(
        self, item: int, error: str, outcome: dict[str, Any] | None, last_status: str | None = None
    ) -> None:
        """Failed for good: the item stops blocking later changes of its patient and rule.
        The change goes into the outbox's audit trail (``outbox_events``)."""
        self._mark(
            item,
            "failed",
            rows.MARK_FAILED,
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
        """Only a pending item moves: marking twice, or a forgotten item, changes nothing.
        ``event`` (from, to, actor, reason) is recorded in the same transaction as the move."""
        with self._write() as conn:
            changed = conn.execute(sql, args).rowcount
            if changed and event is not None:
                _record_events(conn, [item], int(time.time()), *event)
        if not changed:
            log.warning("state.outbox.mark_ignored", item=item, mark=what, reason="not a pending item")

    def retry_now(self, now: int, *, tenant: str | None = None) -> int:
        """Return how many pending items were waiting for a later retry (all pending are now due)."""
        where, args = _SQL.and_where(("tenant", tenant))
        with self._write() as conn:
            return conn.execute(rows.RETRY_NOW + where, (now, now, *args)).rowcount

    def counts(self, *, tenant: str | None = None) -> dict[Status, int]:
        where, args = _SQL.where(("tenant", tenant))
        with self._read() as conn:
            return rows.counts_of(conn.execute(rows.COUNTS.replace("{where}", where), args).fetchall())

    def deliveries(self, status: Status | None = None, *, tenant: str | None = None) -> list[Delivery]:
        where, args = _SQL.where(("tenant", tenant), ("status", status))
        with self._read() as conn:
            found = conn.execute(
                f"SELECT {rows.OUTBOX_COLUMNS} FROM outbox{where} ORDER BY id", args
            ).fetchall()
            return [rows.delivery(row) for row in found]

    # -- operators (issue 14: /readyz, /metrics) -------------------------------------------
    def ping(self) -> None:
        if self._closed:
            raise StateStoreError(f"{self.path}: state database is closed")
        if problem := sqlite_file.ping(self._conn, self._lock, self.path, self._identity):
            raise StateStoreError(problem)

    def oldest_pending(self) -> int | None:
        with self._read() as conn:  # outbox_status (status, id): the first pending row, no scan
            row = conn.execute(rows.OLDEST_PENDING).fetchone()
        return row[0] if row else None

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._conn.close()

    def __enter__(self) -> SqliteStateStore:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- added for delivery (issue 10): bounded batches, one body at a time, retention ------
    def due_ids(self, now: int, limit: int = 100) -> list[int]:
        """The ids ``due`` would return, without reading a bundle."""
        with self._read() as conn:
            return [row[0] for row in conn.execute(_DUE_IDS, (now, limit)).fetchall()]

    def claim_ids(self, now: int, limit: int = 100, lease: int = 60) -> list[int]:
        """``claim`` returning ids only: the deliverer reads each bundle when it sends it."""
        with self._write() as conn:
            ids = [row[0] for row in conn.execute(_DUE_IDS, (now, limit)).fetchall()]
            _postpone(conn, ids, now + lease)
        return ids

    def delivery(self, item: int) -> Delivery | None:
        """One outbox item with its bundle (None if it is gone, e.g. forgotten)."""
        with self._read() as conn:
            row = conn.execute(rows.DELIVERY, (item,)).fetchone()
        return rows.delivery(row) if row is not None else None

    def next_due(self) -> int | None:
        """When the next item can be sent (its ``next_attempt``), counting only items that are
        not waiting behind an earlier one of their patient and rule; None when none is pending."""
        with self._read() as conn:
            return conn.execute(_NEXT_DUE, (rows.FOREVER, -1)).fetchone()[0]

    def revise(self, item: int, bundle: dict[str, Any], note: dict[str, Any]) -> bool:
        """Replace a pending item's bundle by the one to send instead, keeping ``note`` (an
        OperationOutcome saying why) in its ``outcome``; False if the item is not pending."""
        with self._write() as conn:
            changed = conn.execute(rows.REVISE, (rows.dumps(bundle), rows.dumps(note), item)).rowcount
        return bool(changed)

    def revise_active(
        self, item: int, before: dict[str, dict[str, Any]], after: dict[str, dict[str, Any]]
    ) -> bool:
        """In the ledger entry of ``item``'s patient and rule, replace the Flag and CarePlan sent
        (``before["Flag"]``, ``before["CarePlan"]``) by those actually delivered, only if the
        entry still holds exactly ``before`` (a later evaluation's alert is left alone)."""
        with self._write() as conn:
            return rows.revise_alert(conn, _SQL, item, before, after)

    def purge_delivered(self, before: int) -> int:
        """Delete delivered outbox items delivered before ``before`` (epoch s); return how many.
        Pending and failed items stay: they still need a deliverer or an operator."""
        with self._write() as conn:
            removed = conn.execute(rows.PURGE_DELIVERED, (before,)).rowcount
            if removed:  # the audit trail of an item goes with it
                conn.execute(rows.PURGE_EVENTS)
        if removed:
            log.info("state.outbox.purged", before=before, items=removed)
        return removed

    # -- added for operators (issue 12): failed items put back in the queue, audit trail ----
    def retry_failed(
        self,
        items: Sequence[int] | None,
        now: int,
        actor: str = "operator",
        *,
        tenant: str | None = None,
    ) -> list[int]:
        """Put failed items (``items``, or every failed one when None) back in the queue, due
        at once, attempts and last reason kept; return the ids moved. Each move is recorded in
        the audit trail (failed -> pending, ``actor``) in the same transaction.

        An item with a later change of the same tenant, patient and rule queued after it is
        superseded and stays failed: sending it would put an older Flag over a newer one (or
        raise again an alert since withdrawn)."""
        where, args = _SQL.and_where(("tenant", tenant))
        chosen = " AND id IN (SELECT value FROM json_each(?))" if items is not None else ""
        picked = (*args, rows.dumps(list(items))) if items is not None else args
        with self._write() as conn:
            ids = [row[0] for row in conn.execute(rows.FAILED + where + chosen + " ORDER BY id", picked)]
            conn.executemany(rows.UNFAIL, [(now, item) for item in ids])
            _record_events(conn, ids, now, "failed", "pending", actor, "retry by operator")
        if ids:
            log.info("state.outbox.retried", items=len(ids), actor=actor)
        return ids

    def outbox_events(self, item: int | None = None, *, tenant: str | None = None) -> list[OutboxEvent]:
        """The audit trail of outbox items (of one item, or of one tenant's), oldest first."""
        where, args = _SQL.where(("item", item), ("tenant", tenant))
        with self._read() as conn:
            return rows.events_of(conn.execute(rows.OUTBOX_EVENTS + where + " ORDER BY id", args).fetchall())


def _postpone(conn: sqlite3.Connection, ids: Sequence[int], until: int) -> None:
    conn.executemany(
        "UPDATE outbox SET next_attempt = ? WHERE id = ? AND status = 'pending'",
        [(until, item) for item in ids],
    )


def _record_events(
    conn: sqlite3.Connection, items: Sequence[int], at: int, before: str, after: str, actor: str, reason: str
) -> None:
    """One audit row per item (``sql_rows.RECORD_EVENTS``)."""
    conn.executemany(
        rows.RECORD_EVENTS + "id = ?", [(at, before, after, actor, reason, item) for item in items]
    )


_DUE = rows.due_sql(rows.OUTBOX_COLUMNS, of_tenant=False)
_DUE_OF_TENANT = rows.due_sql(rows.OUTBOX_COLUMNS, of_tenant=True)
#: Derived from ``_DUE`` (same parameters: now, limit), so they follow any change to it.
_DUE_IDS = f"SELECT id FROM ({_DUE})"
_NEXT_DUE = f"SELECT MIN(next_attempt) FROM ({_DUE})"


def _due(conn: sqlite3.Connection, now: int, limit: int, tenant: str | None) -> list[tuple[Any, ...]]:
    sql = _DUE if tenant is None else _DUE_OF_TENANT
    return conn.execute(sql, rows.due_args(now, limit, tenant)).fetchall()


def _facts(conn: sqlite3.Connection, tenant: str, patient: str) -> dict[str, list[Fact]]:
    return rows.facts_of(conn.execute(rows.FACTS, (tenant, patient)).fetchall())


def _active(conn: sqlite3.Connection, tenant: str, patient: str) -> dict[str, ActiveAlert]:
    return rows.active_of(conn.execute(_ACTIVE, (tenant, patient)).fetchall())


_ACTIVE = _SQL.sql(rows.ACTIVE)
