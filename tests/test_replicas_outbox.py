"""Outbox delivery from three replicas to a real FHIR server (Medplum), one SIGKILLed mid-send.

Each replica reaches the server through its own loopback proxy. The first request any replica
sends is forwarded (the server stores the Flag and CarePlan) and its answer withheld: that
replica is then mid-delivery, its item claimed, and is killed with SIGKILL. When its lease
(``serve --outbox-lease``, short here) runs out, another replica sends the item again; the
bundle's conditional creates make that a no-op on the server. In the end every alert has
exactly one Flag and one CarePlan, and every outbox item is delivered.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests

from redflags.state.stores import open_state

from .fhir_server_harness import FhirServer, fhir_server  # noqa: F401 (pytest fixture)
from .replica_calls import cards, replica_args, week
from .replica_harness import running_replicas

BOUND_S = 60
LEASE_S = 2
_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host", "content-encoding"}


class FirstSendHeld:
    """Shared by the proxies: which one got the first request (forwarded, answer withheld)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.holder: int | None = None
        self.held = threading.Event()  # the first request reached the server; its answer waits
        self.release = threading.Event()  # teardown: let the withheld handler end


class HoldingProxy:
    """Forwards to ``upstream``; the first request of all proxies sharing ``gate`` is held."""

    def __init__(self, upstream: str, index: int, gate: FirstSendHeld) -> None:
        origin = "/".join(upstream.split("/", 3)[:3])
        session = requests.Session()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_args: object) -> None:
                return

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
                target = origin + self.path
                answer = session.request(self.command, target, data=body, headers=headers, timeout=30)
                with gate.lock:
                    first = gate.holder is None
                    if first:
                        gate.holder = index
                if first:
                    gate.held.set()
                    gate.release.wait(BOUND_S * 2)  # the replica is killed meanwhile
                    self.close_connection = True
                    return
                self.send_response(answer.status_code)
                for name, value in answer.headers.items():
                    if name.lower() not in _HOP:
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(answer.content)))
                self.end_headers()
                self.wfile.write(answer.content)

            do_GET = do_POST = do_PUT = _forward

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        path = upstream.split("/", 3)[3] if upstream.count("/") >= 3 else ""
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/{path}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def proxies(fhir_server: FhirServer) -> Iterator[tuple[FirstSendHeld, list[HoldingProxy]]]:  # noqa: F811
    gate = FirstSendHeld()
    made = [HoldingProxy(fhir_server.url, i, gate) for i in range(3)]
    try:
        yield gate, made
    finally:
        gate.release.set()
        for proxy in made:
            proxy.close()


def test_three_replicas_one_killed_mid_delivery_each_alert_reaches_the_server_once(
    tmp_path: Path,
    pg_url: str,
    fhir_server: FhirServer,  # noqa: F811
    proxies: tuple[FirstSendHeld, list[HoldingProxy]],
) -> None:
    gate, holding = proxies
    patients = [f"outbox-{i}" for i in range(3)]
    per_replica = [("--fhir-server", p.url) for p in holding]
    args = replica_args(tmp_path, "--outbox-lease", str(LEASE_S))
    with running_replicas(tmp_path, 3, pg_url, *args, per_replica=per_replica) as replicas:
        for i, patient in enumerate(patients):  # Monday at one replica, Wednesday at the next
            monday, wednesday = week(patient)
            assert cards(replicas[i].url, monday) == []
            assert len(cards(replicas[(i + 1) % 3].url, wednesday)) == 1
        assert gate.held.wait(BOUND_S), "no replica started a delivery"
        assert gate.holder is not None
        replicas.kill(gate.holder)  # mid-delivery: the server has it, the outbox does not know
        survivors = [i for i in range(3) if i != gate.holder]
        deadline = time.monotonic() + BOUND_S
        while not all_delivered(pg_url, len(patients)):
            assert time.monotonic() < deadline, f"not delivered: {counts(pg_url)}"
            time.sleep(0.2)
        delivered = [e for i in survivors for e in replicas.events(i) if e["event"] == "delivered"]
        assert len(delivered) == len(patients)  # the killed replica's item too, by a survivor
    for patient in patients:
        assert len(fhir_server.search(f"Flag?subject=Patient/{patient}")) == 1
        assert len(fhir_server.search(f"CarePlan?subject=Patient/{patient}")) == 1


def counts(state: str) -> dict[str, int]:
    store = open_state(state, create=False)
    try:
        return dict(store.counts())
    finally:
        store.close()


def all_delivered(state: str, expected: int) -> bool:
    return counts(state) == {"pending": 0, "delivered": expected, "failed": 0}
