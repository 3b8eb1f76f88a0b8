"""``redflags replay --jobs``: patients/s with 1 and 2 worker processes on a Bulk Data layout.

The same split-by-type export (``bench.bulk_memory.write_export``) is replayed with each
``--jobs`` value in a child process; the output is hashed (it must be identical across jobs),
and patients/s, the ratio to ``--jobs 1`` and the peak RSS of the largest process
(``wait4``: the replay and the workers it waited for) are printed.

    .venv/bin/python -m bench.bulk_jobs 20000 --jobs 1 2
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.bulk_memory import NOW, write_export


def run(folder: Path, jobs: int, tmp: Path) -> dict:
    exe = Path(sys.executable).with_name("redflags")
    started = time.perf_counter()
    proc = subprocess.Popen(
        [
            str(exe),
            "replay",
            str(folder),
            "--now",
            NOW,
            "--format",
            "json",
            "--jobs",
            str(jobs),
            "--tmp-dir",
            str(tmp),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert proc.stdout is not None
    digest, lines = hashlib.sha256(), 0
    for line in proc.stdout:  # stream the output, keep only its hash
        digest.update(line)
        lines += 1
    _pid, status, usage = os.wait4(proc.pid, 0)
    return {
        "jobs": jobs,
        "status": os.waitstatus_to_exitcode(status),
        "lines": lines,
        "sha256": digest.hexdigest(),
        "seconds": time.perf_counter() - started,
        "peak_rss_mib": usage.ru_maxrss / 1024,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("patients", nargs="?", type=int, default=20_000)
    parser.add_argument("--jobs", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--per-file", type=int, default=50_000, help="NDJSON lines per file")
    parser.add_argument("--tmp-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bulk-jobs-", dir=args.tmp_dir) as tmp:
        folder = Path(tmp) / "export"
        folder.mkdir()
        size, resources = write_export(folder, args.patients, args.per_file)
        print(f"{args.patients} patients, {resources} resources, {size / 2**20:.1f} MiB NDJSON", flush=True)
        rows = [run(folder, jobs, Path(tmp)) for jobs in args.jobs]
    base = rows[0]
    for row in rows:
        rate = args.patients / row["seconds"]
        print(
            f"--jobs {row['jobs']}: {row['seconds']:7.1f} s  {rate:6.0f} patients/s  "
            f"x{base['seconds'] / row['seconds']:.2f} vs --jobs {base['jobs']}  "
            f"peak RSS {row['peak_rss_mib']:.0f} MiB  exit {row['status']}  lines {row['lines']}  "
            f"output {'same' if row['sha256'] == base['sha256'] else 'DIFFERENT'}",
            flush=True,
        )
    ok = all(r["status"] == 0 and r["lines"] == args.patients and r["sha256"] == base["sha256"] for r in rows)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
