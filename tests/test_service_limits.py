"""The body size limit, driven at the ASGI level: also where FastAPI itself reads the body.

A FastAPI body model turns any error while reading into its own 400; the limit must still
answer 413 with an OperationOutcome (the CDS Hooks endpoints read their bodies that way).
The real server over HTTP is covered in test_service_evaluate.
"""

from __future__ import annotations

from typing import Any

import anyio
import orjson
from fastapi import FastAPI
from pydantic import BaseModel

from redflags.service.http.limits import BodySizeLimit


class Echo(BaseModel):
    text: str


def make_app(limit: int) -> tuple[Any, list[str]]:
    app = FastAPI()
    called: list[str] = []

    @app.post("/echo")
    async def echo(body: Echo) -> dict[str, str]:
        called.append(body.text)
        return {"text": body.text}

    @app.get("/echo")
    async def get() -> dict[str, str]:
        called.append("get")
        return {"text": "get"}

    return BodySizeLimit(app, max_bytes=limit), called


def call(app: Any, method: str, chunks: list[bytes], content_length: bool) -> tuple[int, dict, dict]:
    """One request through the ASGI app; the body arrives in ``chunks`` (chunked when no length)."""
    total = sum(len(c) for c in chunks)
    headers = [(b"content-type", b"application/json")]
    if content_length:
        headers.append((b"content-length", str(total).encode()))
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "path": "/echo",
        "raw_path": b"/echo",
        "query_string": b"",
        "root_path": "",
        "scheme": "http",
        "server": ("127.0.0.1", 80),
        "client": ("127.0.0.1", 1234),
        "headers": headers,
    }
    pending = [
        {"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)
    ]
    sent: list[dict] = []

    async def receive() -> dict:
        return pending.pop(0) if pending else {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    anyio.run(app, scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], {k.decode(): v.decode() for k, v in start["headers"]}, orjson.loads(body)


BODY = orjson.dumps({"text": "x" * 3000})
CHUNKS = [BODY[i : i + 500] for i in range(0, len(BODY), 500)]


def test_chunked_body_over_the_limit_read_by_fastapi_is_413() -> None:
    app, called = make_app(2048)
    status, headers, body = call(app, "POST", CHUNKS, content_length=False)
    assert status == 413 and headers["content-type"] == "application/json"  # not under /fhir
    assert body["issue"][0]["diagnostics"] == "request body larger than the limit of 2048 bytes"
    assert called == []


def test_declared_length_over_the_limit_is_refused_before_the_app() -> None:
    app, called = make_app(2048)
    status, _headers, body = call(app, "POST", CHUNKS, content_length=True)
    assert status == 413 and body["resourceType"] == "OperationOutcome" and called == []


def test_bodies_within_the_limit_and_gets_pass() -> None:
    app, called = make_app(len(BODY))
    assert call(app, "POST", CHUNKS, content_length=False)[::2] == (200, {"text": "x" * 3000})
    assert call(app, "POST", CHUNKS, content_length=True)[0] == 200
    assert call(app, "GET", [b""], content_length=False)[::2] == (200, {"text": "get"})
    assert called == ["x" * 3000, "x" * 3000, "get"]
