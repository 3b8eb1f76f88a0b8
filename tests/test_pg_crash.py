"""A writer SIGKILLed mid-commit on PostgreSQL leaves only whole commits, as on SQLite
(tests/test_state_store.py::test_a_killed_writer_leaves_only_whole_commits)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys

from redflags.state.stores import open_state

from .test_state_store import REPO, _evaluations

WRITER = """
import sys
from redflags.state.model import Evaluated, NewDelivery, Transition
from redflags.state.stores import open_state

url, tag = sys.argv[1], sys.argv[2]
store = open_state(url)
i = 0
while True:
    patient = f"Patient/{tag}-{i % 3}"
    rule = f"{tag}-{i}"
    with store.patient_lock(patient):
        seen = store.snapshot(patient).seq
        store.commit(Evaluated(
            patient, i,
            facts={f"Observation/{tag}-{i}": [{"eval": rule, "ts": i, "pad": "x" * 2000}] * 3},
            transitions=[Transition(patient, rule, "raised", "urgent", i, "crash:" + rule)],
            deliveries=[NewDelivery(patient, rule, "raised", {"eval": rule, "n": n, "pad": "y" * 20000})
                        for n in (0, 1)],
            seen=seen,
        ))
    print(i, flush=True)
    i += 1
"""


def test_a_killed_writer_leaves_only_whole_commits(pg_url: str) -> None:
    open_state(pg_url).close()
    rng = random.Random(5)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for round in range(4):
        tag = f"c{round}"
        proc = subprocess.Popen(
            [sys.executable, "-c", WRITER, pg_url, tag],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert proc.stdout is not None
        acknowledged, wanted = -1, rng.randint(5, 15)
        while acknowledged < wanted:
            line = proc.stdout.readline()
            if not line:
                break
            acknowledged = int(line)
        os.kill(proc.pid, signal.SIGKILL)  # somewhere in the next commit, or between two
        proc.wait(60)
        assert acknowledged >= wanted, proc.stderr.read() if proc.stderr else ""
        with open_state(pg_url) as store:
            transitions, items, facts = _evaluations(store)  # type: ignore[arg-type]
            # the killed session's locks are gone: the patient can be evaluated again at once
            with store.patient_lock(f"Patient/{tag}-0"):
                pass
        assert transitions == set(items) == facts  # never an outbox item without its transition and facts
        assert all(n == 2 for n in items.values())
        mine = {t for t in transitions if t.startswith(f"{tag}-")}
        assert mine == {f"{tag}-{i}" for i in range(len(mine))}
        assert len(mine) >= acknowledged + 1  # every acknowledged commit survived
