"""CDS Hooks 2.0 endpoints: discovery and service calls (the services are in ``services``).

A call: this process decodes the body once and checks the request (400), reads the prefetch
and, for what it lacks, ``fhirServer`` (412 when it cannot be had), counts the resources
(413); then the record crosses to an engine process once, as one JSON text (``pack``), and
the engine evaluates the context patient only and renders one card per alert (``answer``).
Errors are OperationOutcomes with a message naming the field.
"""

from __future__ import annotations

import time
from typing import Any

import anyio
import orjson
from anyio import to_thread
from fastapi import APIRouter, Depends, Request, Response
from starlette.routing import Match, Route
from starlette.types import Scope

from engine.logger import get_logger
from fhir_adapters.intake import TooManyResources, check_resources
from fhir_adapters.times import parse_now
from redflags.service.auth.callers import cds_client
from redflags.service.auth.tenant_dependency import cds_principal
from redflags.service.auth.tenants import cds_tenant
from redflags.service.cds.answer import CdsWork, answer, decode, pack
from redflags.service.cds.card_writer import CardWriter
from redflags.service.cds.cards import IssuedCard
from redflags.service.cds.fhir_policy import FhirPolicy
from redflags.service.cds.prefetch import (
    UNAVAILABLE,
    Gathered,
    PrefetchUnavailable,
    fetch_limiter,
    gather,
    policy,
    read_prefetch,
)
from redflags.service.cds.request import CdsRequest, CdsRequestError
from redflags.service.cds.services import SERVICES, CdsService, discovery_document
from redflags.service.engine_host import call
from redflags.service.http.body import media_type_problem
from redflags.service.http.catch_all import ANSWERED, error_response
from redflags.service.http.outcome import outcome
from redflags.service.settings import ServiceSettings
from redflags.state.feedback import ShownCard
from redflags.workers.pool import EnginePool

log = get_logger("redflags.service.cds")
router = APIRouter(tags=["CDS Hooks 2.0"])


@router.get("/cds-services", summary="CDS Hooks discovery: the services and their prefetch templates")
async def discovery() -> dict[str, Any]:
    return discovery_document()


def _json_response(payload: bytes, status: int = 200) -> Response:
    return Response(payload, status_code=status, media_type="application/json")


def _error(status: int, message: str, code: str = "invalid") -> Response:
    return _json_response(orjson.dumps(outcome(message, code)), status)


async def _record_shown(request: Request, service: str, issued: list[IssuedCard], client: str) -> None:
    """Remember which rule each card came from, so feedback on it (from ``client``) counts for that rule."""
    if issued:
        shown = [ShownCard(c.card, c.rule, c.tier, c.indicator, client) for c in issued]
        writer: CardWriter = request.app.state.card_writer  # queued: written after the answer
        await writer.record(service, shown, int(time.time()))


def _gather(
    service: CdsService, cds: CdsRequest, settings: ServiceSettings, rules: FhirPolicy, deadline: float
) -> Gathered:
    return gather(service.prefetch, cds, settings, rules=rules, deadline=deadline)


async def _fetch(request: Request, client: str, service: CdsService, cds: CdsRequest) -> Gathered:
    """Read fhirServer on the fetch threads (not the pool that verifies tokens), within the
    budget: waiting for a thread counts, the reads themselves stop at the deadline."""
    settings: ServiceSettings = request.app.state.settings
    verifier = request.app.state.auth.verifier
    trusted = verifier.clients.get(client) if verifier is not None else None
    rules = policy(trusted.fhir_servers if trusted is not None else None, settings)
    deadline = time.monotonic() + settings.fhir_timeout_s
    with anyio.move_on_after(settings.fhir_timeout_s + 1.0):  # the thread ends by the deadline
        return await to_thread.run_sync(
            _gather, service, cds, settings, rules, deadline, limiter=fetch_limiter()
        )
    raise PrefetchUnavailable(UNAVAILABLE, "no fetch thread free within the fhirServer budget")


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
async def call_service(
    service_id: str,
    request: Request,
    client: str = Depends(cds_client),
    principal: str = Depends(cds_principal),  # the tenant's client part (cached: one verification)
) -> Response:
    service = SERVICES.get(service_id)
    if service is None:
        return _error(404, f"no CDS service {service_id!r}: GET /cds-services lists them", "not-found")
    problem = media_type_problem(
        request.headers.get("content-type"), encoding=request.headers.get("content-encoding")
    )
    if problem:
        return _error(415, problem, "not-supported")
    body = await request.body()  # its size is limited by limits.BodySizeLimit (413)
    if not body.strip():
        return _error(400, "empty request body: send a CDS Hooks request (JSON object)")
    settings: ServiceSettings = request.app.state.settings
    engines: EnginePool = request.app.state.engines
    now = parse_now(settings.now) if settings.now else int(time.time())
    gathered = Gathered([], (), 0)
    try:
        cds = decode(service.id, body)  # the call's one decode
        extra = service.handler(cds, now)
        given = read_prefetch(service.prefetch, cds)
        if given.complete:
            gathered = Gathered(given.found, (), 0)
        else:  # read the rest from fhirServer, here (I/O)
            gathered = await _fetch(request, client, service, cds)
        resources = [*gathered.resources, *extra]
        check_resources(len(resources), settings.max_resources)  # TooManyResources: 413
        work = CdsWork(
            cds.hook_instance,
            cds.patient_id,
            pack(resources),  # compact bytes cross, not a pickle of the tree (UnsendableInput: 422)
            what_if=bool(extra),  # extra: draft orders
            tenant=cds_tenant(principal, cds.fhir_server),
            now=now,
            system_actions=settings.system_actions,
        )
        answered = await call(engines, answer, work)  # the call's one crossing
    except CdsRequestError as exc:
        return _error(400, str(exc))
    except TooManyResources as exc:
        log.info("cds_too_many_resources", service=service.id, resources=exc.count, limit=exc.limit)
        return _error(413, str(exc), "too-costly")
    except PrefetchUnavailable as exc:
        log.info("cds_prefetch_unavailable", service=service.id, reason=exc.detail)
        return _error(412, str(exc), "incomplete")
    except ANSWERED as exc:
        return error_response(request.scope, exc)  # 503 + Retry-After, or 422: as catch_all
    await _record_shown(request, service.id, answered.issued, client)
    log.info(
        "cds_call",
        service=service.id,
        client=client,
        patient=answered.patient,
        resources=answered.resources,
        fetched=list(gathered.fetched),
        fhir_requests=gathered.requests,
        skipped=answered.skipped,
        cards=[f"{c.rule}:{c.tier}" for c in answered.issued],
    )
    return _json_response(answered.payload)


async def _call_endpoint(request: Request) -> Response:
    """``call_service`` with its dependencies called in the order FastAPI calls them."""
    client = await cds_client(request)
    principal = await cds_principal(request, client)
    return await call_service(request.path_params["service_id"], request, client, principal)


class _PlainRoute(Route):
    """A Starlette route that names itself in the scope (``scope["route"]``), as FastAPI's do:
    the request log and the metrics label an answer by its route's template."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        match, child = super().matches(scope)
        if match is not Match.NONE:
            child["route"] = self
        return match, child


#: The service call as ``app`` serves it: a plain Starlette route placed before the routers.
#: FastAPI's route machinery (its dependency solving, its request wrappers) cost ~75 us of CPU
#: per call, more than the rest of the routing together; the route above is never reached by a
#: call and stays for the OpenAPI document (its summary, body schema, security schemes).
call_route = _PlainRoute("/cds-services/{service_id}", _call_endpoint, methods=["POST"])
