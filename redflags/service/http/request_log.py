"""Request ids: bound for every log line of a request, returned as ``X-Request-ID``, logged once.

Pure ASGI (Starlette's ``BaseHTTPMiddleware`` runs the app in a second task and re-streams
the response, costing each call more than the rest of the HTTP handling together).
"""

from __future__ import annotations

import time
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from engine.logger import bind_contextvars, get_logger, unbind_contextvars

log = get_logger("redflags.service")


class RequestLog:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = uuid.uuid4().hex[:16]
        started = time.perf_counter()
        logged = False

        def log_request(status: int) -> None:
            nonlocal logged
            logged = True
            route = scope.get("route")
            log.info(
                "request",
                request_id=rid,
                method=scope["method"],
                # the route template, never the raw path: it may carry patient ids (/fhir/Patient/123)
                route=getattr(route, "path", "(no route)"),
                status=status,
                ms=round((time.perf_counter() - started) * 1000, 1),
            )

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), (b"x-request-id", rid.encode())]
                log_request(message["status"])  # before the answer leaves: a client never outruns it
            await send(message)

        bind_contextvars(request_id=rid)
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            if not logged:  # the app failed before answering (the server answers 500)
                log_request(500)
            unbind_contextvars("request_id")
