"""What the SQLite and PostgreSQL feedback stores share: the rows they write, the report's
queries and the shaping of its rows.

Texts use ``?`` placeholders and ``{collate}`` (``sql_rows.Dialect.sql`` spells them for one
database). The report is written so both databases read it alike: no boolean ``MAX``
(``CASE ... THEN 1 ELSE 0``), and sums made integers in Python (PostgreSQL's ``SUM`` of a
``bigint`` is a ``numeric``).

Sites (``serve --site NAME=FILE``) share the tables without a schema change: a site's rows are
keyed ``NAME/service-id`` and ``NAME/card-uuid`` (``site_key``); the default site's keep today's
keys, so existing databases and their reports stay as they were. The card key keeps two sites'
cards apart (a card uuid derives from the hookInstance, which two sites may both be sent) and
makes feedback sent to one site for a card shown at another an unknown card. The report reads a
row's site back from its service key with ``rtrim(service, SERVICE_ID_CHARS)``, which both
databases spell alike: a service id is made only of those characters, a site name ends at the
``/`` (``site_of``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import orjson

from fhir_adapters.times import iso
from redflags.state.model import Feedback, FeedbackReport, ReasonCount, RuleSummary, ShownCard, UnknownCards

#: Every character a CDS service id may hold (``/`` excluded): ``rtrim`` strips the service id
#: off a key and leaves ``NAME/`` (a site's) or ``""`` (the default site's).
SERVICE_ID_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_."
SEPARATOR = "/"


def site_key(site: str | None, key: str) -> str:
    """The key a site's service id or card uuid is stored under (the default site's: unchanged)."""
    return f"{site}{SEPARATOR}{key}" if site else key


def site_of(prefix: str) -> str:
    """The site name from a ``_SITE`` value (``NAME/`` or ``""``)."""
    return prefix.removesuffix(SEPARATOR)


def _site(column: str) -> str:
    return f"rtrim({column}, '{SERVICE_ID_CHARS}')"


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

#: Feedback counts for a shown card when it comes from the client the card was shown to, at the
#: site it was shown at (a default-site client naming a card ``NAME/uuid`` is not site NAME's).
_SAME_CARD = f"s.card = f.card AND s.client IN ('', f.client) AND {_site('s.service')} = {_site('f.service')}"
_ONE = "CASE WHEN {} THEN 1 ELSE 0 END"
PER_RULE = f"""
WITH per_card AS (
    SELECT {_site("s.service")} AS site, s.rule,
           COUNT(f.id) AS items,
           COALESCE(MAX({_ONE.format("f.outcome = 'accepted'")}), 0) AS accepted,
           COALESCE(MAX({_ONE.format("f.outcome = 'overridden'")}), 0) AS overridden,
           COALESCE(MAX({_ONE.format("f.outcome = 'overridden' AND f.reason_code IS NULL")}), 0) AS no_reason
    FROM card_shown s LEFT JOIN feedback f ON {_SAME_CARD}
    GROUP BY s.card, s.service, s.rule
)
SELECT site, rule, COUNT(*), SUM(accepted), SUM(overridden), SUM({_ONE.format("items = 0")}), SUM(items),
       SUM(no_reason)
FROM per_card GROUP BY site, rule ORDER BY site{{collate}}, rule{{collate}}
"""
REASONS = f"""
SELECT {_site("s.service")}, s.rule, f.reason_system, f.reason_code, MAX(f.reason_display),
       COUNT(DISTINCT f.card)
FROM feedback f JOIN card_shown s ON {_SAME_CARD}
WHERE f.outcome = 'overridden' AND f.reason_code IS NOT NULL
GROUP BY {_site("s.service")}, s.rule, f.reason_system, f.reason_code
ORDER BY {_site("s.service")}{{collate}}, s.rule{{collate}}, COUNT(DISTINCT f.card) DESC,
         f.reason_system{{collate}}, f.reason_code{{collate}}
"""
#: Per site: feedback on no card shown at that site (to that client).
UNKNOWN = f"""
SELECT {_site("f.service")}, COUNT(*), COUNT(DISTINCT f.card),
       COUNT(DISTINCT CASE WHEN f.outcome = 'accepted' THEN f.card END),
       COUNT(DISTINCT CASE WHEN f.outcome = 'overridden' THEN f.card END)
FROM feedback f WHERE NOT EXISTS (SELECT 1 FROM card_shown s WHERE {_SAME_CARD})
GROUP BY {_site("f.service")} ORDER BY {_site("f.service")}{{collate}}
"""


def card_rows(
    service_id: str, cards: Iterable[ShownCard], shown_at: int, site: str | None = None
) -> list[tuple[object, ...]]:
    """Rows of ``INSERT_CARD``."""
    when, service = iso(shown_at), site_key(site, service_id)
    return [(site_key(site, c.card), service, c.rule, c.tier, c.indicator, when, c.client) for c in cards]


def feedback_rows(
    service_id: str, items: Sequence[Feedback], client: str, received_at: int, site: str | None = None
) -> list[tuple[object, ...]]:
    """Rows of ``INSERT_FEEDBACK``."""
    when, service = iso(received_at), site_key(site, service_id)
    return [
        (
            service,
            site_key(site, f.card),
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
    per_rule: Sequence[Sequence[Any]], reasons: Iterable[Sequence[Any]], unknown: Iterable[Sequence[Any]]
) -> FeedbackReport:
    """The report from the rows of ``PER_RULE``, ``REASONS`` and ``UNKNOWN``."""
    by_rule: dict[tuple[str, str], list[ReasonCount]] = {}
    for site, rule, system, code, display, cards in reasons:
        by_rule.setdefault((site_of(site), rule), []).append(ReasonCount(system, code, display, int(cards)))
    summaries = tuple(
        RuleSummary(
            rule=rule,
            shown=int(shown),
            accepted=int(accepted),
            overridden=int(overridden),
            no_feedback=int(silent),
            feedback_items=int(items),
            overridden_without_reason=int(no_reason),
            override_reasons=tuple(by_rule.get((site_of(site), rule), ())),
            site=site_of(site),
        )
        for site, rule, shown, accepted, overridden, silent, items, no_reason in per_rule
    )
    by_site = tuple((site_of(site), UnknownCards(*(int(n) for n in counts))) for site, *counts in unknown)
    total = UnknownCards(*(sum(getattr(u, name) for _, u in by_site) for name in UnknownCards.__slots__))
    return FeedbackReport(rules=summaries, unknown_cards=total, unknown_by_site=by_site)
