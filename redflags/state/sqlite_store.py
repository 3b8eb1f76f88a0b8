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
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import cast

import orjson

from engine.logger import get_logger
from redflags.state import sql_rows as rows
from redflags.state import sqlite_file
from redflags.state.keyed_lock import KeyedLocks
from redflags.state.model import (
    DEFAULT_TENANT,
    Evaluated,
    NoStateStore,
    Snapshot,
    StaleRead,
    StateStoreError,
)
from redflags.state.sql_store import SqlStateStore

__all__ = ["SCHEMA_VERSION", "NoStateStore", "SqliteStateStore", "StateStoreError"]

log = get_logger("redflags.state")

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


class SqliteStateStore(SqlStateStore):
    """``StateStore`` on one SQLite file; one connection, shared by threads under one lock."""

    _SQL = rows.SQLITE
    _NO_LIMIT = -1

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

    def snapshot(self, patient: str, *, tenant: str = DEFAULT_TENANT) -> Snapshot:
        """One read transaction: the facts, ledger and sequence number belong together."""
        with self._read() as conn:
            facts = self._facts(conn, tenant, patient)
            active = self._active(conn, tenant, patient)
            seq = rows.seq_of(conn.execute(rows.SEQ, (tenant, patient)).fetchone())
        return Snapshot(facts, active, seq)

    def patient_lock(self, patient: str, *, tenant: str = DEFAULT_TENANT) -> AbstractContextManager[None]:
        """Threads of this process evaluate one patient in turn. Across processes on the file
        no lock is held through an evaluation (it would stop every other writer): ``commit``'s
        sequence check refuses the later of two and it is evaluated again (``StaleRead``)."""
        return self._patients.hold((tenant, patient))

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

    # -- operators (issue 14: /readyz, /metrics) -------------------------------------------
    def ping(self) -> None:
        if self._closed:
            raise StateStoreError(f"{self.path}: state database is closed")
        if problem := sqlite_file.ping(self._conn, self._lock, self.path, self._identity):
            raise StateStoreError(problem)

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._conn.close()

    # -- hooks of SqlStateStore -------------------------------------------------------------
    def _executemany(self, conn: sqlite3.Connection, sql: str, args: list[tuple[object, ...]]) -> None:
        conn.executemany(sql, args)

    def _postpone(self, conn: sqlite3.Connection, ids: Sequence[int], until: int) -> None:
        conn.executemany(
            "UPDATE outbox SET next_attempt = ? WHERE id = ? AND status = 'pending'",
            [(until, item) for item in ids],
        )

    def _record_events(
        self, conn: sqlite3.Connection, items: Sequence[int], audit: tuple[object, ...]
    ) -> None:
        conn.executemany(rows.RECORD_EVENTS + "id = ?", [(*audit, item) for item in items])

    def _chosen(self, items: Sequence[int]) -> tuple[str, object]:
        return " AND id IN (SELECT value FROM json_each(?))", rows.dumps(list(items))
