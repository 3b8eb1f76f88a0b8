"""A Bulk Data export (one NDJSON per resource type) replays to the same per-patient results as
the same resources in one file: a patient's resources meet across files, gzip and manifests."""

from __future__ import annotations

import gzip
from collections import defaultdict
from pathlib import Path

import orjson
import pytest

from bench.synthetic import CES, GBS, generate
from fhir_adapters.times import parse_now
from redflags.replay.per_file import expand

from .bulk_helpers import NOW, by_patient, replay, split_by_type, v01_resources
from .conftest import FIXTURES


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("single")
    generate(folder, 300, parse_now(NOW), per_file=300)
    return folder


def test_split_by_type_gives_the_single_file_results(corpus: Path, tmp_path: Path) -> None:
    single, done = replay(corpus)
    assert done.returncode == 0, done.stderr
    split_by_type(sorted(corpus.glob("*.json")), tmp_path / "export")
    split, done = replay(tmp_path / "export")
    assert done.returncode == 0, done.stderr
    assert by_patient(split) == by_patient(single)
    assert len(split) == 300
    fired = defaultdict(int)
    for line in split:
        for alert in line["alerts"]:
            fired[alert["rule"]] += 1
    assert fired[CES] == 15 and fired[GBS] == 15  # every positive of the generator, none missed


def test_fixtures_split_by_type_give_the_same_alerts(tmp_path: Path) -> None:
    folder = FIXTURES / "vignettes"
    single, done = replay(folder)
    assert done.returncode == 0, done.stderr
    split_by_type(list(expand([folder])), tmp_path / "export", per_type=2)
    split, done = replay(tmp_path / "export")
    assert done.returncode == 0, done.stderr

    def tiers(
        lines: list[dict],
    ) -> dict[str, list[tuple[str, str]]]:  # id-less resources: other evidence names
        return {
            pid: sorted((a["rule"], a["severity"]) for a in alerts)
            for pid, alerts in by_patient(lines).items()
        }

    assert tiers(split) == tiers(single) and any(tiers(single).values())


def test_a_patient_spread_over_five_files_is_evaluated_once_with_all_of_them(tmp_path: Path) -> None:
    pid, resources = v01_resources()
    assert len(resources) >= 5
    whole, _ = replay(FIXTURES / "vignettes" / "V01-ces-positive.json")
    files = []
    for n in range(5):
        path = tmp_path / f"part{n}.ndjson"
        path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in resources[n::5]))
        files.append(path)
    lines, done = replay(*files)
    assert done.returncode == 0, done.stderr
    assert [line["patient"] for line in lines] == [pid]
    assert lines[0]["alerts"] == whole[0]["alerts"] and lines[0]["alerts"]
    assert lines[0]["source"] == str(files[0]) and lines[0]["sources"] == [str(f) for f in files]


def test_manifest_with_relative_and_file_urls(tmp_path: Path) -> None:
    pid, resources = v01_resources()
    export = tmp_path / "export"
    export.mkdir()
    patient = [r for r in resources if r["resourceType"] == "Patient"]
    rest = [r for r in resources if r["resourceType"] != "Patient"]
    (export / "Patient.ndjson").write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in patient))
    other = tmp_path / "elsewhere" / "Rest.ndjson.gz"
    other.parent.mkdir()
    other.write_bytes(gzip.compress(b"".join(orjson.dumps(r) + b"\n" for r in rest)))
    manifest = {
        "transactionTime": "2025-03-10T11:00:00Z",
        "request": "https://ehr.example.org/fhir/$export",
        "requiresAccessToken": False,
        "output": [
            {"type": "Patient", "url": "Patient.ndjson"},
            {"type": "Observation", "url": other.as_uri()},
        ],
        "error": [],
    }
    (export / "manifest.json").write_bytes(orjson.dumps(manifest))
    for target in (export / "manifest.json", export):  # the manifest, or its folder (files read once)
        lines, done = replay(target)
        assert done.returncode == 0, done.stderr
        assert [line["patient"] for line in lines] == [pid]
        assert [a["rule"] for a in lines[0]["alerts"]] == [CES]


def _finding(pid: str, rid: str, rtype: str, code: str, display: str) -> dict:
    system = "https://redflags.dev/fhir/CodeSystem/leg-weakness-finding"
    res: dict = {
        "resourceType": rtype,
        "id": rid,
        "subject": {"reference": pid},
        "code": {"coding": [{"system": system, "code": code, "display": display}]},
    }
    if rtype == "Observation":
        res |= {"status": "final", "effectiveDateTime": "2025-03-10T10:00:00Z", "valueBoolean": True}
    else:
        res |= {
            "clinicalStatus": {
                "coding": [
                    {"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}
                ]
            },
            "verificationStatus": {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/condition-ver-status",
                        "code": "confirmed",
                    }
                ]
            },
            "onsetDateTime": "2025-03-10T08:00:00Z",
        }
    return res


def test_colliding_id_pair_stays_two_patients_across_files(tmp_path: Path) -> None:
    # 208789 and 1021284 collide in durable-rules' 32-bit session hash (tests/test_engine.py):
    # saddle numbness of one and back pain of the other must never join into a CES alert.
    a, b = "Patient/208789", "Patient/1021284"
    obs = tmp_path / "Observation.ndjson"
    cond = tmp_path / "Condition.ndjson"
    obs.write_bytes(
        orjson.dumps(_finding(a, "208789-saddle", "Observation", "saddle_anesthesia", "Saddle")) + b"\n"
    )
    cond.write_bytes(orjson.dumps(_finding(b, "1021284-back", "Condition", "back_pain", "Back pain")) + b"\n")
    lines, done = replay(obs, cond)
    assert done.returncode == 0, done.stderr
    assert {line["patient"]: line["alerts"] for line in lines} == {a: [], b: []}
    more = tmp_path / "Condition.2.ndjson"  # the same finding for the first patient, in a third file
    more.write_bytes(orjson.dumps(_finding(a, "208789-back", "Condition", "back_pain", "Back pain")) + b"\n")
    lines, done = replay(obs, cond, more)
    assert {line["patient"]: [x["rule"] for x in line["alerts"]] for line in lines} == {a: [CES], b: []}


def test_resources_naming_no_patient_are_counted_per_type(tmp_path: Path) -> None:
    pid, resources = v01_resources()
    path = tmp_path / "Mixed.ndjson"
    orphan = {"resourceType": "Observation", "id": "x1", "status": "final", "code": {"text": "x"}}
    rows = [*resources, orphan, {**orphan, "id": "x2"}, {"resourceType": "Condition", "id": "c9"}]
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    lines, done = replay(path)
    assert done.returncode == 0, done.stderr
    assert [line["patient"] for line in lines] == [pid]
    assert "resources naming no patient (not evaluated): 1 Condition, 2 Observation" in done.stderr
