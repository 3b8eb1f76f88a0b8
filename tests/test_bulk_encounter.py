"""A Condition dated only by the Encounter it references (docs/clinical-policy.md#encounter-dates) fires in a
bulk replay of NDJSON or a split-by-type export exactly as in a Bundle: the Encounter, alone in its
line or its file, reaches its patient's partition as context and is joined there (issue 11)."""

from __future__ import annotations

import gzip
from pathlib import Path

import orjson
import pytest

from fhir_adapters.times import parse_now
from redflags.pipeline import Pipeline
from redflags.replay.partition import Stats, replay_all

from .bulk_helpers import replay, run
from .codes_helpers import CES, NOW, bundle, diagnosis, encounter, ndjson, patient

CRITICAL = [{"rule": CES, "severity": "critical"}]


def fired(line: dict) -> list[dict]:
    return [{"rule": a["rule"], "severity": a["severity"]} for a in line["alerts"]]


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(gzip.compress(data) if path.name.endswith(".gz") else data)
    return path


def split(folder: Path, by_type: dict[str, list[dict]], suffix: str = ".ndjson") -> Path:
    """One NDJSON per resource type, as a Bulk Data $export writes them."""
    folder.mkdir()
    for rtype, resources in by_type.items():
        write(folder / f"{rtype}{suffix}", ndjson(*resources))
    return folder


REPRO = {"Patient": [patient()], "Encounter": [encounter(6, 4)], "Condition": [diagnosis()]}


def layouts(tmp_path: Path, layout: str) -> tuple[Path, tuple[str, ...]]:
    p, e, c = patient(), encounter(6, 4), diagnosis()
    if layout == "ndjson":
        return write(tmp_path / "all.ndjson", ndjson(p, e, c)), ()
    if layout == "ndjson-encounter-last":
        return write(tmp_path / "all.ndjson", ndjson(c, p, e)), ()
    if layout == "split":
        return split(tmp_path / "export", REPRO), ()
    if layout == "split-gzip":
        return split(tmp_path / "export", REPRO, ".ndjson.gz"), ()
    if layout == "split-jobs-2":
        return split(tmp_path / "export", REPRO), ("--jobs", "2")
    raise AssertionError(layout)


@pytest.mark.parametrize("layout", ["ndjson", "ndjson-encounter-last", "split", "split-gzip", "split-jobs-2"])
def test_a_diagnosis_dated_by_its_encounter_fires_as_in_a_bundle(tmp_path: Path, layout: str) -> None:
    (as_bundle,), done = replay(write(tmp_path / "all.json", bundle(patient(), encounter(6, 4), diagnosis())))
    assert done.returncode == 0, done.stderr
    assert fired(as_bundle) == CRITICAL  # the control: the Bundle fires (it did before the fix)
    path, extra = layouts(tmp_path, layout)
    lines, done = replay(path, extra=extra)
    assert done.returncode == 0, done.stderr
    assert "naming no patient" not in done.stderr
    (line,) = lines  # the Encounter makes no patient of its own
    assert line["patient"] == "Patient/p1"
    assert line["alerts"] == as_bundle["alerts"]
    if layout.startswith("split"):  # its file is one of the patient's inputs
        names = [Path(s).name.split(".")[0] for s in line["sources"]]
        assert names == ["Condition", "Encounter", "Patient"]  # input order
        assert Path(line["source"]).name.startswith("Condition")
    else:
        assert "sources" not in line


def test_an_encounter_of_a_month_ago_is_not_new_across_files(tmp_path: Path) -> None:
    old = {"Patient": [patient()], "Encounter": [encounter(24 * 30, 24 * 28)], "Condition": [diagnosis()]}
    (line,), done = replay(split(tmp_path / "export", old))
    assert done.returncode == 0, done.stderr
    assert fired(line) == []


