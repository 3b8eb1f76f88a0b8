"""Turn alerts into the FHIR resources redflags writes back (docs/clinical-policy.md#write-back).

Everything built here is deterministic for a given alert (identifiers and ``urn:uuid`` fullUrls
are uuid5 values), so re-sending the same evaluation is idempotent under conditional create,
and every resource is validated before it leaves this module: invalid FHIR is a bug, not data.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from functools import cache
from typing import TYPE_CHECKING, Any, overload

from engine.alert import Alert
from engine.engine_build import installed_engine_version
from engine.vocabulary import Action, Code, RuleMeta
from fhir_adapters.identifiers import ALERT_SYSTEM, CANONICAL_BASE
from fhir_adapters.validate import CAREPLAN_ACTIVITY_KIND, validate

__all__ = [
    "ACTION_RESOURCE",
    "CAREPLAN_EPISODE_SYSTEM",
    "CONCEPT_MAP_URL",
    "DEVICE_SYSTEM",
    "ENGINE_DEVICE",
    "ENGINE_DEVICE_URL",
    "FLAG_EPISODE_SYSTEM",
    "MAX_CONDITIONAL_TRANSACTION_ENTRIES",
    "alert_concept_map",
    "alert_resources",
    "alert_transaction",
    "careplan_for",
    "engine_device",
    "episode_identifier",
    "fhir_instant",
    "flag_for",
    "patient_transaction",
    "prune_empty",
    "withdrawn",
]

FLAG_PRIORITY_EXTENSION = "http://hl7.org/fhir/StructureDefinition/flag-priority"
FLAG_PRIORITY_SYSTEM = "http://hl7.org/fhir/flag-priority-code"
FLAG_CATEGORY_SYSTEM = "http://terminology.hl7.org/CodeSystem/flag-category"

DEVICE_SYSTEM = f"{CANONICAL_BASE}/device"
DEVICE_VALUE = "redflags-engine"
FLAG_EPISODE_SYSTEM = f"{CANONICAL_BASE}/alert-episode"
CAREPLAN_EPISODE_SYSTEM = f"{CANONICAL_BASE}/careplan-episode"
CONCEPT_MAP_URL = f"{CANONICAL_BASE}/ConceptMap/leg-weakness-alert-to-disorder"

#: The engine's action kinds (``engine.vocabulary.ACTION_KINDS``) -> the FHIR resource type that
#: carries such a request; CarePlan.activity.detail.kind names it when R4 allows it there.
ACTION_RESOURCE: dict[str, str] = {
    "order": "ServiceRequest",
    "medication": "MedicationRequest",
    "task": "Task",
    "procedure": "Procedure",
}

#: Medplum (and its production server) refuse a transaction with conditional creates above this.
MAX_CONDITIONAL_TRANSACTION_ENTRIES = 8

#: Urgency -> Flag priority code and display (docs/clinical-policy.md#urgency).
_PRIORITY: dict[str, tuple[str, str]] = {
    "critical": ("PH", "High priority"),
    "urgent": ("PM", "Medium priority"),
    "routine": ("PL", "Low priority"),
}

#: Namespace of every uuid5 redflags derives: fixed, so ids agree across runs and hosts.
_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, CANONICAL_BASE)

_ENGINE_NAME = "redflags clinical rules engine"


def fhir_instant(epoch_seconds: float) -> str:
    """Epoch seconds -> ``2025-03-10T12:00:00Z``: UTC, whole seconds, the form servers echo."""
    moment = datetime.fromtimestamp(round(epoch_seconds), tz=UTC)
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


@overload
def prune_empty(value: dict[str, Any]) -> dict[str, Any]: ...
@overload
def prune_empty(value: object) -> Any: ...
def prune_empty(value: Any) -> Any:
    """Drop None, "", [] and {} recursively: FHIR forbids empty elements, CDS Hooks null and
    empty values."""
    if isinstance(value, dict):
        pruned = {k: prune_empty(v) if isinstance(v, dict | list) else v for k, v in value.items()}
        return {k: v for k, v in pruned.items() if v not in _EMPTY}
    if isinstance(value, list):
        pruned_list = (prune_empty(v) if isinstance(v, dict | list) else v for v in value)
        return [v for v in pruned_list if v not in _EMPTY]
    return value


#: what ``prune_empty`` drops (compared by ==); a scalar is not descended into
_EMPTY: tuple[object, ...] = (None, "", [], {})


def _full_url(system: str, value: str) -> str:
    """Deterministic ``urn:uuid`` for the resource carrying identifier ``system|value``."""
    return f"urn:uuid:{uuid.uuid5(_NAMESPACE, f'{system}|{value}')}"


def _engine_version() -> str:
    from importlib.metadata import PackageNotFoundError, version  # ~10 ms: only when rendered

    try:
        return version("redflags")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "0.0.0"


@cache
def engine_device() -> dict[str, Any]:
    """The rules engine as the author of every Flag and CarePlan (docs/clinical-policy.md#write-back).

    Treat as read-only: transactions embed a copy. Built when first rendered, not at import:
    reading the installed versions is a start-up cost every replay would pay otherwise.
    """
    return {
        "resourceType": "Device",
        "identifier": [{"system": DEVICE_SYSTEM, "value": DEVICE_VALUE}],
        "deviceName": [{"name": _ENGINE_NAME, "type": "user-friendly-name"}],
        # both builds that decide a Flag: redflags and its patched durable-rules (engine/engine_build.py)
        "version": [
            {"type": {"text": "redflags"}, "value": _engine_version()},
            {"type": {"text": "durable-rules"}, "value": installed_engine_version() or "unknown"},
        ],
    }


if TYPE_CHECKING:
    ENGINE_DEVICE: dict[str, Any]  # engine_device(), looked up through the module's __getattr__


def __getattr__(name: str) -> Any:
    """``ENGINE_DEVICE`` is ``engine_device()``: the name importers know, built on first use."""
    if name == "ENGINE_DEVICE":
        return engine_device()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


ENGINE_DEVICE_URL = _full_url(DEVICE_SYSTEM, DEVICE_VALUE)


def episode_identifier(alert: Alert, scope: str = "") -> str:
    """Stable id of one alert episode: same patient, rule and episode date -> same value.

    The tier is left out on purpose: an escalation within an episode is the same Flag (16.1).
    ``scope`` (a tenant of the state store; "" for the default one, whose identifiers predate
    tenants) keeps two callers' ``Patient/1`` from sharing, and so updating, one Flag on a
    FHIR server they both write to.
    """
    key = f"{alert.patient}|{alert.rule}|{alert.episode}"
    return str(uuid.uuid5(_NAMESPACE, f"{scope}|{key}" if scope else key))


def _coding(code: Code) -> dict[str, str]:
    return {"system": code.system, "code": code.code, "display": code.display}


def _reference(target: str, display: str = "") -> dict[str, str]:
    return {"reference": target, "display": display}


def _patient_reference(patient: str) -> dict[str, str]:
    """Alerts name patients as ``Patient/<id>``; a bare id is accepted too."""
    return _reference(patient if "/" in patient or ":" in patient else f"Patient/{patient}")


def _check_meta(alert: Alert, meta: RuleMeta) -> None:
    if meta.id != alert.rule:
        raise ValueError(f"alert of rule {alert.rule!r} given metadata of {meta.id!r}")


def _summary(alert: Alert, meta: RuleMeta) -> str:
    """Flag.code.text and CarePlan.title: pattern, tier and its label, suspicion."""
    tier = meta.tier(alert.tier)
    suspected = " (suspected)" if alert.suspected else ""
    return f"{meta.title} — tier {tier.name}: {tier.label}{suspected}"


def _priority_extension(severity: str) -> dict[str, Any]:
    if severity not in _PRIORITY:
        raise ValueError(f"no Flag priority for severity {severity!r}")
    code, display = _PRIORITY[severity]
    concept = {"coding": [{"system": FLAG_PRIORITY_SYSTEM, "code": code, "display": display}]}
    return {"url": FLAG_PRIORITY_EXTENSION, "valueCodeableConcept": concept}


def flag_for(
    alert: Alert,
    meta: RuleMeta,
    author: str = ENGINE_DEVICE_URL,
    *,
    episode: str | None = None,
    since: str | None = None,
) -> dict[str, Any]:
    """The Flag of one alert (docs/clinical-policy.md#flag); ``author`` references the engine Device.

    ``episode`` and ``since`` keep the identifier and ``period.start`` of the Flag already
    active for this patient and rule, so an update changes that Flag instead of adding one.
    """
    _check_meta(alert, meta)
    category = {"system": FLAG_CATEGORY_SYSTEM, "code": "clinical", "display": "Clinical"}
    return prune_empty(
        {
            "resourceType": "Flag",
            "extension": [_priority_extension(alert.severity)],
            "identifier": [{"system": FLAG_EPISODE_SYSTEM, "value": episode or episode_identifier(alert)}],
            "status": "active",
            "category": [{"coding": [category]}],
            "code": {
                "coding": [{"system": ALERT_SYSTEM, "code": alert.rule, "display": meta.title}],
                "text": _summary(alert, meta),
            },
            "subject": _patient_reference(alert.patient),
            "period": {"start": since or fhir_instant(alert.now)},
            "author": _reference(author, _ENGINE_NAME),
        }
    )


def _due_phrase(hours: float) -> str:
    """Human timing target for an action: "now", "within 30 min", "within 4 h", "within 3 days"."""
    if hours <= 0:
        return "now"
    if hours < 1:
        return f"within {round(hours * 60)} min"
    if hours < 48 or hours % 24:
        return f"within {hours:g} h"
    return f"within {hours / 24:g} days"


def _activity(action: Action, disorder: Code, now: int) -> dict[str, Any]:
    """One proposed action; ``kind`` only when it is an R4 activity kind (required binding)."""
    resource = ACTION_RESOURCE[action.kind]
    detail = {
        "kind": resource if resource in CAREPLAN_ACTIVITY_KIND else None,
        "code": {"coding": [_coding(c) for c in action.codes], "text": action.text},
        "reasonCode": [{"coding": [_coding(disorder)], "text": disorder.display}],
        "status": "not-started",
        "scheduledPeriod": {
            "start": fhir_instant(now),
            "end": fhir_instant(now + max(action.due_hours, 0) * 3600),
        },
        "description": f"{action.text} (target: {_due_phrase(action.due_hours)})",
    }
    return {"detail": detail}


def _description(alert: Alert) -> str:
    """CarePlan.description: why the engine proposes this plan, in plain language."""
    parts = [alert.rationale]
    if alert.criteria:
        parts.append("Matched criteria: " + "; ".join(c.text for c in alert.criteria) + ".")
    if alert.notes:
        parts.append("Notes: " + "; ".join(alert.notes) + ".")
    return "\n".join(p for p in parts if p)


def careplan_for(
    alert: Alert,
    meta: RuleMeta,
    flag_ref: str,
    author: str = ENGINE_DEVICE_URL,
    *,
    episode: str | None = None,
    created: str | None = None,
) -> dict[str, Any]:
    """The proposed CarePlan of one alert (docs/clinical-policy.md#careplan); a clinician activates it.

    ``episode`` and ``created`` keep the identity of the CarePlan already proposed (an update).
    """
    _check_meta(alert, meta)
    evidence = dict.fromkeys(alert.evidence)  # first-seen order, no duplicates
    return prune_empty(
        {
            "resourceType": "CarePlan",
            "identifier": [
                {"system": CAREPLAN_EPISODE_SYSTEM, "value": episode or episode_identifier(alert)}
            ],
            "status": "draft",
            "intent": "proposal",
            "title": _summary(alert, meta),
            "description": _description(alert),
            "subject": _patient_reference(alert.patient),
            "created": created or fhir_instant(alert.now),
            "author": _reference(author, _ENGINE_NAME),
            "addresses": [_reference(ref) for ref in alert.evidence if ref.startswith("Condition/")],
            "supportingInfo": [_reference(ref) for ref in [flag_ref, *evidence]],
            "activity": [
                _activity(a, alert.disorder or meta.disorder, alert.now) for a in meta.actions_for(alert.tier)
            ],
        }
    )


def _metas_by_id(metas: Mapping[str, RuleMeta] | Iterable[RuleMeta]) -> dict[str, RuleMeta]:
    """Accept a registry (id -> meta) or any iterable of metas; duplicate ids are a bug."""
    found: dict[str, RuleMeta] = {}
    for meta in metas.values() if isinstance(metas, Mapping) else metas:
        if meta.id in found:
            raise ValueError(f"duplicate rule metadata {meta.id!r}")
        found[meta.id] = meta
    return found


def _post_entry(resource: dict[str, Any]) -> dict[str, Any]:
    """A conditional-create entry keyed on the resource's first identifier."""
    ident = resource["identifier"][0]
    system, value = ident["system"], ident["value"]
    return {
        "fullUrl": _full_url(system, value),
        "resource": resource,
        "request": {
            "method": "POST",
            "url": resource["resourceType"],
            "ifNoneExist": f"identifier={system}|{value}",
        },
    }


def _put_entry(resource: dict[str, Any]) -> dict[str, Any]:
    """A conditional-update entry keyed on the resource's first identifier (same fullUrl as
    its creation, so references to it inside the transaction resolve to the stored one)."""
    ident = resource["identifier"][0]
    system, value = ident["system"], ident["value"]
    return {
        "fullUrl": _full_url(system, value),
        "resource": resource,
        "request": {"method": "PUT", "url": f"{resource['resourceType']}?identifier={system}|{value}"},
    }


def alert_resources(
    alert: Alert,
    meta: RuleMeta,
    *,
    active: tuple[dict[str, Any], dict[str, Any]] | None = None,
    scope: str = "",
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The Flag and CarePlan of one alert; ``active``: the pair already on the server, whose
    identity (identifiers, Flag start, CarePlan creation) an update keeps; ``scope``: see
    ``episode_identifier``."""
    if active is None:
        episode = episode_identifier(alert, scope)
        flag = flag_for(alert, meta, episode=episode)
        return flag, careplan_for(
            alert, meta, _full_url(FLAG_EPISODE_SYSTEM, flag["identifier"][0]["value"]), episode=episode
        )
    flag_was, plan_was = active
    flag = flag_for(
        alert, meta, episode=flag_was["identifier"][0]["value"], since=flag_was["period"]["start"]
    )
    plan = careplan_for(
        alert,
        meta,
        _full_url(FLAG_EPISODE_SYSTEM, flag["identifier"][0]["value"]),
        episode=plan_was["identifier"][0]["value"],
        created=plan_was["created"],
    )
    return flag, plan


def withdrawn(
    flag: dict[str, Any], careplan: dict[str, Any], now: int
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The Flag made inactive at ``now`` and its draft CarePlan revoked (16.1, 16.2)."""
    flag = copy.deepcopy(flag)
    flag["status"] = "inactive"
    flag["period"]["end"] = fhir_instant(now)
    careplan = copy.deepcopy(careplan)
    careplan["status"] = "revoked"
    return flag, careplan


def alert_transaction(flag: dict[str, Any], careplan: dict[str, Any], *, create: bool) -> dict[str, Any]:
    """One alert's change as a validated transaction: the engine Device (conditional create),
    then the Flag and CarePlan as conditional creates (new) or conditional updates."""
    entry = _post_entry if create else _put_entry
    entries = [_post_entry(copy.deepcopy(engine_device())), entry(flag), entry(careplan)]
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": entries}
    validate(bundle)
    return bundle


def _alert_entries(alert: Alert, meta: RuleMeta) -> list[dict[str, Any]]:
    flag, careplan = alert_resources(alert, meta)
    return [_post_entry(flag), _post_entry(careplan)]


def patient_transaction(
    alerts: Sequence[Alert], metas: Mapping[str, RuleMeta] | Iterable[RuleMeta]
) -> dict[str, Any] | None:
    """One patient's alerts as a validated transaction Bundle: Device, then Flag + CarePlan each.

    Every entry is a conditional create on its identifier, so a repeat is a no-op (200, same id).
    Above ``MAX_CONDITIONAL_TRANSACTION_ENTRIES`` entries (more than 3 alerts) Medplum-like
    servers refuse the transaction; the delivery layer will split it (later work), keeping the
    Device and each Flag with its CarePlan together. Returns None when there is nothing to send.
    """
    if not alerts:
        return None
    patients = {a.patient for a in alerts}
    if len(patients) > 1:
        raise ValueError(f"one transaction per patient, got {sorted(patients)}")
    by_id = _metas_by_id(metas)
    missing = sorted({a.rule for a in alerts} - by_id.keys())
    if missing:
        raise ValueError(f"no rule metadata for {missing}")
    entries = [_post_entry(copy.deepcopy(engine_device()))]
    for alert in alerts:
        entries += _alert_entries(alert, by_id[alert.rule])
    urls = [e["fullUrl"] for e in entries]
    if len(set(urls)) != len(urls):
        raise ValueError("two alerts share one episode (same patient, rule and episode date)")
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": entries}
    validate(bundle)
    return bundle


def alert_concept_map(
    metas: Mapping[str, RuleMeta] | Iterable[RuleMeta],
    branch_disorders: Mapping[str, Iterable[Code]] | None = None,
) -> dict[str, Any]:
    """ConceptMap alert id -> disorder codes, published instead of a second Flag coding (16.1).

    ``branch_disorders`` adds the disorders single branches suggest (a TIA, hypokalaemia), as
    ``Engine.branch_disorders()`` reads them from the rules.
    """
    by_id = _metas_by_id(metas)
    extra = branch_disorders or {}
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for meta in sorted(by_id.values(), key=lambda m: m.id):
        codes = list(dict.fromkeys([meta.disorder, *extra.get(meta.id, ())]))
        for system in dict.fromkeys(c.system for c in codes):
            targets = []
            for code in codes:
                if code.system == system:
                    target = {**_coding(code), "equivalence": "relatedto"}
                    del target["system"]
                    targets.append(target)
            element = {"code": meta.id, "display": meta.title, "target": targets}
            groups.setdefault((ALERT_SYSTEM, system), []).append(element)
    concept_map = prune_empty(
        {
            "resourceType": "ConceptMap",
            "url": CONCEPT_MAP_URL,
            "version": _engine_version(),
            "name": "LegWeaknessAlertToDisorder",
            "title": "Leg-weakness alert ids to disorder codes",
            "status": "draft",
            "description": (
                "Each redflags alert raises the suspicion of a disorder; it is not a diagnosis, "
                "hence the equivalence 'relatedto'."
            ),
            "group": [
                {"source": source, "target": system, "element": elements}
                for (source, system), elements in sorted(groups.items())
            ],
        }
    )
    validate(concept_map)
    return concept_map
