"""The networked ``FeedbackStore``: cards shown and clinicians' feedback from every replica in one
PostgreSQL database, so one ``redflags feedback report --state URL`` counts them all.

Same records, retention and report as ``feedback.SqliteFeedbackStore`` (its docstring says what
is kept and why); the report's SQL differs only where PostgreSQL spells it otherwise (no boolean
``MAX``, ``SUM`` of integers cast back to integers).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import orjson

from fhir_adapters.times import iso
from redflags.state.feedback import KEEP_S, PURGE_EVERY_S
from redflags.state.model import (
    Feedback,
    FeedbackReport,
    FeedbackStoreError,
    FeedbackStoreUnavailable,
    ReasonCount,
    RuleSummary,
    ShownCard,
    UnknownCards,
)
from redflags.state.postgres_db import Database, Schema

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
_SAME_CARD = "s.card = f.card AND s.client IN ('', f.client)"
_ONE = "CASE WHEN {} THEN 1 ELSE 0 END"
_PER_RULE = f"""
WITH per_card AS (
    SELECT s.rule,
           COUNT(f.id) AS items,
           COALESCE(MAX({_ONE.format("f.outcome = 'accepted'")}), 0) AS accepted,
           COALESCE(MAX({_ONE.format("f.outcome = 'overridden'")}), 0) AS overridden,
           COALESCE(MAX({_ONE.format("f.outcome = 'overridden' AND f.reason_code IS NULL")}), 0) AS no_reason
    FROM card_shown s LEFT JOIN feedback f ON {_SAME_CARD}
    GROUP BY s.card, s.rule
)
SELECT rule, COUNT(*)::bigint, SUM(accepted)::bigint, SUM(overridden)::bigint,
       SUM({_ONE.format("items = 0")})::bigint, SUM(items)::bigint, SUM(no_reason)::bigint
FROM per_card GROUP BY rule ORDER BY rule COLLATE "C"
"""
_REASONS = f"""
SELECT s.rule, f.reason_system, f.reason_code, MAX(f.reason_display), COUNT(DISTINCT f.card)
FROM feedback f JOIN card_shown s ON {_SAME_CARD}
WHERE f.outcome = 'overridden' AND f.reason_code IS NOT NULL
GROUP BY s.rule, f.reason_system, f.reason_code
ORDER BY s.rule COLLATE "C", COUNT(DISTINCT f.card) DESC,
         f.reason_system COLLATE "C", f.reason_code COLLATE "C"
"""
_UNKNOWN = f"""
SELECT COUNT(*), COUNT(DISTINCT f.card),
       COUNT(DISTINCT CASE WHEN f.outcome = 'accepted' THEN f.card END),
       COUNT(DISTINCT CASE WHEN f.outcome = 'overridden' THEN f.card END)
FROM feedback f WHERE NOT EXISTS (SELECT 1 FROM card_shown s WHERE {_SAME_CARD})
"""


class PostgresFeedbackStore:
    """``FeedbackStore`` on PostgreSQL; every write is one transaction, durable at commit."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self.path = db.where
        self.keep_s = KEEP_S
        self._purged_at: int | None = None

    @classmethod
    def open(cls, url: str, *, create: bool = True, max_size: int = 4) -> PostgresFeedbackStore:
        db = Database(url, "feedback", FeedbackStoreError, FeedbackStoreUnavailable, max_size=max_size)
        db.open(SCHEMA)
        return cls(db)

    def record_cards(self, service_id: str, cards: Iterable[ShownCard], shown_at: int) -> None:
        if self._purged_at is None or abs(shown_at - self._purged_at) >= PURGE_EVERY_S:
            self._purged_at = shown_at
            self.purge(shown_at - self.keep_s)
        when = iso(shown_at)
        rows = [(c.card, service_id, c.rule, c.tier, c.indicator, when, c.client) for c in cards]
        if rows:
            with self._db.transaction("write") as conn, conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO card_shown (card, service, rule, tier, indicator, shown_at, client) "
                    "VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (card) DO NOTHING",
                    rows,
                )

    def record_feedback(
        self, service_id: str, items: Sequence[Feedback], client: str, received_at: int
    ) -> None:
        when = iso(received_at)
        rows = [
            (
                service_id,
                f.card,
                f.outcome,
                orjson.dumps(list(f.accepted_suggestions)).decode() if f.accepted_suggestions else None,
                f.reason.system if f.reason else None,
                f.reason.code if f.reason else None,
                f.reason.display if f.reason else None,
                f.comment,
                f.outcome_at,
                when,
                client,
            )
            for f in items
        ]
        if rows:
            with self._db.transaction("write") as conn, conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO feedback (service, card, outcome, accepted_suggestions, reason_system, "
                    "reason_code, reason_display, user_comment, outcome_at, received_at, client) "
                    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                    rows,
                )

    def report(self) -> FeedbackReport:
        with self._db.transaction("read") as conn:
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            rows = conn.execute(_PER_RULE).fetchall()
            reasons: dict[str, list[ReasonCount]] = {}
            for rule, system, code, display, cards in conn.execute(_REASONS).fetchall():
                reasons.setdefault(rule, []).append(ReasonCount(system, code, display, int(cards)))
            unknown = conn.execute(_UNKNOWN).fetchone()
        summaries = tuple(
            RuleSummary(
                rule=rule,
                shown=int(shown),
                accepted=int(accepted),
                overridden=int(overridden),
                no_feedback=int(silent),
                feedback_items=int(items),
                overridden_without_reason=int(no_reason),
                override_reasons=tuple(reasons.get(rule, ())),
            )
            for rule, shown, accepted, overridden, silent, items, no_reason in rows
        )
        return FeedbackReport(rules=summaries, unknown_cards=UnknownCards(*(int(n) for n in unknown or ())))

    def purge(self, before: int) -> int:
        cutoff = iso(max(before, 0))
        with self._db.transaction("purge") as conn:
            feedback = conn.execute(
                "DELETE FROM feedback WHERE received_at < %s OR card IN "
                "(SELECT card FROM card_shown WHERE shown_at < %s)",
                (cutoff, cutoff),
            ).rowcount
            cards = conn.execute("DELETE FROM card_shown WHERE shown_at < %s", (cutoff,)).rowcount
        return feedback + cards

    def ping(self) -> None:
        self._db.ping()

    def close(self) -> None:
        self._db.close()
