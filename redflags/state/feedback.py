"""Durable CDS Hooks feedback: which cards were shown, what clinicians did with them.

The contract with the card producer (``/cds-services/{id}``): when the service answers with
cards it calls ``record_cards(service_id, [ShownCard(uuid, rule, tier, indicator)], shown_at)``.
Feedback names only a ``card.uuid``; the report joins it to the rule through that record. The
join happens when the report is read, not when feedback arrives, so the order of the two
writes does not matter. Feedback for a uuid never recorded (sent after the database was
replaced, or by a confused client) is kept and counted apart as "unknown card".

Nothing here holds a patient identifier: a shown card is a uuid, a rule, a tier and a time.
Each shown card also names the client it was shown to (the JWT ``iss``): feedback counts for a
card only when the same client sends it, so one client cannot skew another's figures by
naming its card uuids (they derive from a hookInstance any client may choose). Cards recorded
before clients were (schema version 1) match feedback from any client. Likewise by site
(``serve --site``, the ``site`` keyword): a card counts only for feedback sent to the site that
showed it, and the report has a row per site and rule (keys: ``feedback_sql.site_key``).

Shown cards are kept ``keep_s`` (default ``KEEP_S``) and deleted after, with the feedback on
them and any other feedback received before that: the report covers that window. The store
deletes them itself, at most once a day, when it records cards.
Clinicians' free-text override comments are stored (they are the feedback) but never logged
or printed by the report.

``FeedbackStore`` is the interface; ``SqliteFeedbackStore`` the embedded default (one file,
WAL, shared safely by several worker processes). A networked database can replace it.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager
from pathlib import Path

from fhir_adapters.times import iso
from redflags.state import feedback_sql as sql
from redflags.state import sqlite_file
from redflags.state.model import (
    Feedback,
    FeedbackReport,
    FeedbackStore,
    FeedbackStoreError,
    Outcome,
    Reason,
    ReasonCount,
    RuleSummary,
    ShownCard,
    UnknownCards,
)
from redflags.state.sql_rows import SQLITE

__all__ = [  # the records and the interface live in ``model``; importable from here as before
    "Feedback",
    "FeedbackReport",
    "FeedbackStore",
    "FeedbackStoreError",
    "Outcome",
    "Reason",
    "ReasonCount",
    "RuleSummary",
    "ShownCard",
    "SqliteFeedbackStore",
    "UnknownCards",
]

SCHEMA_VERSION = 2  # the last key of _MIGRATIONS
#: Shown cards (and feedback) are kept this long (seconds): two quarters of alert-fatigue figures.
KEEP_S = 180 * 86_400
#: Old rows are deleted at most this often (seconds, by the ``shown_at`` clock).
PURGE_EVERY_S = 86_400


_TABLES = frozenset({"schema_version", "card_shown", "feedback"})
_SCHEMA = """
CREATE TABLE schema_version (version INTEGER NOT NULL);
CREATE TABLE card_shown (
    card TEXT PRIMARY KEY,
    service TEXT NOT NULL,
    rule TEXT NOT NULL,
    tier TEXT NOT NULL,
    indicator TEXT NOT NULL,
    shown_at TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX card_shown_rule ON card_shown (rule);
CREATE TABLE feedback (
    id INTEGER PRIMARY KEY,
    service TEXT NOT NULL,
    card TEXT NOT NULL,
    outcome TEXT NOT NULL CHECK (outcome IN ('accepted', 'overridden')),
    accepted_suggestions TEXT,
    reason_system TEXT,
    reason_code TEXT,
    reason_display TEXT,
    user_comment TEXT,
    outcome_at TEXT NOT NULL,
    received_at TEXT NOT NULL,
    client TEXT NOT NULL
);
CREATE INDEX feedback_card ON feedback (card);
"""
#: Forward-only steps (``sqlite_file.prepare_versioned``): version -> statements from version - 1.
_MIGRATIONS: dict[int, tuple[str, ...]] = {
    2: ("ALTER TABLE card_shown ADD COLUMN client TEXT NOT NULL DEFAULT ''",),
}
_SCHEMA_SPEC = sqlite_file.Schema(kind="feedback", v1=_SCHEMA, tables=_TABLES, migrations=_MIGRATIONS)
_SQL = SQLITE


class SqliteFeedbackStore:
    """One SQLite file shared by every worker process (WAL, waits on locks, fsync per commit).

    One connection per store, guarded by a lock: writes are a few rows and SQLite serialises
    writers anyway. ``synchronous=FULL`` makes each commit survive a power cut, which is what
    "stored before the 200" promises.
    """

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self._conn = conn
        self._lock = threading.RLock()  # _write holds it around _transaction
        self.path = path
        self._identity = sqlite_file.identity(path)  # ping: still the file the path names
        self.keep_s = KEEP_S  # retention of shown cards and feedback (``purge``)
        self._purged_at: int | None = None

    @classmethod
    def open(
        cls, path: str | Path, *, create: bool = True, busy_timeout_s: float = 30.0
    ) -> SqliteFeedbackStore:
        """Open (and with ``create`` make) the database; anything wrong is a FeedbackStoreError."""
        path = Path(path)
        if not create and not path.is_file():
            raise FeedbackStoreError(f"{path}: no such feedback database")
        try:
            conn, _ = sqlite_file.open_versioned(
                path, _SCHEMA_SPEC, create=create, busy_timeout_s=busy_timeout_s
            )
        except sqlite_file.CannotOpen as exc:
            raise FeedbackStoreError(f"{path}: cannot open feedback database: {exc}") from None
        except sqlite_file.NotOurs as exc:
            raise FeedbackStoreError(f"{path}: {exc}") from None
        except sqlite3.Error as exc:
            raise FeedbackStoreError(f"{path}: not a readable feedback database: {exc}") from None
        return cls(conn, path)

    def _transaction(self, mode: str = "IMMEDIATE") -> AbstractContextManager[sqlite3.Connection]:
        return sqlite_file.transaction(self._conn, self._lock, mode)

    def _write(self, sql: str, rows: list[tuple[object, ...]], *, sync: str = "FULL") -> None:
        """``sync``: FULL survives power loss; NORMAL (WAL) survives a crash of this process only."""
        if not rows:
            return
        try:
            with self._lock:
                self._conn.execute(f"PRAGMA synchronous={sync}")
                try:
                    with self._transaction() as conn:
                        conn.executemany(sql, rows)
                finally:
                    self._conn.execute("PRAGMA synchronous=FULL")
        except sqlite3.Error as exc:
            raise FeedbackStoreError(f"{self.path}: feedback database write failed: {exc}") from None

    def record_cards(
        self, service_id: str, cards: Iterable[ShownCard], shown_at: int, *, site: str | None = None
    ) -> None:
        """Remember which rule each card uuid stands for; a uuid already recorded keeps its first row.

        Written on every call that shows a card, so without waiting for the disk (NORMAL): a
        crash of the service loses nothing; a power cut may lose the last rows, and feedback on
        those cards is then kept as "unknown card".
        """
        if self._purged_at is None or abs(shown_at - self._purged_at) >= PURGE_EVERY_S:
            self._purged_at = shown_at
            self.purge(shown_at - self.keep_s)
        self._write(
            _SQL.sql(sql.INSERT_CARD), sql.card_rows(service_id, cards, shown_at, site), sync="NORMAL"
        )

    def record_feedback(
        self,
        service_id: str,
        items: Sequence[Feedback],
        client: str,
        received_at: int,
        *,
        site: str | None = None,
    ) -> None:
        """Store every item of one request in one transaction (all or nothing)."""
        self._write(
            _SQL.sql(sql.INSERT_FEEDBACK), sql.feedback_rows(service_id, items, client, received_at, site)
        )

    def report(self) -> FeedbackReport:
        try:
            with self._transaction("DEFERRED"):
                return self._report()
        except sqlite3.Error as exc:
            raise FeedbackStoreError(f"{self.path}: feedback database read failed: {exc}") from None

    def _report(self) -> FeedbackReport:
        conn = self._conn
        per_rule = conn.execute(_SQL.sql(sql.PER_RULE)).fetchall()
        reasons = conn.execute(_SQL.sql(sql.REASONS)).fetchall()
        return sql.report_of(per_rule, reasons, conn.execute(_SQL.sql(sql.UNKNOWN)).fetchall())

    def ping(self) -> None:
        if problem := sqlite_file.ping(self._conn, self._lock, self.path, self._identity):
            raise FeedbackStoreError(problem)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def purge(self, before: int) -> int:
        """Delete cards shown before ``before`` (epoch s) with the feedback on them, and feedback
        received before it; return the rows deleted. One transaction: the report never sees a
        card's feedback without the card."""
        cutoff = iso(max(before, 0))
        try:
            with self._lock, self._transaction() as conn:
                feedback = conn.execute(_SQL.sql(sql.PURGE_FEEDBACK), (cutoff, cutoff)).rowcount
                cards = conn.execute(_SQL.sql(sql.PURGE_CARDS), (cutoff,)).rowcount
        except sqlite3.Error as exc:
            raise FeedbackStoreError(f"{self.path}: feedback database purge failed: {exc}") from None
        return feedback + cards
