"""CDS calls with complete and with incomplete prefetch, over loopback (``bench.service``'s calls).

Complete: every template prefetched (the calls of ``bench.service``, ~200 resources each).
Incomplete: the same calls without the ``Observation`` key and with a ``fhirServer``, a stub FHIR
server in this process that answers the patient's Observation search; the service reads it and
evaluates. ``redflags serve --workers W --no-state --allow-http-fhir`` runs in a child process;
C client threads send calls back to back, first complete, then incomplete, for a fixed time each.

Printed per kind: calls/s, latency p50/p99, and the CPU time per call of the HTTP process and of
the engine processes (from /proc: less sensitive than calls/s to other load on the machine).
Compare two revisions by running this file in each (read the figures as ratios, same machine,
same minute).

    python -m bench.cds_prefetch                      # 8 clients, 2 workers, 10 s per kind
    python -m bench.cds_prefetch --clients 4 --seconds 20
"""

from __future__ import annotations

import argparse
import http.server
import os
import tempfile
import threading
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import orjson

from bench.service import _pct, _start, load, requests_bodies

EMPTY = b'{"resourceType":"Bundle","type":"searchset"}'


TICK_S = 1 / os.sysconf("SC_CLK_TCK")


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of one process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * TICK_S


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


def cpu(pid: int) -> tuple[float, float]:
    """CPU seconds of the HTTP process and of its engine processes (children) so far."""
    return _cpu_s(pid), sum(_cpu_s(c) for c in _children(pid))


class _Ehr(http.server.ThreadingHTTPServer):
    """A loopback FHIR server answering ``Observation?patient=ID`` with prepared searchsets."""

    daemon_threads = True

    def __init__(self, searches: dict[str, bytes]) -> None:
        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                query = parse_qs(urlsplit(self.path).query)
                data = searches.get(query.get("patient", [""])[0], EMPTY)
                self.send_response(200)
                self.send_header("Content-Type", "application/fhir+json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *_args: object) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server_address[1]}/fhir"
        threading.Thread(target=self.serve_forever, daemon=True).start()


def incomplete(bodies: list[bytes]) -> tuple[list[bytes], dict[str, bytes]]:
    """The calls without their Observation prefetch, and the searches that give it back."""
    searches: dict[str, bytes] = {}
    without: list[dict] = []
    for body in bodies:
        doc = orjson.loads(body)
        searches[doc["context"]["patientId"]] = orjson.dumps(doc["prefetch"].pop("Observation"))
        without.append(doc)
    return [orjson.dumps(doc) for doc in without], searches


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()

    complete, per_call = requests_bodies()
    partial, searches = incomplete(complete)
    ehr = _Ehr(searches)
    partial = [orjson.dumps({**orjson.loads(b), "fhirServer": ehr.url}) for b in partial]
    print(f"{len(complete)} distinct calls, ~{per_call} resources each, {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory() as tmp:
        proc, url = _start(args.workers, Path(tmp), state=False, extra=("--allow-http-fhir",))
        try:
            for name, bodies in (("complete", complete), ("incomplete", partial)):
                load(url, bodies, args.clients, 2.0)  # warm-up
                http0, engines0 = cpu(proc.pid)
                latencies, errors = load(url, bodies, args.clients, args.seconds)
                http1, engines1 = cpu(proc.pid)
                n = len(latencies)
                p50, p99 = _pct(latencies, 0.50), _pct(latencies, 0.99)
                print(
                    f"{name:10} prefetch: {n / args.seconds:6.1f} calls/s, "
                    f"p50 {p50:5.1f} ms, p99 {p99:5.1f} ms, errors {errors}; CPU per call: "
                    f"HTTP process {(http1 - http0) / n * 1000:.2f} ms, "
                    f"engines {(engines1 - engines0) / n * 1000:.2f} ms"
                )
        finally:
            proc.terminate()
            proc.wait(timeout=15)
            ehr.shutdown()


if __name__ == "__main__":
    main()
