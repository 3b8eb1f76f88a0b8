"""The drug of a medication record given as ``medicationReference`` instead of a code.

R4 lets a MedicationRequest/Statement/Administration name its drug by reference to a Medication
(``medication[x]``): a contained one (``#id``), or one elsewhere in the same input (a Bundle's
``Medication/id`` or ``urn:uuid:`` fullUrl, an order-sign ``draftOrders`` bundle, a prefetch).
The Medication's ``code`` is the drug; without reading it an order for levofloxacin by reference
would add no myasthenia trigger note. Intake joins the referenced Medication to the patient's
entries (``intake.CONTEXT_TYPES``); this module finds it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from fhir_adapters.intake import Entry, local_reference, reference_of

#: Reference key ("Medication/id", a fullUrl) -> (path for messages, the Medication resource).
MedicationIndex = Mapping[str, tuple[str, dict[str, Any]]]


def index(entries: Iterable[Entry]) -> dict[str, tuple[str, dict[str, Any]]]:
    """Every Medication among a patient's entries, by each reference that may name it."""
    out: dict[str, tuple[str, dict[str, Any]]] = {}
    for entry in entries:
        if entry.resource.get("resourceType") != "Medication":
            continue
        for key in (reference_of(entry.resource, entry.full_url), entry.full_url):
            if key:
                out.setdefault(key, (entry.path, entry.resource))
    return out


def drug_concept(res: dict[str, Any], path: str, known: MedicationIndex) -> tuple[object, str]:
    """The CodeableConcept naming the drug of ``res`` and its path: ``medicationCodeableConcept``,
    else the ``code`` of the Medication ``medicationReference`` points to (None if not found)."""
    if "medicationCodeableConcept" in res or not isinstance(res.get("medicationReference"), dict):
        return res.get("medicationCodeableConcept"), f"{path}.medicationCodeableConcept"
    target = res["medicationReference"].get("reference")
    if not isinstance(target, str):
        return None, f"{path}.medicationReference"
    if target.startswith("#"):
        contained = res.get("contained")
        for i, inner in enumerate(contained if isinstance(contained, list) else []):
            if (
                isinstance(inner, dict)
                and inner.get("resourceType") == "Medication"
                and inner.get("id") == target[1:]
            ):
                return inner.get("code"), f"{path}.contained[{i}].code"
        return None, f"{path}.medicationReference"
    found = known.get(target) or known.get(local_reference(target))
    if found is None or found[1].get("resourceType") != "Medication":
        return None, f"{path}.medicationReference"
    return found[1].get("code"), f"{found[0]}.code"


#: The medication records whose ``medicationReference`` may name a Medication to be read.
MEDICATION_RECORDS = frozenset({"MedicationRequest", "MedicationStatement", "MedicationAdministration"})


def unresolved(resources: Iterable[tuple[dict[str, Any], str | None]]) -> list[str]:
    """``Medication/<id>`` references (relative, on the same server) of medication records that
    no Medication among ``resources`` (resource, fullUrl) answers: what a CDS service reads from
    the client's FHIR server when it did not ``_include`` them. Sorted, each once."""
    known: set[str] = set()
    wanted: set[str] = set()
    for resource, full_url in resources:
        rtype = resource.get("resourceType")
        if not isinstance(rtype, str):
            continue  # intake.group reports it
        if rtype == "Medication":
            known.update(k for k in (reference_of(resource, full_url), full_url) if k)
            continue
        if rtype not in MEDICATION_RECORDS or "medicationCodeableConcept" in resource:
            continue
        ref = resource.get("medicationReference")
        target = ref.get("reference") if isinstance(ref, dict) else None
        if not isinstance(target, str) or target.startswith("#"):
            continue
        local = local_reference(target)
        if local.startswith("Medication/") and local == target.split("/_history/")[0]:
            wanted.add(local)
    return sorted(wanted - known)
