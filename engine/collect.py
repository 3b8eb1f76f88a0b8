"""From the matches of one session to alerts: highest tier, blocks, suppressions, evidence.

This is the stratified-negation step: a ``block`` or a competing rule removes a tier only
after every positive fact has been derived, so the outcome never depends on fact order.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from engine.alert import Alert, Criterion
from engine.describe import day, describe, findings_once
from engine.dsl import Spec
from engine.lineage import Lineage
from engine.vocabulary import RuleMeta

#: At most this many distinct criteria are spelled out in the one-sentence rationale.
MAX_RATIONALE_CRITERIA = 8


@dataclass(frozen=True, slots=True)
class Match:
    spec: Spec
    facts: list[dict[str, Any]]


def _refs(fact: Mapping[str, object]) -> list[str]:
    return str(fact.get("refs") or fact.get("ref") or "").split()


def _counts(match: Match, severity: str, preliminary_supports: Collection[str] | None) -> bool:
    """A match on a preliminary result counts only at the severities the policy lets it support."""
    if preliminary_supports is None or severity in preliminary_supports:
        return True
    return not any(f.get("prelim") == 1 for f in match.facts)


def _chosen(meta: RuleMeta, fired: Mapping[str, list[Match]], blocked: set[str]) -> str | None:
    for tier in meta.tiers:  # declared most urgent first
        if tier.name in fired and tier.name not in blocked:
            return tier.name
    return None


def collect(
    pid: str,
    now: int,
    matches: Sequence[Match],
    metas: Mapping[str, RuleMeta],
    titles: Mapping[str, str],
    lineage: Lineage | None = None,
    preliminary_supports: Collection[str] | None = None,
) -> list[Alert]:
    """``pid``: the subject's own reference (never evidence); ``lineage``: derivations not
    asserted (engine.lineage) whose evidence the alerts cite too; ``preliminary_supports``: the
    severities a match on a preliminary result (``prelim`` 1) may support (None: every one)."""
    lineage = lineage or Lineage()
    fired: dict[str, dict[str, list[Match]]] = {}
    blocked: dict[str, set[str]] = {}
    notes: dict[str, list[Match]] = {}
    for match in matches:
        spec = match.spec
        meta = metas.get(spec.rule)
        if meta is None:
            continue
        if spec.does == "block":
            blocked.setdefault(spec.rule, set()).update(spec.tiers)
            continue
        if spec.does == "note":
            notes.setdefault(spec.rule, []).append(match)
            continue
        tier = spec.tiers[0]
        if _counts(match, meta.tier(tier).severity, preliminary_supports):
            fired.setdefault(spec.rule, {}).setdefault(tier, []).append(match)
    chosen = {
        rule: pick
        for rule, tiers in fired.items()
        if (pick := _chosen(metas[rule], tiers, blocked.get(rule, set()))) is not None
    }
    alerts: list[Alert] = []
    for rule, tier in chosen.items():
        meta = metas[rule]
        if any(
            chosen.get(other) == other_tier and tier == ours for other, other_tier, ours in meta.suppressed_by
        ):
            continue
        shown = _notes([n for n in notes.get(rule, []) if tier in n.spec.tiers], titles)
        alerts.append(_alert(pid, now, meta, tier, fired[rule][tier], titles, lineage, shown))
    alerts.sort(key=lambda a: (a.severity != "critical", a.severity != "urgent", a.rule))
    return alerts


def _notes(matches: Sequence[Match], titles: Mapping[str, str]) -> tuple[str, ...]:
    """Card notes in declaration order, each once (several matches may produce the same line)."""
    lines: dict[str, None] = {}
    for match in sorted(matches, key=lambda m: m.spec.name):
        facts = "; ".join(describe(f, titles) for f in match.facts if f.get("t") != "patient")
        lines.setdefault(match.spec.text.replace("{facts}", facts), None)
    return tuple(lines)


def _alert(
    pid: str,
    now: int,
    meta: RuleMeta,
    tier: str,
    matches: list[Match],
    titles: Mapping[str, str],
    lineage: Lineage,
    notes: tuple[str, ...] = (),
) -> Alert:
    criteria: dict[str, tuple[str, ...]] = {}
    evidence: dict[str, None] = {}
    times: list[int] = []
    suspected = preliminary = False
    for match in matches:
        for fact in match.facts:
            refs = tuple(r for r in _refs(fact) if r != pid)
            phrase = describe(fact, titles)
            criteria.setdefault(phrase, refs)
            for other in lineage.alternates.get(fact.get("id"), ()):  # type: ignore[arg-type]  # no int id: none
                cited = tuple(r for r in _refs(other) if r != pid)
                criteria.setdefault(describe(other, titles), cited)
            for ref in refs:
                evidence.setdefault(ref, None)
            times.extend(lineage.times(fact))
            suspected |= fact.get("suspected") == 1
            preliminary |= fact.get("prelim") == 1
    for match in matches:  # records behind derivations not asserted (engine.lineage)
        for fact in match.facts:
            if isinstance(fact.get("id"), int) and fact.get("t") == "derived":
                for ref in lineage.refs(int(fact["id"])):
                    if ref != pid:
                        evidence.setdefault(ref, None)
    level = meta.tier(tier)
    phrases = findings_once(criteria)  # each finding once (a derived criterion repeats its sources)
    shown = "; ".join(phrases[:MAX_RATIONALE_CRITERIA])
    more = len(phrases) - MAX_RATIONALE_CRITERIA
    tail = f"; and {more} more" if more > 0 else ""
    prefix = "suspected " if suspected else ""
    rationale = f"{prefix}{meta.title}, tier {tier} ({level.severity}, {level.label}): {shown}{tail}."
    return Alert(
        patient=pid,
        rule=meta.id,
        version=meta.version,
        tier=tier,
        severity=level.severity,
        title=meta.title,
        rationale=rationale[0].upper() + rationale[1:],
        criteria=tuple(Criterion(text, refs) for text, refs in criteria.items()),
        evidence=tuple(evidence),
        now=now,
        episode=day(min(times)) if times else day(now),
        suspected=suspected,
        preliminary=preliminary,
        notes=notes,
        disorder=next((m.spec.disorder for m in matches if m.spec.disorder), meta.disorder),
    )
