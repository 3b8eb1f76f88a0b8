"""Service benchmark: CDS Hooks ``patient-view`` calls over loopback with a ~200-resource prefetch.

Each patient is a vignette of ``fixtures/vignettes`` (half positive, half near-miss) plus half a
year of synthetic history (weekly vitals and labs, problems, medications: ``bench.synthetic``),
so a call carries about 200 distinct resources. ``redflags serve --workers W`` (W engine
processes) runs in a child process on 127.0.0.1; C client threads, each on one kept-alive
connection, send calls back to back for a fixed time.

Printed: calls/s, latency p50/p95/p99, and the ratio of the service p50 to the time of an engine
process's work on the same call (decode, read the prefetch, map, evaluate, render the cards)
measured in this process. Target: p99 <= 50 ms at 8 concurrent clients on a 2-core machine.

    python -m bench.service                     # 8 clients, 2 workers, 20 s
    python -m bench.service --clients 16 --workers 1 --seconds 10
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import orjson
import requests

from bench.synthetic import DAY, _Patient

ROOT = Path(__file__).resolve().parents[1]
VIGNETTES = ROOT / "fixtures" / "vignettes"
NOW_TEXT = "2025-03-10T12:00:00Z"
NOW = 1741608000
SERVICE = "redflags-patient-view"
SEARCH_KEYS = ("Condition", "MedicationRequest", "MedicationStatement", "Observation", "Procedure")
P99_TARGET_MS = 50.0
#: issue 15 item 6: engine time of a ~200-resource call / orjson parse of its body
ENGINE_PARSE_TARGET = 8.0
#: issue 15 item 6: service p99 at 8 clients on 2 engine processes / in-process time of a call
P99_INPROC_TARGET = 6.0


def _history(pid: str, seed: int) -> list[dict]:
    """Half a year of routine data for ``pid`` (no red flag in it)."""
    p = _Patient(pid, random.Random(seed), NOW)
    for week in range(26):
        when = NOW - week * 7 * DAY - 3600
        first = len(p.entries)
        p.vitals(when, 72.0, 3)
        p.labs(when, 2)
        for entry in p.entries[first:]:  # each week's results are resources of their own
            entry["resource"]["id"] += f"-w{week}"
    p.chronic(3)
    p.meds(NOW - 60 * DAY, 3)
    return [e["resource"] for e in p.entries if e["resource"]["resourceType"] in SEARCH_KEYS]


def requests_bodies() -> tuple[list[bytes], int]:
    """One patient-view body per vignette (V01-V24), each with ~200 prefetched resources."""
    bodies: list[bytes] = []
    sizes: list[int] = []
    for i, path in enumerate(sorted(VIGNETTES.glob("V*.json"))):
        if path.name.endswith(".expected.json"):
            continue
        resources = [e["resource"] for e in json.loads(path.read_text())["entry"]]
        (patient,) = [r for r in resources if r["resourceType"] == "Patient"]
        resources += _history(patient["id"], i)
        prefetch: dict = {"Patient": patient}
        for key in SEARCH_KEYS:
            found = [r for r in resources if r["resourceType"] == key]
            prefetch[key] = {
                "resourceType": "Bundle",
                "type": "searchset",
                "entry": [{"resource": r} for r in found],
            }
        sizes.append(sum(len(prefetch[k]["entry"]) for k in SEARCH_KEYS) + 1)
        body = {
            "hook": "patient-view",
            "hookInstance": str(uuid.uuid4()),
            "context": {"userId": "Practitioner/bench", "patientId": patient["id"]},
            "prefetch": prefetch,
        }
        bodies.append(orjson.dumps(body))
    return bodies, round(statistics.mean(sizes))


def in_process_ms(bodies: list[bytes], rounds: int = 20) -> float:
    """Median time of an engine process's work for one call (decode, map, evaluate, render)."""
    return in_process(bodies, rounds)["warm"]


def in_process(bodies: list[bytes], rounds: int = 20) -> dict[str, float]:
    """Medians (ms) of one call's parts, each body in turn, as an engine process does them.

    ``parse``: orjson.loads of the body; ``decode``: the HTTP process's part (decode, read the
    prefetch, pack); ``cold``: the engine process's part (map, evaluate, render) with no resource
    mapped before; ``warm``: the same call again (its resources' facts kept:
    ``fhir_adapters.facts_cache``), what a CDS client repeating a patient's prefetch costs.
    CPU time of this process: on a shared machine wall time measures the other processes too.
    """
    from redflags.service import engine_host
    from redflags.service.cds.answer import CdsWork, answer, decode, pack
    from redflags.service.cds.prefetch import read_prefetch
    from redflags.service.cds.services import SERVICES

    pipeline = engine_host.start_here(None)
    templates = SERVICES[SERVICE].prefetch
    times: dict[str, list[float]] = {"parse": [], "decode": [], "cold": [], "warm": []}
    for _ in range(rounds):
        for body in bodies:
            started = time.process_time()
            orjson.loads(body)
            times["parse"].append(time.process_time() - started)
            started = time.process_time()
            call = decode(SERVICE, body)  # the HTTP process's part, then the engine's
            given = read_prefetch(templates, call)
            assert given.complete, "the bench prefetches everything"
            work = CdsWork(call.hook_instance, call.patient_id, pack(given.found), False, "bench", NOW, False)
            times["decode"].append(time.process_time() - started)
            if pipeline.facts_cache is not None:
                pipeline.facts_cache.clear()
            for kind in ("cold", "warm"):
                started = time.process_time()
                answer(pipeline, work)
                times[kind].append(time.process_time() - started)
    return {kind: statistics.median(values) * 1000 for kind, values in times.items()}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start(
    workers: int, tmp: Path, state: bool = True, extra: tuple[str, ...] = ()
) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    cmd = [sys.executable, "-m", "redflags.cli", "--log-level", "error", "serve", "--port", str(port),
           "--workers", str(workers), "--allow-unauthenticated", "--now", NOW_TEXT,
           "--feedback-db", str(tmp / "feedback.sqlite"),
           *(["--no-state"] if not state else ["--state", str(tmp / "state.sqlite")]), *extra]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=None)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if requests.get(f"{url}/healthz", timeout=1).status_code == 200:
                return proc, url
        except requests.ConnectionError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("service did not start")


