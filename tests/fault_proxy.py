"""A programmable fault-injecting HTTP proxy on 127.0.0.1, in front of a real FHIR server.

Each request takes the next scripted fault, if any (``fail``: answer this status instead,
optionally with Retry-After or an OperationOutcome; ``answer``: any status, headers and body,
such as a 200 that is not JSON; ``reset_mid_body``: send the headers and part of the body, then
reset the connection; ``delay``: wait, then forward; ``drop``: close the connection without an
answer), else it is forwarded unchanged. ``down()`` stops
listening (connections refused) and ``up()`` listens again on the same port. Every request
received is recorded (method, path, headers, time) for assertions.
"""

from __future__ import annotations

import contextlib
import json
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import requests

_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host", "content-encoding"}


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    at: float


@dataclass
class _Fault:
    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    delay_s: float = 0.0
    drop: bool = False
    reset_after: int | None = None  # bytes of the body sent before a connection reset
    drip_s: float = 0.0  # answer one byte every drip_s seconds (in the headers, or the body)
    drip_body: bool = False


class FaultProxy:
    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.seen: list[Seen] = []
        self._faults: deque[_Fault] = deque()
        self._closing = threading.Event()
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._in_flight = 0
        self._session = requests.Session()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.port = 0
        self.up()
        self.port = self._server.server_address[1]  # type: ignore[union-attr]

    @property
    def url(self) -> str:
        """The proxied FHIR base: the upstream's path on the proxy's port."""
        path = self.upstream.split("/", 3)[3] if self.upstream.count("/") >= 3 else ""
        return f"http://127.0.0.1:{self.port}/{path}".rstrip("/")

    # -- scripting ---------------------------------------------------------------------------
    def fail(
        self, status: int, retry_after: str | None = None, outcome: dict[str, Any] | None = None
    ) -> None:
        headers = {"Retry-After": retry_after} if retry_after is not None else {}
        body = json.dumps(outcome).encode() if outcome else b""
        if outcome:
            headers["Content-Type"] = "application/fhir+json"
        self._push(_Fault(status=status, headers=headers, body=body))

    def answer(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        """Answer the next request with exactly this (not forwarded)."""
        self._push(_Fault(status=status, headers=dict(headers or {}), body=body))

    def reset_mid_body(
        self, status: int = 200, body: bytes = b'{"resourceType": "Bundle", "type": "tr'
    ) -> None:
        """Announce ``body`` (Content-Length), send half of it, then reset the connection (RST)."""
        headers = {"Content-Type": "application/fhir+json"}
        self._push(_Fault(status=status, headers=headers, body=body, reset_after=len(body) // 2))

    def drip(self, every_s: float = 0.2, *, in_body: bool = False) -> None:
        """A 200 whose headers (or body) come one byte every ``every_s`` seconds, without end
        (until ``close``): each read gets a byte in time, the answer never completes."""
        self._push(_Fault(status=200, drip_s=every_s, drip_body=in_body))

    def delay(self, seconds: float) -> None:
        self._push(_Fault(delay_s=seconds))

    def drop(self) -> None:
        self._push(_Fault(drop=True))

    def _push(self, fault: _Fault) -> None:
        with self._lock:
            self._faults.append(fault)

    def _next(self) -> _Fault | None:
        with self._lock:
            return self._faults.popleft() if self._faults else None

    # -- listening ---------------------------------------------------------------------------
    def up(self) -> None:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_args: object) -> None:
                return

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                with proxy._lock:
                    proxy.seen.append(Seen(self.command, self.path, dict(self.headers), time.time()))
                fault = proxy._next()
                if fault and fault.drop:
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                if fault and fault.delay_s:
                    time.sleep(fault.delay_s)
                if fault and fault.drip_s:
                    self._drip(fault)
                    return
                if fault and fault.reset_after is not None:
                    self._reset(fault)
                    return
                if fault and fault.status:
                    self._answer(fault.status, fault.headers, fault.body)
                    return
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
                target = proxy.upstream.split("/", 3)
                origin = "/".join(target[:3])
                try:
                    answer = proxy._session.request(
                        self.command, origin + self.path, data=body, headers=headers, timeout=30
                    )
                except requests.RequestException:
                    self._answer(502, {}, b"")
                    return
                kept = {k: v for k, v in answer.headers.items() if k.lower() not in _HOP}
                self._answer(answer.status_code, kept, answer.content)

            def _answer(self, status: int, headers: dict[str, str], body: bytes) -> None:
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _drip(self, fault: _Fault) -> None:
                self.close_connection = True
                head = b"HTTP/1.1 200 OK\r\nContent-Type: application/fhir+json\r\n"
                if fault.drip_body:
                    head += b"Content-Length: 1000000\r\n\r\n"
                else:
                    head += b"X-Drip: "
                try:
                    self.wfile.write(head)
                    self.wfile.flush()
                    while not proxy._closing.wait(fault.drip_s):
                        self.wfile.write(b"a")
                        self.wfile.flush()
                except OSError:
                    return  # the client gave up

            def _reset(self, fault: _Fault) -> None:
                self.send_response(fault.status or 200)
                for name, value in fault.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(fault.body)))
                self.end_headers()
                self.wfile.write(fault.body[: fault.reset_after])
                self.wfile.flush()
                linger = struct.pack("ii", 1, 0)  # close with RST, not FIN
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
                self.close_connection = True
                self.connection.close()

            def _counted(self) -> None:
                with proxy._lock:
                    proxy._in_flight += 1
                try:
                    self._handle()
                finally:
                    with proxy._idle:
                        proxy._in_flight -= 1
                        proxy._idle.notify_all()

            do_GET = do_POST = do_PUT = do_DELETE = _counted

        ThreadingHTTPServer.allow_reuse_address = True
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def down(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no request is being handled (a delayed one has been forwarded and answered).

        True when idle within ``timeout`` seconds: tests wait on this, never on a fixed sleep.
        """
        with self._idle:
            return self._idle.wait_for(lambda: self._in_flight == 0, timeout)

    def close(self) -> None:
        self._closing.set()
        self.down()
        self._session.close()


@contextlib.contextmanager
def fault_proxy(upstream: str) -> Iterator[FaultProxy]:
    proxy = FaultProxy(upstream)
    try:
        yield proxy
    finally:
        proxy.close()
