"""Write-back helpers: run the CLI as a subprocess and build the inputs the outbox tests send."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson

from .conftest import FIXTURES, ROOT

NOW = "2025-03-10T12:00:00Z"
V01 = FIXTURES / "vignettes" / "V01-ces-positive.json"


def redflags(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "redflags.cli", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def bundle(*resources: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": r} for r in resources]}


def write(path: Path, doc: dict[str, Any]) -> Path:
    path.write_bytes(orjson.dumps(doc))
    return path


def v01(patient: str) -> dict[str, dict[str, Any]]:
    """V01's resources by id, for patient ``patient`` (ids renamed so tests never share data)."""
    text = V01.read_text().replace("v01", patient)
    return {e["resource"]["id"]: e["resource"] for e in orjson.loads(text)["entry"]}


def entered_in_error(resource: dict[str, Any]) -> dict[str, Any]:
    """The same resource sent again, now marked entered-in-error."""
    again = copy.deepcopy(resource)
    if again["resourceType"] == "Condition":
        again["verificationStatus"] = {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/condition-ver-status",
                    "code": "entered-in-error",
                }
            ]
        }
    else:
        again["status"] = "entered-in-error"
    return again


def alerts_of(run: subprocess.CompletedProcess) -> dict[str, list[tuple[str, str]]]:
    found: dict[str, list[tuple[str, str]]] = {}
    for line in run.stdout.splitlines():
        doc = orjson.loads(line)
        found[doc["patient"]] = [(a["rule"], a["severity"]) for a in doc["alerts"]]
    return found


def positives(folder: Path, prefix: str, count: int = 1) -> list[str]:
    """``count`` copies of V01 (one cauda equina alert each) as files; returns the patient ids."""
    folder.mkdir(parents=True, exist_ok=True)
    ids = []
    for i in range(count):
        pid = f"{prefix}{i}"
        (folder / f"{pid}.json").write_text(V01.read_text().replace("v01", pid))
        ids.append(pid)
    return ids
