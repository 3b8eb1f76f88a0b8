"""Alerts -> CDS Hooks 2.0 cards: one card per alert, whose suggestion creates its Flag and CarePlan.

The Flag and CarePlan are rendered by ``fhir_adapters.card_resources`` (once per alert).
Card and suggestion uuids derive from the hookInstance: unique per call, stable on a retry.
The specification forbids null and empty values: ``prune_empty`` (shared with the FHIR output)
removes them everywhere.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from engine.alert import Alert, severity_rank
from engine.vocabulary import RuleMeta
from fhir_adapters.card_resources import Pair, flag_text, resources_for
from fhir_adapters.identifiers import CANONICAL_BASE
from fhir_adapters.output import prune_empty

OVERRIDE_REASON_SYSTEM = f"{CANONICAL_BASE}/CodeSystem/override-reason"

#: Why a clinician dismisses a red-flag card; feedback reports count them per rule.
OVERRIDE_REASONS: tuple[tuple[str, str], ...] = (
    ("already-addressed", "Already assessed or being managed"),
    ("not-applicable", "Does not apply to this patient"),
    ("data-incorrect", "The record is wrong or out of date"),
    ("patient-declined", "Patient declined"),
)

#: Alert urgency -> card indicator (CDS Hooks: info < warning < critical).
INDICATOR = {"critical": "critical", "urgent": "warning", "routine": "info"}

SUMMARY_MAX = 139  # "<140-character summary"

_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, f"{CANONICAL_BASE}/cds-hooks")
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]<>|~])")  # what could turn text into markup
_CONTROLS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_BACKTICKS = re.compile(r"`+")


@dataclass(frozen=True, slots=True)
class IssuedCard:
    """What was shown, for whoever counts cards (feedback): no patient data."""

    card: str  # card uuid
    suggestion: str
    rule: str
    tier: str
    indicator: str


def override_reasons() -> list[dict[str, str]]:
    return [{"system": OVERRIDE_REASON_SYSTEM, "code": c, "display": d} for c, d in OVERRIDE_REASONS]


def _md(text: str) -> str:
    return _MARKDOWN_SPECIAL.sub(r"\\\1", text)


def _code(text: str) -> str:
    """``text`` as a Markdown code span: shown as is, never a link (a bare URL autolinks in
    text), never markup. Line breaks and other controls become spaces (a blank line would end
    the span); the fence is one backtick longer than any run of backticks inside."""
    flat = _CONTROLS.sub(" ", text)
    fence = "`" * (max((len(run) for run in _BACKTICKS.findall(flat)), default=0) + 1)
    pad = " " if flat.startswith(("`", " ")) or flat.endswith(("`", " ")) else ""
    return f"{fence}{pad}{flat}{pad}{fence}"


def summary(alert: Alert, meta: RuleMeta) -> str:
    """``<rule title>, tier A: <tier label>`` cut to fit the 140-character limit."""
    tier = meta.tier(alert.tier)
    flags = " (suspected)" if alert.suspected else ""
    text = f"{meta.title}, tier {tier.name}{flags}: {tier.label}"
    return text if len(text) <= SUMMARY_MAX else text[: SUMMARY_MAX - 1].rstrip() + "…"


def detail(alert: Alert, meta: RuleMeta) -> str:
    """Markdown: the tier, each matched criterion (values, units, dates) with its records, notes."""
    tier = meta.tier(alert.tier)
    lines = [f"**Tier {tier.name} ({tier.severity})**: {_md(tier.label)}", "", "**Matched criteria**", ""]
    for criterion in alert.criteria:
        refs = f" ({', '.join(_code(ref) for ref in criterion.refs)})" if criterion.refs else ""
        lines.append(f"- {_md(criterion.text)}{refs}")
    if alert.notes:
        lines += ["", "**Notes**", ""] + [f"- {_md(note)}" for note in alert.notes]
    caveats = []
    if alert.suspected:
        caveats.append("a criterion rests on a suspected (unconfirmed) diagnosis")
    if alert.preliminary:
        caveats.append("a result is preliminary")
    if caveats:
        lines += ["", "*Caution*: " + "; ".join(caveats) + "."]
    lines += ["", f"Source: [{_md(meta.source_label)}]({meta.source_url}), rule {meta.id} {alert.version}."]
    return "\n".join(lines)


def card_for(
    alert: Alert,
    meta: RuleMeta,
    hook_instance: str,
    *,
    system_actions: bool = False,
    rendered: Pair | None = None,
    scope: str = "",
) -> tuple[dict[str, Any], dict[str, Any] | None, IssuedCard]:
    """The card of one alert; with ``system_actions`` also the systemAction creating its Flag
    (the card's suggestion then proposes the CarePlan only). ``rendered``: the alert's Flag and
    CarePlan as this call already rendered them (``fhir_adapters.card_resources``). ``scope``:
    the caller's tenant ("" for the default one): in the Flag and CarePlan identifiers and the
    card uuids, so two callers sending one hookInstance never share a card's feedback."""
    instance = f"{scope}|{hook_instance}" if scope else hook_instance
    card_id = str(uuid.uuid5(_NAMESPACE, f"{instance}|card|{alert.rule}"))
    suggestion_id = str(uuid.uuid5(_NAMESPACE, f"{instance}|suggestion|{alert.rule}"))
    flag, careplan = resources_for(alert, meta, flag_elsewhere=system_actions, rendered=rendered, scope=scope)
    tier = meta.tier(alert.tier)
    flag_action = {"type": "create", "description": f"Flag: {flag_text(flag)}", "resource": flag}
    careplan_action = {
        "type": "create",
        "description": f"Proposed CarePlan (tier {tier.name} actions, draft for review)",
        "resource": careplan,
    }
    label = "the red flag and the proposed care plan" if not system_actions else "the proposed care plan"
    card = {
        "uuid": card_id,
        "summary": summary(alert, meta),
        "detail": detail(alert, meta),
        "indicator": INDICATOR[alert.severity],
        "source": {"label": meta.source_label, "url": meta.source_url},
        "suggestions": [
            {
                "label": f"Record {label}",
                "uuid": suggestion_id,
                "isRecommended": True,
                "actions": [careplan_action] if system_actions else [flag_action, careplan_action],
            }
        ],
        "selectionBehavior": "at-most-one",
        "overrideReasons": override_reasons(),
    }
    issued = IssuedCard(card_id, suggestion_id, alert.rule, alert.tier, card["indicator"])
    return card, flag_action if system_actions else None, issued


def cds_response(
    alerts: Iterable[Alert],
    metas: Mapping[str, RuleMeta],
    hook_instance: str,
    *,
    system_actions: bool = False,
    rendered: Mapping[str, Pair] | None = None,
    scope: str = "",
) -> tuple[dict[str, Any], list[IssuedCard]]:
    """The service response: cards most urgent first (then by rule id); ``{"cards": []}`` if none.

    ``rendered``: rule -> the Flag and CarePlan this call already rendered (one patient per call);
    ``scope``: the caller's tenant (``card_for``).
    """
    ordered = sorted(alerts, key=lambda a: (severity_rank(a.severity), a.rule))
    cards: list[dict[str, Any]] = []
    actions: list[dict[str, Any]] = []
    issued: list[IssuedCard] = []
    for alert in ordered:
        card, action, shown = card_for(
            alert,
            metas[alert.rule],
            hook_instance,
            system_actions=system_actions,
            rendered=(rendered or {}).get(alert.rule),
            scope=scope,
        )
        cards.append(card)
        issued.append(shown)
        if action is not None:
            actions.append(action)
    response: dict[str, Any] = {"cards": cards, "systemActions": actions}
    cleaned = prune_empty(response)
    cleaned["cards"] = cleaned.get("cards", [])  # the one array that stays, even when empty
    return cleaned, issued
