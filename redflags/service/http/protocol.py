"""Uvicorn's httptools protocol, plus what it lacks against slow clients.

uvicorn (0.55, httptools) arms a timer only between two requests of a kept-alive connection: a
client that connects and sends nothing, or dribbles its headers or body, holds a socket (a file
descriptor) for ever, and its ``limit_concurrency`` counts such sockets, so enough of them turn
every call, ``/healthz`` included, into a 503 and then exhaust the descriptors. This protocol:

- closes a connection whose request headers are not in within ``header_timeout_s`` of its
  opening or of the end of its previous answer (idle kept-alive connections included);
- closes one whose body is not in within ``body_timeout_s`` plus a margin of its headers (the
  application answers 408 at ``body_timeout_s``, ``body.BodyReadDeadline``: this is the
  backstop for a body nobody reads);
- keeps at most ``max_waiting`` connections waiting for headers: a new one closes the oldest,
  so half-open sockets cannot crowd out a client that sends its request at once;
- answers 431 and closes once a request's line and headers pass ``MAX_HEAD_BYTES`` (httptools
  buffers a header of any size: 100 connections sending 20 MiB headers took 1.4 GB in 10 s);
- closes one whose bytes after the headers are more than its body by ``MAX_HEAD_BYTES`` plus
  ``FRAMING_PER_BODY_BYTE`` per body byte (chunk sizes, extensions, trailers): httptools buffers a
  chunked body's trailer header of any size too, and the application never sees it;
- aborts a connection whose answer has waited ``body_timeout_s`` for the client to read it
  (uvicorn waits for a full socket buffer to drain for ever: pipelined requests that are never
  read held a connection, and its slot under ``max_connections``, indefinitely);
- answers a request beyond ``max_connections`` open connections (or running requests), and a
  request it cannot parse, with a JSON OperationOutcome, as the application answers its errors
  (uvicorn's own answers are plain text).
"""

from __future__ import annotations

import socket
import struct
from asyncio import TimerHandle, Transport
from collections import OrderedDict
from typing import ClassVar

import orjson
from starlette.types import Receive, Scope, Send
from uvicorn._types import ASGI3Application
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol, RequestResponseCycle

from engine.logger import get_logger
from redflags.service.http.outcome import outcome

log = get_logger("redflags.service.http")

#: Seconds past the body deadline before the connection itself is closed (the 408 goes first).
BODY_BACKSTOP_MARGIN_S = 5.0
#: Bytes of a request line and headers (a CDS client's JWT is a few KiB; nginx allows 32 KiB).
MAX_HEAD_BYTES = 64 * 1024
#: Bytes of chunked framing allowed per body byte (one-byte chunks take 5: ``1\r\na\r\n``).
FRAMING_PER_BODY_BYTE = 8


_BUSY = orjson.dumps(outcome("the service is at its connection limit: call again", "transient"))


async def _too_many(scope: Scope, receive: Receive, send: Send) -> None:
    """The answer past the connection limit (JSON; the connection is then closed)."""
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(_BUSY)).encode()),
        (b"retry-after", b"1"),
        (b"connection", b"close"),
    ]
    await send({"type": "http.response.start", "status": 503, "headers": headers})
    await send({"type": "http.response.body", "body": _BUSY, "more_body": False})


_HEAD_TOO_LARGE = orjson.dumps(outcome(f"request line and headers over {MAX_HEAD_BYTES} bytes", "too-costly"))


