"""FHIR OperationOutcome answers for the HTTP endpoints: bad input always gets one."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from fastapi.responses import JSONResponse

FHIR_JSON = "application/fhir+json"


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


def outcome_response(status: int, diagnostics: str, code: str = "invalid") -> FhirResponse:
    return FhirResponse(outcome(diagnostics, code), status_code=status)
