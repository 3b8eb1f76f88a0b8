"""One deadline over a whole HTTP exchange made with ``requests``: connect, headers and body.

``requests`` timeouts bound each socket operation, so a server that answers one byte every few
seconds keeps a call open for as long as it likes. A ``Deadline`` shuts down the sockets the
call uses when its time is up; the blocked read then ends at once, as a connection error. The
sockets are found through a connection class that reports each one it sends a request on
(``mount_deadlines``), to the deadline of the calling thread.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from types import TracebackType
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

__all__ = ["Deadline", "mount_deadlines"]

_current = threading.local()


class Deadline:
    """``with Deadline(seconds) as d:`` around a call; ``d.expired`` tells why it failed.

    Also used without ``with`` by a client that hands sockets to it itself (``start``, ``watch``,
    ``close``): the CDS fhirServer reader, whose connections are pinned to checked addresses.
    """

    def __init__(self, seconds: float) -> None:
        self.deadline = time.monotonic() + seconds
        self.expired = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(max(0.0, seconds), self._expire)
        self._timer.daemon = True

    def start(self) -> Deadline:
        self._timer.start()
        return self

    def close(self) -> None:
        self._timer.cancel()

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def __enter__(self) -> Deadline:
        _current.deadline = self
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
        _current.deadline = None

    def watch(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.append(sock)
            if self.expired:
                _shut(sock)

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            for sock in self._sockets:
                _shut(sock)


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


def _reported(base: type[HTTPConnection]) -> type[HTTPConnection]:
    class Reported(base):  # type: ignore[misc,valid-type]  # a class made per base (HTTP, HTTPS)
        def request(self, *args: Any, **kwargs: Any) -> None:
            deadline = getattr(_current, "deadline", None)
            try:
                super().request(*args, **kwargs)  # connects first when needed
            finally:
                if deadline is not None and self.sock is not None:
                    deadline.watch(self.sock)

    return Reported


class _Pool(HTTPConnectionPool):
    ConnectionCls = _reported(HTTPConnection)


class _TlsPool(HTTPSConnectionPool):
    ConnectionCls = _reported(HTTPSConnection)  # type: ignore[assignment]  # urllib3 types it HTTPSConnection


class _Adapter(HTTPAdapter):
    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _Pool, "https": _TlsPool}


def mount_deadlines(session: requests.Session) -> None:
    """Let ``Deadline`` reach the sockets of every http(s) call made with ``session``."""
    session.mount("http://", _Adapter())
    session.mount("https://", _Adapter())
