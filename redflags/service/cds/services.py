"""The CDS services redflags offers, each declared on its handler (discovery lists them).

A handler adds what its hook's context contributes to the record (order-sign's draft orders);
it runs in an engine process (``cds.answer``), so it does no I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from fhir_adapters.output import prune_empty
from fhir_adapters.prefetch_read import InvalidPrefetch, draft_orders
from redflags.service.cds.prefetch import Found
from redflags.service.cds.request import HOOK_CONTEXT, CdsRequest, CdsRequestError

#: The record the rules read (``fhir_adapters.intake.MAPPED_TYPES``), one key per resource type.
#: MedicationAdministration is left out: the drugs the rules look for are ordered first, so
#: MedicationRequest already shows them, and every template costs the client a query.
#: Keys are resource type names, as other CDS services (AHRQ CDS Connect) name them.
#: ``_include=...:medication``: a drug named by ``medicationReference`` to a Medication that is
#: not contained comes with its order (``fhir_adapters.medication_ref`` reads it from the input).
#: Encounter: a Condition with no date of its own is dated by its Encounter
#: (docs/clinical-policy.md#encounter-dates); bounded to the 100 most recent, one page
#: (``prefetch.FIRST_PAGE_ONLY``): a diagnosis of an older encounter stays undated, which alerts nothing, as
#: before the Encounter was read.
RECORD_PREFETCH: Mapping[str, str] = {
    "Patient": "Patient/{{context.patientId}}",
    "Condition": "Condition?patient={{context.patientId}}",
    "Observation": "Observation?patient={{context.patientId}}",
    "Procedure": "Procedure?patient={{context.patientId}}",
    "MedicationRequest": "MedicationRequest?patient={{context.patientId}}"
    "&_include=MedicationRequest:medication",
    "MedicationStatement": "MedicationStatement?patient={{context.patientId}}"
    "&_include=MedicationStatement:medication",
    "Encounter": "Encounter?patient={{context.patientId}}&_sort=-date&_count=100",
}

#: Extra resources a hook's context contributes (order-sign's draft orders), evaluated at ``now``.
Handler = Callable[[CdsRequest, int], list[Found]]


@dataclass(frozen=True, slots=True)
class CdsService:
    id: str
    hook: str
    title: str
    description: str
    handler: Handler
    prefetch: Mapping[str, str] = field(default_factory=lambda: dict(RECORD_PREFETCH))
    usage_requirements: str | None = None

    def discovery(self) -> dict[str, Any]:
        return prune_empty(
            {
                "hook": self.hook,
                "title": self.title,
                "description": self.description,
                "id": self.id,
                "prefetch": dict(sorted(self.prefetch.items())),
                "usageRequirements": self.usage_requirements,
            }
        )


SERVICES: dict[str, CdsService] = {}


def cds_service(
    *, id: str, hook: str, title: str, description: str, usage_requirements: str | None = None
) -> Callable[[Handler], Handler]:
    """Register the decorated handler as the CDS service ``id`` for ``hook``."""

    def register(handler: Handler) -> Handler:
        if id in SERVICES:
            raise ValueError(f"two CDS services named {id!r}")
        if hook not in HOOK_CONTEXT:
            raise ValueError(f"no context definition for hook {hook!r}")
        SERVICES[id] = CdsService(
            id, hook, title, description, handler, usage_requirements=usage_requirements
        )
        return handler

    return register


_USAGE = (
    "Reads Patient, Condition, Observation, Procedure, MedicationRequest and MedicationStatement "
    "(with their referenced Medications) and the 100 most recent Encounters "
    "from prefetch or, for keys not prefetched, from fhirServer (https) with fhirAuthorization; "
    "answers 412 when neither is possible."
)


@cds_service(
    id="redflags-patient-view",
    hook="patient-view",
    title="Leg weakness red flags",
    description="Alerts for the dangerous causes of leg weakness (cauda equina, cord compression, "
    "stroke, Guillain-Barré, myasthenic crisis, ...) found in the patient's record when the chart opens.",
    usage_requirements=_USAGE,
)
def patient_view(call: CdsRequest, now: int) -> list[Found]:
    """The chart as it is: the record only."""
    return []


@cds_service(
    id="redflags-encounter-start",
    hook="encounter-start",
    title="Leg weakness red flags at the start of an encounter",
    description="The same red-flag alerts when an encounter starts, so triage sees them first.",
    usage_requirements=_USAGE,
)
def encounter_start(call: CdsRequest, now: int) -> list[Found]:
    """The record as it is when the encounter starts."""
    return []


@cds_service(
    id="redflags-order-sign",
    hook="order-sign",
    title="Leg weakness red flags, counting the orders being signed",
    description="Red-flag alerts evaluated as if the draft medication orders were signed: a drug "
    "that can worsen myasthenia gravis shows on the card of a patient at risk of a crisis.",
    usage_requirements=_USAGE,
)
def order_sign(call: CdsRequest, now: int) -> list[Found]:
    """Draft MedicationRequests of ``context.draftOrders`` as signed now (status active)."""
    try:
        return draft_orders(call.context["draftOrders"], call.patient_id, now)
    except InvalidPrefetch as exc:
        raise CdsRequestError(str(exc)) from None


def discovery_document() -> dict[str, Any]:
    return {"services": [SERVICES[key].discovery() for key in sorted(SERVICES)]}
