"""``redflags serve --state postgresql://...``: the service keeps history, ledger, outbox,
feedback and jti in the database and writes no local store file (tests/pg_server.py)."""

from __future__ import annotations

from pathlib import Path

import requests

from redflags.state.stores import open_state

from .conftest import FIXTURES
from .service_harness import running_service

HISTORY = FIXTURES / "history"
GBS = "guillain_barre_syndrome"


def evaluate(url: str, bundle: Path) -> None:
    answer = requests.post(
        f"{url}/fhir/$evaluate",
        data=bundle.read_bytes(),
        headers={"Content-Type": "application/fhir+json"},
        timeout=60,
    )
    assert answer.status_code == 200, answer.text


def test_serve_keeps_every_store_in_the_database(pg_url: str, tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    env = {"XDG_STATE_HOME": str(tmp_path / "xdg")}
    for bundle, now in (
        ("gbs-monday.json", "2025-03-10T12:00:00Z"),
        ("gbs-wednesday.json", "2025-03-12T12:00:00Z"),
    ):
        args = ("--allow-unauthenticated", "--state", pg_url, "--feedback-db", pg_url, "--now", now)
        with running_service(tmp_path, *args, cwd=work, env=env) as service:  # a new service each day
            evaluate(service.url, HISTORY / bundle)
    with open_state(pg_url) as store:  # Wednesday's Guillain-Barre from Monday's history, in the database
        assert [(t.rule, t.change) for t in store.transitions("Patient/v03")] == [(GBS, "raised")]
    assert list(work.iterdir()) == [] and not (tmp_path / "xdg").exists()
    assert not list(tmp_path.glob("*.sqlite"))
