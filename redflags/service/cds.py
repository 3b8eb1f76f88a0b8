"""CDS Hooks 2.0 endpoints: discovery and service calls, each service declared on its handler.

A call: check the request (400), gather the record from prefetch and, for what is missing,
from ``fhirServer`` (412 when it cannot be had), evaluate the context patient only, and answer
one card per alert (``cards.py``). Errors are OperationOutcomes with a message naming the field.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
import structlog
from anyio import to_thread
from fastapi import APIRouter, Depends, Request, Response

from fhir_adapters.intake import group
from fhir_adapters.output import prune_empty
from fhir_adapters.times import parse_now
from redflags.feedback_store import ShownCard
from redflags.logs import patient_token
from redflags.pipeline import Pipeline
from redflags.service import feedback
from redflags.service.auth import cds_client
from redflags.service.body import media_type_problem
from redflags.service.cards import IssuedCard, cds_response
from redflags.service.cds_request import HOOK_CONTEXT, CdsRequest, CdsRequestError, parse
from redflags.service.evaluation import evaluate
from redflags.service.outcome import outcome
from redflags.service.prefetch import Found, PrefetchUnavailable, gather
from redflags.service.settings import ServiceSettings

log = structlog.get_logger("redflags.service.cds")
router = APIRouter(tags=["CDS Hooks 2.0"])

#: The record the rules read (``fhir_adapters.intake.MAPPED_TYPES``), one key per resource type.
#: MedicationAdministration is left out: the drugs the rules look for are ordered first, so
#: MedicationRequest already shows them, and every template costs the client a query.
#: Keys are resource type names, as other CDS services (AHRQ CDS Connect) name them.
RECORD_PREFETCH: Mapping[str, str] = {
    "Patient": "Patient/{{context.patientId}}",
    "Condition": "Condition?patient={{context.patientId}}",
    "Observation": "Observation?patient={{context.patientId}}",
    "Procedure": "Procedure?patient={{context.patientId}}",
    "MedicationRequest": "MedicationRequest?patient={{context.patientId}}",
    "MedicationStatement": "MedicationStatement?patient={{context.patientId}}",
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
    found: list[Found] = []
    entries = call.context["draftOrders"].get("entry") or []
    if not isinstance(entries, list):
        raise CdsRequestError("context.draftOrders.entry must be an array")
    for i, entry in enumerate(entries):
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if not isinstance(resource, dict) or resource.get("resourceType") != "MedicationRequest":
            continue  # other orders (ServiceRequest, NutritionOrder, ...) carry no facts the rules read
        signed = {
            **resource,
            "status": "active" if resource.get("status") == "draft" else resource.get("status"),
            "authoredOn": resource.get("authoredOn") or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
            "subject": resource.get("subject") or {"reference": f"Patient/{call.patient_id}"},
        }
        found.append((f"context.draftOrders.entry[{i}].resource", signed, None))
    return found


def discovery_document() -> dict[str, Any]:
    return {"services": [SERVICES[key].discovery() for key in sorted(SERVICES)]}


@router.get("/cds-services", summary="CDS Hooks discovery: the services and their prefetch templates")
async def discovery() -> dict[str, Any]:
    return discovery_document()


class _BodyError(Exception):
    def __init__(self, status: int, message: str, code: str = "invalid") -> None:
        super().__init__(message)
        self.status = status
        self.code = code


def _json_response(payload: dict[str, Any], status: int = 200) -> Response:
    return Response(orjson.dumps(payload), status_code=status, media_type="application/json")


def _error(status: int, message: str, code: str = "invalid") -> Response:
    return _json_response(outcome(message, code), status)


async def _json_body(request: Request) -> object:
    problem = media_type_problem(request.headers.get("content-type"))
    if problem:
        raise _BodyError(415, problem, "not-supported")
    data = await request.body()  # its size is limited by limits.BodySizeLimit (413)
    if not data.strip():
        raise _BodyError(400, "empty request body: send a CDS Hooks request (JSON object)")
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise _BodyError(400, f"invalid JSON: {exc}") from None


async def _record_shown(request: Request, service: str, issued: list[IssuedCard]) -> None:
    """Remember which rule each card came from, so feedback on it counts for that rule."""
    if issued:
        shown = [ShownCard(c.card, c.rule, c.tier, c.indicator) for c in issued]
        await feedback.record_shown(request, service, shown, int(time.time()))


_CALL_DOC = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["hook", "hookInstance", "context"],
                    "properties": {
                        "hook": {"type": "string"},
                        "hookInstance": {"type": "string", "format": "uuid"},
                        "fhirServer": {"type": "string", "format": "uri"},
                        "fhirAuthorization": {"type": "object"},
                        "context": {"type": "object"},
                        "prefetch": {"type": "object"},
                        "extension": {"type": "object"},
                    },
                }
            }
        },
    },
    "responses": {
        "400": {"description": "Malformed request (OperationOutcome naming the field)"},
        "404": {"description": "No such service"},
        "412": {"description": "Data neither prefetched nor obtainable from fhirServer"},
    },
}


@router.post(
    "/cds-services/{service_id}",
    summary="Call a CDS service: cards for the patient in context",
    openapi_extra=_CALL_DOC,
)
async def call_service(service_id: str, request: Request, client: str = Depends(cds_client)) -> Response:
    service = SERVICES.get(service_id)
    if service is None:
        return _error(404, f"no CDS service {service_id!r}: GET /cds-services lists them", "not-found")
    settings: ServiceSettings = request.app.state.settings
    pipeline: Pipeline = request.app.state.pipeline
    try:
        call = parse(await _json_body(request), service.hook)
        now = parse_now(settings.now) if settings.now else int(time.time())
        extra = service.handler(call, now)
        gathered = await to_thread.run_sync(gather, service.prefetch, call, settings)
    except _BodyError as exc:
        return _error(exc.status, str(exc), exc.code)
    except CdsRequestError as exc:
        return _error(400, str(exc))
    except PrefetchUnavailable as exc:
        log.info("cds_prefetch_unavailable", service=service.id, reason=str(exc))
        return _error(412, str(exc), "incomplete")

    pid = f"Patient/{call.patient_id}"
    intake = group("cds-hooks", [*gathered.resources, *extra])
    mine = intake.patients.get(pid)
    intake.patients = {pid: mine} if mine else {}  # the patient in context, never another
    results = await evaluate(pipeline, intake, now) if mine else []
    alerts = [alert for result in results for alert in result.alerts]
    payload, issued = cds_response(
        alerts, pipeline.engine.metas, call.hook_instance, system_actions=settings.system_actions
    )
    await _record_shown(request, service.id, issued)
    log.info(
        "cds_call",
        service=service.id,
        client=client,
        patient=patient_token(pid),
        resources=len(mine.entries) if mine else 0,
        fetched=list(gathered.fetched),
        fhir_requests=gathered.requests,
        skipped=len(intake.issues) + sum(len(r.issues) for r in results),
        cards=[f"{c.rule}:{c.tier}" for c in issued],
    )
    return _json_response(payload)
