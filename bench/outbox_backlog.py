"""Outbox backlog benchmark: what one delivery attempt over N pending items holds in memory.

N pending outbox items (one real Flag + CarePlan transaction each, about 5 KB, stored with
``StateStore.commit``) wait for a FHIR server that is down (a loopback port nobody listens
on). ``redflags.delivery.sender.drain`` with no patience then tries each once. Printed: the Python
heap peak during that pass (tracemalloc) for N and for 10 N, and their ratio: a deliverer that
reads one bundle at a time stays flat (ratio near 1), one that reads every pending bundle grows
with the backlog (ratio near 10).

    python -m bench.outbox_backlog            # N = 500
    python -m bench.outbox_backlog --n 2000
"""

from __future__ import annotations

import argparse
import socket
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fhir_adapters.fhir_client import FhirClient, RetryPolicy  # noqa: E402
from redflags import logs  # noqa: E402
from redflags.delivery.sender import drain  # noqa: E402
from redflags.state.model import Evaluated, NewDelivery  # noqa: E402
from redflags.state.stores import open_state as open_store  # noqa: E402

PAD = "x" * 4000  # a CarePlan description of realistic size


def _bundle(i: int) -> dict:
    careplan = {"resourceType": "CarePlan", "identifier": [{"system": "urn:bench", "value": str(i)}],
                "status": "draft", "intent": "proposal", "description": PAD,
                "subject": {"reference": f"Patient/b{i}"}}  # fmt: skip
    entry = {"fullUrl": f"urn:uuid:00000000-0000-0000-0000-{i:012d}", "resource": careplan,
             "request": {"method": "POST", "url": "CarePlan"}}  # fmt: skip
    return {"resourceType": "Bundle", "type": "transaction", "entry": [entry]}


def peak_kib(n: int, folder: Path) -> tuple[float, int]:
    store = open_store(folder / f"state-{n}.sqlite")
    for i in range(n):
        item = NewDelivery(f"Patient/b{i}", "bench_rule", "raised", _bundle(i))
        store.commit(Evaluated(f"Patient/b{i}", 0, deliveries=[item]))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with FhirClient(f"http://127.0.0.1:{port}/fhir", retry=RetryPolicy(attempts=1), timeout_s=1) as client:
        tracemalloc.start()
        frozen = time.time()  # a clock that stands still: each item is tried exactly once
        done = drain(store, client, patience_s=0, clock=lambda: frozen, sleep=lambda _s: None)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    store.close()
    return peak / 1024, done.retried


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=500)
    args = parser.parse_args()
    logs.configure("error")
    with tempfile.TemporaryDirectory() as tmp:
        small, tried_small = peak_kib(args.n, Path(tmp))
        large, tried_large = peak_kib(args.n * 10, Path(tmp))
    print(f"pending {args.n:>6}: tried {tried_small:>6}, heap peak {small:9.0f} KiB")
    print(f"pending {args.n * 10:>6}: tried {tried_large:>6}, heap peak {large:9.0f} KiB")
    print(f"ratio (10x backlog): {large / small:.2f}")


if __name__ == "__main__":
    main()
