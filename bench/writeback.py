"""Write-back benchmark: alerts delivered to a loopback FHIR server through the durable outbox.

N patients (copies of vignette V01, cauda equina tier A, each under its own id) are evaluated
once; their Flag + CarePlan transactions are then written to a fresh Medplum server
(``tests/fhir_server``, the one the tests use; a new one for each way) two ways:

* direct: each patient's transaction Bundle POSTed with ``FhirClient.transaction``;
* outbox: ``Pipeline`` with a state store (``redflags.stateful.Memory``) commits history, ledger
  and outbox item per patient
  (SQLite, synchronous=FULL), then ``redflags.delivery.sender.drain`` sends the items and marks each
  delivered.

Printed: deliveries per second each way and the outbox's cost as a ratio (outbox time / direct
time), with the commit and the send phases apart.

    python -m bench.writeback            # N = 100
    python -m bench.writeback --n 300
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests/ (the FHIR test server harness) is not installed

from fhir_adapters.fhir_client import FhirClient  # noqa: E402
from fhir_adapters.intake import read_json  # noqa: E402
from fhir_adapters.times import parse_now  # noqa: E402
from redflags import logs  # noqa: E402
from redflags.delivery.sender import drain  # noqa: E402
from redflags.pipeline import Pipeline  # noqa: E402
from redflags.state.stores import open_state as open_store  # noqa: E402
from redflags.stateful import Memory  # noqa: E402
from tests.fhir_server_harness import running_fhir_server  # noqa: E402

V01 = ROOT / "fixtures" / "vignettes" / "V01-ces-positive.json"
NOW = parse_now("2025-03-10T12:00:00Z")


def _patients(n: int, prefix: str) -> bytes:
    """One collection Bundle with ``n`` copies of V01, patient ids ``<prefix><i>``."""
    text = V01.read_text()
    entries = []
    for i in range(n):
        doc = orjson.loads(text.replace("v01", f"{prefix}{i:05d}"))
        entries += copy.deepcopy(doc["entry"])
    return orjson.dumps({"resourceType": "Bundle", "type": "collection", "entry": entries})


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=100)
    args = parser.parse_args()
    logs.configure("warning")

    pipeline = Pipeline()
    direct_input = read_json(_patients(args.n, "d"), "direct")
    outbox_input = read_json(_patients(args.n, "o"), "outbox")
    bundles = [r.transaction(pipeline) for r in pipeline.evaluate(direct_input, NOW)]
    assert all(bundles), "every copy of V01 raises its alert"

    with running_fhir_server() as server, FhirClient(server.url) as client:  # a fresh server each way:
        started = time.perf_counter()  # Medplum's conditional create scans what it holds
        for bundle in bundles:
            client.transaction(bundle)
        direct_s = time.perf_counter() - started
    with running_fhir_server() as server, tempfile.TemporaryDirectory() as tmp:
        with FhirClient(server.url) as client:
            store = open_store(Path(tmp) / "state.sqlite")
            remembering = Pipeline(memory=Memory(store, actor="bench"))
            started = time.perf_counter()
            queued = sum(len(r.deliveries) for r in remembering.evaluate(outbox_input, NOW))
            commit_s = time.perf_counter() - started
            evaluate_s = _evaluate_time(pipeline, outbox_input)
            started = time.perf_counter()
            done = drain(store, client)
            send_s = time.perf_counter() - started
            counts = store.counts()
            store.close()
        flags = len(server.search("Flag?_count=1000&_elements=id"))

    assert queued == args.n and done.delivered == args.n and counts["pending"] == 0, (queued, done, counts)
    outbox_s = (commit_s - evaluate_s) + send_s
    print(f"{args.n} patients, one alert each (Flag + CarePlan + engine Device per transaction)")
    print(f"direct POSTs:   {direct_s:6.2f} s  {args.n / direct_s:7.1f} deliveries/s")
    print(
        f"through outbox: {outbox_s:6.2f} s  {args.n / outbox_s:7.1f} deliveries/s  "
        f"(commit {commit_s - evaluate_s:.2f} s beyond evaluation, send {send_s:.2f} s)"
    )
    print(f"outbox / direct = {outbox_s / direct_s:.2f}x; Flags on the server: {flags} (expected {args.n})")


def _evaluate_time(pipeline: Pipeline, intake: object) -> float:
    """The evaluation alone (same input), to subtract from the tracked run: the outbox's cost."""
    started = time.perf_counter()
    pipeline.evaluate(intake, NOW)  # type: ignore[arg-type]
    return time.perf_counter() - started


if __name__ == "__main__":
    main()
