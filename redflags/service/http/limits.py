"""Limits on what one call may cost: body size (here), resources per call, facts per patient.

Resources per call (``max_resources``) are counted where a call's resources are read
(``evaluate.input.read_body`` in the engine process, ``cds.routes`` in the HTTP process): over
it, 413 with an OperationOutcome naming the limit, nothing evaluated or stored. Facts per patient
(``max_facts_per_patient``, history included) bound what the engine is handed
(``redflags.pipeline.bounded``): the most recent are kept and the outcome says so. Both come
from ``ServiceSettings`` (``redflags serve --max-resources / --max-facts-per-patient``), which
engine processes read from their environment (``call_limits``).

Request body size limit for every endpoint that takes a body (CDS Hooks and ``$evaluate``).

A declared ``Content-Length`` over the limit is refused before a byte is read; the body is also
counted while the application reads it, so a chunked body (no ``Content-Length``) cannot go
past the limit either: memory per request stays bounded whatever the client claims.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from redflags.service.http.outcome import outcome_response
from redflags.service.settings import ServiceSettings


def call_limits() -> ServiceSettings:
    """The settings this process was started with (their limits), defaults when none were set."""
    return ServiceSettings.from_env()


#: Methods whose body is counted; others carry none the app reads.
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


class BodyTooLarge(Exception):
    """Raised inside ``receive`` when the body goes past the limit; answered with 413."""


class BodySizeLimit:
    """Pure ASGI middleware (no buffering): 413 with an OperationOutcome past ``max_bytes``."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in BODY_METHODS:
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await self._refuse(scope, receive, send)
            return
        received = 0
        exceeded = False
        started = False

        async def counted_receive() -> Message:
            nonlocal received, exceeded
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    exceeded = True
                    raise BodyTooLarge
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if exceeded:  # the app turned BodyTooLarge into an answer of its own: ours replaces it
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted_receive, guarded_send)
        except Exception:
            if not exceeded:
                raise
        if exceeded and not started:
            await self._refuse(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = outcome_response(
            413,
            f"request body larger than the limit of {self.max_bytes} bytes",
            code="too-costly",
            path=scope.get("path", ""),
        )
        response.headers["Connection"] = "close"  # the rest of the body is never read
        await response(scope, receive, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the server refuses a malformed one before the app sees it
    return None
