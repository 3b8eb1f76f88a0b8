"""FHIR OperationOutcome answers for the HTTP endpoints: bad input always gets one.

The body is ``fhir_adapters.outcome.outcome``; this module only chooses media type and status.
"""

from __future__ import annotations

import re

from fastapi.responses import JSONResponse

from fhir_adapters.outcome import outcome

__all__ = ["CDS_JSON", "FHIR_JSON", "FhirResponse", "media_type_for", "outcome", "outcome_response"]

FHIR_JSON = "application/fhir+json"
#: The CDS Hooks endpoints (discovery, service call, feedback) speak plain JSON, errors included.
CDS_JSON = "application/json"


class FhirResponse(JSONResponse):
    media_type = FHIR_JSON


#: The FHIR endpoints: ``/fhir``, and a site's under ``/sites/{name}/fhir`` (redflags.service.sites).
_FHIR_PATH = re.compile(r"(?:/sites/[^/]+)?/fhir")


def media_type_for(path: str) -> str:
    """FHIR JSON under ``/fhir`` (FHIR operations), plain JSON elsewhere (the CDS Hooks endpoints)."""
    return FHIR_JSON if _FHIR_PATH.match(path) else CDS_JSON


def outcome_response(
    status: int, diagnostics: str, code: str = "invalid", *, path: str = "/fhir"
) -> JSONResponse:
    """An OperationOutcome answer in the media type of the endpoint at ``path``."""
    return JSONResponse(outcome(diagnostics, code), status_code=status, media_type=media_type_for(path))
