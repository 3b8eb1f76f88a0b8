"""The database restarts under load: two replicas answer 503 + OperationOutcome, then recover.

Two real ``serve`` replicas share a real PostgreSQL (tests/pg_server). Client threads keep
calling while the server is stopped and started again: a CDS call and feedback (their JWT id
goes to the jti store first), and ``$evaluate`` with a static token (the engine process reads
and commits the patient's history). During the outage every answer is a 503 with an
OperationOutcome, none a 500, none later than the call deadline; after the restart, with
nobody touching the replicas, calls are answered 200 again.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import requests

from .pg_server import PgServer
from .replica_calls import cds_call, feedback, replica_args, week
from .replica_harness import running_replicas

DEADLINE_S = 30  # serve --call-deadline
BOUND_S = 60
TOKEN = "s2s-" + "r" * 28


@dataclass(frozen=True)
class Answer:
    kind: str
    status: int
    seconds: float
    body: str
    retry_after: str | None


def evaluate(url: str, resources: list[dict]) -> requests.Response:
    bundle = {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": r} for r in resources]}
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/fhir+json"}
    return requests.post(f"{url}/fhir/$evaluate", data=json.dumps(bundle), headers=headers, timeout=BOUND_S)


class Load:
    """Threads calling the replicas back to back, every answer kept with its time."""

    def __init__(self, calls: dict[str, Callable[[], requests.Response]]) -> None:
        self.answers: list[Answer] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(kind, call)) for kind, call in calls.items()
        ]

    def _run(self, kind: str, call: Callable[[], requests.Response]) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            answer = call()
            seen = Answer(
                kind,
                answer.status_code,
                time.monotonic() - started,
                answer.text,
                answer.headers.get("Retry-After"),
            )
            with self._lock:
                self.answers.append(seen)

    def since(self, index: int) -> list[Answer]:
        with self._lock:
            return self.answers[index:]

    def mark(self) -> int:
        with self._lock:
            return len(self.answers)

    def wait_for(self, predicate: Callable[[list[Answer]], bool], start: int, bound_s: float) -> list[Answer]:
        deadline = time.monotonic() + bound_s
        while not predicate(self.since(start)):
            assert time.monotonic() < deadline, [(a.kind, a.status) for a in self.since(start)][-20:]
            time.sleep(0.1)
        return self.since(start)

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(BOUND_S * 2)


def test_a_database_restart_under_load_is_503_then_recovered(tmp_path: Path, pg_server: PgServer) -> None:
    url = pg_server.fresh_url()
    (tmp_path / "tokens.txt").write_text(TOKEN + "\n")
    args = replica_args(
        tmp_path, "--tokens", str(tmp_path / "tokens.txt"), "--call-deadline", str(DEADLINE_S)
    )
    monday, wednesday = week("outage-1")
    with running_replicas(tmp_path, 2, url, *args) as replicas:
        assert cds_call(replicas[1].url, monday).status_code == 200
        answer = cds_call(replicas[0].url, wednesday)
        assert answer.status_code == 200, answer.text
        (card,) = answer.json()["cards"]  # to give feedback on
        calls = {
            "cds": lambda: cds_call(replicas[0].url, wednesday),
            "evaluate": lambda: evaluate(replicas[1].url, wednesday),
            "feedback": lambda: feedback(replicas[1].url, card["uuid"]),
        }
        with Load(calls) as load:
            load.wait_for(lambda got: {a.kind for a in got if a.status == 200} == set(calls), 0, BOUND_S)
            pg_server.stop("fast")  # every connection closed under the replicas' feet
            down = load.mark()
            outage = load.wait_for(
                lambda got: {a.kind for a in got if a.status == 503} == set(calls), down, BOUND_S
            )
            pg_server.start()
            up = load.mark()
            after = load.wait_for(
                lambda got: {a.kind for a in got if a.status == 200} == set(calls), up, BOUND_S
            )
        every = load.since(0)
    assert {a.status for a in every} <= {200, 503}, [
        (a.kind, a.status, a.body[:200]) for a in every if a.status not in (200, 503)
    ]
    assert max(a.seconds for a in every) < DEADLINE_S
    for refused in (a for a in outage if a.status == 503):
        assert json.loads(refused.body)["resourceType"] == "OperationOutcome", refused
        assert refused.kind == "feedback" or refused.retry_after == "1"
    assert after  # recovered by itself: both replicas kept running, nobody restarted them
    logged = replicas.events()
    told = [e["detail"] for e in logged if e["event"] == "store_unavailable"]
    assert told and all(f"127.0.0.1:{pg_server.port}/" in t for t in told)  # which database
    assert not any("outage-1" in line for s in replicas.services for line in s.log().splitlines())
