"""Keep an alert deliverable when its evidence is not on the FHIR server written to.

A CarePlan cites the alert's evidence (``supportingInfo``, ``addresses``) as literal
references to the EHR's resources. A server that checks references on write (Medplum with
``checkReferencesOnWrite``, HAPI with referential integrity) refuses the whole transaction when
one of them is not stored there, and a critical alert must not die for that: the references it
names are sent again as ``identifier`` + ``display`` only (a logical reference, which servers
do not resolve), and the CarePlan says so in a note. Nothing else is changed, so a rejection
for any other reason (or for a missing Patient) is still a rejection.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable
from typing import Any

from fhir_adapters.identifiers import CANONICAL_BASE
from fhir_adapters.output import prune_empty
from fhir_adapters.validate import validate

__all__ = [
    "EVIDENCE_ELEMENTS",
    "EVIDENCE_REFERENCE_SYSTEM",
    "alert_resources_of",
    "downgrade_note",
    "missing_evidence",
    "without_references",
]

#: Identifier system of an evidence reference kept as identifier only: the value is the
#: reference as the EHR gave it ("Observation/123").
EVIDENCE_REFERENCE_SYSTEM = f"{CANONICAL_BASE}/evidence-reference"
#: Where the resources redflags writes cite evidence (the Flag cites none).
EVIDENCE_ELEMENTS: dict[str, tuple[str, ...]] = {"CarePlan": ("supportingInfo", "addresses")}
#: How servers word "the resource this reference names is not there", one issue each; ``ref``
#: is the reference when the text names it.
_REFERENCE = r"(?P<ref>[A-Z][A-Za-z]+/[A-Za-z0-9\-.]{1,64})"
MISSING_TARGET_TEXTS: tuple[re.Pattern[str], ...] = (
    re.compile(r"reference target not found", re.I),  # Medplum (wording of some versions)
    re.compile(r"invalid reference \(not found\)", re.I),  # Medplum, checkReferencesOnWrite
    re.compile(rf"resource {_REFERENCE} (?:is )?not found", re.I),  # HAPI-1094
    re.compile(rf"reference {_REFERENCE} (?:does not exist|not found|cannot be resolved)", re.I),
)
_LITERAL = re.compile(_REFERENCE)
_NOTE_PREFIX = "Evidence not found on this FHIR server, cited by identifier only: "


def _issue_text(issue: dict[str, Any]) -> str:
    details = issue.get("details")
    parts = [issue.get("diagnostics"), details.get("text") if isinstance(details, dict) else None]
    return " ".join(p for p in parts if isinstance(p, str))


def _paths(issue: dict[str, Any]) -> list[str]:
    found = []
    for key in ("expression", "location"):
        value = issue.get(key)
        if isinstance(value, list):
            found += [v for v in value if isinstance(v, str)]
    return found


def alert_resources_of(bundle: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The Flag and CarePlan of an outbox transaction, by resource type."""
    found = {}
    for entry in bundle.get("entry") or ():
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if isinstance(resource, dict) and resource.get("resourceType") in ("Flag", "CarePlan"):
            found[resource["resourceType"]] = resource
    return found


def _evidence_slots(bundle: dict[str, Any]) -> dict[tuple[str, int], str]:
    """(element, index) -> literal reference, for every evidence reference the bundle cites."""
    slots: dict[tuple[str, int], str] = {}
    for rtype, resource in alert_resources_of(bundle).items():
        for element in EVIDENCE_ELEMENTS.get(rtype, ()):
            for i, ref in enumerate(resource.get(element) or ()):
                target = ref.get("reference") if isinstance(ref, dict) else None
                if isinstance(target, str) and not target.startswith(("urn:", "#")):
                    slots[(element, i)] = target
    return slots


