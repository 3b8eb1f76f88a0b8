"""What every endpoint with a body accepts: JSON, plain or FHIR, in UTF-8 (RFC 8259).

The size of a body is limited once for all endpoints, by ``limits.BodySizeLimit``; the time a
client takes to send it, by ``BodyReadDeadline`` (a client dribbling its body holds a socket and
a task: uvicorn has no body timeout).
"""

from __future__ import annotations

import asyncio

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from redflags.service.http.outcome import outcome_response

JSON_TYPES = frozenset({"application/json", "application/fhir+json"})


def media_type_problem(
    header: str | None, default: str | None = "application/json", encoding: str | None = None
) -> str | None:
    """Why a Content-Type (or Content-Encoding) is refused (answer 415), or None; ``default``
    stands for a missing type. A compressed body is refused by name rather than read as bytes
    that are not JSON (and never inflated: a small gzip body can inflate a thousandfold)."""
    if encoding and encoding.strip().lower() not in ("identity", ""):
        return f"Content-Encoding {encoding.strip()[:40]!r} not supported: send the body uncompressed"
    header = header or default
    if not header:
        return "no Content-Type: send application/fhir+json or application/json"
    kind, *params = (part.strip() for part in header.split(";"))
    if kind.lower() not in JSON_TYPES:
        return f"Content-Type {kind!r} not supported: send application/fhir+json or application/json"
    for param in params:
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset" and value.strip().strip('"').lower() not in ("utf-8", "utf8"):
            return f"charset {value.strip()!r} not supported: JSON is UTF-8"
    return None


class BodyTimeout(Exception):
    """Raised inside ``receive`` when the body is not in by the deadline; answered with 408."""


class BodyReadDeadline:
    """Pure ASGI middleware: the whole body within ``seconds`` of the headers, else 408 and close.

    Same shape as ``limits.BodySizeLimit``: the app may turn the exception raised in ``receive``
    into an answer of its own; ours replaces it.
    """

    def __init__(self, app: ASGIApp, seconds: float) -> None:
        self.app = app
        self.seconds = seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.seconds
        late = complete = False
        started = False
        waiting: asyncio.Task[object] | None = None  # the task in ``receive`` for the body, if any

        def expire() -> None:  # one timer per request, not one per receive (~15 us a call)
            nonlocal late
            if waiting is not None:
                late = True
                waiting.cancel()

        timer = loop.call_at(deadline, expire)

        async def timed_receive() -> Message:
            nonlocal late, complete, waiting
            if complete:  # the body is in: later receives wait for a disconnect, untimed
                return await receive()
            if late or loop.time() >= deadline:
                late = True
                raise BodyTimeout
            waiting = task = asyncio.current_task()
            try:
                message = await receive()
            except asyncio.CancelledError:
                if late and task is not None and task.uncancel() == 0:  # ours, nobody else's
                    raise BodyTimeout from None
                raise
            finally:
                waiting = None
            complete = message["type"] != "http.request" or not message.get("more_body", False)
            if complete:
                timer.cancel()
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if late:
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, timed_receive, guarded_send)
        except Exception:
            if not late:
                raise
        finally:
            timer.cancel()
        if late and not started:
            response = outcome_response(
                408,
                f"request body not received within {self.seconds:g} s",
                code="timeout",
                path=scope.get("path", ""),
            )
            response.headers["Connection"] = "close"  # the rest of the body is never read
            await response(scope, receive, send)
