"""Service benchmark: CDS Hooks ``patient-view`` calls over loopback with a ~200-resource prefetch.

Each patient is a vignette of ``fixtures/vignettes`` (half positive, half near-miss) plus half a
year of synthetic history (weekly vitals and labs, problems, medications: ``bench.synthetic``),
so a call carries about 200 distinct resources. ``redflags serve --workers W`` (W engine
processes) runs in a child process on 127.0.0.1; C client threads, each on one kept-alive
connection, send calls back to back for a fixed time.

Printed: calls/s, latency p50/p95/p99, and the ratio of the service p50 to the time of an engine
process's work on the same call (decode, read the prefetch, map, evaluate, render the cards)
measured in this process. Target: p99 <= 50 ms at 8 concurrent clients on a 2-core machine.
Also the CPU one call costs each process under load (HTTP process, engine processes, this
load generator; Linux) and the floor Little's law sets from it (``bench.closed_loop``): in a
closed loop the mean latency is clients / calls/s, so a latency target is a bound on the total
CPU per call, printed next to the CPU measured.

``--replicas N --state URL``: N ``serve`` processes (each from its own working directory) share
the state at URL (``postgresql://...``, or a SQLite file several processes share), the clients
spread over them round-robin; in the same run, at the same load, one replica on a SQLite file
is measured first and one replica on URL next, and the figures are printed as ratios to the
first. The per-call store cost is the in-process median of the same call with the store minus
without (read history, commit).

    python -m bench.service                     # 8 clients, 2 workers, 20 s
    python -m bench.service --clients 16 --workers 1 --seconds 10
    python -m bench.service --replicas 2 --workers 1 --state postgresql://user@db-host/redflags
"""

from __future__ import annotations

import argparse
import functools
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
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import orjson
import requests

from bench.closed_loop import Floor, children, cpu_seconds
from bench.synthetic import DAY, _Patient

if TYPE_CHECKING:
    from redflags.pipeline import Pipeline
    from redflags.service.cds.answer import CdsWork

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


def _work(body: bytes) -> CdsWork:
    """The HTTP process's part of one call (decode, read the prefetch, pack): what crosses."""
    from redflags.service.cds.answer import CdsWork, decode, pack
    from redflags.service.cds.prefetch import read_prefetch
    from redflags.service.cds.services import SERVICES

    call = decode(SERVICE, body)
    given = read_prefetch(SERVICES[SERVICE].prefetch, call)
    assert given.complete, "the bench prefetches everything"
    return CdsWork(call.hook_instance, call.patient_id, pack(given.found), False, "bench", NOW, False)


def in_process(bodies: list[bytes], rounds: int = 20) -> dict[str, float]:
    """Medians (ms) of one call's parts, each body in turn, as an engine process does them.

    ``parse``: orjson.loads of the body; ``decode``: the HTTP process's part (decode, read the
    prefetch, pack); ``cold``: the engine process's part (map, evaluate, render) with no resource
    mapped before; ``warm``: the same call again (its resources' facts kept:
    ``fhir_adapters.facts_cache``), what a CDS client repeating a patient's prefetch costs.
    CPU time of this process: on a shared machine wall time measures the other processes too.
    """
    from fhir_adapters import times as times_parsed
    from redflags.service.cds.answer import answer

    pipeline = _engine_pipeline()
    times: dict[str, list[float]] = {"parse": [], "decode": [], "cold": [], "warm": []}
    for _ in range(rounds):
        for body in bodies:
            started = time.process_time()
            orjson.loads(body)
            times["parse"].append(time.process_time() - started)
            started = time.process_time()
            work = _work(body)  # the HTTP process's part, then the engine's
            times["decode"].append(time.process_time() - started)
            if pipeline.facts_cache is not None:
                pipeline.facts_cache.clear()
            times_parsed.forget()  # cold: none of its dates seen before either
            for kind in ("cold", "warm"):
                started = time.process_time()
                answer(pipeline, work)
                times[kind].append(time.process_time() - started)
    return {kind: statistics.median(values) * 1000 for kind, values in times.items()}


def in_process_by_store(bodies: list[bytes], rounds: int, stores: dict[str, str | None]) -> dict[str, float]:
    """Median ms of one whole call (decode to answer) with each of ``stores`` (name -> location,
    None: no store), the call with history read and the evaluation committed; the stores take
    turns call by call, so a change of the machine's load weighs on all of them alike."""
    from redflags.service.cds.answer import answer
    from redflags.state.stores import open_state
    from redflags.stateful import Memory

    pipeline = _engine_pipeline()
    memories = {
        name: Memory(open_state(where), actor="bench") if where else None for name, where in stores.items()
    }
    times: dict[str, list[float]] = {name: [] for name in stores}
    try:
        for _ in range(rounds):
            for body in bodies:
                for name, memory in memories.items():
                    pipeline.memory = None
                    if memory is not None:
                        pipeline.remember(memory)
                    started = time.perf_counter()
                    answer(pipeline, _work(body))  # the HTTP process's part, then the engine's
                    times[name].append(time.perf_counter() - started)
    finally:
        pipeline.memory = None
        for memory in memories.values():
            if memory is not None:
                memory.store.close()
    return {name: statistics.median(values) * 1000 for name, values in times.items()}


