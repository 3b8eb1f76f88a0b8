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
makes feedback sent to one site for a card shown at another an unknown card, with no change to
the join. The report groups by service key and merges a site's services in Python (``report_of``;
its counts are of distinct cards, each shown by one service, so they add up); only the unknown
cards, not additive across services, are grouped in SQL by ``rtrim(service, SERVICE_ID_CHARS)``,
which both databases spell alike.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import fields
from typing import Any

import orjson

from fhir_adapters.times import iso
from redflags.state.model import Feedback, FeedbackReport, ReasonCount, RuleSummary, ShownCard, UnknownCards

#: Every character a CDS service id may hold (``/`` excluded): ``rtrim`` strips the service id
#: off a key and leaves ``NAME/`` (a site's) or ``""`` (the default site's).
SERVICE_ID_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_."
SEPARATOR = "/"


def site_key(site: str | None, key: str) -> str:
    """The key a site's service id or card uuid is stored under; the default site's unchanged,
    except that one holding ``/`` (only a card a client made up can) gets a leading ``/``, so a
    default-site client naming ``NAME/uuid`` never names site NAME's card."""
    if site:
        return f"{site}{SEPARATOR}{key}"
    return f"{SEPARATOR}{key}" if SEPARATOR in key else key


def site_of(key: str) -> str:
    """The site of a stored service key (``NAME/...``: NAME; ``""``: the default site)."""
    site, sep, _ = key.partition(SEPARATOR)
    return site if sep else ""


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
#: Per service key and rule (``report_of`` merges a site's services).
PER_RULE = f"""
WITH per_card AS (
    SELECT s.service, s.rule,
           COUNT(f.id) AS items,
           COALESCE(MAX({_ONE.format("f.outcome = 'accepted'")}), 0) AS accepted,
           COALESCE(MAX({_ONE.format("f.outcome = 'overridden'")}), 0) AS overridden,
           COALESCE(MAX({_ONE.format("f.outcome = 'overridden' AND f.reason_code IS NULL")}), 0) AS no_reason
    FROM card_shown s LEFT JOIN feedback f ON {_SAME_CARD}
    GROUP BY s.card, s.service, s.rule
)
SELECT service, rule, COUNT(*), SUM(accepted), SUM(overridden), SUM({_ONE.format("items = 0")}), SUM(items),
       SUM(no_reason)
FROM per_card GROUP BY service, rule
"""
REASONS = f"""
SELECT s.service, s.rule, f.reason_system, f.reason_code, MAX(f.reason_display), COUNT(DISTINCT f.card)
FROM feedback f JOIN card_shown s ON {_SAME_CARD}
WHERE f.outcome = 'overridden' AND f.reason_code IS NOT NULL
GROUP BY s.service, s.rule, f.reason_system, f.reason_code
"""
_SITE = f"rtrim(f.service, '{SERVICE_ID_CHARS}')"
#: Per site (``NAME/`` or ``""``): feedback on no card shown there (to that client).
UNKNOWN = f"""
SELECT {_SITE}, COUNT(*), COUNT(DISTINCT f.card),
       COUNT(DISTINCT CASE WHEN f.outcome = 'accepted' THEN f.card END),
       COUNT(DISTINCT CASE WHEN f.outcome = 'overridden' THEN f.card END)
FROM feedback f WHERE NOT EXISTS (SELECT 1 FROM card_shown s WHERE {_SAME_CARD})
GROUP BY {_SITE}
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


def _later(a: str | None, b: str | None) -> str | None:
    """``MAX`` of two displays, NULL ignored (one code's display as two services' rows gave it)."""
    return b if a is None else a if b is None else max(a, b)


def report_of(
    per_rule: Iterable[Sequence[Any]], reasons: Iterable[Sequence[Any]], unknown: Iterable[Sequence[Any]]
) -> FeedbackReport:
    """The report from the rows of ``PER_RULE``, ``REASONS`` and ``UNKNOWN``: one row per (site,
    rule), sorted by code point (as ``COLLATE "C"``), the default site ("") first."""
    counts: dict[tuple[str, str], list[int]] = {}
    for service, rule, *numbers in per_rule:
        row = counts.setdefault((site_of(service), rule), [0] * len(numbers))
        row[:] = [n + int(m) for n, m in zip(row, numbers, strict=True)]
    cited: dict[tuple[str, str, str, str], tuple[str | None, int]] = {}
    for service, rule, system, code, display, cards in reasons:
        key = (site_of(service), rule, system, code)
        before, total = cited.get(key, (None, 0))
        cited[key] = (_later(before, display), total + int(cards))
    by_rule: dict[tuple[str, str], list[ReasonCount]] = {}
    for (site, rule, system, code), (display, cards) in sorted(
        cited.items(), key=lambda kv: (kv[0][:2], -kv[1][1], kv[0][2], kv[0][3])
    ):
        by_rule.setdefault((site, rule), []).append(ReasonCount(system, code, display, cards))
    summaries = tuple(
        RuleSummary(rule, *numbers, override_reasons=tuple(by_rule.get((site, rule), ())), site=site)
        for (site, rule), numbers in sorted(counts.items())
    )
    sites = (
        (prefix.removesuffix(SEPARATOR), UnknownCards(*map(int, numbers))) for prefix, *numbers in unknown
    )
    by_site = tuple(sorted(sites, key=lambda row: row[0]))
    total = UnknownCards(*(sum(getattr(u, f.name) for _, u in by_site) for f in fields(UnknownCards)))
    return FeedbackReport(rules=summaries, unknown_cards=total, unknown_by_site=by_site)
