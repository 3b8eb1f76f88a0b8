"""FHIR OperationOutcome answers for the HTTP endpoints: bad input always gets one."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from fastapi.responses import JSONResponse

FHIR_JSON = "application/fhir+json"
#: The CDS Hooks endpoints (discovery, service call, feedback) speak plain JSON, errors included.
CDS_JSON = "application/json"


def outcome(
    diagnostics: str, code: str = "invalid", severity: str = "error", expression: Iterable[str] = ()
) -> dict[str, Any]:
    issue: dict[str, Any] = {"severity": severity, "code": code, "diagnostics": diagnostics}
    paths = list(expression)
    if paths:
        issue["expression"] = paths
    return {"resourceType": "OperationOutcome", "issue": [issue]}


class FhirResponse(JSONResponse):
    media_type = FHIR_JSON


def media_type_for(path: str) -> str:
    """FHIR JSON under ``/fhir`` (FHIR operations), plain JSON elsewhere (the CDS Hooks endpoints)."""
    return FHIR_JSON if path.startswith("/fhir") else CDS_JSON


def outcome_response(
    status: int, diagnostics: str, code: str = "invalid", *, path: str = "/fhir"
) -> JSONResponse:
    """An OperationOutcome answer in the media type of the endpoint at ``path``."""
    return JSONResponse(outcome(diagnostics, code), status_code=status, media_type=media_type_for(path))