@functools.cache
def _engine_pipeline() -> Pipeline:
    """This process as an engine process (once: the engine thread is chosen for good)."""
    from redflags import logs
    from redflags.service import engine_host

    logs.configure("warning")  # not a line per alert raised in the store runs
    return engine_host.start_here(None)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start(
    workers: int, tmp: Path, state: bool | str = True, extra: tuple[str, ...] = (), cwd: Path = ROOT
) -> tuple[subprocess.Popen, str]:
    """One ``serve``; ``state``: True (a SQLite file in TMP), False (none) or a location to share."""
    port = _free_port()
    stores = (
        ["--no-state", "--feedback-db", str(tmp / "feedback.sqlite")]
        if state is False
        else ["--state", str(tmp / "state.sqlite")]
        if state is True
        else ["--state", state]
    )
    cmd = [sys.executable, "-m", "redflags.cli", "--log-level", "error", "serve", "--port", str(port),
           "--workers", str(workers), "--allow-unauthenticated", "--now", NOW_TEXT,
           *stores, *extra]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=None)
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


def load(urls: str | list[str], bodies: list[bytes], clients: int, seconds: float) -> tuple[list[float], int]:
    """``clients`` threads, each one kept-alive connection sending calls back to back; with
    several URLs (replicas), client ``n`` calls ``urls[n % len(urls)]`` (round-robin).

    Raw sockets and prebuilt requests, not an HTTP library: the load generator shares the two
    cores with the service, and http.client cost 0.45 ms of CPU per call (requests more).
    """
    latencies: list[float] = []
    errors = 0
    lock = threading.Lock()
    stop = time.monotonic() + seconds
    ports = [int(url.rsplit(":", 1)[1]) for url in ([urls] if isinstance(urls, str) else urls)]
    prepared = {port: [_request(port, body) for body in bodies] for port in ports}

    def client(index: int) -> None:
        nonlocal errors
        mine: list[float] = []
        bad = 0
        i = index
        pending = b""
        port = ports[index % len(ports)]
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            while time.monotonic() < stop:
                request = prepared[port][i % len(bodies)]
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


def _load_with_cpu(
    serve_pid: int, url: str, bodies: list[bytes], clients: int, seconds: float
) -> tuple[list[float], int, dict[str, float] | None]:
    """``load``, with the CPU seconds it cost each side: the HTTP process, the engine processes
    (its children) and this process (the load generator); None where /proc cannot tell."""
    engines = children(serve_pid)
    pids = {"HTTP process": [serve_pid], "engines": engines}

    def sample() -> dict[str, float] | None:
        got = {name: [cpu_seconds(pid) for pid in group] for name, group in pids.items()}
        if not engines or any(v is None for values in got.values() for v in values):
            return None
        return {name: sum(v or 0.0 for v in values) for name, values in got.items()}

    before, mine = sample(), time.process_time()
    latencies, errors = load(url, bodies, clients, seconds)
    after, mine = sample(), time.process_time() - mine
    if before is None or after is None:
        return latencies, errors, None
    return latencies, errors, {**{k: after[k] - before[k] for k in after}, "load generator": mine}


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


@dataclass(frozen=True)
class Run:
    """The figures of one configuration under load."""

    calls: int
    seconds: float
    errors: int
    p50: float
    p99: float

    @property
    def rate(self) -> float:
        return self.calls / self.seconds

    @classmethod
    def of(cls, latencies: list[float], errors: int, seconds: float) -> Run:
        return cls(len(latencies), seconds, errors, _pct(latencies, 0.50), _pct(latencies, 0.99))


def measure(
    replicas: int, state: str, workers: int, bodies: list[bytes], clients: int, seconds: float, tmp: Path
) -> Run:
    """``replicas`` serve processes sharing ``state`` (each from its own folder) under load."""
    started: list[subprocess.Popen] = []
    urls: list[str] = []
    try:
        for n in range(replicas):
            cwd = tmp / f"replica-{n}"
            cwd.mkdir()
            proc, url = _start(workers, tmp, state, cwd=cwd)
            started.append(proc)
            urls.append(url)
        load(urls, bodies, clients, 2.0)  # warm-up: every worker has compiled its rules
        latencies, errors = load(urls, bodies, clients, seconds)
    finally:
        for proc in started:
            proc.terminate()
            proc.wait(timeout=15)
    return Run.of(latencies, errors, seconds)


