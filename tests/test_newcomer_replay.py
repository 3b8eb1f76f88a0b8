"""Replay as a newcomer first types it (issue 12, item 9): globs, --expect without expectations,
`rules` options that cannot be combined, and the documented shape of ``changes`` with --state."""

from __future__ import annotations

import shutil
from pathlib import Path

import orjson

from .cli_helpers import run
from .conftest import FIXTURES

VIGNETTES = FIXTURES / "vignettes"


def test_a_glob_naming_an_expected_file_skips_it_with_a_note() -> None:
    """`replay fixtures/vignettes/V01*.json` names the fixture and its expected file."""
    named = sorted(VIGNETTES.glob("V01*.json"))
    assert [p.name for p in named] == ["V01-ces-positive.expected.json", "V01-ces-positive.json"]
    done = run("replay", *named, "--format", "json", "--now", "2025-03-10T12:00:00Z")
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines() == [f"{named[0]}: expected file, not an input: skipped"]
    (line,) = done.stdout.splitlines()
    assert orjson.loads(line)["patient"] == "Patient/v01"
    assert "not a FHIR resource" not in done.stderr


def test_a_glob_with_expect_compares_the_fixture_once() -> None:
    named = sorted(VIGNETTES.glob("V01*.json"))
    done = run("replay", *named, "--expect", "--format", "json")
    assert done.returncode == 0, done.stderr
    report = orjson.loads(done.stdout)
    assert (report["ok"], report["files"], report["patients_compared"]) == (True, 1, 1)
    assert "skipped" in done.stderr


def test_expect_without_any_expected_file_fails_and_says_so(tmp_path: Path) -> None:
    lone = tmp_path / "lone.json"
    shutil.copy(VIGNETTES / "V01-ces-positive.json", lone)
    table = run("replay", lone, "--expect")
    assert table.returncode == 1
    assert "all expectations met" not in table.stdout
    assert f"no expectations found for {lone} (no lone.expected.json beside it)" in table.stdout.splitlines()
    as_json = run("replay", lone, "--expect", "--format", "json")
    assert as_json.returncode == 1
    assert orjson.loads(as_json.stdout)["ok"] is False
    assert as_json.stderr.splitlines() == [
        f"replay: no expectations found for {lone} (no lone.expected.json beside it)"
    ]


def test_expect_on_a_folder_without_expected_files_fails(tmp_path: Path) -> None:
    for name in ("V01-ces-positive.json", "V02-ces-near-miss-unilateral-sciatica.json"):
        shutil.copy(VIGNETTES / name, tmp_path / name)
    done = run("replay", tmp_path, "--expect")
    assert done.returncode == 1
    assert "no expectations found for 2 files (no NAME.expected.json beside any)" in done.stdout


def test_rules_refuses_concept_map_with_explain() -> None:
    done = run("rules", "--concept-map", "--explain", "cauda_equina_syndrome")
    assert done.returncode == 2
    assert done.stdout == ""
    (line,) = done.stderr.splitlines()
    assert line.startswith("Error: --concept-map and --explain")


def test_the_changes_key_of_replay_json_with_state_has_the_documented_shape(tmp_path: Path) -> None:
    """README: ``changes`` is present only when the evaluation changed the ledger; each item is
    ``{"rule", "change": raised|updated|withdrawn, "tier": tier letter after it, or null}``."""
    history, state = FIXTURES / "history", tmp_path / "state.sqlite"

    def lines(path: Path, now: str) -> list[dict]:
        done = run("replay", path, "--now", now, "--state", state, "--format", "json")
        assert done.returncode == 0, done.stderr
        return [orjson.loads(line) for line in done.stdout.splitlines()]

    (monday,) = lines(history / "gbs-monday.json", "2025-03-10T12:00:00Z")
    assert "changes" not in monday  # nothing changed: no key (not an empty list)
    (wednesday,) = lines(history / "gbs-wednesday.json", "2025-03-12T12:00:00Z")
    assert list(wednesday) == ["source", "patient", "alerts", "changes"]
    assert wednesday["changes"] == [{"rule": "guillain_barre_syndrome", "change": "raised", "tier": "A"}]
    (thursday,) = lines(history / "gbs-thursday-arms.json", "2025-03-13T12:00:00Z")
    # Wednesday's FVC is over a day old on Thursday: tier B (as before the dates moved)
    assert thursday["changes"] == [{"rule": "guillain_barre_syndrome", "change": "updated", "tier": "B"}]
    resolved = tmp_path / "resolved.json"
    resolved.write_text(
        (history / "gbs-monday.json").read_text().replace('"code": "active"', '"code": "resolved"')
    )
    (withdrawn,) = lines(resolved, "2025-03-13T13:00:00Z")
    assert withdrawn["alerts"] == []
    assert withdrawn["changes"] == [{"rule": "guillain_barre_syndrome", "change": "withdrawn", "tier": None}]
    (again,) = lines(resolved, "2025-03-13T13:05:00Z")
    assert "changes" not in again
