"""What the SQLite and PostgreSQL feedback stores share: the rows they write, the report's
queries and the shaping of its rows.

Texts use ``?`` placeholders and ``{collate}`` (``sql_rows.Dialect.sql`` spells them for one
database). The report is written so both databases read it alike: no boolean ``MAX``
(``CASE ... THEN 1 ELSE 0``), and sums made integers in Python (PostgreSQL's ``SUM`` of a
``bigint`` is a ``numeric``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import orjson

from fhir_adapters.times import iso
from redflags.state.model import Feedback, FeedbackReport, ReasonCount, RuleSummary, ShownCard, UnknownCards

INSERT_CARD = (
    "INSERT INTO card_shown (card, service, rule, tier, indicator, shown_at, client) "
    "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (card) DO NOTHING"
)
INSERT_FEEDBACK = (
    "INSERT INTO feedback (service, card, outcome, accepted_suggestions, reason_system, reason_code, "
    "reason_display, user_comment, outcome_at, received_at, client) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
#: Parameters (cutoff, cutoff): feedback received before the cutoff or on a card shown before it.
PURGE_FEEDBACK = (
    "DELETE FROM feedback WHERE received_at < ? OR card IN (SELECT card FROM card_shown WHERE shown_at < ?)"
)
PURGE_CARDS = "DELETE FROM card_shown WHERE shown_at < ?"

#: Feedback counts for a shown card when it comes from the client the card was shown to.
_SAME_CARD = "s.card = f.card AND s.client IN ('', f.client)"
_ONE = "CASE WHEN {} THEN 1 ELSE 0 END"
PER_RULE = f"""
WITH per_card AS (
    SELECT s.rule,
           COUNT(f.id) AS items,
           COALESCE(MAX({_ONE.format("f.outcome = 'accepted'")}), 0) AS accepted,
           COALESCE(MAX({_ONE.format("f.outcome = 'overridden'")}), 0) AS overridden,
           COALESCE(MAX({_ONE.format("f.outcome = 'overridden' AND f.reason_code IS NULL")}), 0) AS no_reason
    FROM card_shown s LEFT JOIN feedback f ON {_SAME_CARD}
    GROUP BY s.card, s.rule
)
SELECT rule, COUNT(*), SUM(accepted), SUM(overridden), SUM({_ONE.format("items = 0")}), SUM(items),
       SUM(no_reason)
FROM per_card GROUP BY rule ORDER BY rule{{collate}}
"""
REASONS = f"""
SELECT s.rule, f.reason_system, f.reason_code, MAX(f.reason_display), COUNT(DISTINCT f.card)
FROM feedback f JOIN card_shown s ON {_SAME_CARD}
WHERE f.outcome = 'overridden' AND f.reason_code IS NOT NULL
GROUP BY s.rule, f.reason_system, f.reason_code
ORDER BY s.rule{{collate}}, COUNT(DISTINCT f.card) DESC, f.reason_system{{collate}}, f.reason_code{{collate}}
"""
UNKNOWN = f"""
SELECT COUNT(*), COUNT(DISTINCT f.card),
       COUNT(DISTINCT CASE WHEN f.outcome = 'accepted' THEN f.card END),
       COUNT(DISTINCT CASE WHEN f.outcome = 'overridden' THEN f.card END)
FROM feedback f WHERE NOT EXISTS (SELECT 1 FROM card_shown s WHERE {_SAME_CARD})
"""


def card_rows(service_id: str, cards: Iterable[ShownCard], shown_at: int) -> list[tuple[object, ...]]:
    """Rows of ``INSERT_CARD``."""
    when = iso(shown_at)
    return [(c.card, service_id, c.rule, c.tier, c.indicator, when, c.client) for c in cards]


def feedback_rows(
    service_id: str, items: Sequence[Feedback], client: str, received_at: int
) -> list[tuple[object, ...]]:
    """Rows of ``INSERT_FEEDBACK``."""
    when = iso(received_at)
    return [
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


def report_of(
    per_rule: Sequence[Sequence[Any]], reasons: Iterable[Sequence[Any]], unknown: Sequence[Any] | None
) -> FeedbackReport:
    """The report from the rows of ``PER_RULE``, ``REASONS`` and ``UNKNOWN``."""
    by_rule: dict[str, list[ReasonCount]] = {}
    for rule, system, code, display, cards in reasons:
        by_rule.setdefault(rule, []).append(ReasonCount(system, code, display, int(cards)))
    summaries = tuple(
        RuleSummary(
            rule=rule,
            shown=int(shown),
            accepted=int(accepted),
            overridden=int(overridden),
            no_feedback=int(silent),
            feedback_items=int(items),
            overridden_without_reason=int(no_reason),
            override_reasons=tuple(by_rule.get(rule, ())),
        )
        for rule, shown, accepted, overridden, silent, items, no_reason in per_rule
    )
    return FeedbackReport(rules=summaries, unknown_cards=UnknownCards(*(int(n) for n in unknown or ())))
