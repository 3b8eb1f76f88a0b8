"""Bulk replay helpers: run the CLI on exports and split vignettes into an export's layout."""

from __future__ import annotations

import gzip
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import orjson

from fhir_adapters.intake import read_path

from .conftest import FIXTURES, ROOT

NOW = "2025-03-10T12:00:00Z"


def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("redflags")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "redflags.cli"]
    return subprocess.run([*cmd, *map(str, args)], capture_output=True, text=True, cwd=ROOT, timeout=300)


def replay(*paths: Path, extra: tuple[str, ...] = ()) -> tuple[list[dict], subprocess.CompletedProcess[str]]:
    done = run("replay", *paths, "--now", NOW, "--format", "json", *extra)
    return [orjson.loads(line) for line in done.stdout.splitlines()], done


def by_patient(lines: list[dict]) -> dict[str, list[dict]]:
    pids = [line["patient"] for line in lines]
    assert len(pids) == len(set(pids)), "a patient was printed more than once"
    return {line["patient"]: line["alerts"] for line in lines}


def split_by_type(files: list[Path], folder: Path, *, per_type: int = 3, gzipped: bool = True) -> list[Path]:
    """Every resource of ``files`` into TYPE.N.ndjson(.gz), round-robin over ``per_type`` files,
    references that only a Bundle resolved (urn:uuid) rewritten to ``Patient/<id>`` as an export does."""
    folder.mkdir(parents=True, exist_ok=True)
    lines: dict[str, list[list[bytes]]] = defaultdict(lambda: [[] for _ in range(per_type)])
    counter: dict[str, int] = defaultdict(int)
    for path in files:
        for pid, members in read_path(path).patients.items():
            for entry in members.entries:
                res = dict(entry.resource)
                rtype = res["resourceType"]
                if rtype != "Patient":
                    res.pop("patient", None)
                    res["subject"] = {"reference": pid}
                elif "id" not in res:
                    res["id"] = pid.split("/")[1]
                lines[rtype][counter[rtype] % per_type].append(orjson.dumps(res))
                counter[rtype] += 1
    written = []
    for rtype, parts in lines.items():
        for n, part in enumerate(parts):
            if not part:
                continue
            data = b"\n".join(part) + b"\n"
            if gzipped and n % 2 == 0:
                path = folder / f"{rtype}.{n}.ndjson.gz"
                path.write_bytes(gzip.compress(data))
            else:
                path = folder / f"{rtype}.{n}.ndjson"
                path.write_bytes(data)
            written.append(path)
    return written


def v01_resources() -> tuple[str, list[dict]]:
    [(pid, members)] = read_path(FIXTURES / "vignettes" / "V01-ces-positive.json").patients.items()
    return pid, [e.resource for e in members.entries]
