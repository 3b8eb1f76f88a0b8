"""Per-evaluation store cost: SQLite file against PostgreSQL, same work, as a ratio.

One evaluation's store work as ``redflags.stateful.Memory`` does it: take the patient lock,
read the snapshot, commit one new resource's facts and one outbox item. ``--url`` names a
PostgreSQL database (emptied tables are not needed: patients are new per run); without it a
throwaway server is started with the test harness (``tests/pg_server.py``).

    .venv/bin/python -m bench.state_store --n 2000 [--url postgresql://...]
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from redflags.state.model import Evaluated, NewDelivery, StateStore
from redflags.state.stores import open_state


def evaluations(store: StateStore, n: int, patients: int = 50) -> float:
    """Milliseconds per evaluation."""
    run = uuid.uuid4().hex[:8]
    started = time.perf_counter()
    for i in range(n):
        patient = f"Patient/{run}-{i % patients}"
        with store.patient_lock(patient):
            seen = store.snapshot(patient)
            store.commit(
                Evaluated(
                    patient,
                    i,
                    facts={f"Observation/{i}": [{"code": "x", "value": i, "ts": i}]},
                    deliveries=[NewDelivery(patient, "r", "raised", {"resourceType": "Bundle", "n": i})],
                    seen=seen.seq,
                )
            )
    return (time.perf_counter() - started) / n * 1000


@contextlib.contextmanager
def database(url: str | None) -> Iterator[str]:
    if url:
        yield url
        return
    from tests.pg_server import running_pg_server

    with running_pg_server() as server:
        yield server.fresh_url()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--url", help="a postgresql:// database (default: a throwaway test server)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder, database(args.url) as url:
        results = {}
        for name, where in (("sqlite", Path(folder) / "state.sqlite"), ("postgresql", url)):
            store = open_state(where)
            try:
                evaluations(store, min(args.n, 100))  # warm up: connections, prepared statements
                results[name] = evaluations(store, args.n)
            finally:
                store.close()
    for name, ms in results.items():
        print(f"{name:<11} {ms:7.2f} ms per evaluation (lock, snapshot, commit)")
    print(f"postgresql / sqlite: {results['postgresql'] / results['sqlite']:.2f}")


if __name__ == "__main__":
    main()
