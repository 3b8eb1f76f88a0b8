"""Slow and half-open clients cannot hold the service: real ``redflags serve``, raw sockets.

A client that sends nothing, dribbles its headers or its body is disconnected (the body with a
408 OperationOutcome); half-open sockets beyond the limit close the oldest of their kind, so
the service's descriptors stay bounded and ``/healthz`` is answered all along.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import requests

from .service_harness import Service, running_service

#: Bound on any wait here: reached only when the service keeps a slow client (the defect).
BOUND_S = 30
ARGS = ("--allow-unauthenticated", "--no-state", "--header-timeout", "1", "--body-timeout", "2")


def _connect(service: Service) -> socket.socket:
    host, port = service.url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=BOUND_S)
    return sock


def _read_until_closed(sock: socket.socket) -> bytes:
    """Everything the service sends until it closes (socket.timeout past the bound: it never did)."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def _healthy(service: Service) -> bool:
    return requests.get(f"{service.url}/healthz", timeout=BOUND_S).status_code == 200


def _open_fds(service: Service) -> int:
    return len(os.listdir(f"/proc/{service.process.pid}/fd"))


@contextlib.contextmanager
def _sockets(service: Service, count: int) -> Iterator[list[socket.socket]]:
    opened = [_connect(service) for _ in range(count)]
    try:
        yield opened
    finally:
        for sock in opened:
            sock.close()


def test_silent_and_dribbling_header_clients_are_disconnected_while_others_are_served(tmp_path: Path) -> None:
    with running_service(tmp_path, *ARGS) as service, _sockets(service, 2) as (silent, partial):
        partial.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # never the blank line
        assert _healthy(service)  # served meanwhile
        assert _read_until_closed(silent) == b""
        assert _read_until_closed(partial) == b""
        dribbling = _connect(service)
        with dribbling:
            closed = False
            deadline = time.monotonic() + BOUND_S
            for byte in b"GET /healthz HTTP/1.1\r\nX-Slow: " + b"a" * 10_000:
                assert time.monotonic() < deadline, "a client dribbling its headers was kept"
                try:
                    dribbling.sendall(bytes([byte]))
                except OSError:  # reset: the service closed it
                    closed = True
                    break
                time.sleep(0.1)  # the attack's pace (not a synchronisation)
            assert closed
        assert _healthy(service)


def test_a_client_dribbling_its_body_gets_408_and_is_disconnected(tmp_path: Path) -> None:
    with running_service(tmp_path, *ARGS) as service, _sockets(service, 1) as (slow,):
        slow.sendall(
            b"POST /fhir/$evaluate HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/fhir+json\r\nContent-Length: 100000\r\n\r\n"
            b'{"resourceType": "Bundle"'
        )
        assert _healthy(service)
        answer = _read_until_closed(slow)
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 408"), answer[:200]
        assert json.loads(body)["resourceType"] == "OperationOutcome"
        assert _healthy(service)


def test_half_open_sockets_beyond_the_limit_do_not_stop_healthz(tmp_path: Path) -> None:
    """--max-connections 40: at most 10 may wait for their headers; 300 are opened."""
    args = ("--allow-unauthenticated", "--no-state", "--max-connections", "40", "--header-timeout", "600")
    with running_service(tmp_path, *args) as service:
        before = _open_fds(service)
        with _sockets(service, 300) as opened:
            assert _healthy(service)
            assert _open_fds(service) <= before + 40
            closed = 0
            for sock in opened[:280]:  # the oldest were closed to make room
                sock.settimeout(BOUND_S)
                closed += _read_until_closed(sock) == b""
            assert closed == 280
            assert _healthy(service)


def test_past_the_connection_limit_the_answer_is_json_and_service_resumes(tmp_path: Path) -> None:
    """--max-connections 8: 7 requests whose bodies never come, plus one more, reach it."""
    args = ("--allow-unauthenticated", "--no-state", "--max-connections", "8", "--body-timeout", "600")
    with running_service(tmp_path, *args) as service:
        with _sockets(service, 0) as holding:
            for _ in range(7):  # one at a time: each is a running request before the next connects
                sock = _connect(service)
                holding.append(sock)
                sock.sendall(
                    b"POST /fhir/$evaluate HTTP/1.1\r\nHost: 127.0.0.1\r\nExpect: 100-continue\r\n"
                    b"Content-Type: application/fhir+json\r\nContent-Length: 100\r\n\r\n"
                )
                assert sock.recv(100).startswith(b"HTTP/1.1 100")  # the app is reading its body
            answer = requests.get(f"{service.url}/healthz", timeout=BOUND_S)
            assert answer.status_code == 503
            assert answer.headers["content-type"] == "application/json"
            assert answer.json()["resourceType"] == "OperationOutcome"
        deadline = time.monotonic() + BOUND_S
        while not _healthy(service):  # the held connections are closed: served again
            assert time.monotonic() < deadline, "not served again"


def test_a_request_that_cannot_be_parsed_gets_a_json_400(tmp_path: Path) -> None:
    with running_service(tmp_path, *ARGS) as service, _sockets(service, 1) as (sock,):
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nBad Header\r\n\r\n")
        head, _, body = _read_until_closed(sock).partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 400") and b"content-type: application/json" in head.lower()
        assert json.loads(body)["resourceType"] == "OperationOutcome"
