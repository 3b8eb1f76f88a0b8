"""Replay store cost: ``synchronous=FULL`` (what the service uses) against NORMAL, and against
verifying the token's signature, the work every authenticated call does anyway.

``SqliteJtiStore.first_use`` records one id per call; with FULL each commit waits for an fsync
of the WAL. Printed: microseconds per call each way and the ratios FULL / NORMAL and
FULL / ES384 verification, so the figure travels across machines.

    python -m bench.jti_store            # N = 2000
    python -m bench.jti_store --n 5000
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from pathlib import Path

import jwt
from cryptography.hazmat.primitives.asymmetric import ec

from redflags.state.jti import SqliteJtiStore


def per_call_us(sync: str, n: int, folder: Path) -> float:
    store = SqliteJtiStore(folder / f"jti-{sync}.sqlite")
    store._db.execute(f"PRAGMA synchronous={sync}")  # the bench compares; the service fixes FULL
    expires = time.time() + 300
    ids = [uuid.uuid4().hex for _ in range(n)]
    start = time.perf_counter()
    for jti in ids:
        store.first_use("https://ehr.example.org/", jti, expires)
    elapsed = time.perf_counter() - start
    store.close()
    return elapsed / n * 1e6


def verify_us(n: int) -> float:
    key = ec.generate_private_key(ec.SECP384R1())
    token = jwt.encode({"iss": "x", "jti": "j"}, key, algorithm="ES384")
    public = key.public_key()
    start = time.perf_counter()
    for _ in range(n):
        jwt.decode(token, public, algorithms=["ES384"])
    return (time.perf_counter() - start) / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.jti_store", description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        normal = per_call_us("NORMAL", args.n, Path(tmp))
        full = per_call_us("FULL", args.n, Path(tmp))
    verify = verify_us(min(args.n, 1000))
    print(f"first_use NORMAL {normal:.0f} us, FULL {full:.0f} us; ES384 verify {verify:.0f} us (per call)")
    print(f"FULL / NORMAL = {full / normal:.2f}; FULL / verify = {full / verify:.2f}")


if __name__ == "__main__":
    main()
