"""What a hostile client could still do to the HTTP layer of a real ``redflags serve``.

- Headers of any size: httptools buffers a header line until it ends, so a client streaming one
  header grew the process by its size (100 connections, 20 MiB each: 1.4 GB in 10 s). Now a
  request line and headers past ``protocol.MAX_HEAD_BYTES`` are a 431 OperationOutcome.
- An answer never read: uvicorn waits for a full socket buffer to drain for ever, so pipelined
  requests that are never read held a connection (and its slot under ``--max-connections``)
  indefinitely. Now the connection is dropped once the answer has waited ``--body-timeout``.
"""

from __future__ import annotations

import contextlib
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from redflags.service.http.protocol import MAX_HEAD_BYTES

from .service_harness import Service, running_service

#: The service's bound on a stalled answer in these tests (``--body-timeout``).
STALL_S = 2.0


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    tmp = tmp_path_factory.mktemp("hunt-http")
    args = ("--allow-unauthenticated", "--no-state", "--workers", "1", "--header-timeout", "60")
    with running_service(tmp, *args, "--body-timeout", str(STALL_S)) as running:
        yield running


def _connect(service: Service) -> socket.socket:
    host, port = service.url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=30)


def _answer(sock: socket.socket) -> bytes:
    """Everything until the service closes (a reset after its answer counts as closed)."""
    data = b""
    with contextlib.suppress(ConnectionResetError):
        while chunk := sock.recv(65536):
            data += chunk
    return data


def _is_431_outcome(data: bytes) -> bool:
    head, _, body = data.partition(b"\r\n\r\n")
    return head.startswith(b"HTTP/1.1 431 ") and json.loads(body)["resourceType"] == "OperationOutcome"


@pytest.mark.parametrize(
    "headers",
    [
        b"X-Long: " + b"a" * (MAX_HEAD_BYTES + 1) + b"\r\n",  # one long line
        b"".join(b"X-%d: b\r\n" % i for i in range(MAX_HEAD_BYTES // 8)),  # many short ones
    ],
    ids=["long-line", "many-headers"],
)
def test_headers_over_the_bound_are_a_431_outcome(service: Service, headers: bytes) -> None:
    with _connect(service) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n")
        assert _is_431_outcome(_answer(sock))
    assert requests.get(f"{service.url}/healthz", timeout=10).status_code == 200


def test_a_header_that_never_ends_is_cut_off_at_the_bound(service: Service) -> None:
    """Streamed without end (within --header-timeout): refused once past the bound, not buffered."""
    sent = 0
    with _connect(service) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Long: ")
        chunk = b"a" * 65536
        with contextlib.suppress(ConnectionResetError, BrokenPipeError):
            while sent < 64 * 1024 * 1024:  # unbounded on the code this was found in
                sock.sendall(chunk)
                sent += len(chunk)
        answer = _answer(sock)
    assert sent < 64 * 1024 * 1024
    assert not answer or _is_431_outcome(answer)  # the 431 is sent; a reset may overtake it


@pytest.mark.parametrize(
    "opening",
    [b"0\r\nX-Trailer: ", b"5;ext="],  # a trailer header (buffered), a chunk extension (not)
    ids=["trailer", "chunk-extension"],
)
def test_chunked_framing_without_end_is_cut_off(service: Service, opening: bytes) -> None:
    """Bytes after the headers that are not body (trailers, extensions) are bounded like headers."""
    head = b"POST /fhir/$evaluate HTTP/1.1\r\nHost: x\r\nContent-Type: application/fhir+json\r\n"
    sent, cut_before = 0, service.log().count("request_framing_too_large")
    with _connect(service) as sock:
        sock.sendall(head + b"Transfer-Encoding: chunked\r\n\r\n" + opening)
        chunk = b"a" * 65536
        with contextlib.suppress(ConnectionResetError, BrokenPipeError):
            while sent < 64 * 1024 * 1024:  # a trailer grew the process by its size on the code found
                sock.sendall(chunk)
                sent += len(chunk)
    assert sent < 64 * 1024 * 1024
    assert service.log().count("request_framing_too_large") > cut_before
    assert requests.get(f"{service.url}/healthz", timeout=10).status_code == 200


def test_a_chunked_body_of_small_chunks_is_read(service: Service) -> None:
    """The framing bound leaves room for one-byte chunks (5 bytes of framing each)."""
    bundle = b'{"resourceType": "Bundle", "type": "collection"' + b" " * 20_000 + b"}"
    body = b"".join(b"1\r\n%c\r\n" % byte for byte in bundle)
    head = b"POST /fhir/$evaluate HTTP/1.1\r\nHost: x\r\nContent-Type: application/fhir+json\r\n"
    with _connect(service) as sock:
        sock.sendall(head + b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n" + body + b"0\r\n\r\n")
        assert _answer(sock).split(b"\r\n", 1)[0] == b"HTTP/1.1 200 OK"


def test_an_answer_never_read_frees_its_connection(service: Service) -> None:
    """Pipelined requests whose answers the client never reads: dropped after --body-timeout."""
    requests_sent = 3000  # ~22 MB of answers: more than both socket buffers hold
    with _connect(service) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.sendall(b"GET /openapi.json HTTP/1.1\r\nHost: x\r\n\r\n" * requests_sent)
        deadline = time.monotonic() + 60
        while "answer_not_read" not in service.log():  # the service gives up on this client
            assert time.monotonic() < deadline, "the stalled answer still holds its connection"
            time.sleep(0.2)
        answered = _answer(sock).count(b"HTTP/1.1 200 ")
    assert answered < requests_sent  # reset: what was still queued is never sent
    assert "unhandled_error" not in service.log()  # the answers cut off end quietly
    assert requests.get(f"{service.url}/healthz", timeout=10).status_code == 200


def test_a_slow_reader_of_a_small_answer_is_served(service: Service, tmp_path: Path) -> None:
    """Only a stalled answer is dropped: one that fits the socket buffers is never cut."""
    with _connect(service) as sock:
        sock.sendall(b"GET /openapi.json HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert _answer(sock).startswith(b"HTTP/1.1 200 ")