def compare_replicas(args: argparse.Namespace, bodies: list[bytes]) -> None:
    """One replica on SQLite, one on ``--state``, then ``--replicas`` on it, at the same load;
    each as ratios to the first (the middle one tells the store's share from the replicas')."""
    import tempfile

    scheme = _scheme(args.state)
    with tempfile.TemporaryDirectory() as tmp:
        sqlite_file = str(Path(tmp) / "state.sqlite")
        medians = in_process_by_store(bodies, 5, {"none": None, "sqlite": sqlite_file, "shared": args.state})
        configs = (
            ("1 replica on SQLite", 1, sqlite_file, medians["sqlite"] - medians["none"]),
            (f"1 replica on {scheme}", 1, args.state, medians["shared"] - medians["none"]),
            (
                f"{args.replicas} replicas on {scheme}",
                args.replicas,
                args.state,
                medians["shared"] - medians["none"],
            ),
        )
        runs = []
        for n, (name, count, where, store_ms) in enumerate(configs):
            folder = Path(tmp) / f"config-{n}"
            folder.mkdir()
            runs.append(
                (
                    name,
                    measure(count, where, args.workers, bodies, args.clients, args.seconds, folder),
                    store_ms,
                )
            )
    print(f"clients {args.clients}, workers {args.workers} per replica, {args.seconds:g} s each")
    _, base, base_store = runs[0]
    for name, run, store_ms in runs:
        print(f"{name:>28}: {run.rate:6.0f} calls/s  p50 {run.p50:6.1f} ms  p99 {run.p99:6.1f} ms  "
              f"store {store_ms:5.2f} ms/call  errors {run.errors}")  # fmt: skip
    for name, run, store_ms in runs[1:]:
        store_ratio = store_ms / max(base_store, 1e-3)
        print(f"{name} / {runs[0][0]}: calls/s {run.rate / base.rate:.2f}x, p50 {run.p50 / base.p50:.2f}x, "
              f"p99 {run.p99 / base.p99:.2f}x, store cost per call {store_ratio:.2f}x")  # fmt: skip


def _scheme(state: str) -> str:
    return "PostgreSQL" if state.startswith(("postgresql://", "postgres://")) else "one SQLite file"


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
    parser.add_argument(
        "--replicas", type=int, default=0, help="Serve processes sharing --state (see above)."
    )
    parser.add_argument(
        "--state", help="With --replicas: the state they share (postgresql:// URL or a file)."
    )
    args = parser.parse_args()
    if bool(args.replicas) != bool(args.state):
        parser.error("--replicas and --state go together")

    bodies, per_call = requests_bodies()
    print(f"{len(bodies)} distinct calls, ~{per_call} resources each, {os.cpu_count()} cores")
    if args.replicas:
        compare_replicas(args, bodies)
        return
    parts = in_process(bodies)
    inproc = parts["decode"] + parts["warm"]  # what the service does for a repeated call
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        proc, url = _start(args.workers, Path(tmp), state=not args.no_state)
        try:
            load(url, bodies, args.clients, 2.0)  # warm-up: every worker has compiled its rules
            latencies, errors, cpu = _load_with_cpu(proc.pid, url, bodies, args.clients, args.seconds)
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
    if cpu is not None:  # where the CPU of a call goes, and what the ratio target allows
        per_call = {name: 1000 * seconds / len(latencies) for name, seconds in cpu.items()}
        print("CPU ms per call: " + ", ".join(f"{name} {ms:.2f}" for name, ms in per_call.items())
              + f", total {sum(per_call.values()):.2f} (in-process {inproc:.2f})")  # fmt: skip
        floor = Floor(args.clients, os.cpu_count() or 1, len(latencies) / args.seconds,
                      sum(per_call.values()), inproc, P99_INPROC_TARGET)  # fmt: skip
        for line in floor.lines():
            print(line)
    if not args.no_state:  # the service keeps history; the in-process figure above does not
        with tempfile.TemporaryDirectory() as tmp:
            by_store = in_process_by_store(bodies, 3, {"none": None, "sqlite": str(Path(tmp) / "s.sqlite")})
        store_ms = by_store["sqlite"] - by_store["none"]
        print(f"the state store adds {store_ms:.2f} ms to a call in-process (wall, medians): "
              f"p99 / (in-process + store) = {p99:.1f} / {inproc + store_ms:.1f} ms = "
              f"{p99 / (inproc + store_ms):.1f}x")  # fmt: skip
    verdict = "PASS" if p99 <= P99_TARGET_MS and errors == 0 else "FAIL"
    print(f"target p99 <= {P99_TARGET_MS:g} ms at {args.clients} clients: {p99:.1f} ms {verdict}")


if __name__ == "__main__":
    main()
