"""Hostile and faulty FHIR servers on loopback, over raw sockets (they answer what no library would).

``RawServer(respond)`` accepts on an address of 127.0.0.0/8 and calls ``respond(conn, hit)`` for
each connection's first request; it records what it was asked (path, headers: the token too),
how many connections it accepted and how many are open now.
"""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Hit:
    path: str
    headers: dict[str, str]


@dataclass
class RawServer:
    respond: Callable[[socket.socket, Hit, RawServer], None]
    host: str = "127.0.0.1"
    port: int = 0
    tls: ssl.SSLContext | None = None
    hits: list[Hit] = field(default_factory=list)
    accepted: int = 0
    open: int = 0
    sent: int = 0  # bytes written by the responders that count them
    stop: threading.Event = field(default_factory=threading.Event)
    changed: threading.Condition = field(default_factory=threading.Condition)

    def __post_init__(self) -> None:
        self._sock = socket.create_server((self.host, self.port))
        self._sock.settimeout(0.2)
        self.port = self._sock.getsockname()[1]
        self.url = f"{'https' if self.tls else 'http'}://{self.host}:{self.port}"
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def __enter__(self) -> RawServer:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.stop.set()
        self._thread.join(5)
        self._sock.close()

    def wait(self, predicate: Callable[[RawServer], bool], timeout: float = 30) -> bool:
        """Wait (bounded) until ``predicate(self)`` holds."""
        with self.changed:
            return self.changed.wait_for(lambda: predicate(self), timeout)

    def _count(self, **delta: int) -> None:
        with self.changed:
            for name, value in delta.items():
                setattr(self, name, getattr(self, name) + value)
            self.changed.notify_all()

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self._count(accepted=1, open=1)
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        try:
            conn.settimeout(10)
            if self.tls is not None:
                conn = self.tls.wrap_socket(conn, server_side=True)
            head = b""
            while b"\r\n\r\n" not in head:
                data = conn.recv(4096)
                if not data:
                    return
                head += data
            line, *lines = head.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
            headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines)}
            hit = Hit(line.split(" ")[1], headers)
            with self.changed:
                self.hits.append(hit)
            self.respond(conn, hit, self)
        except (OSError, ssl.SSLError, IndexError):
            pass
        finally:
            with contextlib.suppress(OSError):
                conn.close()
            self._count(open=-1)


# ------------------------------------------------------------------------------ responders


def head(status: str = "200 OK", length: int | None = None, **extra: str) -> bytes:
    lines = [f"HTTP/1.1 {status}", "Content-Type: application/fhir+json", "Connection: close"]
    if length is not None:
        lines.append(f"Content-Length: {length}")
    lines += [f"{k.replace('_', '-')}: {v}" for k, v in extra.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def answer_json(doc: Any | Callable[[Hit, RawServer], Any], status: str = "200 OK") -> Callable[..., None]:
    """Answer a JSON document (or what ``doc(hit, server)`` makes of the request)."""

    def respond(conn: socket.socket, hit: Hit, server: RawServer) -> None:
        body = json.dumps(doc(hit, server) if callable(doc) else doc).encode()
        conn.sendall(head(status, len(body)) + body)

    return respond


def searchset(entries: list[dict[str, Any]], next_url: str | None = None, pad: int = 0) -> dict[str, Any]:
    """A searchset Bundle; ``pad`` adds that many bytes of harmless text (a big page)."""
    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset", "entry": entries}
    if next_url is not None:
        bundle["link"] = [{"relation": "next", "url": next_url}]
    if pad:
        bundle["meta"] = {"tag": [{"display": "x" * pad}]}
    return bundle


def record(hit: Hit, _server: RawServer) -> dict[str, Any]:
    """An empty searchset, or a Patient for a read (enough for an empty-but-valid CDS answer)."""
    path = hit.path.split("?", 1)[0]
    if "/Patient/" in path:
        return {"resourceType": "Patient", "id": path.rsplit("/", 1)[1]}
    return searchset([])


def drip(interval: float, *, in_head: bool = False) -> Callable[..., None]:
    """Send a byte every ``interval`` seconds (inside the headers, or of a 1 MB body) until stopped."""

    def respond(conn: socket.socket, _hit: Hit, server: RawServer) -> None:
        if not in_head:
            conn.sendall(head(length=1_000_000))
        else:
            conn.sendall(b"HTTP/1.1 200 OK\r\n")
        while not server.stop.wait(interval):
            conn.sendall(b"X-Drip: 1\r\n" if in_head else b" ")

    return respond


def endless(conn: socket.socket, _hit: Hit, server: RawServer) -> None:
    """A chunked body that never ends; counts what it managed to send."""
    conn.sendall(head(Transfer_Encoding="chunked"))
    chunk = b"%x\r\n%s\r\n" % (65536, b" " * 65536)
    while not server.stop.is_set():
        conn.sendall(chunk)
        server._count(sent=len(chunk))


def cut_body(conn: socket.socket, _hit: Hit, _server: RawServer) -> None:
    """Promise 1000 bytes, send 10, hang up (urllib3 ProtocolError / IncompleteRead)."""
    conn.sendall(head(length=1000) + b'{"resource')


def silent_body(conn: socket.socket, _hit: Hit, server: RawServer) -> None:
    """Promise a body, send part of it, then nothing (a read timeout while reading the body)."""
    conn.sendall(head(length=1000) + b'{"resource')
    server.stop.wait(60)


def garbage_status(conn: socket.socket, _hit: Hit, _server: RawServer) -> None:
    """Not HTTP at all (http.client BadStatusLine)."""
    conn.sendall(b"HTTP/1.1 abc\r\n\r\n")
