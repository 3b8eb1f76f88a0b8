"""The work of one CDS service call, done in an engine process (``engine_host``).

Decode and check the request, read the prefetch, evaluate the patient in context and render
the cards. Reading ``fhirServer`` is I/O and stays in the HTTP process: when the prefetch is
incomplete ``answer`` returns None, the HTTP process gathers the record and calls again with it.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson

from fhir_adapters.intake import check_resources, group
from redflags.logs import patient_token
from redflags.service.auth.tenants import cds_tenant
from redflags.service.cds.cards import IssuedCard, cds_response
from redflags.service.cds.prefetch import Found, read_prefetch
from redflags.service.cds.request import CdsRequest, CdsRequestError, parse
from redflags.service.cds.services import SERVICES
from redflags.service.engine_host import evaluate, pipeline
from redflags.service.http.limits import call_limits


@dataclass(frozen=True, slots=True)
class Answer:
    payload: bytes  # the CDS Hooks response, JSON
    issued: list[IssuedCard]
    patient: str  # pseudonym of the patient in context (redflags.logs.patient_token)
    resources: int  # resources of that patient that were read
    skipped: int  # entries skipped (named in the engine's log lines)


def decode(service_id: str, body: bytes) -> CdsRequest:
    """The request, checked against the service's hook (CdsRequestError: 400)."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise CdsRequestError(f"invalid JSON: {exc}") from None
    return parse(doc, SERVICES[service_id].hook)


def answer(
    service_id: str, body: bytes, now: int, system_actions: bool, gathered: list[Found] | None, principal: str
) -> Answer | None:
    """The cards for this call; None when the record must first be read from fhirServer.

    ``principal``: the authenticated client (``tenants.cds_principal``); with the call's
    ``fhirServer`` it names the tenant whose history and ledger the evaluation uses.
    """
    service = SERVICES[service_id]
    call = decode(service_id, body)
    extra = service.handler(call, now)
    if gathered is None:
        given = read_prefetch(service.prefetch, call)
        if not given.complete:
            return None
        gathered = given.found
    check_resources(len(gathered) + len(extra), call_limits().max_resources)  # TooManyResources: 413
    pid = f"Patient/{call.patient_id}"
    intake = group("cds-hooks", [*gathered, *extra])
    mine = intake.patients.get(pid)
    intake.patients = {pid: mine} if mine else {}  # the patient in context, never another
    tenant = cds_tenant(principal, call.fhir_server)
    results = evaluate(intake, now, what_if=bool(extra), tenant=tenant) if mine else []  # extra: drafts
    alerts = [alert for result in results for alert in result.alerts]
    rendered = {rule: pair for result in results for rule, pair in result.rendered.items()}
    payload, issued = cds_response(
        alerts, pipeline().engine.metas, call.hook_instance, system_actions=system_actions, rendered=rendered
    )
    return Answer(
        orjson.dumps(payload),
        issued,
        patient_token(pid),
        len(mine.entries) if mine else 0,
        len(intake.issues) + sum(len(r.issues) for r in results),
    )
