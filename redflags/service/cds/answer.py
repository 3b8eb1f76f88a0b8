"""One CDS call: read in the HTTP process (``decode``, ``pack``), evaluated in an engine process (``answer``).

The body is decoded once, here in the HTTP process, with the request checked and the prefetch
read; what the prefetch lacks is read from fhirServer (I/O, on the HTTP process's fetch
threads). Then the call crosses to an engine process once (``answer``, through
``engine_host.call``) with the patient's resources, never the body: the engine evaluates the
patient in context and renders the cards with the rules' metadata of the pipeline it is handed.

The resources cross as one JSON text (``pack``), not as a pickle of the decoded tree: for
~200 resources pickle.dumps took 0.7 ms of the one HTTP process, orjson.dumps 0.13 ms (and
pickle.loads in the engine 0.65 ms, orjson.loads 0.55 ms). The engine decodes that text
(``unpack``): the patient's record, already selected and checked here, not a second decode of
the body. Its nesting has one limit on every Python: orjson encodes at most ``JSON_DEPTH``
nested containers, so a resource nested deeper than ``RESOURCE_DEPTH`` is refused (422, "nested
too deeply"; the deepest resource of fixtures/, the HL7 R4 examples included, nests 9).
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson

from fhir_adapters.intake import WithText, group
from redflags.lifecycle import identifier_scope
from redflags.logs import patient_token
from redflags.pipeline import Pipeline
from redflags.service.cds.cards import IssuedCard, cds_response
from redflags.service.cds.prefetch import Found
from redflags.service.cds.request import CdsRequest, CdsRequestError, parse
from redflags.service.cds.services import SERVICES
from redflags.service.engine_host import actor
from redflags.workers.pool import UnsendableInput

#: Nested containers orjson.dumps encodes (more: "Recursion limit reached"); tests pin it.
JSON_DEPTH = 254
#: Levels a resource may nest, itself counted (``pack`` wraps it in two: the list, its entry).
RESOURCE_DEPTH = JSON_DEPTH - 2
NESTED_TOO_DEEPLY = "the data is nested too deeply to be evaluated"


@dataclass(frozen=True, slots=True)
class Answer:
    payload: bytes  # the CDS Hooks response, JSON
    issued: list[IssuedCard]
    patient: str  # pseudonym of the patient in context (redflags.logs.patient_token)
    resources: int  # resources of that patient that were read
    skipped: int  # entries skipped (named in the engine's log lines)


@dataclass(frozen=True, slots=True)
class CdsWork:
    """What crosses to the engine process for one call: the record read, not the request body."""

    hook_instance: str
    patient_id: str
    record: bytes  # ``pack`` of the resources: prefetched or read from fhirServer, then the hook's own
    what_if: bool  # the resources hold what is not yet so (order-sign's draft orders)
    tenant: str  # whose history and ledger (``redflags.service.auth.tenants.cds_tenant``)
    now: int
    system_actions: bool


def decode(service_id: str, body: bytes) -> CdsRequest:
    """The request, checked against the service's hook (CdsRequestError: 400); the call's one decode."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise CdsRequestError(f"invalid JSON: {exc}") from None
    return parse(doc, SERVICES[service_id].hook)


def pack(resources: list[Found]) -> bytes:
    """The resources as they cross (UnsendableInput: 422, as the pool's own refusals).

    One JSON line ``[[path, fullUrl, length], ...]``, then the resources as one JSON array:
    each resource's own text crosses once, so the engine process parses them in one call and
    keeps each one's bytes, the key of its facts in ``fhir_adapters.facts_cache``, which then
    encodes nothing again (that was ~0.12 ms of a 200-resource call's first evaluation).
    """
    try:  # each encoded inside two containers, as when they crossed as [[path, resource, url], ...]
        texts = [orjson.dumps([[resource]])[2:-2] for _, resource, _ in resources]
        lengths = map(len, texts)
        head = orjson.dumps([[path, url, n] for (path, _, url), n in zip(resources, lengths, strict=True)])
    except orjson.JSONEncodeError as exc:
        if "recursion limit" in str(exc).lower():
            raise UnsendableInput(NESTED_TOO_DEEPLY) from None
        raise UnsendableInput(f"the data cannot be evaluated ({type(exc).__name__})") from None
    return b"".join((head, b"\n[", b",".join(texts), b"]"))


def unpack(record: bytes) -> list[WithText]:
    """The resources ``pack`` encoded (in the engine process), each with its own JSON text."""
    cut = record.index(b"\n")  # the head is compact JSON: no raw newline in it
    head = orjson.loads(record[:cut])
    resources = orjson.loads(memoryview(record)[cut + 1 :])
    entries: list[WithText] = []  # ``group`` makes the Entry
    start = cut + 2  # past the newline and the array's "["
    for (path, url, length), resource in zip(head, resources, strict=True):
        entries.append((path, resource, url, record[start : start + length]))
        start += length + 1  # and the ","
    return entries


def answer(pipeline: Pipeline, work: CdsWork) -> Answer:
    """The cards for this call (in an engine process): the patient in context only, never another."""
    pid = f"Patient/{work.patient_id}"
    intake = group("cds-hooks", unpack(work.record))
    mine = intake.patients.get(pid)
    intake.patients = {pid: mine} if mine else {}  # the patient in context, never another
    results = (
        pipeline.evaluate(intake, work.now, commit=not work.what_if, tenant=work.tenant, actor=actor())
        if mine
        else []
    )
    alerts = [alert for result in results for alert in result.alerts]
    rendered = {rule: pair for result in results for rule, pair in result.rendered.items()}
    rules, instance = pipeline.rules, work.hook_instance
    kept_as = pipeline.memory.tenant_of(work.tenant) if pipeline.memory else work.tenant  # a site's too
    payload, issued = cds_response(
        alerts,
        rules,
        instance,
        system_actions=work.system_actions,
        rendered=rendered,
        scope=identifier_scope(kept_as),
    )
    return Answer(
        orjson.dumps(payload),
        issued,
        patient_token(pid),
        len(mine.entries) if mine else 0,
        len(intake.issues) + sum(len(r.issues) for r in results),
    )
