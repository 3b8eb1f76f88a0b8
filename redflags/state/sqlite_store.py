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

Nothing here logs a patient identifier; outbox item ids are logged, never their patient.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any, cast

import orjson
import structlog

from redflags import sqlite_file
from redflags.state.model import (
    ActiveAlert,
    Change,
    Delivery,
    Evaluated,
    Fact,
    StateStore,
    StateStoreError,
    Status,
    Transition,
)

__all__ = ["SCHEMA_VERSION", "SqliteStateStore", "StateStoreError", "open_store"]

log = structlog.get_logger("redflags.state")

SCHEMA_VERSION = 1
_STATUSES: tuple[Status, ...] = ("pending", "delivered", "failed")

_SCHEMA = """
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
_TABLES = frozenset({"schema_version", "fact", "active_alert", "transition", "outbox"})

_OUTBOX_COLUMNS = (
    "id, patient, rule, change, bundle, status, attempts, next_attempt, created, delivered, "
    "last_error, outcome"
)
# The oldest pending item of each (patient, rule) only: a later change waits for the earlier one.
_DUE = f"""
SELECT {_OUTBOX_COLUMNS} FROM outbox o
WHERE o.status = 'pending' AND o.next_attempt <= ?
  AND NOT EXISTS (
      SELECT 1 FROM outbox e
      WHERE e.patient = o.patient AND e.rule = o.rule AND e.status = 'pending' AND e.id < o.id
  )
