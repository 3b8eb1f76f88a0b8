"""`redflags replay --expect` as an informaticist runs it: real fixtures in a folder, one edit each."""

from __future__ import annotations

import shutil
from pathlib import Path

import orjson
import pytest

from .cli_helpers import run
from .conftest import FIXTURES

#: 4 files, 5 patients: CES critical (v01), nothing (v02), GBS urgent (c3), GBS critical + nothing (n1, n2).
CORPUS = [
    FIXTURES / "vignettes" / "V01-ces-positive.json",
    FIXTURES / "vignettes" / "V02-ces-near-miss-unilateral-sciatica.json",
    FIXTURES / "vignettes" / "C3-provisional-gbs.json",
    FIXTURES / "multi" / "two-patients-bulk.ndjson",
]
CES, GBS = "cauda_equina_syndrome", "guillain_barre_syndrome"


def _counts(tp: int, fp: int, fn: int, wrong_tier: int, tn: int) -> dict[str, int]:
    return {"tp": tp, "fp": fp, "fn": fn, "wrong_tier": wrong_tier, "tn": tn}


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    folder = tmp_path / "corpus"
    folder.mkdir()
    for path in CORPUS:
        shutil.copy(path, folder / path.name)
        expected = path.with_name(f"{path.name.rsplit('.', 1)[0]}.expected.json")
        shutil.copy(expected, folder / expected.name)
    return folder


def _edit(folder: Path, stem: str, patient: str, alerts: list[dict[str, str]]) -> Path:
    """Replace one patient's expected alerts; returns the fixture the expected file belongs to."""
    path = folder / f"{stem}.expected.json"
    doc = orjson.loads(path.read_bytes())
    doc["patients"][patient] = alerts
    path.write_bytes(orjson.dumps(doc))
    return next(p for p in folder.glob(f"{stem}.*json") if not p.name.endswith(".expected.json"))


def _json(folder: Path, *extra: str) -> tuple[int, dict]:
    done = run("replay", folder, "--expect", "--format", "json", *extra)
    return done.returncode, orjson.loads(done.stdout)


def _table_row(stdout: str, rule: str) -> list[str]:
    line = next(line for line in stdout.splitlines() if f" {rule} " in line)
    return [cell.strip() for cell in line.strip("│ ").split("│")]


def _row(report: dict, rule: str) -> dict:
    return next(row for row in report["rules"] if row["rule"] == rule)


def test_matching_corpus_exits_0_and_uses_each_files_own_now(corpus: Path) -> None:
    # --now years later would expire every window: the expected files' "now" must win.
    code, report = _json(corpus, "--now", "2031-01-01T00:00:00Z")
    assert code == 0, report
    assert report["ok"] is True and (report["files"], report["patients_compared"]) == (4, 5)
    rows = {row["rule"]: row for row in report["rules"]}
    assert rows[CES] == {"rule": CES, **_counts(1, 0, 0, 0, 4)}
    assert rows[GBS] == {"rule": GBS, **_counts(2, 0, 0, 0, 3)}
    # every other loaded rule is a row of true negatives (5 patients, none raised or expected)
    assert all(row == {"rule": r, **_counts(0, 0, 0, 0, 5)} for r, row in rows.items() if r not in (CES, GBS))
    tn = 7 + 5 * (len(rows) - 2)
    assert report["totals"] == _counts(3, 0, 0, 0, tn)
    assert report["misses"] == report["errors"] == report["no_expectation"] == []

    table = run("replay", corpus, "--expect")
    assert table.returncode == 0, table.stderr
    assert _table_row(table.stdout, CES) == [CES, "1", "0", "0", "0", "4"]
    assert _table_row(table.stdout, GBS) == [GBS, "2", "0", "0", "0", "3"]
    assert _table_row(table.stdout, "total") == ["total", "3", "0", "0", "0", str(tn)]
    assert table.stdout.rstrip().endswith("all expectations met")


def test_expected_alert_not_produced_is_a_false_negative_naming_its_file(corpus: Path) -> None:
    # Two alerts the engine does not raise for v02, one from a rule that is not loaded at all.
    fixture = _edit(
        corpus,
        "V02-ces-near-miss-unilateral-sciatica",
        "Patient/v02",
        [{"rule": CES, "severity": "critical"}, {"rule": "not_a_loaded_rule", "severity": "urgent"}],
    )
    code, report = _json(corpus)
    assert code == 1 and report["ok"] is False
    rows = {row["rule"]: row for row in report["rules"]}
    assert [r["rule"] for r in report["rules"]] == sorted(rows)  # sorted, the unknown rule included
    assert rows[CES] == {"rule": CES, **_counts(1, 0, 1, 0, 3)}
    assert rows["not_a_loaded_rule"] == {"rule": "not_a_loaded_rule", **_counts(0, 0, 1, 0, 4)}
    assert report["totals"] == _counts(3, 0, 2, 0, 10 + 5 * (len(rows) - 3))
    assert report["misses"][0] == {
        "kind": "FN",
        "rule": CES,
        "severity": "critical",
        "expected_severity": None,
        "file": str(fixture),
        "patient": "Patient/v02",
    }
    table = run("replay", corpus, "--expect")
    assert table.returncode == 1
    assert f"FN {CES} critical {fixture} Patient/v02" in table.stdout.splitlines()
    assert f"FN not_a_loaded_rule urgent {fixture} Patient/v02" in table.stdout.splitlines()
    assert "2 differences, 0 errors" in table.stdout


