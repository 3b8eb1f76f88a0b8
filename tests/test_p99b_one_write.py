"""An answer's head leaves with its body in one write (``protocol.HeadWithBody``), and every
kind of answer still arrives whole: JSON, HEAD, 204, streamed, after ``100 Continue``."""

from __future__ import annotations

import contextlib
import http.client
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from redflags.service.http.protocol import HeadWithBody, guarded_protocol

from .service_harness import free_port


class _Recorded:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed


HEAD = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n"


def test_the_head_is_held_and_leaves_with_the_first_body_write() -> None:
    sent = _Recorded()
    held = HeadWithBody(sent)  # type: ignore[arg-type]
    held.write(HEAD)
    assert sent.writes == []
    held.write(b"{}")
    held.write(b"more")
    assert sent.writes == [HEAD + b"{}", b"more"]


def test_a_100_continue_goes_at_once_and_a_bodiless_head_on_completion_or_close() -> None:
    sent = _Recorded()
    held = HeadWithBody(sent)  # type: ignore[arg-type]
    held.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    assert sent.writes == [b"HTTP/1.1 100 Continue\r\n\r\n"]
    held.write(HEAD)
    held.flush()  # a HEAD answer completes with no body write
    held.flush()
    assert sent.writes[1:] == [HEAD]
    closing = _Recorded()
    held = HeadWithBody(closing)  # type: ignore[arg-type]
    held.write(HEAD)
    held.close()
    assert closing.writes == [HEAD] and closing.closed


async def _json(request: Request) -> Response:
    return JSONResponse({"ok": True})


async def _empty(request: Request) -> Response:
    return Response(status_code=204)


async def _stream(request: Request) -> Response:
    async def parts() -> AsyncIterator[bytes]:
        for part in (b"one,", b"two,", b"three"):
            yield part

    return StreamingResponse(parts(), media_type="text/plain")


async def _echo(request: Request) -> Response:
    return Response(await request.body(), media_type="application/octet-stream")


APP = Starlette(
    routes=[
        Route("/json", _json, methods=["GET"]),
        Route("/empty", _empty),
        Route("/stream", _stream),
        Route("/echo", _echo, methods=["POST"]),
    ]
)


@contextlib.contextmanager
def _serving() -> Iterator[int]:
    port = free_port()
    config = uvicorn.Config(
        APP, host="127.0.0.1", port=port, log_level="warning", http=guarded_protocol(10.0, 30.0, 100)
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
        time.sleep(0.01)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(30)


def test_every_kind_of_answer_arrives_whole_on_one_kept_alive_connection() -> None:
    with _serving() as port:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        for _ in range(2):  # the connection is reused: each answer ended where it should
            conn.request("GET", "/json")
            answer = conn.getresponse()
            assert (answer.status, answer.read()) == (200, b'{"ok":true}')
            conn.request("HEAD", "/json")
            answer = conn.getresponse()
            assert (answer.status, answer.getheader("content-length"), answer.read()) == (200, "11", b"")
            conn.request("GET", "/empty")
            answer = conn.getresponse()
            assert (answer.status, answer.read()) == (204, b"")
            conn.request("GET", "/stream")
            answer = conn.getresponse()
            assert (answer.status, answer.read()) == (200, b"one,two,three")
        conn.close()


def test_a_client_waiting_for_100_continue_gets_it_then_its_answer() -> None:
    body = b"x" * 1000
    with _serving() as port, socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(
            b"POST /echo HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body)
        )
        interim = sock.recv(1024)
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(body)
        got = b""
        while not got.endswith(body):
            chunk = sock.recv(65536)
            assert chunk, f"closed early: {got[:200]!r}"
            got += chunk
        assert got.startswith(b"HTTP/1.1 200 ") and b"content-length: 1000\r\n" in got
