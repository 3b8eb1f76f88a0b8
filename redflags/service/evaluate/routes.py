"""``POST /fhir/$evaluate``: integration engines push FHIR, get back the Flags and CarePlans.

The answer is a ``collection`` Bundle: for each alert the Flag and the proposed CarePlan that
``redflags replay --out`` writes (same identifiers and ``urn:uuid`` fullUrls, so a receiver can
conditionally create them), the engine Device they name as author (once, when anything fired),
and last an OperationOutcome saying what was evaluated and every entry that was skipped or
invalid, with its element path. Every error is an OperationOutcome too (``application/fhir+json``).
The body formats are described in ``fhir_adapters.evaluate_input``; the answer is built by
``fhir_adapters.evaluation_answer``.

With a state store, an evaluation at the service's own time (the wall clock, or ``serve --now``)
reads and updates the caller's tenant's history and alert ledger (``redflags.service.auth.tenants``).
An evaluation at any other instant the caller names is a what-if: it reads that history and
stores, prunes, changes and queues nothing, so a caller's clock can never expire or withdraw
what the service keeps. The OperationOutcome says which of the two it was.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.types import Receive, Scope, Send

from engine.logger import get_logger
from fhir_adapters.evaluation_answer import WHAT_IF, answer
from fhir_adapters.times import parse_now
from redflags import logs
from redflags.pipeline import Pipeline
from redflags.service.auth.tenant_dependency import evaluate_tenant
from redflags.service.engine_host import actor, call
from redflags.service.evaluate.input import (
    INPUT_PARAMETERS,
    BadInput,
    check_media_type,
    read_body,
)
from redflags.service.http.catch_all import ANSWERED, error_response
from redflags.service.http.outcome import FHIR_JSON, FhirResponse, outcome
from redflags.workers.pool import EnginePool

__all__ = ["WHAT_IF", "evaluate_body", "router"]

log = get_logger("redflags.service.fhir")

#: OperationOutcome issue type for an HTTP error status.
_STATUS_CODES = {401: "login", 403: "forbidden", 404: "not-found", 405: "not-supported", 415: "not-supported"}


class FhirRoute(APIRoute):
    """A route whose errors (auth, method, validation) are OperationOutcomes, like its answers."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def fhir_errors(request: Request) -> Response:
            try:
                return await handler(request)
            except HTTPException as exc:
                return _http_error(exc.status_code, str(exc.detail), exc.headers)
            except RequestValidationError as exc:
                where = "; ".join(".".join(str(p) for p in e["loc"]) + f": {e['msg']}" for e in exc.errors())
                return FhirResponse(outcome(f"invalid request: {where}"), status_code=400)

        return fhir_errors

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.methods and scope["method"] not in self.methods:
            allowed = ", ".join(sorted(self.methods))
            response = _http_error(405, f"method {scope['method']} not allowed: use {allowed}", {})
            response.headers["Allow"] = allowed
            await response(scope, receive, send)
            return
        await super().handle(scope, receive, send)


router = APIRouter(prefix="/fhir", tags=["fhir"], route_class=FhirRoute)

_ERRORS = {"content": {FHIR_JSON: {}}}
_BODY_DOC = (
    "A FHIR R4 Bundle (any type), a single resource of a patient, or a Parameters resource with "
    f"parameters {' / '.join(repr(p) for p in INPUT_PARAMETERS)} (resources, repeatable) and 'now' "
    "(valueDateTime or valueInstant, the evaluation time)."
)


@router.post(
    "/$evaluate",
    name="evaluate",
    summary="Evaluate every patient in a FHIR Bundle, resource or Parameters",
    response_class=Response,
    responses={
        200: {"description": "A collection Bundle: Flags, CarePlans, OperationOutcome", **_ERRORS},
        400: {"description": "Invalid JSON or not FHIR (OperationOutcome)", **_ERRORS},
        401: {"description": "Not authenticated (OperationOutcome)", **_ERRORS},
        413: {"description": "Body over the size limit (OperationOutcome)", **_ERRORS},
        415: {"description": "Not application/fhir+json or application/json (OperationOutcome)", **_ERRORS},
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "description": _BODY_DOC,
            "content": {FHIR_JSON: {"schema": {"type": "object"}}, "application/json": {}},
        }
    },
)
async def evaluate_operation(
    request: Request,
    tenant: Annotated[str, Depends(evaluate_tenant)],
    now: Annotated[
        str | None,
        Query(description="Evaluation time (FHIR dateTime) when the body is not a Parameters; default: now"),
    ] = None,
) -> Response:
    """Every patient of the body evaluated at ``now``; the Flags and CarePlans of the alerts."""
    try:
        check_media_type(request.headers.get("content-type"), request.headers.get("content-encoding"))
        body = await request.body()
        fixed = request.app.state.settings.now  # redflags serve --now: every call at that time
        default_now = parse_now(fixed) if fixed else int(time.time())
        engines: EnginePool = request.app.state.engines
        done = await call(engines, evaluate_body, body, now, default_now, tenant)
    except BadInput as exc:
        log.info("evaluate_refused", status=exc.status)  # the message may quote the body: not logged
        code = _STATUS_CODES.get(exc.status, "invalid")
        refusal = outcome(exc.message, code, expression=_paths(exc.expression))
        return FhirResponse(refusal, status_code=exc.status)
    except ANSWERED as exc:  # engines busy or replaced, database unreachable: 503; too deep: 422
        return error_response(request.scope, exc)
    except Exception as exc:  # a bug, not the sender's fault: no message (it may name patients)
        log.error("evaluate_failed", error=type(exc).__name__, at=_where(exc))
        return FhirResponse(outcome("evaluation failed (server error)", "exception"), status_code=500)
    log.info("evaluated", patients=done.patients, alerts=done.alerts, issues=done.issues)
    return Response(done.content, media_type=FHIR_JSON)


@dataclass(frozen=True, slots=True)
class Evaluated:
    content: bytes  # the collection Bundle, JSON
    patients: int
    alerts: int
    issues: int


def evaluate_body(
    pipeline: Pipeline, body: bytes, query_now: str | None, default_now: int, tenant: str
) -> Evaluated:
    """Read, evaluate and render one body: the work of an engine process (``engine_host.call``).

    ``default_now`` is the service's clock: an evaluation at another instant is a what-if.
    """
    given = read_body(body, query_now, default_now)
    what_if = given.now != default_now
    results = pipeline.evaluate(given.intake, given.now, commit=not what_if, tenant=tenant, actor=actor())
    for result in results:
        token = logs.patient_token(result.pid)
        for alert in result.alerts:
            log.info("alert", rule=alert.rule, severity=alert.severity, patient=token)
    return Evaluated(
        orjson.dumps(answer(given, results, pipeline.rules, what_if=what_if)),
        len(results),
        sum(len(r.alerts) for r in results),
        len(given.intake.issues) + sum(len(r.issues) for r in results),
    )


def _paths(expression: str | None) -> list[str]:
    return [expression] if expression else []


def _http_error(status: int, detail: str, headers: Mapping[str, str] | None) -> FhirResponse:
    response = FhirResponse(outcome(detail, _STATUS_CODES.get(status, "processing")), status_code=status)
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def _where(exc: BaseException) -> str:
    """``file:line`` of the innermost frame: enough to find a bug, no data from the message."""
    frames = traceback.extract_tb(exc.__traceback__)
    return f"{Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else "?"