def test_produced_alert_not_expected_is_a_false_positive(corpus: Path) -> None:
    fixture = _edit(corpus, "V01-ces-positive", "Patient/v01", [])  # the engine still raises it
    code, report = _json(corpus)
    assert code == 1
    assert _row(report, CES) == {"rule": CES, **_counts(0, 1, 0, 0, 4)}
    assert [(m["kind"], m["file"], m["patient"]) for m in report["misses"]] == [
        ("FP", str(fixture), "Patient/v01")
    ]
    table = run("replay", corpus, "--expect")
    assert f"FP {CES} critical {fixture} Patient/v01" in table.stdout.splitlines()


def test_other_severity_is_a_wrong_tier_not_a_true_positive(corpus: Path) -> None:
    fixture = _edit(corpus, "C3-provisional-gbs", "Patient/c3", [{"rule": GBS, "severity": "critical"}])
    code, report = _json(corpus)
    assert code == 1
    assert _row(report, GBS) == {"rule": GBS, **_counts(1, 0, 0, 1, 3)}
    assert report["misses"] == [
        {
            "kind": "TIER",
            "rule": GBS,
            "severity": "urgent",
            "expected_severity": "critical",
            "file": str(fixture),
            "patient": "Patient/c3",
        }
    ]
    table = run("replay", corpus, "--expect")
    assert f"TIER {GBS} urgent {fixture} Patient/c3 (expected critical)" in table.stdout.splitlines()


def test_fixture_without_expected_file_is_listed_not_compared(corpus: Path) -> None:
    (corpus / "V01-ces-positive.expected.json").unlink()
    code, report = _json(corpus, "--now", "2025-03-10T12:00:00Z")  # --now serves such files
    assert code == 0
    assert report["no_expectation"] == [
        {"file": str(corpus / "V01-ces-positive.json"), "patients": 1, "alerts": 1}
    ]
    assert (report["files"], report["patients_compared"]) == (4, 4)
    assert _row(report, CES) == {"rule": CES, **_counts(0, 0, 0, 0, 4)}
    table = run("replay", corpus, "--expect", "--now", "2025-03-10T12:00:00Z")
    assert table.returncode == 0
    assert f"NOEXP {corpus / 'V01-ces-positive.json'} (patients: 1, alerts: 1)" in table.stdout
    assert "files without expectation: 1" in table.stdout


def test_unreadable_inputs_and_unlisted_patients_fail_the_report(corpus: Path) -> None:
    broken = corpus / "broken.json"
    broken.write_text('{"resourceType": "Bundle", "entry": [')
    (corpus / "C3-provisional-gbs.expected.json").write_text('{"now": "yesterday", "patients": {}}')
    bulk = orjson.loads((corpus / "two-patients-bulk.expected.json").read_bytes())
    del bulk["patients"]["Patient/n2"]
    (corpus / "two-patients-bulk.expected.json").write_bytes(orjson.dumps(bulk))
    code, report = _json(corpus)
    assert code == 1
    assert [e["file"] for e in report["errors"]] == [  # in file order
        str(corpus / "C3-provisional-gbs.expected.json"),
        str(broken),
    ]
    assert "not a FHIR date" in report["errors"][0]["error"]
    assert report["errors"][1]["error"].startswith("invalid JSON")
    assert report["patient_differences"] == [
        {
            "file": str(corpus / "two-patients-bulk.ndjson"),
            "patient": "Patient/n2",
            "difference": "not listed in the expected file",
        }
    ]
    assert report["misses"] == []  # n2 raised nothing; C3 was not compared
    assert (report["files"], report["patients_compared"]) == (5, 4)
    table = run("replay", corpus, "--expect")
    assert table.returncode == 1
    assert f"ERROR {broken}: invalid JSON" in table.stdout
    assert "1 differences, 2 errors" in table.stdout


def test_json_report_keys_are_in_a_fixed_order_and_help_documents_the_exit_status(corpus: Path) -> None:
    _, report = _json(corpus)
    assert list(report) == [
        "ok",
        "files",
        "patients_compared",
        "rules",
        "totals",
        "misses",
        "patient_differences",
        "no_expectation",
        "errors",
    ]
    assert list(report["rules"][0]) == ["rule", "tp", "fp", "fn", "wrong_tier", "tn"]
    help_text = " ".join(run("replay", "--help").stdout.split())
    assert "--expect" in help_text and "Exit status: 0" in help_text and "no expectation" in help_text
