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

from engine.logger import get_logger
from redflags.state import sqlite_file
from redflags.state.keyed_lock import KeyedLocks
from redflags.state.model import (
    DEFAULT_TENANT,
    ActiveAlert,
    Change,
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

log = get_logger("redflags.state")

SCHEMA_VERSION = 3  # the last key of _MIGRATIONS
_STATUSES: tuple[Status, ...] = ("pending", "delivered", "failed")

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
#: Tables holding one tenant's patients (``forget`` empties them for one patient).
_SCHEMA_SPEC = sqlite_file.Schema(
    kind="state", v1=_SCHEMA_V1, tables=_TABLES_V1, migrations=_MIGRATIONS, final_tables=_TABLES
)
_PATIENT_TABLES = ("fact", "active_alert", "transition", "outbox", "patient_seq", "outbox_event")
#: Bookkeeping of a patient's records, erased with them but not counted as records.
_BOOKKEEPING = frozenset({"patient_seq", "outbox_event"})

_OUTBOX_COLUMNS = (
    "id, patient, rule, change, bundle, status, attempts, next_attempt, created, delivered, "
    "last_error, outcome, tenant, last_status"
)
# The oldest pending item of each (tenant, patient, rule) only: a later change waits for the
# earlier one. Parameters (now, limit); ``_DUE_OF_TENANT``: (now, tenant, limit).
_DUE_WHERE = """
WHERE o.status = 'pending' AND o.next_attempt <= ?{tenant}
  AND NOT EXISTS (
      SELECT 1 FROM outbox e
      WHERE e.tenant = o.tenant AND e.patient = o.patient AND e.rule = o.rule
        AND e.status = 'pending' AND e.id < o.id
  )
ORDER BY o.id LIMIT ?
"""
_DUE = f"SELECT {_OUTBOX_COLUMNS} FROM outbox o" + _DUE_WHERE.format(tenant="")
_DUE_OF_TENANT = f"SELECT {_OUTBOX_COLUMNS} FROM outbox o" + _DUE_WHERE.format(tenant=" AND o.tenant = ?")


def _dumps(value: object) -> bytes:
    return orjson.dumps(value)


def _fact_ts(fact: Fact, stored: int) -> int:
    ts = fact.get("ts")
    if isinstance(ts, int | float) and not isinstance(ts, bool):
        return int(ts)
    return stored


def _alert_json(alert: ActiveAlert) -> bytes:
    return _dumps(
        {
            "patient": alert.patient,
            "rule": alert.rule,
            "tier": alert.tier,
            "severity": alert.severity,
            "flag": alert.flag,
            "careplan": alert.careplan,
            "since": alert.since,
            "evidence": list(alert.evidence),
        }
    )


def _alert(body: bytes) -> ActiveAlert:
    data = orjson.loads(body)
    data["evidence"] = tuple(data["evidence"])
    return ActiveAlert(**data)


def _delivery(row: tuple[Any, ...]) -> Delivery:
    (
        item,
        patient,
        rule,
        change,
        bundle,
        status,
        attempts,
        next_attempt,
        created,
        delivered,
        error,
        outcome,
        tenant,
        last_status,
    ) = row
    return Delivery(
        id=item,
        patient=patient,
        rule=rule,
        change=change,
        bundle=orjson.loads(bundle),
        status=status,
        attempts=attempts,
        next_attempt=next_attempt,
        created=created,
        delivered=delivered,
        last_error=error,
        outcome=orjson.loads(outcome) if outcome is not None else None,
        tenant=tenant,
        last_status=last_status,
    )


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
            why = _one_line(exc)
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
            raise StateStoreError(f"{self.path}: state database {what} failed: {_one_line(exc)}") from None
        except (orjson.JSONEncodeError, orjson.JSONDecodeError) as exc:
            raise StateStoreError(f"{self.path}: state database {what} failed: {_one_line(exc)}") from None

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
            seq = _seq(conn, tenant, patient)
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
            for table in _PATIENT_TABLES:  # the count is of records: patient_seq is bookkeeping
                deleted = conn.execute(
                    f"DELETE FROM {table} WHERE tenant = ? AND patient = ?", (tenant, patient)
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
                f"UNION SELECT tenant, patient FROM outbox){where} GROUP BY tenant ORDER BY tenant",
                args,
            ).fetchall()
        return dict(rows)

    def prune(self, before: int, *, tenant: str | None = None) -> int:
        """Facts without a ``ts`` count as recorded when stored (see the module docstring).

        ``tenant``: that tenant's facts only (a replay at its own clock prunes its own tenant)."""
        where, args = _where(("tenant", tenant))
        with self._write() as conn:
            removed = conn.execute(
                "DELETE FROM fact WHERE ts < ?" + where.replace(" WHERE ", " AND "), (before, *args)
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
        """All or nothing; returns the new outbox ids in the order of ``evaluated.deliveries``."""
        _check(evaluated)
        patient, now, tenant = evaluated.patient, evaluated.now, evaluated.tenant
        # Serialise before the transaction: a fact that is not JSON fails without holding the lock.
        try:
            facts = [
                (ref, [(_fact_ts(f, now), _dumps(f)) for f in items])
                for ref, items in evaluated.facts.items()
            ]
            active = [(rule, _alert_json(alert)) for rule, alert in evaluated.active.items()]
            transitions = [
                (t.rule, t.change, t.tier, t.at, t.actor, _dumps(list(t.evidence)), t.reason)
                for t in evaluated.transitions
            ]
            deliveries = [(d.rule, d.change, _dumps(d.bundle)) for d in evaluated.deliveries]
        except orjson.JSONEncodeError as exc:
            raise StateStoreError(f"{self.path}: cannot store evaluation: {_one_line(exc)}") from None
        ids: list[int] = []
        key = (tenant, patient)
        with self._write() as conn:
            seq = _seq(conn, tenant, patient)
            if evaluated.seen is not None and seq != evaluated.seen:
                raise StaleRead(f"{self.path}: the patient changed after this evaluation read it")
            conn.execute(
                "INSERT INTO patient_seq (tenant, patient, seq) VALUES (?, ?, ?) "
                "ON CONFLICT (tenant, patient) DO UPDATE SET seq = excluded.seq",
                (*key, seq + 1),
            )
            for ref, rows in facts:
                conn.execute("DELETE FROM fact WHERE tenant = ? AND patient = ? AND ref = ?", (*key, ref))
                conn.executemany(
                    "INSERT INTO fact (tenant, patient, ref, ts, body) VALUES (?, ?, ?, ?, ?)",
                    [(*key, ref, ts, body) for ts, body in rows],
                )
            conn.execute("DELETE FROM active_alert WHERE tenant = ? AND patient = ?", key)
            conn.executemany(
                "INSERT INTO active_alert (tenant, patient, rule, body) VALUES (?, ?, ?, ?)",
                [(*key, rule, body) for rule, body in active],
            )
            conn.executemany(
                "INSERT INTO transition (tenant, patient, rule, change, tier, at, actor, evidence, reason) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(*key, *row) for row in transitions],
            )
            for rule, change, bundle in deliveries:
                cursor = conn.execute(
                    "INSERT INTO outbox (tenant, patient, rule, change, bundle, status, attempts, "
                    "next_attempt, created) VALUES (?, ?, ?, ?, ?, 'pending', 0, 0, ?)",
                    (*key, rule, change, bundle, now),
                )
                ids.append(cast(int, cursor.lastrowid))
        return ids

    # -- outbox ---------------------------------------------------------------------------
    def due(self, now: int, limit: int = 100, *, tenant: str | None = None) -> list[Delivery]:
        with self._read() as conn:
            return [_delivery(row) for row in _due(conn, now, limit, tenant)]

    def claim(
        self, now: int, limit: int = 100, lease: int = 60, *, tenant: str | None = None
    ) -> list[Delivery]:
        """``due``, and postpone what it returns by ``lease`` seconds, in one write transaction.

        For several deliverers on one file: two never get the same item, and an item whose
        deliverer died without marking it becomes due again when the lease runs out. (Not in
        the ``StateStore`` protocol; ``due`` alone suits a single deliverer.)
        """
        with self._write() as conn:
            items = [_delivery(row) for row in _due(conn, now, limit, tenant)]
            conn.executemany(
                "UPDATE outbox SET next_attempt = ? WHERE id = ? AND status = 'pending'",
                [(now + lease, item.id) for item in items],
            )
        return items

    def mark_delivered(self, item: int, now: int, last_status: str | None = "delivered") -> None:
        """The successful send counts as an attempt too: ``attempts`` is how many sends it took.
        Recorded in the audit trail (pending -> delivered)."""
        self._mark(
            item,
            "delivered",
            "UPDATE outbox SET status = 'delivered', delivered = ?, attempts = attempts + 1, "
            "last_error = NULL, last_status = ? WHERE id = ? AND status = 'pending'",
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
            "UPDATE outbox SET attempts = attempts + 1, next_attempt = ?, last_error = ?, last_status = ? "
            "WHERE id = ? AND status = 'pending'",
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
            "UPDATE outbox SET status = 'failed', attempts = attempts + 1, last_error = ?, outcome = ?, "
            "last_status = ? WHERE id = ? AND status = 'pending'",
            (error, _dumps(outcome) if outcome is not None else None, last_status, item),
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
        where, args = _where(("tenant", tenant))
        with self._write() as conn:
            return conn.execute(
                "UPDATE outbox SET next_attempt = ? WHERE status = 'pending' AND next_attempt > ?"
                + where.replace(" WHERE ", " AND "),
                (now, now, *args),
            ).rowcount

    def counts(self, *, tenant: str | None = None) -> dict[Status, int]:
        where, args = _where(("tenant", tenant))
        with self._read() as conn:
            found = dict(
                conn.execute(f"SELECT status, COUNT(*) FROM outbox{where} GROUP BY status", args).fetchall()
            )
        return {status: found.get(status, 0) for status in _STATUSES}

    def deliveries(self, status: Status | None = None, *, tenant: str | None = None) -> list[Delivery]:
        where, args = _where(("tenant", tenant), ("status", status))
        with self._read() as conn:
            rows = conn.execute(f"SELECT {_OUTBOX_COLUMNS} FROM outbox{where} ORDER BY id", args).fetchall()
            return [_delivery(row) for row in rows]

    # -- operators (issue 14: /readyz, /metrics) -------------------------------------------
    def ping(self) -> None:
        if self._closed:
            raise StateStoreError(f"{self.path}: state database is closed")
        if problem := sqlite_file.ping(self._conn, self._lock, self.path, self._identity):
            raise StateStoreError(problem)

    def oldest_pending(self) -> int | None:
        with self._read() as conn:  # outbox_status (status, id): the first pending row, no scan
            row = conn.execute(
                "SELECT created FROM outbox WHERE status = 'pending' ORDER BY id LIMIT 1"
            ).fetchone()
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
            conn.executemany(
                "UPDATE outbox SET next_attempt = ? WHERE id = ? AND status = 'pending'",
                [(now + lease, item) for item in ids],
            )
        return ids

    def delivery(self, item: int) -> Delivery | None:
        """One outbox item with its bundle (None if it is gone, e.g. forgotten)."""
        with self._read() as conn:
            row = conn.execute(f"SELECT {_OUTBOX_COLUMNS} FROM outbox WHERE id = ?", (item,)).fetchone()
        return _delivery(row) if row is not None else None

    def next_due(self) -> int | None:
        """When the next item can be sent (its ``next_attempt``), counting only items that are
        not waiting behind an earlier one of their patient and rule; None when none is pending."""
        with self._read() as conn:
            return conn.execute(_NEXT_DUE, (_FOREVER, -1)).fetchone()[0]

    def revise(self, item: int, bundle: dict[str, Any], note: dict[str, Any]) -> bool:
        """Replace a pending item's bundle by the one to send instead, keeping ``note`` (an
        OperationOutcome saying why) in its ``outcome``; False if the item is not pending."""
        with self._write() as conn:
            changed = conn.execute(
                "UPDATE outbox SET bundle = ?, outcome = ? WHERE id = ? AND status = 'pending'",
                (_dumps(bundle), _dumps(note), item),
            ).rowcount
        return bool(changed)

    def revise_active(
        self, item: int, before: dict[str, dict[str, Any]], after: dict[str, dict[str, Any]]
    ) -> bool:
        """In the ledger entry of ``item``'s patient and rule, replace the Flag and CarePlan sent
        (``before["Flag"]``, ``before["CarePlan"]``) by those actually delivered, only if the
        entry still holds exactly ``before`` (a later evaluation's alert is left alone)."""
        with self._write() as conn:
            row = conn.execute("SELECT tenant, patient, rule FROM outbox WHERE id = ?", (item,)).fetchone()
            if row is None:
                return False
            body = conn.execute(
                "SELECT body FROM active_alert WHERE tenant = ? AND patient = ? AND rule = ?",
                tuple(row),
            ).fetchone()
            if body is None:
                return False
            alert = orjson.loads(body[0])
            if alert["flag"] != before.get("Flag") or alert["careplan"] != before.get("CarePlan"):
                return False
            alert["flag"], alert["careplan"] = after["Flag"], after["CarePlan"]
            conn.execute(
                "UPDATE active_alert SET body = ? WHERE tenant = ? AND patient = ? AND rule = ?",
                (_dumps(alert), *row),
            )
        return True

    def purge_delivered(self, before: int) -> int:
        """Delete delivered outbox items delivered before ``before`` (epoch s); return how many.
        Pending and failed items stay: they still need a deliverer or an operator."""
        with self._write() as conn:
            removed = conn.execute(
                "DELETE FROM outbox WHERE status = 'delivered' AND delivered < ?", (before,)
            ).rowcount
            if removed:  # the audit trail of an item goes with it
                conn.execute("DELETE FROM outbox_event WHERE item NOT IN (SELECT id FROM outbox)")
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
        where, args = _where(("tenant", tenant))
        chosen = " AND id IN (SELECT value FROM json_each(?))" if items is not None else ""
        picked = (*args, _dumps(list(items))) if items is not None else args
        with self._write() as conn:
            ids = [
                row[0]
                for row in conn.execute(
                    "SELECT id FROM outbox o WHERE status = 'failed'"
                    + _NOT_SUPERSEDED
                    + where.replace(" WHERE ", " AND ")
                    + chosen
                    + " ORDER BY id",
                    picked,
                ).fetchall()
            ]
            conn.executemany(
                "UPDATE outbox SET status = 'pending', next_attempt = ? WHERE id = ? AND status = 'failed'",
                [(now, item) for item in ids],
            )
            _record_events(conn, ids, now, "failed", "pending", actor, "retry by operator")
        if ids:
            log.info("state.outbox.retried", items=len(ids), actor=actor)
        return ids

    def outbox_events(self, item: int | None = None, *, tenant: str | None = None) -> list[OutboxEvent]:
        """The audit trail of outbox items (of one item, or of one tenant's), oldest first."""
        where, args = _where(("item", item), ("tenant", tenant))
        with self._read() as conn:
            rows = conn.execute(
                "SELECT item, tenant, patient, rule, at, from_status, to_status, actor, reason "
                f"FROM outbox_event{where} ORDER BY id",
                args,
            ).fetchall()
        return [OutboxEvent(*row) for row in rows]


_NOT_SUPERSEDED = (
    " AND NOT EXISTS (SELECT 1 FROM outbox l WHERE l.tenant = o.tenant AND l.patient = o.patient"
    " AND l.rule = o.rule AND l.id > o.id)"
)


def _record_events(
    conn: sqlite3.Connection, items: Sequence[int], at: int, before: str, after: str, actor: str, reason: str
) -> None:
    """One audit row per item (its tenant, patient and rule copied from the outbox row)."""
    conn.executemany(
        "INSERT INTO outbox_event (item, tenant, patient, rule, at, from_status, to_status, actor, reason) "
        "SELECT id, tenant, patient, rule, ?, ?, ?, ?, ? FROM outbox WHERE id = ?",
        [(at, before, after, actor, reason, item) for item in items],
    )


#: Derived from ``_DUE`` (same parameters: now, limit), so they follow any change to it.
_DUE_IDS = f"SELECT id FROM ({_DUE})"
_NEXT_DUE = f"SELECT MIN(next_attempt) FROM ({_DUE})"
_FOREVER = 2**62


def _due(conn: sqlite3.Connection, now: int, limit: int, tenant: str | None) -> list[tuple[Any, ...]]:
    if tenant is None:
        return conn.execute(_DUE, (now, limit)).fetchall()
    return conn.execute(_DUE_OF_TENANT, (now, tenant, limit)).fetchall()


def _facts(conn: sqlite3.Connection, tenant: str, patient: str) -> dict[str, list[Fact]]:
    rows = conn.execute(
        "SELECT ref, body FROM fact WHERE tenant = ? AND patient = ? ORDER BY id", (tenant, patient)
    ).fetchall()
    found: dict[str, list[Fact]] = {}
    for ref, body in rows:
        found.setdefault(ref, []).append(orjson.loads(body))
    return found


def _active(conn: sqlite3.Connection, tenant: str, patient: str) -> dict[str, ActiveAlert]:
    rows = conn.execute(
        "SELECT rule, body FROM active_alert WHERE tenant = ? AND patient = ? ORDER BY rule",
        (tenant, patient),
    ).fetchall()
    return {rule: _alert(body) for rule, body in rows}


def _seq(conn: sqlite3.Connection, tenant: str, patient: str) -> int:
    row = conn.execute(
        "SELECT seq FROM patient_seq WHERE tenant = ? AND patient = ?", (tenant, patient)
    ).fetchone()
    return row[0] if row else 0


def _where(*conditions: tuple[str, object]) -> tuple[str, tuple[object, ...]]:
    """`` WHERE a = ? AND b = ?`` for the conditions whose value is not None (column names are ours)."""
    given = [(column, value) for column, value in conditions if value is not None]
    if not given:
        return "", ()
    return " WHERE " + " AND ".join(f"{column} = ?" for column, _ in given), tuple(v for _, v in given)


def _check(evaluated: Evaluated) -> None:
    """Records of another patient in one evaluation are a caller's bug: refuse before writing."""
    patient = evaluated.patient
    records: list[tuple[str, str]] = [(a.patient, "active alert") for a in evaluated.active.values()]
    records += [(t.patient, "transition") for t in evaluated.transitions]
    records += [(d.patient, "delivery") for d in evaluated.deliveries]
    for other, what in records:
        if other != patient:
            raise ValueError(f"{what} of another patient in one evaluation")
    for rule, alert in evaluated.active.items():
        if alert.rule != rule:
            raise ValueError(f"active alert keyed {rule!r} is for rule {alert.rule!r}")


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
