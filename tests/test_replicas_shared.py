"""Two and three ``redflags serve`` replicas, each from its own working directory, share one memory.

Real processes on loopback ports, one ``--state``: a PostgreSQL database (tests/pg_server), and
for the concurrent evaluations also one SQLite file several processes on one host share.
History written through one replica is read by the next, the ledger raises an alert once however
the calls are spread or raced, a JWT id used at one replica is refused at every other, and
feedback from all of them is in one report.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from redflags.state.stores import open_state

from .replica_calls import GBS, cards, cds_call, feedback, jwt_for, replica_args, week
from .replica_harness import running_replicas, shared_state  # noqa: F401 (pytest fixture)
from .service_harness import ROOT

BOUND_S = 60


def ledger(state: str, patient: str) -> tuple[list[str], list[str]]:
    """The patient's alert transitions and active rules in the shared store (its one tenant)."""
    store = open_state(state, create=False)
    try:
        (tenant,) = store.tenants(f"Patient/{patient}")
        changes = [t.change for t in store.transitions(f"Patient/{patient}", tenant=tenant)]
        return changes, list(store.active(f"Patient/{patient}", tenant=tenant))
    finally:
        store.close()


def test_three_replicas_share_history_ledger_jwt_ids_and_feedback(tmp_path: Path, pg_url: str) -> None:
    """Monday through one replica, Wednesday through the next: Guillain-Barré raised once, its
    card known at the third; a JWT used at one replica refused at the two others; feedback sent
    to a replica other than the one that showed the card, all in one report."""
    with running_replicas(tmp_path, 3, pg_url, *replica_args(tmp_path)) as replicas:
        shown = []
        for start in range(3):  # every replica writes a Monday another one reads
            monday, wednesday = week(f"gbs-{start}")
            assert cards(replicas[start].url, monday) == []
            (card,) = cards(replicas[(start + 1) % 3].url, wednesday)
            assert card["indicator"] == "critical" and "Guillain" in card["summary"]
            (again,) = cards(replicas[(start + 2) % 3].url, wednesday)  # known there too
            assert again["summary"] == card["summary"]
            shown += [card["uuid"], again["uuid"]]
            assert feedback(replicas[start].url, card["uuid"]).status_code == 200
        credential, (newcomer, _) = jwt_for("/cds-services/redflags-patient-view"), week("jti-1")
        assert cds_call(replicas[0].url, newcomer, credential).status_code == 200
        for other in (1, 2):
            refused = cds_call(replicas[other].url, newcomer, credential)
            assert refused.status_code == 401, refused.text
            assert refused.json()["resourceType"] == "OperationOutcome"
    for start in range(3):
        assert ledger(pg_url, f"gbs-{start}") == (["raised"], [GBS])
    (row,) = [r for r in report(pg_url)["rules"] if r["rule"] == GBS]
    assert (row["shown"], row["accepted"]) == (len(set(shown)), 3)


def test_concurrent_evaluations_of_one_patient_raise_once_and_lose_no_history(
    tmp_path: Path,
    shared_state: str,  # noqa: F811
) -> None:
    """Monday at replica 0 and Wednesday at replica 1 at the same instant, for several
    patients: each alert is raised once, and a later call with no new data still sees both
    days (neither commit overwrote the other's history)."""
    patients = [f"race-{i}" for i in range(6)]
    with running_replicas(tmp_path, 2, shared_state, *replica_args(tmp_path)) as replicas:
        answers: dict[tuple[str, int], Any] = {}
        start = threading.Barrier(2 * len(patients), timeout=BOUND_S)

        def send(patient: str, replica: int, resources: list[dict[str, Any]]) -> None:
            start.wait()
            answers[patient, replica] = cds_call(replicas[replica].url, resources)

        threads = []
        for patient in patients:
            monday, wednesday = week(patient)
            threads += [
                threading.Thread(target=send, args=(patient, 0, monday)),
                threading.Thread(target=send, args=(patient, 1, wednesday)),
            ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(BOUND_S * 2)
            assert not thread.is_alive(), "a call hung"
        assert sorted(a.status_code for a in answers.values()) == [200] * len(threads)
        for patient in patients:
            monday, wednesday = week(patient)
            patient_only = [r for r in wednesday if r["resourceType"] == "Patient"]
            (card,) = cards(replicas[0].url, patient_only)  # both days are in the history
            assert "Guillain" in card["summary"]
    for patient in patients:
        assert ledger(shared_state, patient) == (["raised"], [GBS])


def report(state: str) -> dict[str, Any]:
    """``redflags feedback report --state URL``: every replica's cards and feedback."""
    done = subprocess.run(
        [sys.executable, "-m", "redflags.cli", "feedback", "report", "--state", state, "--format", "json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=BOUND_S,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)
