"""``BodyReadDeadline`` with one timer per request: a body not in by the deadline is a 408, an
app still working after its body came in is never cut off, another's cancellation stays one."""

from __future__ import annotations

import asyncio

import orjson
import pytest
from starlette.types import Message, Receive, Scope, Send

from redflags.service.http.body import BodyReadDeadline

SCOPE: Scope = {"type": "http", "method": "POST", "path": "/cds-services/x", "headers": []}


async def _reads_then_waits(scope: Scope, receive: Receive, send: Send) -> None:
    """Reads the whole body, then works past the deadline (an engine call), then answers."""
    while (await receive()).get("more_body"):
        pass
    await asyncio.sleep(0.2)  # longer than the deadline below: the answer must still go out
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def _served(app: BodyReadDeadline, chunks: list[bytes]) -> list[Message]:
    """The messages ``app`` sends for a body of ``chunks`` whose last one never comes if empty."""
    sent: list[Message] = []

    async def run() -> None:
        queue = list(chunks)

        async def receive() -> Message:
            if not queue:
                await asyncio.Event().wait()  # the client stopped sending
            chunk = queue.pop(0)
            return {"type": "http.request", "body": chunk, "more_body": bool(queue) or chunk == b"..."}

        async def send(message: Message) -> None:
            sent.append(message)

        await app(dict(SCOPE), receive, send)

    asyncio.run(run())
    return sent


def test_a_body_not_in_by_the_deadline_is_a_408() -> None:
    sent = _served(BodyReadDeadline(_reads_then_waits, seconds=0.05), [b"{", b"..."])
    assert sent[0]["status"] == 408
    assert orjson.loads(sent[1]["body"])["issue"][0]["code"] == "timeout"


def test_an_app_working_past_the_deadline_after_its_body_is_never_cut_off() -> None:
    sent = _served(BodyReadDeadline(_reads_then_waits, seconds=0.05), [b"{", b"}"])
    assert [m.get("status") for m in sent] == [200, None] and sent[1]["body"] == b"ok"


def test_a_cancellation_from_elsewhere_while_the_body_is_awaited_stays_a_cancellation() -> None:
    async def run() -> None:
        async def receive() -> Message:
            await asyncio.Event().wait()
            raise AssertionError("never")

        async def send(message: Message) -> None:
            raise AssertionError(f"nothing is answered: {message}")

        task = asyncio.create_task(
            BodyReadDeadline(_reads_then_waits, seconds=30)(dict(SCOPE), receive, send)
        )
        await asyncio.sleep(0)  # the app is now waiting for the body
        task.cancel()  # e.g. the server shutting down
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(run())
