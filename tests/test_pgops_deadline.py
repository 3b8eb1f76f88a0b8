"""``serve --call-deadline``: an engine process whose state store cannot get a connection gives
up before the deadline and answers 503 + Retry-After as the database's problem, instead of
waiting the pool's own 10 s until the engine pool kills it (a "server error" and an engine
restart). The database refuses every new connection of the service (its password changed and
its connections were dropped): the pool has none to give (tests/pg_server.py)."""

from __future__ import annotations

from pathlib import Path

import psycopg
import requests

from .conftest import FIXTURES
from .pg_server import PgServer
from .service_harness import running_service
from .test_pgops_login import PASSWORD, ROLE, login_db  # noqa: F401  (fixture)

MONDAY = FIXTURES / "history" / "gbs-monday.json"


def evaluate(url: str) -> requests.Response:
    return requests.post(
        f"{url}/fhir/$evaluate",
        data=MONDAY.read_bytes(),
        headers={"Content-Type": "application/fhir+json"},
        timeout=60,
    )


def test_a_store_without_connections_answers_503_within_the_call_deadline(
    login_db: str,  # noqa: F811
    pg_server: PgServer,
    tmp_path: Path,
) -> None:
    args = ("--allow-unauthenticated", "--state", login_db, "--feedback-db", login_db)
    args += ("--workers", "1", "--call-deadline", "3", "--now", "2025-03-10T12:00:00Z")
    with running_service(tmp_path, *args, cwd=tmp_path) as service:
        assert evaluate(service.url).status_code == 200
        pg_server.execute(f"ALTER ROLE {ROLE} PASSWORD 'changed-pw-3'")
        try:
            with psycopg.connect(pg_server.url(), autocommit=True) as conn:
                conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (ROLE,)
                )
            answer = evaluate(service.url)
        finally:
            pg_server.execute(f"ALTER ROLE {ROLE} PASSWORD '{PASSWORD}'")
        assert answer.status_code == 503 and answer.headers.get("Retry-After"), answer.text
        assert "database cannot be reached" in answer.text, answer.text
        log = service.log()
        assert "engine_call_timeout" not in log  # the engine was not killed at the deadline
        assert "password authentication failed" in log and PASSWORD not in log
        assert evaluate(service.url).status_code == 200  # and it serves again by itself
