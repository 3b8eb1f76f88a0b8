"""A myasthenia gravis record whose drug order names a Medication by reference, as exports split it."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import orjson

from rulesets.meta import RXNORM

from .conftest import FIXTURES

NOW = "2025-03-10T12:00:00Z"
MG = FIXTURES / "myasthenic_crisis_risk" / "tierB-exacerbation-dx-with-triggers.json"
LEVOFLOXACIN = {"coding": [{"system": RXNORM, "code": "82122", "display": "levofloxacin"}]}
ACETAMINOPHEN = {"coding": [{"system": RXNORM, "code": "161", "display": "acetaminophen"}]}
LEVO_NOTE = "new drug that can worsen myasthenia gravis: Fluoroquinolone antibiotic on 2025-03-06"
GENTAMICIN = "mg-b-exac-gentamicin"


def medication(rid: str, code: dict) -> dict[str, Any]:
    return {"resourceType": "Medication", "id": rid, "code": code}


def mg_record(pid: str = "mg-b-exac", drug: str = "Medication/levo") -> list[dict[str, Any]]:
    """The MG fixture's resources (patient ``pid``); its gentamicin order names ``drug`` by reference."""
    text = json.dumps([e["resource"] for e in json.loads(MG.read_text())["entry"]])
    resources = json.loads(text.replace("mg-b-exac", pid))
    for res in resources:
        if res.get("id") == GENTAMICIN.replace("mg-b-exac", pid):
            del res["medicationCodeableConcept"]
            res["medicationReference"] = {"reference": drug}
    return resources


def as_bundle(path: Path, resources: list[dict]) -> Path:
    entries = [{"resource": r} for r in resources]
    path.write_bytes(orjson.dumps({"resourceType": "Bundle", "type": "collection", "entry": entries}))
    return path


def as_export(folder: Path, resources: list[dict], suffix: str = ".ndjson", per_type: int = 1) -> Path:
    """One NDJSON per resource type (``per_type`` files each, round robin), as ``$export`` writes."""
    folder.mkdir()
    by_file: dict[str, list[bytes]] = {}
    counts: dict[str, int] = {}
    for res in resources:
        rtype = res["resourceType"]
        n = counts[rtype] = counts.get(rtype, -1) + 1
        by_file.setdefault(f"{rtype}.{n % per_type}{suffix}", []).append(orjson.dumps(res))
    for name, lines in by_file.items():
        data = b"\n".join(lines) + b"\n"
        (folder / name).write_bytes(gzip.compress(data) if suffix.endswith(".gz") else data)
    return folder
