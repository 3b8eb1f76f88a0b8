"""The alert lifecycle (docs/clinical-policy.md#alert-lifecycle): one active Flag per patient and rule.

Compared with the ledger (what is active on the server), an evaluation's alerts mean, per rule:

  fires, nothing active            raised     new Flag + CarePlan (conditional create)
  fires, active, tier or evidence  updated    the same Flag and CarePlan, changed in place
  fires, active, nothing changed   -          nothing sent, nothing announced
  does not fire, active            withdrawn  Flag inactive with period.end, CarePlan revoked

Updates and withdrawals are conditional updates on the stored identifiers, so resending one
is harmless. FHIR shapes live in ``fhir_adapters.output``; this module only decides.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from engine.alert import Alert
from fhir_adapters.output import alert_resources, alert_transaction, withdrawn
from redflags.state.model import DEFAULT_TENANT, ActiveAlert, NewDelivery, Transition
from rulesets.meta import RuleMeta


@dataclass(frozen=True, slots=True)
class Plan:
    active: dict[str, ActiveAlert]  # the ledger after this evaluation
    transitions: list[Transition]
    deliveries: list[NewDelivery]  # one per transition, in order


def _changed(before: ActiveAlert, alert: Alert) -> str:
    """Why an active alert's Flag must be updated ("" when it must not)."""
    if before.tier != alert.tier or before.severity != alert.severity:
        return f"tier {before.tier} ({before.severity}) -> {alert.tier} ({alert.severity})"
    if set(before.evidence) != set(alert.evidence):
        return "evidence changed"
    return ""


def identifier_scope(tenant: str) -> str:
    """The ``scope`` of a tenant's Flag and CarePlan identifiers (``output.episode_identifier``):
    the tenant, or "" for the default one, whose identifiers predate tenants."""
    return "" if tenant == DEFAULT_TENANT else tenant


def plan(
    patient: str,
    previous: Mapping[str, ActiveAlert],
    alerts: Sequence[Alert],
    metas: Mapping[str, RuleMeta],
    now: int,
    actor: str,
    tenant: str = DEFAULT_TENANT,
) -> Plan:
    """What to tell the FHIR server about ``patient`` after an evaluation at ``now``; a new
    alert's identifiers are scoped by ``tenant`` (the default tenant's are those of 0.4)."""
    scope = identifier_scope(tenant)
    firing = {a.rule: a for a in alerts if a.patient == patient}
    active: dict[str, ActiveAlert] = {}
    transitions: list[Transition] = []
    deliveries: list[NewDelivery] = []
    for rule in sorted(previous.keys() | firing.keys()):
        before, alert = previous.get(rule), firing.get(rule)
        if alert is None:
            assert before is not None
            flag, careplan = withdrawn(before.flag, before.careplan, now)
            change, reason, evidence = "withdrawn", "no longer supported by the record", before.evidence
        else:
            reason = _changed(before, alert) if before else "first raised"
            if not reason:
                active[rule] = before  # type: ignore[assignment]  # unchanged: nothing to send
                continue
            pair = (before.flag, before.careplan) if before else None
            flag, careplan = alert_resources(alert, metas[rule], active=pair, scope=scope)
            change, evidence = ("updated" if before else "raised"), alert.evidence
            active[rule] = ActiveAlert(
                patient,
                rule,
                alert.tier,
                alert.severity,
                flag,
                careplan,
                before.since if before else now,
                tuple(alert.evidence),
            )
        transitions.append(
            Transition(
                patient,
                rule,
                change,  # type: ignore[arg-type]
                alert.tier if alert else None,
                now,
                actor,
                tuple(evidence),
                reason,
            )
        )
        bundle = alert_transaction(flag, careplan, create=change == "raised")
        deliveries.append(NewDelivery(patient, rule, change, bundle))  # type: ignore[arg-type]
    return Plan(active, transitions, deliveries)
