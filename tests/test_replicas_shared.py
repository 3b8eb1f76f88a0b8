"""Two and three ``redflags serve`` replicas, each from its own working directory, share one memory.

Real processes on loopback ports, one ``--state`` (a PostgreSQL database; also one SQLite file,
several processes on one host): history written through one replica is read by the next, the
ledger raises an alert once however the calls are spread, a JWT id used at one replica is
refused at every other, and feedback from all of them is in one report.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from redflags.state.stores import FEEDBACK_FILE, open_state

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


@pytest.mark.parametrize("count", [2, 3])
def test_monday_at_one_replica_wednesday_at_the_next_raises_guillain_barre(
    tmp_path: Path,
    shared_state: str,  # noqa: F811
    count: int,
) -> None:
    with running_replicas(tmp_path, count, shared_state, *replica_args(tmp_path)) as replicas:
        for start in range(count):  # every replica writes a Monday another one reads
            monday, wednesday = week(f"gbs-{start}")
            assert cards(replicas[start].url, monday) == []
            (card,) = cards(replicas[(start + 1) % count].url, wednesday)
            assert card["indicator"] == "critical" and "Guillain" in card["summary"]
            (again,) = cards(replicas[(start + 2) % count].url, wednesday)  # known there too
            assert again["summary"] == card["summary"]
    for start in range(count):
        assert ledger(shared_state, f"gbs-{start}") == (["raised"], [GBS])


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


def test_a_jwt_used_at_one_replica_is_refused_at_the_others_and_feedback_is_one_report(
    tmp_path: Path,
    shared_state: str,  # noqa: F811
) -> None:
    with running_replicas(tmp_path, 3, shared_state, *replica_args(tmp_path)) as replicas:
        monday, wednesday = week("jti-1")
        credential = jwt_for("/cds-services/redflags-patient-view")
        assert cds_call(replicas[0].url, monday, credential).status_code == 200
        for other in (1, 2):
            refused = cds_call(replicas[other].url, monday, credential)
            assert refused.status_code == 401, refused.text
            assert refused.json()["resourceType"] == "OperationOutcome"
        shown = [cards(replicas[i].url, wednesday)[0]["uuid"] for i in (1, 2)]  # a card at each
        assert feedback(replicas[2].url, shown[0]).status_code == 200  # feedback at another replica
        assert feedback(replicas[0].url, shown[1]).status_code == 200
    (row,) = [r for r in report(shared_state)["rules"] if r["rule"] == GBS]
    assert (row["shown"], row["accepted"]) == (2, 2)


def report(state: str) -> dict[str, Any]:
    """``redflags feedback report`` over the shared location (its feedback store)."""
    beside = str(Path(state).parent / FEEDBACK_FILE)
    where = ["--state", state] if "://" in state else ["--db", beside]
    done = subprocess.run(
        [sys.executable, "-m", "redflags.cli", "feedback", "report", *where, "--format", "json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=BOUND_S,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)
