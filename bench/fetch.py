"""fhirServer fallback under a hostile or faulty server: time, memory and other clients' latency.

Starts ``redflags serve`` (one signed-JWT client, ``--allow-http-fhir``) and loopback servers
from ``tests.fetch_servers``, then prints ratios:

- drip: how long a call lasts against a server dripping a byte every 0.5 s, over ``--fhir-timeout``;
- memory: the HTTP process's resident memory after two calls whose server answers a 29 MB page,
  over before (and its peak over before);
- starvation: the latency of a prefetched call while 40 calls are stuck on the dripping server,
  over the same call's latency on an idle service.

    python -m bench.fetch [--budget 2]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import jwt
import requests
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from tests.fetch_servers import RawServer, drip, head
from tests.service_harness import running_service

SERVICE = "redflags-patient-view"
TOKEN = {"access_token": "bench", "token_type": "Bearer", "expires_in": 300, "scope": "x", "subject": "x"}
CAP_S = 60.0
ISS = "https://bench.example.org/"
KEY = ec.generate_private_key(ec.SECP384R1())


def _clients(tmp: Path) -> Path:
    jwk = {**ECAlgorithm.to_jwk(KEY.public_key(), as_dict=True), "kid": "k", "use": "sig"}
    path = tmp / "clients.json"
    path.write_text(json.dumps({"clients": [{"iss": ISS, "jwks": {"keys": [jwk]}}]}))
    return path


def _signed() -> dict[str, str]:
    now = int(time.time())
    claims = {"iss": ISS, "aud": f"http://127.0.0.1/cds-services/{SERVICE}", "iat": now, "exp": now + 300,
              "jti": str(uuid.uuid4())}  # fmt: skip
    return {"Authorization": f"Bearer {jwt.encode(claims, KEY, algorithm='ES384', headers={'kid': 'k'})}"}


def _call(url: str, body: dict[str, Any], timeout: float = CAP_S) -> tuple[int, float]:
    started = time.monotonic()
    try:
        answer = requests.post(f"{url}/cds-services/{SERVICE}", json=body, headers=_signed(), timeout=timeout)
        code = answer.status_code
    except requests.Timeout:
        code = 0
    return code, time.monotonic() - started


def _fallback(server: str) -> dict[str, Any]:
    return {
        "hook": "patient-view",
        "hookInstance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea",
        "context": {"userId": "Practitioner/1", "patientId": "p1"},
        "fhirServer": server,
        "fhirAuthorization": TOKEN,
    }


def _prefetched() -> dict[str, Any]:
    bundle = json.loads(Path("fixtures/vignettes/V01-ces-positive.json").read_text())
    resources = [e["resource"] for e in bundle["entry"]]
    prefetch: dict[str, Any] = {"Patient": next(r for r in resources if r["resourceType"] == "Patient")}
    for key in ("Condition", "MedicationRequest", "MedicationStatement", "Observation", "Procedure"):
        entries = [{"resource": r} for r in resources if r["resourceType"] == key]
        prefetch[key] = {"resourceType": "Bundle", "type": "searchset", "entry": entries}
    return {**_fallback("http://127.0.0.1:9"), "context": {"userId": "Practitioner/1", "patientId": "v01"},
            "prefetch": prefetch}  # fmt: skip


def _rss_kb(pid: int) -> tuple[int, int]:
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line
    )
    return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])


def _big_page(conn: Any, _hit: Any, _server: RawServer) -> None:
    conn.sendall(head(length=len(BIG)) + BIG)


def _big() -> bytes:
    """A 29 MB searchset of small resources (what memory is spent on is the decoded objects)."""
    entry = {"resource": {"resourceType": "Basic", "id": "b", "code": {"text": "x" * 200}}}
    one = len(json.dumps(entry)) + 1
    entries = [{**entry, "resource": {**entry["resource"], "id": f"b{i}"}} for i in range(29 * 2**20 // one)]
    return json.dumps({"resourceType": "Bundle", "type": "searchset", "entry": entries}).encode()


BIG = _big()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=2.0, help="--fhir-timeout of the service")
    budget = parser.parse_args().budget
    with tempfile.TemporaryDirectory() as tmp:
        args = (
            "--clients",
            str(_clients(Path(tmp))),
            "--public-url",
            "http://127.0.0.1",
            "--allow-http-fhir",
        )
        args = (*args, "--fhir-timeout", str(budget))
        with running_service(Path(tmp), *args, "--now", "2025-03-10T12:00:00Z") as svc:
            _call(svc.url, _prefetched())  # warm up
            idle = min(_call(svc.url, _prefetched())[1] for _ in range(5))
            with RawServer(drip(0.5)) as slow:
                code, elapsed = _call(svc.url, _fallback(slow.url))
                ratio = elapsed / budget
                print(
                    f"drip: answered {code or 'nothing'} after {elapsed:.1f} s; ratio to budget {ratio:.2f}"
                )
                with ThreadPoolExecutor(40) as pool:
                    stuck = [pool.submit(_call, svc.url, _fallback(slow.url)) for _ in range(40)]
                    slow.wait(lambda s: s.open >= 40, timeout=5)  # at most 16 with a fetch pool
                    code, loaded = _call(svc.url, _prefetched(), timeout=CAP_S)
                    print(f"starvation: prefetched call {code or 'timed out'} in {loaded:.2f} s "
                          f"while 40 calls drip; ratio to idle {loaded / idle:.1f}")  # fmt: skip
                    slow.stop.set()
                    [f.result() for f in stuck]
            before, _ = _rss_kb(svc.process.pid)
            with RawServer(_big_page) as big:
                for _ in range(2):
                    _call(svc.url, _fallback(big.url))
            after, peak = _rss_kb(svc.process.pid)
            print(f"memory: HTTP process {before // 1024} MB before, {after // 1024} MB after "
                  f"(peak {peak // 1024} MB); ratio after/before {after / before:.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
