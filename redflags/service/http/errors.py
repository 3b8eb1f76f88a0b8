"""HTTP errors no route answered itself (401, 404, 405, 422) as OperationOutcomes, like every other error.

CDS Hooks 2.0 defines no error body: a service "MAY return other HTTP statuses, specifically
4xx and 5xx", and its client authentication is a bearer JWT, so a refused call is RFC 6750's
``401`` with ``WWW-Authenticate: Bearer``. The CDS endpoints answer every error of their own
with an OperationOutcome in plain JSON; their 401, an unknown path and a wrong method do the
same here, instead of Starlette's ``{"detail": ...}``. Under ``/fhir`` the body is the FHIR
media type (``$evaluate``'s route answers its own errors the same way). A 401 says the same for
every cause (the reason is in the server log only, see ``redflags.service.auth.callers``).
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse

from redflags.service.http.outcome import FHIR_JSON, media_type_for, outcome

#: One text for every refused credential: the caller learns nothing about why.
UNAUTHORIZED = (
    "unauthorized: send Authorization: Bearer <JWT signed by a trusted CDS client> "
    "(or, for $evaluate, a static token)"
)
#: (status) -> (OperationOutcome issue code, fixed text or None for the exception's own).
ANSWERS: dict[int, tuple[str, str | None]] = {
    401: ("login", UNAUTHORIZED),
    403: ("forbidden", None),
    404: ("not-found", "no such endpoint: GET /cds-services lists the CDS services, /docs the API"),
    405: ("not-supported", None),
}


def _response(request: Request, status: int, message: str, code: str) -> JSONResponse:
    fhir = media_type_for(request.url.path) == FHIR_JSON  # a site's /sites/{name}/fhir too
    return JSONResponse(outcome(message, code), status_code=status, media_type=FHIR_JSON if fhir else None)


async def http_error(request: Request, exc: Exception) -> JSONResponse:
    """An HTTPException (auth dependencies, routing) as an OperationOutcome, its headers kept."""
    assert isinstance(exc, HTTPException)
    code, text = ANSWERS.get(exc.status_code, ("processing", None))
    response = _response(request, exc.status_code, text or str(exc.detail), code)
    for name, value in (exc.headers or {}).items():
        response.headers[name] = value
    return response


async def invalid_request(request: Request, exc: Exception) -> JSONResponse:
    """FastAPI's request validation (path, query) as a 400 OperationOutcome naming the field."""
    assert isinstance(exc, RequestValidationError)
    where = "; ".join(".".join(str(p) for p in e["loc"]) + f": {e['msg']}" for e in exc.errors())
    return _response(request, 400, f"invalid request: {where}", "invalid")


def install(app: FastAPI) -> None:
    """Register both handlers on APP."""
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(RequestValidationError, invalid_request)
