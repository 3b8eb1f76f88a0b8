"""`redflags replay` on a data set: progress per stage on a terminal (a real pty), none otherwise,
and one summary line whose counts match a corpus with known contents."""

from __future__ import annotations

import subprocess
from collections import Counter
from pathlib import Path

import orjson
import pytest

from fhir_adapters.intake import read_path
from redflags.cli.options import site_pipeline as _pipeline
from redflags.replay.progress import human_bytes

from .bulk_helpers import NOW, split_by_type
from .conftest import FIXTURES, ROOT
from .pty_helpers import (
    ANSI,
    BAR,
    command,
    run_on_a_pty,
)

VIGNETTES = FIXTURES / "vignettes"
INPUTS = sorted(p for p in VIGNETTES.glob("*.json") if not p.name.endswith(".expected.json"))


def expected_vignettes() -> tuple[int, Counter[str]]:
    """Patients and alerts by tier that the vignettes' expected files name (tier from the rule's
    severity: within a rule each tier has its own severity)."""
    metas = _pipeline(None, strict=False, valueset_dirs=()).engine.metas
    tier_of = {(rule, t.severity): t.name for rule, meta in metas.items() for t in meta.tiers}
    assert len(tier_of) == sum(len(m.tiers) for m in metas.values()), "a severity names two tiers"
    patients, tiers = 0, Counter[str]()
    for path in sorted(VIGNETTES.glob("*.expected.json")):
        doc = orjson.loads(path.read_bytes())
        assert doc["now"] == NOW
        for alerts in doc["patients"].values():
            patients += 1
            tiers.update(tier_of[a["rule"], a["severity"]] for a in alerts)
    return patients, tiers


def resources_in(paths: list[Path]) -> int:
    """Resources each file gives its patients when read on its own (types the rules read, an
    Encounter when a Condition references it): what the summary's ``resources`` counts."""
    return sum(len(m.entries) for path in paths for m in read_path(path).patients.values())


def summary(stderr: str) -> dict[str, int]:
    [line] = [x for x in stderr.splitlines() if x.startswith("replay summary: ")]
    return {k: int(v) for k, v in (word.split("=") for word in line.removeprefix("replay summary: ").split())}


@pytest.fixture
def extra(tmp_path: Path) -> Path:
    """Two resources naming no patient and one line that is not JSON."""
    path = tmp_path / "Extra.ndjson"
    orphan = {"resourceType": "Observation", "id": "x1", "status": "final", "code": {"text": "x"}}
    path.write_bytes(
        orjson.dumps(orphan)
        + b"\n{not json\n"
        + orjson.dumps({"resourceType": "Condition", "id": "c9"})
        + b"\n"
    )
    return path


def test_summary_line_counts_patients_resources_orphans_alerts_by_tier_and_errors(extra: Path) -> None:
    patients, tiers = expected_vignettes()
    vignettes = INPUTS
    done = subprocess.run(
        command(
            "--log-level", "info", "replay", VIGNETTES, extra, "--now", NOW, "--format", "json", "--summary"
        ),
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert done.returncode == 1, done.stderr  # the bad line
    assert f"{extra}: line 2: invalid JSON" in done.stderr
    lines = [orjson.loads(x) for x in done.stdout.splitlines()]
    assert len(lines) == patients == 28
    want = {
        "inputs": len(vignettes) + 1,
        "patients": patients,
        "resources": resources_in(vignettes),
        "without_patient": 2,
        "alerts": sum(tiers.values()),
        "tier_A": tiers["A"],
        "tier_B": tiers["B"],
        "tier_C": tiers["C"],
        "errors": 1,
    }
    assert sum(len(x["alerts"]) for x in lines) == want["alerts"] > 0 and tiers["A"] and tiers["B"]
    got = summary(done.stderr)
    assert list(got) == list(want) and got == want  # fixed keys, fixed order, 0 tiers included
    [event] = [orjson.loads(x) for x in done.stderr.splitlines() if '"replay_counts"' in x]
    assert {k: event[k] for k in want} == want and event["invalid_patients"] == 0


def test_summary_line_with_jobs_2_is_the_same(extra: Path) -> None:
    runs = [
        subprocess.run(
            command(
                "replay", VIGNETTES, extra, "--now", NOW, "--format", "json", "--jobs", jobs, "--summary"
            ),
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=300,
        )
        for jobs in ("1", "2")
    ]
    assert summary(runs[0].stderr) == summary(runs[1].stderr)
    assert summary(runs[1].stderr)["tier_A"] > 0


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_progress_on_a_terminal_shows_reading_bytes_and_evaluating_patients(
    tmp_path: Path, jobs: str
) -> None:
    files = split_by_type(INPUTS, tmp_path / "export")
    assert any(f.name.endswith(".gz") for f in files)
    size = sum(f.stat().st_size for f in files)  # gzip inputs by their compressed size
    status, out, screen = run_on_a_pty(
        ["replay", tmp_path / "export", "--now", NOW, "--format", "json", "--jobs", jobs]
    )
    assert status == 0, screen
    lines = [orjson.loads(x) for x in out.splitlines()]  # stdout: only JSON lines, no bar
    assert b"\x1b" not in out and BAR.encode() not in out
    text = ANSI.sub(b"", screen).decode()
    assert BAR in text
    assert "reading" in text and f"{human_bytes(size)} / {human_bytes(size)}" in text
    counts = summary(text.replace("\r", "\n"))
    assert counts["patients"] == len(lines) > 1
    assert "evaluating" in text
    assert f"{len(lines)} patients, {counts['resources']:,} / {counts['resources']:,} resources" in text


def test_no_progress_and_no_summary_when_stderr_is_not_a_terminal(tmp_path: Path, extra: Path) -> None:
    """Off a terminal stderr has only what went wrong (one line each), as before; the counts go
    to the replay_counts log event, or to the summary line when asked for with --summary."""
    split_by_type(INPUTS, tmp_path / "export")
    args = ["replay", tmp_path / "export", extra, "--now", NOW, "--format", "json", "--jobs", "2"]
    done, asked = (
        subprocess.run(command(*args, *more), capture_output=True, cwd=ROOT, timeout=300)
        for more in ((), ("--summary",))
    )
    assert done.returncode == asked.returncode == 1 and done.stdout == asked.stdout
    for stream in (done.stdout, done.stderr, asked.stderr):
        assert b"\x1b" not in stream and BAR.encode() not in stream
        assert b"reading" not in stream and b"evaluating" not in stream
    err = done.stderr.decode().splitlines()
    assert len(err) == 2 and err[0].startswith(f"{extra}: line 2: invalid JSON"), err
    assert err[1] == "replay: resources naming no patient (not evaluated): 1 Condition, 1 Observation"
    assert asked.stderr.decode().splitlines() == [*err, asked.stderr.decode().splitlines()[-1]]
    assert summary(asked.stderr.decode())["errors"] == 1
