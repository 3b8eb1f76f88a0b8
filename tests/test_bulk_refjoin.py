"""A Medication on its own line of a bulk export is joined to the patients whose orders
reference it (issue 11 item 1; clinical12 "found, not fixed"): a levofloxacin order by
``medicationReference`` gives the myasthenia trigger note in a split-by-type export exactly as
in one Bundle. Medications (and Encounters) naming no patient wait in an on-disk index
(``redflags.replay.context_index``) until evaluation; one referenced by nobody is still counted."""

from __future__ import annotations

import copy
from pathlib import Path

import orjson
import pytest

from fhir_adapters.times import parse_now
from redflags.pipeline import Pipeline
from redflags.replay.partition import Stats, replay_all, spill, temp_dirs

from .bulk_helpers import run
from .refjoin_helpers import (
    ACETAMINOPHEN,
    LEVO_NOTE,
    LEVOFLOXACIN,
    NOW,
    as_bundle,
    as_export,
    medication,
    mg_record,
)


def replay(path: Path, out: Path, *extra: str) -> tuple[dict[str, list], list[str], str]:
    """(alerts by patient, the notes of every written Flag/CarePlan bundle, stderr)."""
    done = run("replay", path, "--now", NOW, "--format", "json", "--out", out, *extra)
    assert done.returncode == 0, done.stderr
    lines = [orjson.loads(line) for line in done.stdout.splitlines()]
    alerts = {line["patient"]: line["alerts"] for line in lines}
    assert len(alerts) == len(lines), "a patient printed twice"
    notes = sorted(
        note
        for written in sorted(out.iterdir())
        for note in _notes(written.read_text())
        if "new drug" in note
    )
    return alerts, notes, done.stderr


def _notes(text: str) -> list[str]:
    """The trigger-drug notes of a written Bundle (wherever the Flag/CarePlan carries them)."""
    out: list[str] = []
    start = 0
    while (at := text.find("new drug that can worsen", start)) >= 0:
        end = text.find('"', at)
        out.append(text[at:end].rstrip("."))
        start = end
    return out


LAYOUTS = {
    "split": (".ndjson", 1, ()),
    "split-gzip-several-files": (".ndjson.gz", 2, ()),
    "split-gzip-jobs-2": (".ndjson.gz", 2, ("--jobs", "2")),
}


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_an_order_by_reference_to_a_medication_in_another_file_reads_its_drug(
    tmp_path: Path, layout: str
) -> None:
    suffix, per_type, extra = LAYOUTS[layout]
    resources = [
        *mg_record("mg-1"),
        *mg_record("mg-2", drug="Medication/apap"),
        *mg_record("mg-3"),
        medication("levo", LEVOFLOXACIN),
        medication("apap", ACETAMINOPHEN),
    ]
    expected, expected_notes, _ = replay(as_bundle(tmp_path / "all.json", resources), tmp_path / "o1")
    assert expected_notes == [LEVO_NOTE, LEVO_NOTE]  # mg-1 and mg-3; acetaminophen is no trigger
    got, notes, stderr = replay(
        as_export(tmp_path / "export", resources, suffix, per_type), tmp_path / "o2", *extra
    )
    assert got == expected and notes == expected_notes
    assert "naming no patient" not in stderr


def test_jobs_2_prints_what_jobs_1_prints(tmp_path: Path) -> None:
    resources = [r for i in range(12) for r in mg_record(f"mg-{i}")] + [medication("levo", LEVOFLOXACIN)]
    folder = as_export(tmp_path / "export", resources, ".ndjson.gz", 3)
    one = run("replay", folder, "--now", NOW, "--format", "json")
    two = run("replay", folder, "--now", NOW, "--format", "json", "--jobs", "2")
    assert one.returncode == two.returncode == 0, two.stderr
    assert one.stdout == two.stdout and one.stdout.count("\n") == 12
    assert "sources" in one.stdout and "Medication.0.ndjson.gz" in one.stdout


def test_a_medication_referenced_by_nobody_is_counted_as_naming_no_patient(tmp_path: Path) -> None:
    resources = [*mg_record(), medication("levo", LEVOFLOXACIN), medication("unused", ACETAMINOPHEN)]
    _alerts, notes, stderr = replay(as_export(tmp_path / "export", resources), tmp_path / "out")
    assert notes == [LEVO_NOTE]
    assert "resources naming no patient (not evaluated): 1 Medication" in stderr


def test_an_unresolved_reference_stays_unread_and_the_index_is_removed(
    tmp_path: Path, pipeline: Pipeline
) -> None:
    """API level: a reference to a Medication in no input reads no drug (the facts' warning);
    counts: resources are the records that name a patient (Encounters and Medications read
    through a reference are not counted); the unreferenced Medication names no patient."""
    resources = [
        *mg_record("mg-1", drug="Medication/missing"),
        *mg_record("mg-2"),
        medication("levo", LEVOFLOXACIN),
        medication("unused", LEVOFLOXACIN),
    ]
    folder = as_export(tmp_path / "export", resources)
    notes: dict[str, list[str]] = {}

    def render(done) -> bytes:
        notes[done.result.pid] = [n for a in done.result.alerts for n in a.notes if "new drug" in n]
        warnings = [i.message for i in done.result.issues if "medicationReference" in i.path]
        notes[done.result.pid] += [w for w in warnings if "not in this input" in w]
        return b"x"

    stats = Stats()
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    out = list(replay_all([folder], pipeline, parse_now(NOW), render, print, tmp_dir=scratch, stats=stats))
    assert out == [b"x", b"x"]
    assert [n for n in notes["Patient/mg-1"] if "Fluoroquinolone" in n] == []
    assert any("not in this input" in n for n in notes["Patient/mg-1"])
    assert any("Fluoroquinolone" in n for n in notes["Patient/mg-2"])
    assert stats.without_patient == {"Medication": 1}
    context = ("Practitioner", "Encounter", "Medication")
    per_patient = len([r for r in mg_record() if r["resourceType"] not in context])
    assert stats.resources == 2 * per_patient  # the referenced Medication is context, not counted
    assert temp_dirs(scratch) == []


def test_without_the_join_a_medication_alone_is_counted_as_before(tmp_path: Path) -> None:
    """The Spark path spills each input alone (``join=False``): no index, counted per type."""
    folder = as_export(tmp_path / "export", [*mg_record(), medication("levo", LEVOFLOXACIN)])
    files = sorted(folder.iterdir())
    work = tmp_path / "work"
    work.mkdir()
    stats = Stats()
    parts = spill(files, work, 2, print, stats, join=False)
    assert parts.context_index is None and stats.without_patient == {"Medication": 1}
    joined = Stats()
    work2 = tmp_path / "work2"
    work2.mkdir()
    parts = spill(files, work2, 2, print, joined)
    assert parts.context_index is not None and parts.context_index.is_file()
    assert not joined.without_patient and joined.resources == stats.resources  # joined: context


def test_an_encounter_naming_no_patient_in_another_file_is_joined_too(tmp_path: Path) -> None:
    """The same index serves Encounters naming no patient (context types alike)."""
    resources = mg_record()
    for res in resources:
        if res["resourceType"] == "Encounter":
            del res["subject"]
    base = copy.deepcopy(resources)
    expected, _, _ = replay(as_bundle(tmp_path / "all.json", base), tmp_path / "o1")
    got, _, stderr = replay(as_export(tmp_path / "export", resources), tmp_path / "o2")
    assert got == expected and "naming no patient" not in stderr
