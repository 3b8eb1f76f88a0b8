"""The last word on errors: every answer is JSON, never Starlette's plain-text 500.

An exception no endpoint turned into an answer becomes an OperationOutcome here: the FHIR
media type under ``/fhir``, plain JSON elsewhere (the shape the CDS endpoints use for their own
errors). Its message is not sent or logged (it may quote patient data): the type and the line
where it was raised are logged. Known failures of the engine pool get their own status, and so
does a store whose database cannot be reached now (``StoreUnavailable``: 503, the call may be
made again; the message, which names the database host, stays in the log).
"""

from __future__ import annotations

import asyncio
import traceback
from pathlib import Path

from starlette.requests import ClientDisconnect
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from engine.logger import get_logger
from redflags.service.http.outcome import FHIR_JSON, media_type_for, outcome
from redflags.state.model import PatientBusy, StoreUnavailable
from redflags.workers.pool import EngineBusy, EngineUnavailable, UnsendableInput

log = get_logger("redflags.service")

#: (exception type, status, issue code, message or None for the exception's own); first match wins.
ANSWERS: tuple[tuple[type[BaseException], int, str, str | None], ...] = (
    (EngineBusy, 503, "transient", None),
    (EngineUnavailable, 503, "transient", None),
    (PatientBusy, 503, "transient", "the patient is being evaluated by other calls now: call again"),
    (StoreUnavailable, 503, "transient", "the service's database cannot be reached now: call again"),
    (UnsendableInput, 422, "too-costly", None),
    (RecursionError, 422, "too-costly", "the data is nested too deeply to be evaluated"),
)
#: What the routes hand to ``error_response`` themselves (every other exception is a bug: 500).
ANSWERED = (EngineUnavailable, UnsendableInput, RecursionError, StoreUnavailable)
#: Seconds a client is asked to wait before calling again after a 503.
RETRY_AFTER_S = 1


def error_response(scope: Scope, exc: BaseException) -> JSONResponse:
    """The JSON answer for an exception no endpoint handled."""
    status, code, message = 500, "exception", "internal server error"
    if isinstance(exc, StoreUnavailable):  # for the operator: which database (never a password)
        log.warning("store_unavailable", error=type(exc).__name__, detail=str(exc))
    for kind, kind_status, kind_code, text in ANSWERS:
        if isinstance(exc, kind):
            status, code, message = kind_status, kind_code, text or str(exc)
            break
    return _answer(scope, status, message, code)


def _answer(scope: Scope, status: int, message: str, code: str) -> JSONResponse:
    """An OperationOutcome: FHIR JSON under /fhir, plain JSON (the CDS endpoints' shape) elsewhere."""
    fhir = media_type_for(scope.get("path", "")) == FHIR_JSON  # a site's /sites/{name}/fhir too
    media_type = FHIR_JSON if fhir else None
    response = JSONResponse(outcome(message, code), status_code=status, media_type=media_type)
    if status == 503:
        response.headers["Retry-After"] = str(RETRY_AFTER_S)
    return response


class CatchAll:
    """Pure ASGI middleware: an unhandled exception becomes a JSON error answer (logged once)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watched_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, watched_send)
        except ClientDisconnect:
            log.info("client_disconnected")  # nobody to answer
        except asyncio.CancelledError:  # abandoned at shutdown, past the grace period: say so
            log.warning("request_abandoned", answered=not started)
            if not started:
                response = _answer(scope, 503, "the service is shutting down: call again", "transient")
                response.headers["Connection"] = "close"
                await response(scope, receive, send)
            raise
        except Exception as exc:
            log.error("unhandled_error", error=type(exc).__name__, at=_where(exc), answered=not started)
            if not started:
                await error_response(scope, exc)(scope, receive, send)


def _where(exc: BaseException) -> str:
    """``file:line`` of the innermost frame: enough to find a bug, no data from the message."""
    frames = traceback.extract_tb(exc.__traceback__)
    return f"{Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else "?"