def missing_evidence(outcome: dict[str, Any] | None, bundle: dict[str, Any]) -> tuple[str, ...] | None:
    """The evidence references a rejection says are not on the server, or None when the
    rejection is about anything else too (then dropping references would not help).

    Each error issue must say a reference target is missing; the reference is taken from the
    issue's text or its path (``CarePlan.supportingInfo[1]``). An issue that names neither
    precisely counts against every evidence reference; one that names a reference which is not
    evidence (the Patient) makes the answer None.
    """
    if not isinstance(outcome, dict) or outcome.get("resourceType") != "OperationOutcome":
        return None
    issues = [i for i in outcome.get("issue") or () if isinstance(i, dict)]
    errors = [i for i in issues if i.get("severity") in ("error", "fatal")]
    slots = _evidence_slots(bundle)
    if not errors or not slots:
        return None
    named: list[str] = []
    for issue in errors:
        match = next((m for p in MISSING_TARGET_TEXTS if (m := p.search(_issue_text(issue)))), None)
        if match is None:
            return None
        ref = match.groupdict().get("ref")
        if ref:
            if ref not in slots.values():
                return None
            named.append(ref)
            continue
        located = _located(_paths(issue), slots)
        if located is None:
            return None
        named += located or slots.values()
    return tuple(dict.fromkeys(named))


def _located(paths: Iterable[str], slots: dict[tuple[str, int], str]) -> list[str] | None:
    """The evidence references ``paths`` point at ([] when none is precise), or None when one
    points at an element that is not evidence (``Flag.subject``: the Patient is missing)."""
    elements = {e for names in EVIDENCE_ELEMENTS.values() for e in names}
    found = []
    for path in paths:
        last = re.search(r"([A-Za-z]\w*)(?:\[(\d+)\])?\s*$", re.sub(r"\.reference\s*$", "", path))
        if last is None or last.group(1) not in elements:
            return None
        if last.group(2) is not None and (last.group(1), int(last.group(2))) in slots:
            found.append(slots[(last.group(1), int(last.group(2)))])
    return found


def _display_only(ref: str) -> dict[str, Any]:
    typed = _LITERAL.fullmatch(ref)
    return prune_empty(
        {
            "type": ref.split("/", 1)[0] if typed else None,
            "identifier": {"system": EVIDENCE_REFERENCE_SYSTEM, "value": ref},
            "display": f"{ref} (not on this FHIR server)",
        }
    )


def without_references(bundle: dict[str, Any], refs: Iterable[str]) -> dict[str, Any]:
    """``bundle`` with the evidence references ``refs`` as identifier/display only, and a
    CarePlan note naming them (validated, like everything redflags writes)."""
    gone = set(refs)
    bundle = copy.deepcopy(bundle)
    for rtype, resource in alert_resources_of(bundle).items():
        for element in EVIDENCE_ELEMENTS.get(rtype, ()):
            values = resource.get(element) or []
            resource[element] = [
                _display_only(v["reference"]) if isinstance(v, dict) and v.get("reference") in gone else v
                for v in values
            ]
        if rtype == "CarePlan":
            cited = sorted(
                {
                    v["identifier"]["value"]
                    for element in EVIDENCE_ELEMENTS[rtype]
                    for v in resource.get(element) or ()
                    if isinstance(v, dict)
                    and (v.get("identifier") or {}).get("system") == EVIDENCE_REFERENCE_SYSTEM
                }
            )
            notes = [
                n for n in resource.get("note") or () if not str(n.get("text", "")).startswith(_NOTE_PREFIX)
            ]
            resource["note"] = [*notes, {"text": _NOTE_PREFIX + ", ".join(cited) + "."}]
    validate(bundle)
    return bundle


def downgrade_note(refs: Iterable[str], rejection: dict[str, Any] | None) -> dict[str, Any]:
    """What the outbox item keeps about the downgrade: which references, and the server's
    rejection that caused it (its issues as information)."""
    issues = [
        {
            "severity": "warning",
            "code": "not-found",
            "diagnostics": "delivered with evidence cited by identifier only (not on the FHIR server): "
            + ", ".join(refs),
        }
    ]
    for issue in (rejection or {}).get("issue") or ():
        if isinstance(issue, dict):
            issues.append({**issue, "severity": "information"})
    return {"resourceType": "OperationOutcome", "issue": issues}