ORDER BY o.id LIMIT ?
"""


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
    )


class SqliteStateStore:
    """``StateStore`` on one SQLite file; one connection, shared by threads under one lock."""

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self._conn = conn
        self._lock = threading.RLock()
        self._closed = False
        self.path = path

    # -- opening --------------------------------------------------------------------------
    @classmethod
    def open(cls, path: str | Path, *, busy_timeout_s: float = 30.0) -> SqliteStateStore:
        """Open the database, creating file and schema if needed; anything wrong is a StateStoreError."""
        path = Path(path)
        try:
            conn = sqlite_file.connect(path, create=True, busy_timeout_s=busy_timeout_s)
        except (OSError, sqlite3.Error) as exc:
            raise StateStoreError(f"{path}: cannot open state database: {_one_line(exc)}") from None
        store = cls(conn, path)
        try:
            store._prepare()
        except sqlite3.Error as exc:
            conn.close()
            why = _one_line(exc)
            raise StateStoreError(f"{path}: not a readable redflags state database: {why}") from None
        except StateStoreError:
            conn.close()
            raise
        return store

    def _prepare(self) -> None:
        """Check (or create) the schema first, then switch to WAL: a foreign database is left as found."""
        conn = self._conn
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=OFF")
        with self._transaction("IMMEDIATE"):
            wrong = sqlite_file.prepare_schema(
                conn, schema=_SCHEMA, version=SCHEMA_VERSION, tables=_TABLES, create=True, kind="state"
            )
            if wrong:
                raise StateStoreError(f"{self.path}: {wrong}")
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise StateStoreError(f"{self.path}: cannot switch the state database to WAL (mode {mode})")

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
    def history(self, patient: str, exclude: Sequence[str] = ()) -> list[Fact]:
        """In insertion order; a resource sent again moves to the end (its facts were replaced)."""
        skip = set(exclude)
        return [f for ref, facts in self.facts_by_resource(patient).items() if ref not in skip for f in facts]

    def facts_by_resource(self, patient: str) -> dict[str, list[Fact]]:
        with self._read() as conn:
            rows = conn.execute(
                "SELECT ref, body FROM fact WHERE patient = ? ORDER BY id", (patient,)
            ).fetchall()
        found: dict[str, list[Fact]] = {}
        for ref, body in rows:
            found.setdefault(ref, []).append(orjson.loads(body))
        return found

    def forget(self, patient: str) -> int:
        with self._write() as conn:
            removed = 0
            for table in ("fact", "active_alert", "transition", "outbox"):
                removed += conn.execute(f"DELETE FROM {table} WHERE patient = ?", (patient,)).rowcount
        log.info("state.forget", rows=removed)
        return removed

    def prune(self, before: int) -> int:
        """Facts without a ``ts`` count as recorded when stored (see the module docstring)."""
        with self._write() as conn:
            removed = conn.execute("DELETE FROM fact WHERE ts < ?", (before,)).rowcount
        log.info("state.prune", before=before, facts=removed)
        return removed

    # -- ledger ---------------------------------------------------------------------------
    def active(self, patient: str) -> dict[str, ActiveAlert]:
        with self._read() as conn:
            rows = conn.execute(
                "SELECT rule, body FROM active_alert WHERE patient = ? ORDER BY rule", (patient,)
            ).fetchall()
            return {rule: _alert(body) for rule, body in rows}

    def transitions(self, patient: str | None = None) -> list[Transition]:
        sql = "SELECT patient, rule, change, tier, at, actor, evidence, reason FROM transition"
        args: tuple[object, ...] = ()
        if patient is not None:
            sql += " WHERE patient = ?"
            args = (patient,)
        with self._read() as conn:
            rows = conn.execute(sql + " ORDER BY id", args).fetchall()
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
                )
                for p, rule, change, tier, at, actor, evidence, reason in rows
            ]

    # -- one evaluation -------------------------------------------------------------------
    def commit(self, evaluated: Evaluated) -> list[int]:
        """All or nothing; returns the new outbox ids in the order of ``evaluated.deliveries``."""
        _check(evaluated)
        patient, now = evaluated.patient, evaluated.now
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
        with self._write() as conn:
            for ref, rows in facts:
                conn.execute("DELETE FROM fact WHERE patient = ? AND ref = ?", (patient, ref))
                conn.executemany(
                    "INSERT INTO fact (patient, ref, ts, body) VALUES (?, ?, ?, ?)",
                    [(patient, ref, ts, body) for ts, body in rows],
                )
            conn.execute("DELETE FROM active_alert WHERE patient = ?", (patient,))
            conn.executemany(
                "INSERT INTO active_alert (patient, rule, body) VALUES (?, ?, ?)",
                [(patient, rule, body) for rule, body in active],
            )
            conn.executemany(
                "INSERT INTO transition (patient, rule, change, tier, at, actor, evidence, reason) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [(patient, *row) for row in transitions],
            )
            for rule, change, bundle in deliveries:
                cursor = conn.execute(
                    "INSERT INTO outbox (patient, rule, change, bundle, status, attempts, next_attempt, "
                    "created) VALUES (?, ?, ?, ?, 'pending', 0, 0, ?)",
                    (patient, rule, change, bundle, now),
                )
                ids.append(cast(int, cursor.lastrowid))
        return ids

    # -- outbox ---------------------------------------------------------------------------
    def due(self, now: int, limit: int = 100) -> list[Delivery]:
        with self._read() as conn:
            return [_delivery(row) for row in conn.execute(_DUE, (now, limit)).fetchall()]

    def claim(self, now: int, limit: int = 100, lease: int = 60) -> list[Delivery]:
        """``due``, and postpone what it returns by ``lease`` seconds, in one write transaction.

        For several deliverers on one file: two never get the same item, and an item whose
        deliverer died without marking it becomes due again when the lease runs out. (Not in
        the ``StateStore`` protocol; ``due`` alone suits a single deliverer.)
        """
        with self._write() as conn:
            items = [_delivery(row) for row in conn.execute(_DUE, (now, limit)).fetchall()]
            conn.executemany(
                "UPDATE outbox SET next_attempt = ? WHERE id = ? AND status = 'pending'",
                [(now + lease, item.id) for item in items],
            )
        return items

    def mark_delivered(self, item: int, now: int) -> None:
        """The successful send counts as an attempt too: ``attempts`` is how many sends it took."""
        self._mark(
            item,
            "delivered",
            "UPDATE outbox SET status = 'delivered', delivered = ?, attempts = attempts + 1, "
            "last_error = NULL WHERE id = ? AND status = 'pending'",
            (now, item),
        )

    def mark_retry(self, item: int, next_attempt: int, error: str) -> None:
        self._mark(
            item,
            "retry",
            "UPDATE outbox SET attempts = attempts + 1, next_attempt = ?, last_error = ? "
            "WHERE id = ? AND status = 'pending'",
            (next_attempt, error, item),
        )

    def mark_failed(self, item: int, error: str, outcome: dict[str, Any] | None) -> None:
        """Failed for good: the item stops blocking later changes of its patient and rule."""
        self._mark(
            item,
            "failed",
            "UPDATE outbox SET status = 'failed', attempts = attempts + 1, last_error = ?, outcome = ? "
            "WHERE id = ? AND status = 'pending'",
            (error, _dumps(outcome) if outcome is not None else None, item),
        )

    def _mark(self, item: int, what: str, sql: str, args: tuple[object, ...]) -> None:
        """Only a pending item moves: marking twice, or a forgotten item, changes nothing."""
        with self._write() as conn:
            changed = conn.execute(sql, args).rowcount
        if not changed:
            log.warning("state.outbox.mark_ignored", item=item, mark=what, reason="not a pending item")

    def retry_now(self, now: int) -> int:
        """Return how many pending items were waiting for a later retry (all pending are now due)."""
        with self._write() as conn:
            return conn.execute(
                "UPDATE outbox SET next_attempt = ? WHERE status = 'pending' AND next_attempt > ?", (now, now)
            ).rowcount

    def counts(self) -> dict[Status, int]:
        with self._read() as conn:
            found = dict(conn.execute("SELECT status, COUNT(*) FROM outbox GROUP BY status").fetchall())
        return {status: found.get(status, 0) for status in _STATUSES}

    def deliveries(self, status: Status | None = None) -> list[Delivery]:
        sql = f"SELECT {_OUTBOX_COLUMNS} FROM outbox"
        args: tuple[object, ...] = ()
        if status is not None:
            sql += " WHERE status = ?"
            args = (status,)
        with self._read() as conn:
            return [_delivery(row) for row in conn.execute(sql + " ORDER BY id", args).fetchall()]

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
            row = conn.execute("SELECT patient, rule FROM outbox WHERE id = ?", (item,)).fetchone()
            if row is None:
                return False
            body = conn.execute(
                "SELECT body FROM active_alert WHERE patient = ? AND rule = ?", (row[0], row[1])
            ).fetchone()
            if body is None:
                return False
            alert = orjson.loads(body[0])
            if alert["flag"] != before.get("Flag") or alert["careplan"] != before.get("CarePlan"):
                return False
            alert["flag"], alert["careplan"] = after["Flag"], after["CarePlan"]
            conn.execute(
                "UPDATE active_alert SET body = ? WHERE patient = ? AND rule = ?",
                (_dumps(alert), row[0], row[1]),
            )
        return True

    def purge_delivered(self, before: int) -> int:
        """Delete delivered outbox items delivered before ``before`` (epoch s); return how many.
        Pending and failed items stay: they still need a deliverer or an operator."""
        with self._write() as conn:
            removed = conn.execute(
                "DELETE FROM outbox WHERE status = 'delivered' AND delivered < ?", (before,)
            ).rowcount
        if removed:
            log.info("state.outbox.purged", before=before, items=removed)
        return removed


#: Derived from ``_DUE`` (same parameters: now, limit), so they follow any change to it.
_DUE_IDS = f"SELECT id FROM ({_DUE})"
_NEXT_DUE = f"SELECT MIN(next_attempt) FROM ({_DUE})"
_FOREVER = 2**62


def open_store(path: str | Path) -> StateStore:
    """The default store for ``path`` (the factory the CLI and service call)."""
    return SqliteStateStore.open(path)


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