async def _head_too_large(scope: Scope, receive: Receive, send: Send) -> None:
    """The answer to a request whose headers are in but over ``MAX_HEAD_BYTES`` (then closed)."""
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(_HEAD_TOO_LARGE)).encode()),
        (b"connection", b"close"),
    ]
    await send({"type": "http.response.start", "status": 431, "headers": headers})
    await send({"type": "http.response.body", "body": _HEAD_TOO_LARGE, "more_body": False})


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """Configure with ``guarded_protocol``; one subclass per server (class-level registry)."""

    header_timeout_s: ClassVar[float] = 10.0
    body_timeout_s: ClassVar[float] = 30.0
    max_connections: ClassVar[int] = 1000
    max_waiting: ClassVar[int] = 250
    _waiting: ClassVar[OrderedDict[GuardedHttpToolsProtocol, None]]
    _timer: TimerHandle | None = None
    _write_timer: TimerHandle | None = None  # armed while the client does not read our answer
    _head_bytes = 0  # bytes received while waiting for the current request's headers
    _in_body = False  # between the current request's headers and its end
    _requests = 0  # requests whose headers came in on this connection
    _body_phase_bytes = 0  # bytes received since its headers ...
    _body_bytes = 0  # ... of which body
    _answering: RequestResponseCycle | None = None  # the request being answered (pipelined or not)

    def connection_made(self, transport: Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._wait_for_headers()
        while len(self._waiting) > self.max_waiting:
            oldest, _ = self._waiting.popitem(last=False)
            oldest._close("evicted")

    def connection_lost(self, exc: Exception | None) -> None:
        self._waiting.pop(self, None)
        self._cancel_timer()
        self._cancel_write_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        waiting = self in self._waiting  # a chunk in which headers start uncounted: one chunk of slack
        body_of = self._body_of()  # a chunk that also ends the request is not counted
        super().data_received(data)
        if waiting and self in self._waiting and not self.transport.is_closing():
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD_BYTES:
                self._refuse_head()
        elif body_of and body_of == self._body_of() and not self.transport.is_closing():
            self._body_phase_bytes += len(data)
            framing = self._body_phase_bytes - self._body_bytes
            if framing > MAX_HEAD_BYTES + FRAMING_PER_BODY_BYTE * self._body_bytes:
                log.warning("request_framing_too_large", limit=MAX_HEAD_BYTES)
                self.transport.close()  # the application sees a disconnect; it owns the answer

    def _body_of(self) -> int:
        """The number of the request whose body is coming in (0: none)."""
        return self._requests if self._in_body else 0

    def on_body(self, body: bytes) -> None:
        self._body_bytes += len(body)
        super().on_body(body)

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._write_timer is None:
            self._write_timer = self.loop.call_later(self.body_timeout_s, self._abort_unread)

    def resume_writing(self) -> None:
        self._cancel_write_timer()
        super().resume_writing()

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: ASGI3Application) -> None:
        self._answering = cycle
        super()._start_asgi_task(cycle, app)

    def _cancel_write_timer(self) -> None:
        if self._write_timer is not None:
            self._write_timer.cancel()
            self._write_timer = None

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self not in self._waiting:  # a pipelined request: its headers are timed too
            self._wait_for_headers()

    def on_headers_complete(self) -> None:
        self._waiting.pop(self, None)
        self._in_body, self._body_phase_bytes, self._body_bytes = True, 0, 0
        self._requests += 1
        self._arm(self.body_timeout_s + BODY_BACKSTOP_MARGIN_S)
        limit = self.max_connections  # uvicorn's limit_concurrency test, with a JSON answer
        over = len(self.connections) >= limit or len(self.tasks) >= limit
        if over:
            log.warning("connection_limit", connections=len(self.connections), requests=len(self.tasks))
        head = len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)
        if head > MAX_HEAD_BYTES:
            log.warning("request_head_too_large", limit=MAX_HEAD_BYTES)
        self.app = _too_many if over else _head_too_large if head > MAX_HEAD_BYTES else self.config.loaded_app
        super().on_headers_complete()

    def send_400_response(self, msg: str) -> None:
        """A request that cannot be parsed: a JSON OperationOutcome, then close."""
        body = orjson.dumps(outcome("invalid HTTP request"))
        head = [STATUS_LINE[400]]
        for name, value in self.server_state.default_headers:
            head += [name, b": ", value, b"\r\n"]
        head += [b"content-type: application/json\r\n", b"content-length: %d\r\n" % len(body)]
        self.transport.write(b"".join([*head, b"connection: close\r\n\r\n", body]))
        self.transport.close()

    def _refuse_head(self) -> None:
        """Headers still coming past ``MAX_HEAD_BYTES``: 431 (as ``_head_too_large``), then close."""
        log.warning("request_head_too_large", limit=MAX_HEAD_BYTES)
        self._waiting.pop(self, None)
        self._cancel_timer()
        head = [STATUS_LINE[431], b"content-type: application/json\r\n"]
        head += [b"content-length: %d\r\n" % len(_HEAD_TOO_LARGE)]
        self.transport.write(b"".join([*head, b"connection: close\r\n\r\n", _HEAD_TOO_LARGE]))
        self.transport.close()

    def _abort_unread(self) -> None:
        """The client has not read our answer for ``body_timeout_s``: drop it and the connection
        (``close`` would wait for the unread bytes to be sent; ``abort`` frees the task and slot,
        and a zero linger makes the kernel reset the connection instead of keeping the bytes)."""
        self._write_timer = None
        log.warning("answer_not_read", seconds=self.body_timeout_s)
        if self._answering is not None:  # its sends go nowhere from now (uvloop raises on a write)
            self._answering.disconnected = True
        self.pipeline.clear()
        sock = self.transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.transport.abort()

    def on_message_complete(self) -> None:
        self._in_body = False
        self._cancel_timer()
        super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        idle = self.cycle is None or self.cycle.response_complete
        if idle and not self.transport.is_closing() and not self.pipeline:
            self._wait_for_headers()

    def _wait_for_headers(self) -> None:
        self._waiting[self] = None
        self._head_bytes = 0
        self._arm(self.header_timeout_s)

    def _arm(self, seconds: float) -> None:
        self._cancel_timer()
        self._timer = self.loop.call_later(seconds, self._close, "timeout")

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _close(self, _why: str) -> None:
        self._waiting.pop(self, None)
        self._cancel_timer()
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.keep_alive = False  # a request in progress: no further one on this socket
        if not self.transport.is_closing():
            self.transport.close()


def guarded_protocol(
    header_timeout_s: float, body_timeout_s: float, max_connections: int
) -> type[GuardedHttpToolsProtocol]:
    """A protocol class for ``uvicorn.run(http=...)`` with these limits and its own registry.

    A quarter of the connections may wait for their headers: the rest stay for requests.
    """
    return type(
        "RedflagsHttpToolsProtocol",
        (GuardedHttpToolsProtocol,),
        {
            "header_timeout_s": header_timeout_s,
            "body_timeout_s": body_timeout_s,
            "max_connections": max_connections,
            "max_waiting": max(1, max_connections // 4),
            "_waiting": OrderedDict(),
        },
    )
