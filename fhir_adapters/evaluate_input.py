"""A ``$evaluate`` body read: the patients' resources and the evaluation time (FHIR JSON in).

Accepted bodies (``application/fhir+json`` or ``application/json``, UTF-8):

- a Bundle of any type (collection, transaction, batch, searchset, document, ...);
- a single resource of a type that can hold patient data (the R4 Patient compartment);
- a ``Parameters`` resource with one or more ``bundle`` (a Bundle) or ``resource`` (any
  resource: a Bundle, a Patient, an Observation, a Practitioner...) parameters, all read as one
  input like the entries of one Bundle, and at most one ``now`` (``valueDateTime`` or
  ``valueInstant``): the evaluation time.

``now`` may instead be given in the URL (``?now=2025-03-10T12:00:00Z``), the FHIR way of passing
simple parameters alongside a resource posted directly; without it, the current time is used.
Anything else is refused with the element path at fault, so a sender can fix the message.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from fhir_adapters.errors import InputError, IntakeError
from fhir_adapters.intake import MAPPED_TYPES, Intake, TooManyResources, check_resources, group, resources_of
from fhir_adapters.times import parse_now

#: Parameters names that carry input resources, and the one that sets the evaluation time.
INPUT_PARAMETERS = ("bundle", "resource")
NOW_PARAMETER = "now"

#: R4 Patient compartment (CompartmentDefinition/patient): the resource types that hold a
#: patient's data. A body of another type (ValueSet, CapabilityStatement, ...) is a mistake.
PATIENT_COMPARTMENT = frozenset(
    """Account AdverseEvent AllergyIntolerance Appointment AppointmentResponse AuditEvent Basic
    BodyStructure CarePlan CareTeam ChargeItem Claim ClaimResponse ClinicalImpression Communication
    CommunicationRequest Composition Condition Consent Coverage CoverageEligibilityRequest
    CoverageEligibilityResponse DetectedIssue DeviceRequest DeviceUseStatement DiagnosticReport
    DocumentManifest DocumentReference Encounter EnrollmentRequest EpisodeOfCare ExplanationOfBenefit
    FamilyMemberHistory Flag Goal Group ImagingStudy Immunization ImmunizationEvaluation
    ImmunizationRecommendation Invoice List MeasureReport Media MedicationAdministration
    MedicationDispense MedicationRequest MedicationStatement MolecularSequence NutritionOrder
    Observation Patient Person Procedure Provenance QuestionnaireResponse RelatedPerson RequestGroup
    ResearchSubject RiskAssessment Schedule ServiceRequest Specimen SupplyDelivery SupplyRequest
    VisionPrescription""".split()
)
_ACCEPTED = "a Bundle, a Parameters, or a resource of a patient (Patient, Condition, Observation, ...)"


class BadInput(Exception):
    """A body that cannot be evaluated at all: 400 (or 415) with this message and path."""

    def __init__(self, message: str, expression: str | None = None, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.expression = expression
        self.status = status

    def __reduce__(self) -> tuple[type[BadInput], tuple[str, str | None, int]]:
        return (BadInput, (self.message, self.expression, self.status))  # from an engine process


@dataclass(slots=True)
class EvaluationInput:
    intake: Intake
    now: int
    #: resource type -> paths of the entries read but not used (no rule reads that type)
    unread: dict[str, list[str]] = field(default_factory=dict)
    entries: int = 0  # resources in the body, Bundles unwrapped


def read_body(body: bytes, query_now: str | None, default_now: int, max_resources: int) -> EvaluationInput:
    """Parse and check a body; every refusal is a BadInput naming the element at fault.

    ``max_resources``: resources the body may hold; more is refused with 413 before any is
    read into facts.
    """
    if not body.strip():
        raise BadInput("empty body: send a FHIR Bundle, Parameters or resource")
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadInput(f"invalid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise BadInput(f"not a FHIR resource: expected a JSON object, got {_json_type(doc)}")
    rtype = doc.get("resourceType")
    if not isinstance(rtype, str) or not rtype:
        raise BadInput("not a FHIR resource: no resourceType")
    now = _now(query_now, "now") if query_now is not None else None
    if rtype == "Parameters":
        documents, given = _parameters(doc)
        if given is not None and now is not None:
            raise BadInput("'now' given both in the URL and in Parameters: give it once", "Parameters")
        now = given if given is not None else now
    else:
        _check_type(rtype, rtype)
        documents = [(rtype, doc)]
    resources: list[tuple[str, dict[str, Any], str | None]] = []
    for path, document in documents:
        try:
            resources.extend(resources_of(document, path))
        except InputError as exc:
            raise BadInput(str(exc)) from None
    try:
        check_resources(len(resources), max_resources)
    except TooManyResources as exc:
        raise BadInput(str(exc), documents[0][0] if documents else None, status=413) from None
    return EvaluationInput(
        intake=group("request", resources),
        now=now if now is not None else default_now,
        unread=_unread(resources),
        entries=len(resources),
    )


def _parameters(doc: dict[str, Any]) -> tuple[list[tuple[str, dict[str, Any]]], int | None]:
    params = doc.get("parameter")
    if not isinstance(params, list) or not params:
        raise BadInput("Parameters has no parameter: give a 'bundle' or 'resource'", "Parameters.parameter")
    documents: list[tuple[str, dict[str, Any]]] = []
    now: int | None = None
    for i, param in enumerate(params):
        path = f"Parameters.parameter[{i}]"
        if not isinstance(param, dict) or not isinstance(param.get("name"), str):
            raise BadInput("a parameter must be an object with a name", path)
        name = param["name"]
        if name == NOW_PARAMETER:
            if now is not None:
                raise BadInput("'now' given twice", path)
            now = _parameter_now(param, path)
        elif name in INPUT_PARAMETERS:
            documents.append(_parameter_resource(param, name, path))
        else:
            accepted = ", ".join(repr(n) for n in (*INPUT_PARAMETERS, NOW_PARAMETER))
            raise BadInput(f"unknown parameter {name!r} (accepted: {accepted})", f"{path}.name")
    if not documents:
        raise BadInput("Parameters holds no 'bundle' or 'resource' parameter", "Parameters.parameter")
    return documents, now


def _parameter_now(param: dict[str, Any], path: str) -> int:
    for key in ("valueDateTime", "valueInstant"):
        if key in param:
            return _now(param[key], f"{path}.{key}")
    raise BadInput("'now' needs a valueDateTime or valueInstant", path)


def _parameter_resource(param: dict[str, Any], name: str, path: str) -> tuple[str, dict[str, Any]]:
    resource = param.get("resource")
    where = f"{path}.resource"
    if not isinstance(resource, dict):
        raise BadInput(f"parameter {name!r} must carry a resource", path)
    rtype = resource.get("resourceType")
    if not isinstance(rtype, str) or not rtype:
        raise BadInput("not a FHIR resource: no resourceType", where)
    if name == "bundle" and rtype != "Bundle":
        raise BadInput(f"parameter 'bundle' holds a {rtype}: use 'resource' for single resources", where)
    if rtype == "Parameters":
        raise BadInput("a Parameters inside Parameters is not read: give its resources directly", where)
    return where, resource  # like a Bundle's entries, types no rule reads are reported, not refused


def _check_type(rtype: str, path: str) -> None:
    if rtype != "Bundle" and rtype not in PATIENT_COMPARTMENT:
        raise BadInput(f"a {rtype} cannot hold patient data: send {_ACCEPTED}", path)


def _now(value: object, path: str) -> int:
    if not isinstance(value, str):
        raise BadInput(f"'now' must be a FHIR dateTime string, got {_json_type(value)}", path)
    try:
        return parse_now(value)
    except IntakeError as exc:
        raise BadInput(f"'now': {exc.message}", path) from None


def _unread(resources: list[tuple[str, dict[str, Any], str | None]]) -> dict[str, list[str]]:
    """Resource type -> element paths of the entries no rule reads (reported, not errors)."""
    paths: dict[str, list[str]] = {}
    for path, res, _url in resources:
        if res["resourceType"] not in MAPPED_TYPES:
            paths.setdefault(res["resourceType"], []).append(path)
    return dict(sorted(paths.items()))


def _json_type(value: object) -> str:
    return {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number"
    )