def _request(port: int, body: bytes) -> bytes:
    head = (
        f"POST /cds-services/{SERVICE} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def _answer(sock: socket.socket, pending: bytes) -> tuple[int, bytes]:
    """Read one HTTP/1.1 response (Content-Length framed); return its status and what follows."""
    while b"\r\n\r\n" not in pending:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("the service closed the connection")
        pending += chunk
    head, _, rest = pending.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    fields = dict(line.partition(b":")[::2] for line in lines[1:])
    length = int(next(v for k, v in fields.items() if k.lower() == b"content-length"))
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("the service closed the connection")
        rest += chunk
    return status, rest[length:]


def load(url: str, bodies: list[bytes], clients: int, seconds: float) -> tuple[list[float], int]:
    """``clients`` threads, each one kept-alive connection sending calls back to back.

    Raw sockets and prebuilt requests, not an HTTP library: the load generator shares the two
    cores with the service, and http.client cost 0.45 ms of CPU per call (requests more).
    """
    latencies: list[float] = []
    errors = 0
    lock = threading.Lock()
    stop = time.monotonic() + seconds
    port = int(url.rsplit(":", 1)[1])
    prepared = [_request(port, body) for body in bodies]

    def client(index: int) -> None:
        nonlocal errors
        mine: list[float] = []
        bad = 0
        i = index
        pending = b""
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            while time.monotonic() < stop:
                request = prepared[i % len(prepared)]
                i += clients
                started = time.perf_counter()
                sock.sendall(request)
                status, pending = _answer(sock, pending)
                mine.append(time.perf_counter() - started)
                bad += status != 200
        with lock:
            latencies.extend(mine)
            errors += bad

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return latencies, errors


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument(
        "--no-state", action="store_true", help="Serve without patient history (no state store writes)."
    )
    args = parser.parse_args()

    bodies, per_call = requests_bodies()
    print(f"{len(bodies)} distinct calls, ~{per_call} resources each, {os.cpu_count()} cores")
    parts = in_process(bodies)
    inproc = parts["decode"] + parts["warm"]  # what the service does for a repeated call
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        proc, url = _start(args.workers, Path(tmp), state=not args.no_state)
        try:
            load(url, bodies, args.clients, 2.0)  # warm-up: every worker has compiled its rules
            latencies, errors = load(url, bodies, args.clients, args.seconds)
        finally:
            proc.terminate()
            proc.wait(timeout=15)
    p50, p95, p99 = (_pct(latencies, q) for q in (0.50, 0.95, 0.99))
    print(f"history {'off' if args.no_state else 'on'}, clients {args.clients}, workers {args.workers}, "
          f"{args.seconds:g} s: {len(latencies)} calls, "
          f"{len(latencies) / args.seconds:.0f} calls/s, errors {errors}")  # fmt: skip
    print(f"latency ms: p50 {p50:.1f}  p95 {p95:.1f}  p99 {p99:.1f}  max {max(latencies) * 1000:.1f}")
    print(
        f"in-process, medians: parse {parts['parse']:.2f} ms, decode+pack {parts['decode']:.2f} ms, "
        f"engine cold {parts['cold']:.2f} ms, engine warm {parts['warm']:.2f} ms; "
        f"a repeated call in-process {inproc:.1f} ms; p50 / in-process = {p50 / inproc:.1f}x"
    )
    for kind in ("cold", "warm"):
        ratio = parts[kind] / parts["parse"]
        verdict = "PASS" if ratio <= ENGINE_PARSE_TARGET else "MISS"
        print(
            f"target engine {kind} / orjson parse of the body <= {ENGINE_PARSE_TARGET:g}x: "
            f"{parts[kind]:.2f} / {parts['parse']:.2f} ms = {ratio:.1f}x {verdict}"
        )
    ratio = p99 / inproc
    verdict = "PASS" if ratio <= P99_INPROC_TARGET and errors == 0 else "MISS"
    print(
        f"target p99 / in-process <= {P99_INPROC_TARGET:g}x at {args.clients} clients, "
        f"{args.workers} engines: {p99:.1f} / {inproc:.1f} ms = {ratio:.1f}x {verdict}"
    )
    verdict = "PASS" if p99 <= P99_TARGET_MS and errors == 0 else "FAIL"
    print(f"target p99 <= {P99_TARGET_MS:g} ms at {args.clients} clients: {p99:.1f} ms {verdict}")


if __name__ == "__main__":
    main()
