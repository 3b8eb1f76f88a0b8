"""Peak memory of ``redflags replay`` on a Bulk Data layout, by number of patients.

Patients come from ``bench.synthetic`` one at a time (never a list of them) and are written
split by resource type, as an ``$export`` does (TYPE.N.ndjson, a new file every
``--per-file`` lines); the replay runs in a child process whose peak RSS (``wait4``) is
reported with the input size, so the ratio between sizes shows whether memory stays flat.

    .venv/bin/python -m bench.bulk_memory 1000 100000
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

from bench.synthetic import archetypes, patient_entries
from fhir_adapters.times import parse_now

NOW = "2025-03-10T12:00:00Z"


def write_export(folder: Path, n: int, per_file: int, seed: int = 20250310) -> tuple[int, int]:
    """n patients as TYPE.N.ndjson files; returns (bytes, resources)."""
    rng = random.Random(seed)
    kinds = archetypes(n, rng)
    now = parse_now(NOW)
    files: dict[str, tuple[object, int, int]] = {}  # type -> (file, lines in it, file number)
    total = resources = 0
    for i in range(n):
        for entry in patient_entries(i, kinds[i], rng, now):
            res = entry["resource"]
            rtype = res["resourceType"]
            f, count, number = files.get(rtype, (None, per_file, -1))
            if count >= per_file:
                if f is not None:
                    f.close()  # type: ignore[attr-defined]
                number += 1
                f, count = (folder / f"{rtype}.{number:04d}.ndjson").open("wb"), 0
            line = orjson.dumps(res) + b"\n"
            f.write(line)  # type: ignore[attr-defined]
            files[rtype] = (f, count + 1, number)
            total += len(line)
            resources += 1
    for f, _count, _number in files.values():
        f.close()  # type: ignore[attr-defined]
    return total, resources


def measure(n: int, per_file: int, tmp: Path) -> dict:
    folder = tmp / f"export-{n}"
    folder.mkdir()
    started = time.perf_counter()
    size, resources = write_export(folder, n, per_file)
    written = time.perf_counter() - started
    exe = Path(sys.executable).with_name("redflags")
    started = time.perf_counter()
    proc = subprocess.Popen(
        [str(exe), "replay", str(folder), "--now", NOW, "--format", "json", "--tmp-dir", str(tmp)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert proc.stdout is not None
    lines = sum(1 for _ in proc.stdout)  # stream the output, keep none of it
    _pid, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - started
    shutil.rmtree(folder)
    return {
        "patients": n,
        "lines": lines,
        "status": os.waitstatus_to_exitcode(status),
        "input_mib": size / 2**20,
        "resources": resources,
        "peak_rss_mib": usage.ru_maxrss / 1024,
        "replay_s": elapsed,
        "write_s": written,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sizes", nargs="*", type=int, default=[1000, 10_000, 100_000])
    parser.add_argument("--per-file", type=int, default=50_000, help="NDJSON lines per file")
    parser.add_argument("--tmp-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bulk-memory-", dir=args.tmp_dir) as tmp:
        for n in args.sizes:
            row = measure(n, args.per_file, Path(tmp))
            rows.append(row)
            print(
                f"{row['patients']:>9} patients  {row['input_mib']:8.1f} MiB NDJSON  "
                f"peak RSS {row['peak_rss_mib']:7.1f} MiB  replay {row['replay_s']:7.1f} s  "
                f"({row['patients'] / row['replay_s']:.0f} patients/s)  exit {row['status']}  "
                f"lines {row['lines']}",
                flush=True,
            )
    if len(rows) > 1:
        print(f"peak RSS ratio largest/smallest: {rows[-1]['peak_rss_mib'] / rows[0]['peak_rss_mib']:.2f}x")
    return 0 if all(r["status"] == 0 and r["lines"] == r["patients"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
