"""One patient's FHIR resources -> flat facts for the rules engine (docs/clinical-policy.md).

Status handling (docs/clinical-policy.md#status-handling) lives here and only here: refuted and
entered-in-error records never become facts, cancelled results are dropped, dataAbsentReason means missing.
Facts are absolute (epoch seconds); everything relative to the evaluation time is done by
``engine.prepare``, so stored facts can be re-evaluated later.

Fact shapes (all flat, numbers as numbers):
  patient   {t, pid, ref, sex, birth}                       birth = "YYYY-MM-DD"
  finding   {t, pid, ref, key, state, side, ts, onset, span, active, abated, suspected, prelim, site, limb}
            span = "state" for a Condition (holds from onset until it ends: active, abated),
            "event" for an Observation (true at its time): the engine reads this, never FHIR
  value     {t, pid, ref, key, v, unit, ts, onset, side, site, limb, high, low, interp, prelim, hemolysed,
             issued}
            issued = Observation.issued when sent (the later one wins a tie of ts, 14.2)
            hemolysed = 1 when the sample is marked haemolysed (interpretation text, a note, the
            specimen display or a contained Specimen's condition, 7.2), else 0
  procedure {t, pid, ref, key, ts}
  medication{t, pid, ref, key, ts, active}

A numeric value outside the physiologically possible bounds of ``plausibility.BOUNDS`` is
treated as missing and reported as a data-quality issue (7.2, 14.2).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from fhir_adapters import medication_ref, plausibility, units
from fhir_adapters.errors import IntakeError, shown
from fhir_adapters.facts_cache import FactsCache
from fhir_adapters.identifiers import LATERALITY_EXTENSION, SNOMED
from fhir_adapters.intake import Entry, Issue, PatientGroup, local_reference, reference_of
from fhir_adapters.terminology import Match, Terminology
from fhir_adapters.times import birth_date, to_epoch

Fact = dict[str, object]

CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
VERIFICATION = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
_CURRENT = {"active", "recurrence", "relapse"}
_NOT_CURRENT = {"inactive", "remission", "resolved"}
_IGNORED_VERIFICATION = {"refuted", "entered-in-error"}
_COUNTED_RESULT = {"final", "amended", "corrected", "preliminary"}
_IGNORED_RESULT = {"registered", "cancelled", "entered-in-error", "unknown"}
_PROCEDURE_DONE = {"completed"}
_MED_ACTIVE = {
    "MedicationRequest": {"active", "on-hold", "completed"},
    "MedicationStatement": {"active", "completed", "intended"},
    "MedicationAdministration": {"completed", "in-progress"},
}
_ABSENT = {
    (SNOMED, "2667000"),
    (SNOMED, "373067005"),
    (SNOMED, "410516002"),
    (SNOMED, "410594000"),
    (SNOMED, "260413007"),
}
_UNKNOWN = {(SNOMED, "261665006")}
#: valueString texts that mean "looked for and not found" (docs/clinical-policy.md#negated-findings), after
#: trimming and lower-casing; any other text describes the finding, which is then present.
_ABSENT_TEXT = frozenset({"absent", "not present", "negative", "no", "none", "denied", "denies"})
_LATERALITY_CODES = {
    (SNOMED, "7771000"): "left",
    (SNOMED, "24028007"): "right",
    (SNOMED, "51440002"): "bilateral",
    (SNOMED, "66459002"): "unknown",
}
_YEAR = 365.25 * 86400
MAX_AGE_YEARS = 150  # an onset or abatement age past this is a data error, not an age
#: "haemolysed", "hemolyzed", "haemolysis" ...; a leading "non-", "not " or "no " negates it.
_HEMOLYSIS = re.compile(r"\b(non-?|not\s+|no\s+)?ha?emoly[sz]", re.IGNORECASE)
#: HL7 v2 table 0493 (Specimen.condition): HEM = haemolysed.
_HEMOLYSED_CONDITION = ("http://terminology.hl7.org/CodeSystem/v2-0493", "HEM")
#: the elements ``_hemolysed`` reads
_HEMOLYSIS_FIELDS = frozenset({"interpretation", "note", "specimen", "contained"})


@dataclass(slots=True)
class PatientFacts:
    pid: str
    facts: list[Fact] = field(default_factory=list)
    issues: list[Issue] = field(default_factory=list)


def _codings(concept: object, path: str) -> list[tuple[str, str]]:
    if concept is None:
        return []
    if not isinstance(concept, dict):
        raise IntakeError(path, "expected a CodeableConcept object")
    codings = concept.get("coding", [])
    if not isinstance(codings, list):
        raise IntakeError(f"{path}.coding", "expected an array")
    out = []
    for coding in codings:
        if not isinstance(coding, dict):  # the first that is none: ``index`` finds its position
            raise IntakeError(f"{path}.coding[{codings.index(coding)}]", "expected a Coding object")
        system, code = coding.get("system"), coding.get("code")
        if isinstance(system, str) and isinstance(code, str):
            out.append((system, code))
    return out


def _status_code(concept: object, system: str, path: str) -> str | None:
    for sys, code in _codings(concept, path):
        if sys == system:
            return code
    return None


def _sites(resource: dict[str, Any], path: str) -> list[dict[str, Any]]:
    site = resource.get("bodySite")
    if site is None:
        return []
    if isinstance(site, dict):  # Condition.bodySite is 0..*, Observation.bodySite 0..1
        return [site]
    if isinstance(site, list):
        return [s for s in site if isinstance(s, dict)]
    raise IntakeError(f"{path}.bodySite", "expected a CodeableConcept")


def _list(value: object) -> list[Any]:
    """An array element as sent, or nothing when it is not an array (a reader never iterates a
    string, a number or an object by mistake)."""
    return value if isinstance(value, list) else []


def _code(value: object) -> str | None:
    """A code element for a set lookup: None unless a string."""
    return value if isinstance(value, str) else None


def _pair(system: object, code: object) -> tuple[str, str] | None:
    """(system, code) for a table lookup, or None unless both are strings (a list is unhashable)."""
    return (system, code) if isinstance(system, str) and isinstance(code, str) else None


def _side_from_sites(sites: list[dict[str, Any]], term: Terminology) -> str | None:
    """Laterality from a qualifier in any bodySite extension (13.2 rule 2)."""
    for site in sites:
        for ext in _list(site.get("extension")):
            if not isinstance(ext, dict):
                continue
            value = ext.get("valueCodeableConcept")
            codings = value.get("coding") if isinstance(value, dict) else None
            for coding in codings if isinstance(codings, list) else ():
                if not isinstance(coding, dict):
                    continue
                side = _LATERALITY_CODES.get(_pair(coding.get("system"), coding.get("code")))  # type: ignore[arg-type]  # None: no pair, no side
                if side:
                    return side
            code = ext.get("valueCode")
            if ext.get("url") == LATERALITY_EXTENSION and isinstance(code, str):
                return code
    return None


def _site_info(sites: list[dict[str, Any]], term: Terminology, path: str) -> tuple[str | None, str | None]:
    """(site code, limb) where limb is "leg"/"arm" when the site is in a limb value set."""
    if not sites:  # most records: no body site
        return None, None
    lower, upper = term.set_url("body-site-lower-limb"), term.set_url("body-site-upper-limb")
    for site in sites:
        for system, code in _codings(site, path):
            if term.in_set(lower, system, code):
                return code, "leg"
            if term.in_set(upper, system, code):
                return code, "arm"
        for _system, code in _codings(site, path):
            return code, None
    return None, None


def _confirms(text: str, key: str) -> bool:
    """A non-specific code (R29.2 *Abnormal reflex*) counts only when the record says which."""
    words = {"reflexes_absent": ("absent", "areflexia")}.get(key, ())
    return any(word in text for word in words)


def _free_text(res: dict[str, Any]) -> str:
    parts: list[str] = []
    if isinstance(res.get("valueString"), str):
        parts.append(res["valueString"])
    value = res.get("valueCodeableConcept")
    if isinstance(value, dict) and isinstance(value.get("text"), str):
        parts.append(value["text"])
    notes = res.get("note")
    for note in notes if isinstance(notes, list) else ():
        if isinstance(note, dict) and isinstance(note.get("text"), str):
            parts.append(note["text"])
    return " ".join(parts).lower()


def _keys(
    res: dict[str, Any],
    concept: object,
    path: str,
    sites: list[dict[str, Any]],
    term: Terminology,
    rtype: str,
    routes: Sequence[tuple[str, str]] = (),
    memo: KeysMemo | None = None,
) -> list[Match]:
    """Finding keys a code means here, honouring body-site and route qualifiers and resource types.

    ``memo``: the keys of codings worked out before in the same mapping (``KeysMemo``).
    """
    codings = _codings(concept, path)
    said = (rtype, *codings)
    if memo is not None:
        known = memo.get(said)
        if known is not None:
            return known
    found: dict[str, Match] = {}
    res_text: str | None = None  # both read only when a match needs them (most codes match nothing)
    site_codes: list[tuple[str, str]] | None = None
    alone = not routes  # the keys follow from the codings alone (no qualifier was read)
    for system, code in codings:
        for match in term.matches(system, code):
            info = term.keys.get(match.key)
            if info and info.resource_types and rtype not in info.resource_types:
                continue
            if match.restriction == "proxy-only":
                continue  # a diagnosis proxy never stands in for the measured value
            if match.requires_no_site or match.requires_site or match.requires_route:
                alone = False
            if match.restriction == "value-must-confirm":
                alone = False
            if site_codes is None and (match.requires_no_site or match.requires_site):
                site_path = path.rsplit(".", 1)[0] + ".bodySite"
                site_codes = [c for s in sites for c in _codings(s, site_path)]
            if match.requires_no_site and site_codes:
                continue
            if match.restriction == "value-must-confirm":
                res_text = _free_text(res) if res_text is None else res_text
                if not _confirms(res_text, match.key):
                    continue
            if match.requires_site and not any(
                term.in_set(match.requires_site, s, c) for s, c in site_codes or ()
            ):
                continue
            if match.requires_route and not any(term.in_set(match.requires_route, s, c) for s, c in routes):
                continue  # e.g. magnesium sulfate counts only given intravenously
            prior = found.get(match.key)
            if prior is None or (prior.side is None and match.side):
                found[match.key] = match
    keys = list(found.values()) if found else []
    if memo is not None and alone:
        memo[said] = keys
    return keys


#: (resource type, its codings) -> finding keys, for codings whose keys depend on nothing else
#: (no body-site, route or text qualifier): one mapping's, made afresh by each ``patient_facts``
#: (a call's results repeat a few codes: weekly vitals and labs), so it holds no older terminology
KeysMemo = dict[tuple[object, ...], list[Match]]


def _time(resource: dict[str, Any], names: Iterable[str], path: str) -> int | None:
    for name in names:
        value = resource.get(name)
        if value is None:
            continue
        if name.endswith("Period"):
            if not isinstance(value, dict):
                raise IntakeError(f"{path}.{name}", "expected a Period")
            for part in ("start", "end"):
                if part in value:
                    return to_epoch(value[part], f"{path}.{name}.{part}")
            continue
        return to_epoch(value, f"{path}.{name}")
    return None


def _period_end(resource: dict[str, Any], name: str, path: str) -> int | None:
    period = resource.get(name)
    if isinstance(period, dict) and "end" in period:
        return to_epoch(period["end"], f"{path}.{name}.end")
    return None


def _age_time(value: object, born: date | None, path: str) -> int | None:
    """Condition.onsetAge / abatementAge in years -> epoch, when the birth date is known."""
    if not isinstance(value, dict) or born is None:
        return None
    years = value.get("value")
    if isinstance(years, bool) or not isinstance(years, int | float) or value.get("code", "a") != "a":
        raise IntakeError(path, "only ages in years (UCUM 'a') are supported")
    if not 0 <= years <= MAX_AGE_YEARS:
        raise IntakeError(f"{path}.value", f"an age of {years!r} years is not possible", "value")
    base = to_epoch(born.isoformat(), path)
    return int(base + years * _YEAR)


#: "Encounter/<id>" (and fullUrl) -> (period.start, period.end) of the patient's Encounters.
Periods = dict[str, tuple[int | None, int | None]]


def _encounter_periods(entries: Iterable[Entry], issues: list[Issue]) -> Periods:
    """Encounter periods, for Conditions exported without any date of their own (14.4)."""
    periods: Periods = {}
    for entry in entries:
        res = entry.resource
        if res.get("resourceType") != "Encounter" or not isinstance(res.get("period"), dict):
            continue
        if res.get("status") == "entered-in-error":  # its period is no evidence of anything
            continue
        try:
            start = _time(res["period"], ("start",), f"{entry.path}.period")
            end = _time(res["period"], ("end",), f"{entry.path}.period")
        except IntakeError as exc:
            issues.append(Issue(exc.path, exc.message, exc.code))
            continue
        for key in (reference_of(res, entry.full_url), entry.full_url):
            if key:
                periods[key] = (start, end)
    return periods


def _condition(
    res: dict[str, Any], path: str, pid: str, ref: str, term: Terminology, born: date | None, periods: Periods
) -> list[Fact]:
    verification = _status_code(res.get("verificationStatus"), VERIFICATION, f"{path}.verificationStatus")
    if verification in _IGNORED_VERIFICATION:
        return []
    clinical = _status_code(res.get("clinicalStatus"), CLINICAL, f"{path}.clinicalStatus")
    if clinical is not None and clinical not in _CURRENT | _NOT_CURRENT:
        raise IntakeError(
            f"{path}.clinicalStatus", f"unknown clinical status {shown(clinical)}", "code-invalid"
        )
    sites = _sites(res, path)
    matches = _keys(res, res.get("code"), f"{path}.code", sites, term, "Condition")
    if not matches:
        return []
    onset = _time(res, ("onsetDateTime", "onsetPeriod"), path)
    if onset is None and "onsetAge" in res:
        onset = _age_time(res["onsetAge"], born, f"{path}.onsetAge")
    if onset is None and isinstance(res.get("onsetRange"), dict):
        onset = _age_time(res["onsetRange"].get("low"), born, f"{path}.onsetRange.low")
    recorded = _time(res, ("recordedDate",), path)
    if onset is None and recorded is None:
        # 14.4: an encounter diagnosis without dates began at its Encounter's start and is
        # evidenced at its end (MIMIC-IV on FHIR exports them so)
        encounter = res.get("encounter")
        target = encounter.get("reference") if isinstance(encounter, dict) else None
        start, end = (None, None)
        if isinstance(target, str):  # "Encounter/<id>", an absolute or versioned URL, a urn:uuid
            start, end = periods.get(target) or periods.get(local_reference(target)) or (None, None)
        onset, recorded = start, end if end is not None else start
    abated = _time(res, ("abatementDateTime",), path)
    if abated is None:
        abated = _period_end(res, "abatementPeriod", path)
    if abated is None and "abatementAge" in res:
        abated = _age_time(res["abatementAge"], born, f"{path}.abatementAge")
    has_abatement = any(k.startswith("abatement") for k in res)
    active = clinical in _CURRENT if clinical else not has_abatement
    site, limb = _site_info(sites, term, f"{path}.bodySite")
    side = _side_from_sites(sites, term)
    base: Fact = {
        "t": "finding",
        "pid": pid,
        "ref": ref,
        "state": "present",
        "span": "state",
        "active": 1 if active else 0,
        "suspected": 0 if verification == "confirmed" else 1,
        "prelim": 0,
    }
    when = onset if onset is not None else recorded
    if when is not None:
        base["onset"] = when
        base["ts"] = recorded if recorded is not None and recorded >= when else when
    if abated is not None:
        base["abated"] = abated
    elif has_abatement and not active:
        base["abated"] = base.get("ts", 0)
    if site:
        base["site"] = site
    if limb:
        base["limb"] = limb
    return [dict(base, key=m.key, side=m.side or side or "unknown") for m in matches]


def _presence(res: dict[str, Any], path: str) -> str | None:
    """present / absent / None (missing) for a finding Observation (14.3)."""
    if "valueBoolean" in res:
        value = res["valueBoolean"]
        if not isinstance(value, bool):
            raise IntakeError(f"{path}.valueBoolean", "expected true or false")
        return "present" if value else "absent"
    if "valueCodeableConcept" in res:
        codes = set(_codings(res["valueCodeableConcept"], f"{path}.valueCodeableConcept"))
        if codes & _ABSENT:
            return "absent"
        if codes & _UNKNOWN:
            return None
        return "present"
    if "valueString" in res:
        text = res["valueString"]
        if not isinstance(text, str):
            raise IntakeError(f"{path}.valueString", "expected a string")
        return "absent" if text.strip().lower() in _ABSENT_TEXT else "present"
    return "present"


def _number(res: dict[str, Any], path: str) -> tuple[float, str | None] | None:
    if "valueQuantity" in res:
        qty = res["valueQuantity"]
        if not isinstance(qty, dict):
            raise IntakeError(f"{path}.valueQuantity", "expected a Quantity object")
        value = qty.get("value")
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise IntakeError(f"{path}.valueQuantity.value", f"expected a number, got {shown(value)}")
        if qty.get("comparator") is not None:
            raise IntakeError(
                f"{path}.valueQuantity.comparator",
                "a bounded value (<, >) cannot be compared with thresholds",
                "value",
            )
        return float(value), units.ucum_code(qty)
    if "valueInteger" in res:
        value = res["valueInteger"]
        if isinstance(value, bool) or not isinstance(value, int):
            raise IntakeError(f"{path}.valueInteger", f"expected an integer, got {shown(value)}")
        return float(value), None
    return None


def _range_bound(res: dict[str, Any], bound: str, key: str, canonical: str | None, path: str) -> float | None:
    ranges = res.get("referenceRange")
    if not isinstance(ranges, list) or not ranges or not isinstance(ranges[0], dict):
        return None
    qty = ranges[0].get(bound)
    if not isinstance(qty, dict) or not isinstance(qty.get("value"), int | float):
        return None
    return units.normalise(key, float(qty["value"]), units.ucum_code(qty), canonical)


def _interpretation(res: dict[str, Any], path: str) -> str | None:
    concepts = res.get("interpretation") or []
    for i, concept in enumerate(concepts if isinstance(concepts, list) else []):
        for system, code in _codings(concept, f"{path}.interpretation[{i}]"):
            if system.endswith("v3-ObservationInterpretation"):
                return code
    return None


def _concept_texts(concept: object) -> list[str]:
    if not isinstance(concept, dict):
        return []
    texts = [concept["text"]] if isinstance(concept.get("text"), str) else []
    codings = concept.get("coding")
    for coding in codings if isinstance(codings, list) else ():
        if isinstance(coding, dict) and isinstance(coding.get("display"), str):
            texts.append(coding["display"])
    return texts


def _hemolysed(res: dict[str, Any]) -> bool:
    """The sample is marked haemolysed (7.2): interpretation, note, specimen or its condition.

    Only a Specimen contained in the Observation is read (intake does not map Specimen).
    """
    if _HEMOLYSIS_FIELDS.isdisjoint(res.keys()):  # most results: none of them, nothing to read
        return False
    texts: list[str] = []
    for concept in _list(res.get("interpretation")):
        texts += _concept_texts(concept)
    for note in _list(res.get("note")):
        if isinstance(note, dict) and isinstance(note.get("text"), str):
            texts.append(note["text"])
    specimen = res.get("specimen")
    target = specimen.get("reference") if isinstance(specimen, dict) else None
    if isinstance(specimen, dict) and isinstance(specimen.get("display"), str):
        texts.append(specimen["display"])
    for contained in _list(res.get("contained")):
        if not isinstance(contained, dict) or contained.get("resourceType") != "Specimen":
            continue
        if target is not None and target != f"#{contained.get('id')}":
            continue
        for concept in _list(contained.get("condition")):
            codings = concept.get("coding") if isinstance(concept, dict) else None
            for coding in codings if isinstance(codings, list) else ():
                pair = (coding.get("system"), coding.get("code")) if isinstance(coding, dict) else None
                if pair == _HEMOLYSED_CONDITION:
                    return True
            texts += _concept_texts(concept)
    return any(not found.group(1) for text in texts for found in _HEMOLYSIS.finditer(text))


#: where an Observation's time is, first found first (``effectivePeriod`` is read apart)
_EFFECTIVE = ("effectiveDateTime", "effectiveInstant")
#: key kinds an Observation gives a ``value`` fact for
_VALUE_KINDS = frozenset({"quantity", "score", "qualitative", "datetime"})


def _observation(
    res: dict[str, Any],
    path: str,
    pid: str,
    ref: str,
    term: Terminology,
    issues: list[Issue],
    memo: KeysMemo | None = None,
) -> list[Fact]:
    status = res.get("status")
    if not isinstance(status, str):
        raise IntakeError(f"{path}.status", "Observation.status is required", "required")
    if status in _IGNORED_RESULT:
        return []
    if status not in _COUNTED_RESULT:
        raise IntakeError(f"{path}.status", f"unknown observation status {shown(status)}", "code-invalid")
    sites = _sites(res, path) if "bodySite" in res else []
    matches = _keys(res, res.get("code"), f"{path}.code", sites, term, "Observation", (), memo)
    if not matches:
        return []
    if "dataAbsentReason" in res:
        issues.append(Issue(path, "dataAbsentReason: value missing", "informational", "information"))
        return []
    when = res.get("effectiveDateTime")  # most results: ``_time(res, _EFFECTIVE, path)`` in short
    ts = to_epoch(when, f"{path}.effectiveDateTime") if when is not None else _time(res, _EFFECTIVE, path)
    start = end = None
    if res.get("effectivePeriod") is not None:  # most results: a dateTime only
        start = _time(res, ("effectivePeriod",), path)
        end = _period_end(res, "effectivePeriod", path)
    if ts is None:
        ts = end if end is not None else start
    sent = res.get("issued")
    issued = None if sent is None else to_epoch(sent, f"{path}.issued")
    if ts is None:
        ts = issued
    if ts is None:
        raise IntakeError(
            f"{path}.effective[x]",
            "no effective time or issued: cannot place it in a window",
            "required",
        )
    onset = start if start is not None else ts
    site, limb = _site_info(sites, term, f"{path}.bodySite") if sites else (None, None)
    side = _side_from_sites(sites, term) if sites else None
    base: Fact = {
        "t": "finding",
        "pid": pid,
        "ref": ref,
        "ts": ts,
        "onset": onset,
        "span": "event",
        "active": 1,
        "suspected": 0,
        "prelim": 1 if status == "preliminary" else 0,
    }
    # a value fact: the finding's fields in the same order, less span, active and suspected
    value_base: Fact = {
        "t": "value",
        "pid": pid,
        "ref": ref,
        "ts": ts,
        "onset": onset,
        "prelim": base["prelim"],
    }
    if site:
        base["site"] = value_base["site"] = site
    if limb:
        base["limb"] = value_base["limb"] = limb
    facts: list[Fact] = []
    for match in matches:
        info = term.keys[match.key]
        kind = info.kind
        fact = dict(
            value_base if kind in _VALUE_KINDS else base, key=match.key, side=match.side or side or "unknown"
        )
        if kind == "finding":
            # a non-specific code counts only through its text (R29.2 + "absent"): that text names
            # the finding, it does not negate it (14.3 reads the value of a finding code)
            state = "present" if match.restriction == "value-must-confirm" else _presence(res, path)
            if state is None:
                continue
            fact["state"] = state
        elif kind in ("quantity", "score", "qualitative"):
            fact["hemolysed"] = 1 if _hemolysed(res) else 0
            if issued is not None:
                fact["issued"] = issued  # breaks a tie of effective times (14.2)
            interp = _interpretation(res, path)
            if interp:
                fact["interp"] = interp
            number = _number(res, path)
            if number is not None:
                value = units.normalise(match.key, number[0], number[1], info.unit)
                if value is not None and not math.isfinite(value):  # 1e308 g/L in mg/dL
                    value = None
                if value is None:
                    issues.append(
                        Issue(
                            f"{path}.valueQuantity",
                            f"unit {shown(number[1])} cannot be read as {info.unit}; "
                            "value treated as missing",
                            "value",
                            "warning",
                        )
                    )
                    continue
                bounds = plausibility.outside(match.key, value)
                if bounds is not None:
                    issues.append(
                        Issue(
                            f"{path}.valueQuantity",
                            f"{match.key} {value:g} {info.unit} is outside the physiologically possible "
                            f"range {bounds[0]:g}-{bounds[1]:g} {info.unit}; value treated as missing",
                            "value",
                            "warning",
                        )
                    )
                    continue
                # not rounded: a value on a cut-off stays on it (units.convert is exact)
                fact["v"] = value
                fact["unit"] = info.unit or "1"
                for bound in ("high", "low") if "referenceRange" in res else ():
                    limit = _range_bound(res, bound, match.key, info.unit, path)
                    if limit is not None:
                        fact[bound] = limit
            elif not interp:
                continue
        elif kind == "datetime":
            if "valueDateTime" not in res:
                continue
            fact["v"] = to_epoch(res["valueDateTime"], f"{path}.valueDateTime")
            fact["unit"] = "s"
            fact["hemolysed"] = 0
        else:
            continue
        facts.append(fact)
    return facts


def _procedure(
    res: dict[str, Any], path: str, pid: str, ref: str, term: Terminology, memo: KeysMemo | None = None
) -> list[Fact]:
    if _code(res.get("status")) not in _PROCEDURE_DONE:
        return []
    ts = _time(res, ("performedDateTime", "performedPeriod"), path)  # 14.4: the start
    matches = _keys(res, res.get("code"), f"{path}.code", [], term, "Procedure", (), memo)
    return [
        {"t": "procedure", "pid": pid, "ref": ref, "key": m.key, **({"ts": ts} if ts else {})}
        for m in matches
    ]


#: Where each medication resource type says how the drug is given (R4): a list or one Dosage.
_DOSAGE_FIELD = {
    "MedicationRequest": "dosageInstruction",
    "MedicationStatement": "dosage",
    "MedicationAdministration": "dosage",
}


def _routes(res: dict[str, Any], path: str) -> list[tuple[str, str]]:
    """The route codings of a medication record's dosages (``Dosage.route``); a malformed route
    is no route (only a value set that requires one reads it, and then nothing matches)."""
    name = _DOSAGE_FIELD[res["resourceType"]]
    dosages = res.get(name)
    dosages = dosages if isinstance(dosages, list) else [dosages] if isinstance(dosages, dict) else []
    routes = [d.get("route") for d in dosages if isinstance(d, dict)]
    return [
        c
        for i, r in enumerate(routes)
        if isinstance(r, dict)
        for c in _codings(r, f"{path}.{name}[{i}].route")
    ]


def _medication(
    res: dict[str, Any],
    path: str,
    pid: str,
    ref: str,
    term: Terminology,
    meds: medication_ref.MedicationIndex,
    issues: list[Issue],
) -> list[Fact]:
    rtype = res["resourceType"]
    if _code(res.get("status")) not in _MED_ACTIVE[rtype]:
        return []
    concept, concept_path = medication_ref.drug_concept(res, path, meds)
    if concept is None and "medicationReference" in res:  # said, never silently no drug
        message = "the referenced Medication is not in this input (contained or same bundle): drug not read"
        issues.append(Issue(concept_path, message, "not-found", "warning"))
    matches = _keys(res, concept, concept_path, [], term, rtype, _routes(res, path))
    ts = _time(res, ("authoredOn", "effectiveDateTime", "effectivePeriod"), path)
    active = 1 if res.get("status") in ("active", "on-hold", "in-progress", "intended") else 0
    return [
        {
            "t": "medication",
            "pid": pid,
            "ref": ref,
            "key": m.key,
            "active": active,
            **({"ts": ts} if ts else {}),
        }
        for m in matches
    ]


#: What the resource type a finding came from says about how long it holds (fact field ``span``).
_SPAN_OF_SOURCE = {"Condition": "state", "Observation": "event"}


def upgraded(facts: Iterable[Fact]) -> list[Fact]:
    """Stored facts in today's shape: a finding stored before ``span`` existed named its FHIR
    resource type (``src``); the engine reads the neutral ``span`` instead."""
    out: list[Fact] = []
    for fact in facts:
        if "src" in fact and "span" not in fact:  # renamed in place: the same key order as new facts
            span = _SPAN_OF_SOURCE.get(str(fact["src"]), "event")
            fact = {("span" if k == "src" else k): (span if k == "src" else v) for k, v in fact.items()}
        out.append(fact)
    return out


def _patient(res: dict[str, Any], path: str, pid: str) -> list[Fact]:
    fact: Fact = {"t": "patient", "pid": pid, "ref": pid}
    gender = res.get("gender")
    if gender is not None:
        if gender not in ("male", "female", "other", "unknown"):
            raise IntakeError(f"{path}.gender", f"unknown gender code {shown(gender)}", "code-invalid")
        fact["sex"] = gender
    if "birthDate" in res:
        fact["birth"] = birth_date(res["birthDate"], f"{path}.birthDate").isoformat()
    return [fact]


#: resource types whose facts depend on the resource alone (not on the patient's birth date, its
#: encounters or medications): the ones a ``FactsCache`` may keep
SELF_CONTAINED = frozenset({"Observation", "Procedure"})


def patient_facts(group: PatientGroup, term: Terminology, cache: FactsCache | None = None) -> PatientFacts:
    """Map one patient's resources; a resource that cannot be read is reported and skipped.

    ``cache``: resources mapped before (a service's repeated calls) are not mapped again.
    """
    out = PatientFacts(group.pid)
    pid, found, issues = group.pid, out.facts, out.issues
    born: date | None = None
    patients = [e for e in group.entries if e.resource.get("resourceType") == "Patient"]
    for entry in patients:
        try:
            facts = _patient(entry.resource, entry.path, group.pid)
        except IntakeError as exc:
            out.issues.append(Issue(exc.path, exc.message, exc.code))
            continue
        if not any(f["t"] == "patient" for f in out.facts):
            out.facts.extend(facts)
            if "birth" in facts[0]:
                born = date.fromisoformat(str(facts[0]["birth"]))
    periods = _encounter_periods(group.entries, out.issues)
    meds = medication_ref.index(group.entries)
    memo: KeysMemo = {}  # this mapping's only: see KeysMemo
    for entry in group.entries:
        try:
            if cache is not None and entry.resource.get("resourceType") in SELF_CONTAINED:
                found.extend(_cached_facts(entry, pid, term, issues, cache, memo))
            else:
                found.extend(_resource_facts(entry, pid, term, born, issues, periods, meds, memo))
        except IntakeError as exc:
            issues.append(Issue(exc.path, exc.message, exc.code))
    return out


def _cached_facts(
    entry: Entry, pid: str, term: Terminology, issues: list[Issue], cache: FactsCache, memo: KeysMemo
) -> list[Fact]:
    """``_resource_facts`` of a SELF_CONTAINED resource, through the cache."""
    res, path = entry.resource, entry.path
    ref = reference_of(res, entry.full_url)
    if res["resourceType"] == "Observation":
        return cache.facts(
            res,
            pid,
            ref,
            path,
            issues,
            lambda own: _observation(res, path, pid, ref, term, own, memo),
            entry.text,
        )
    return cache.facts(
        res, pid, ref, path, issues, lambda _own: _procedure(res, path, pid, ref, term, memo), entry.text
    )


def _resource_facts(
    entry: Entry,
    pid: str,
    term: Terminology,
    born: date | None,
    issues: list[Issue],
    periods: Periods,
    meds: medication_ref.MedicationIndex,
    memo: KeysMemo | None = None,
) -> list[Fact]:
    res, path = entry.resource, entry.path
    rtype = res["resourceType"]
    ref = reference_of(res, entry.full_url)
    if rtype == "Condition":
        return _condition(res, path, pid, ref, term, born, periods)
    if rtype == "Observation":
        return _observation(res, path, pid, ref, term, issues, memo)
    if rtype == "Procedure":
        return _procedure(res, path, pid, ref, term, memo)
    if rtype in _MED_ACTIVE:  # not Medication itself: only the drug a record references
        return _medication(res, path, pid, ref, term, meds, issues)
    return []
