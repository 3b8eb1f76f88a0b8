"""The networked ``FeedbackStore``: cards shown and clinicians' feedback from every replica in one
PostgreSQL database, so one ``redflags feedback report --state URL`` counts them all.

Same records, retention and report as ``feedback.SqliteFeedbackStore`` (its docstring says what
is kept and why): the SQL texts, rows and report shaping are ``feedback_sql``'s, shared with it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from fhir_adapters.times import iso
from redflags.state import feedback_sql as sql
from redflags.state.feedback import KEEP_S, PURGE_EVERY_S
from redflags.state.location import DatabaseRefused
from redflags.state.model import (
    Feedback,
    FeedbackReport,
    FeedbackStoreError,
    FeedbackStoreUnavailable,
    ShownCard,
)
from redflags.state.postgres_db import Database, Schema
from redflags.state.sql_rows import POSTGRES

SCHEMA = Schema(
    kind="feedback",
    migrations={
        1: (
            "CREATE TABLE card_shown (card TEXT PRIMARY KEY, service TEXT NOT NULL, rule TEXT NOT NULL, "
            "tier TEXT NOT NULL, indicator TEXT NOT NULL, shown_at TEXT NOT NULL, "
            "client TEXT NOT NULL DEFAULT '')",
            "CREATE INDEX card_shown_rule ON card_shown (rule)",
            "CREATE TABLE feedback (id BIGSERIAL PRIMARY KEY, service TEXT NOT NULL, card TEXT NOT NULL, "
            "outcome TEXT NOT NULL CHECK (outcome IN ('accepted', 'overridden')), accepted_suggestions TEXT, "
            "reason_system TEXT, reason_code TEXT, reason_display TEXT, user_comment TEXT, "
            "outcome_at TEXT NOT NULL, received_at TEXT NOT NULL, client TEXT NOT NULL)",
            "CREATE INDEX feedback_card ON feedback (card)",
        ),
    },
)
_SQL = POSTGRES


class FeedbackDatabaseRefused(DatabaseRefused, FeedbackStoreError):
    """The database refused the feedback store's login (wrong password, no such role or database)."""


class PostgresFeedbackStore:
    """``FeedbackStore`` on PostgreSQL; every write is one transaction, durable at commit."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self.path = db.where
        self.keep_s = KEEP_S
        self._purged_at: int | None = None

    @classmethod
    def open(cls, url: str, *, create: bool = True, max_size: int = 4) -> PostgresFeedbackStore:
        db = Database(
            url,
            "feedback",
            FeedbackStoreError,
            FeedbackStoreUnavailable,
            max_size=max_size,
            refused=FeedbackDatabaseRefused,
        )
        db.open(SCHEMA)
        return cls(db)

    def record_cards(
        self, service_id: str, cards: Iterable[ShownCard], shown_at: int, *, site: str | None = None
    ) -> None:
        if self._purged_at is None or abs(shown_at - self._purged_at) >= PURGE_EVERY_S:
            self._purged_at = shown_at
            self.purge(shown_at - self.keep_s)
        rows = sql.card_rows(service_id, cards, shown_at, site)
        if rows:
            with self._db.transaction("write") as conn, conn.cursor() as cur:
                cur.executemany(_SQL.sql(sql.INSERT_CARD), rows)

    def record_feedback(
        self,
        service_id: str,
        items: Sequence[Feedback],
        client: str,
        received_at: int,
        *,
        site: str | None = None,
    ) -> None:
        rows = sql.feedback_rows(service_id, items, client, received_at, site)
        if rows:
            with self._db.transaction("write") as conn, conn.cursor() as cur:
                cur.executemany(_SQL.sql(sql.INSERT_FEEDBACK), rows)

    def report(self) -> FeedbackReport:
        with self._db.transaction("read") as conn:
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            per_rule = conn.execute(_SQL.sql(sql.PER_RULE)).fetchall()
            reasons = conn.execute(_SQL.sql(sql.REASONS)).fetchall()
            return sql.report_of(per_rule, reasons, conn.execute(_SQL.sql(sql.UNKNOWN)).fetchall())

    def purge(self, before: int) -> int:
        cutoff = iso(max(before, 0))
        with self._db.transaction("purge") as conn:
            feedback = conn.execute(_SQL.sql(sql.PURGE_FEEDBACK), (cutoff, cutoff)).rowcount
            cards = conn.execute(_SQL.sql(sql.PURGE_CARDS), (cutoff,)).rowcount
        return feedback + cards

    def ping(self) -> None:
        self._db.ping()

    def close(self) -> None:
        self._db.close()