def test_another_patients_encounter_never_dates_this_patients_diagnosis(tmp_path: Path) -> None:
    """p2's Encounter e1 (same partition) is referenced by p1's Condition: p1 stays undated, as
    with no Encounter at all; p2 (no Condition) gains nothing."""
    crossed = {
        "Patient": [patient("p1"), patient("p2")],
        "Encounter": [encounter(6, 4, pid="p2")],
        "Condition": [diagnosis()],
    }
    lines, done = replay(split(tmp_path / "crossed", crossed))
    assert done.returncode == 0, done.stderr
    without = {"Patient": [patient("p1"), patient("p2")], "Condition": [diagnosis()]}
    expected, _ = replay(split(tmp_path / "without", without))
    got = {line["patient"]: line for line in lines}
    assert list(got) == ["Patient/p1", "Patient/p2"]
    assert fired(got["Patient/p1"]) == next(fired(x) for x in expected if x["patient"] == "Patient/p1")
    assert fired(got["Patient/p1"]) != CRITICAL
    assert all("Encounter" not in s for s in got["Patient/p1"].get("sources", []))
    assert "sources" not in got["Patient/p2"] and fired(got["Patient/p2"]) == []


def test_an_encounter_naming_no_patient_alone_in_its_line_is_joined_or_reported(tmp_path: Path) -> None:
    """It waits in the on-disk index of resources naming no patient (refjoin): joined to the
    patient whose Condition references it, as in one Bundle; one referenced by nobody is counted
    per type like other resources naming no patient."""
    orphan = {"Patient": [patient()], "Encounter": [encounter(6, 4, pid=None)], "Condition": [diagnosis()]}
    (line,), done = replay(split(tmp_path / "export", orphan))
    assert done.returncode == 0, done.stderr
    assert fired(line) == CRITICAL and "naming no patient" not in done.stderr
    unreferenced = {**orphan, "Encounter": [encounter(6, 4, eid="e9", pid=None)]}
    (line,), done = replay(split(tmp_path / "unreferenced", unreferenced))
    assert "resources naming no patient (not evaluated): 1 Encounter" in done.stderr
    assert fired(line) != CRITICAL
    together = write(tmp_path / "all.json", bundle(patient(), encounter(6, 4, pid=None), diagnosis()))
    (line,), done = replay(together)
    assert fired(line) == CRITICAL and "naming no patient" not in done.stderr


def test_an_unreferenced_encounter_makes_no_patient_and_no_report(tmp_path: Path) -> None:
    lonely = {"Patient": [patient()], "Encounter": [encounter(6, 4), encounter(6, 4, eid="e9", pid="p9")]}
    lines, done = replay(split(tmp_path / "export", lonely))
    assert done.returncode == 0 and done.stderr == ""
    assert [(line["patient"], "sources" in line) for line in lines] == [("Patient/p1", False)]


def test_the_context_record_is_spilled_to_its_patients_partition(tmp_path: Path, pipeline: Pipeline) -> None:
    """API level (the Spark path reuses spill and evaluate_partition): the Encounter's record is
    marked as context in the JSON part, which every reader of spill lines keeps as it is."""
    from redflags.replay.partition import CONTEXT_MARK  # imported here: the other tests run on any version

    folder = split(tmp_path / "export", REPRO)
    stats = Stats()
    seen: list[bytes] = []

    def render(done) -> bytes:
        seen.append(orjson.dumps([a.rule for a in done.result.alerts]))
        return b"x"

    out = list(replay_all([folder], pipeline, parse_now(NOW), render, print, tmp_dir=tmp_path, stats=stats))
    assert out == [b"x"] and seen == [orjson.dumps([CES])]
    # the Encounter is context (it dates the Condition), not one of the patient's resources
    assert stats.resources == 2 and stats.patients == 1 and not stats.without_patient
    assert CONTEXT_MARK[:1] not in b"[{"  # cannot be the first byte of a JSON array/object


def test_the_per_file_expect_path_is_unchanged(tmp_path: Path) -> None:
    write(tmp_path / "all.ndjson", ndjson(patient(), encounter(6, 4), diagnosis()))
    expected = {"now": NOW, "patients": {"Patient/p1": CRITICAL}}
    (tmp_path / "all.expected.json").write_bytes(orjson.dumps(expected))
    done = run("replay", tmp_path / "all.ndjson", "--expect")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1" in done.stdout  # one true positive in the per-rule table


def test_out_writes_the_alert_bundle_named_after_the_first_own_input(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    _lines, done = replay(split(tmp_path / "export", REPRO), extra=("--out", str(out)))
    assert done.returncode == 0, done.stderr
    (written,) = out.iterdir()
    assert written.name == "Condition__p1.json"
    assert CES in written.read_text()
