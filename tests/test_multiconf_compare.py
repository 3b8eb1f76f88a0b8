"""``redflags replay --compare``: one input under two configurations in one process, per patient."""

from __future__ import annotations

import json
from pathlib import Path

from .cli_helpers import NOW, run
from .conftest import FIXTURES

CES = FIXTURES / "cauda_equina_syndrome"
#: A post-void residual threshold of 450 mL instead of 200: the three PVR fixtures (420 mL, 0.42 L
#: and a preliminary 420 mL) stop alerting; nothing else in the folder changes.
STRICTER = "[params.cauda_equina_syndrome]\npvr_ml = 450\n"
EXPECTED = [
    ("tierA-pvr-420mL-leg-numbness.json", "Patient/ces-a-pvr-ml"),
    ("tierA-pvr-in-litres-leg-numbness.json", "Patient/ces-a-pvr-litres"),
    ("tierA-pvr-preliminary-back-pain.json", "Patient/ces-a-pvr-prelim"),
]


def _config(tmp_path: Path, text: str, name: str = "site.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_a_higher_threshold_shows_as_the_alerts_it_removes(tmp_path: Path) -> None:
    done = run("replay", CES, "--compare", _config(tmp_path, STRICTER), "--now", NOW)
    assert done.returncode == 0, done.stderr
    rows = [line.split("\t") for line in done.stdout.splitlines()]
    assert [(Path(r[0]).name, r[1]) for r in rows] == EXPECTED
    assert {(r[2], r[3]) for r in rows} == {("cauda_equina_syndrome", "critical (tier A) -> no alert")}
    total = len([p for p in CES.glob("*.json") if not p.name.endswith(".expected.json")])
    assert done.stderr.strip() == f"compare: {total} inputs, {total} patients, 3 differ"


def test_json_names_both_sides_and_the_other_way_round_adds_them(tmp_path: Path) -> None:
    stricter = _config(tmp_path, STRICTER)
    done = run("replay", CES, "--config", stricter, "--compare", _config(tmp_path, "", "default.toml"),
               "--now", NOW, "--format", "json")  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert [(Path(d["source"]).name, d["patient"]) for d in lines] == EXPECTED
    assert {(d["rule"], d["baseline"] is None, json.dumps(d["other"])) for d in lines} == {
        ("cauda_equina_syndrome", True, '{"tier": "A", "severity": "critical"}')
    }


def test_the_same_configuration_twice_differs_nowhere(tmp_path: Path) -> None:
    same = _config(tmp_path, STRICTER)
    done = run("replay", FIXTURES / "vignettes", "--config", same, "--compare", same, "--now", NOW)
    assert (done.returncode, done.stdout) == (0, ""), done.stderr
    assert done.stderr.strip().endswith(" 0 differ")


def test_a_bad_configuration_is_one_line_and_the_usage_exit(tmp_path: Path) -> None:
    bad = _config(tmp_path, "[params.cauda_equina_syndrome]\npvr_ml = 5000\n")
    done = run("replay", CES, "--compare", bad, "--now", NOW)
    assert done.returncode == 2 and done.stdout == ""
    assert len(done.stderr.strip().splitlines()) == 1 and "plausible range" in done.stderr


def test_compare_refuses_the_options_it_does_not_take(tmp_path: Path) -> None:
    other = _config(tmp_path, STRICTER)
    done = run("replay", CES, "--compare", other, "--expect")
    assert done.returncode == 2 and "--compare cannot be used with" in done.stderr
