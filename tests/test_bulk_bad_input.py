"""Bad parts of an export are one stderr line each, naming the file (and line); the rest is
evaluated, the exit status is 1, and a patient read only in part says which inputs failed."""

from __future__ import annotations

import errno
import gzip
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner

from bench.synthetic import CES
from redflags.cli import main
from redflags.replay import partition

from .bulk_helpers import NOW, replay, v01_resources


def lines_of(rows: list[dict]) -> bytes:
    return b"".join(orjson.dumps(r) + b"\n" for r in rows)


def test_each_bad_input_is_one_line_and_the_rest_is_evaluated(tmp_path: Path) -> None:
    pid, resources = v01_resources()
    patient = [r for r in resources if r["resourceType"] == "Patient"]
    rest = [r for r in resources if r["resourceType"] != "Patient"]
    export = tmp_path / "export"
    export.mkdir()
    (export / "Patient.ndjson").write_bytes(lines_of(patient))
    # A line that is not JSON between good lines: line 2 named, lines 1 and 3 read.
    (export / "Observation.ndjson").write_bytes(orjson.dumps(rest[0]) + b"\n{not json\n" + lines_of(rest[1:]))
    # A gzip cut in half: the lines before the cut are read.
    other = [{**r, "id": f"g{n}", "subject": {"reference": "Patient/other"}} for n, r in enumerate(rest * 40)]
    whole = gzip.compress(lines_of([{"resourceType": "Patient", "id": "other"}, *other]))
    (export / "Other.ndjson.gz").write_bytes(whole[: len(whole) // 2])
    manifest = {
        "output": [
            {"type": "Patient", "url": "Patient.ndjson"},
            {"type": "Condition", "url": "Condition.ndjson"},
        ]
    }
    (tmp_path / "manifest.json").write_bytes(orjson.dumps(manifest))
    (tmp_path / "Patient.ndjson").write_bytes(lines_of(patient))

    rows, done = replay(
        export / "Observation.ndjson",
        export / "Patient.ndjson",
        export / "Other.ndjson.gz",
        tmp_path / "manifest.json",
    )
    assert done.returncode == 1
    errors = done.stderr.strip().splitlines()
    assert len(errors) == 3, errors
    listed = f"(listed in the manifest {tmp_path / 'manifest.json'})"
    assert errors[0] == f"{tmp_path / 'Condition.ndjson'}: no such file {listed}"
    assert errors[1].startswith(f"{export / 'Observation.ndjson'}: line 2: invalid JSON")
    assert errors[2].startswith(f"{export / 'Other.ndjson.gz'}: unreadable gzip after line ")
    by_pid = {row["patient"]: row for row in rows}
    assert set(by_pid) == {pid, "Patient/other"}
    v01 = by_pid[pid]
    assert [a["rule"] for a in v01["alerts"]] == [CES]  # evaluated on what was read
    assert v01["inputs_with_errors"] == [str(export / "Observation.ndjson")]
    assert by_pid["Patient/other"]["inputs_with_errors"] == [str(export / "Other.ndjson.gz")]


def test_a_clean_replay_has_no_error_field(tmp_path: Path) -> None:
    _pid, resources = v01_resources()
    (tmp_path / "All.ndjson").write_bytes(lines_of(resources))
    rows, done = replay(tmp_path / "All.ndjson")
    assert done.returncode == 0 and done.stderr == ""
    assert "inputs_with_errors" not in rows[0]


def test_unreadable_file_is_one_line_and_the_others_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pid, resources = v01_resources()
    (tmp_path / "All.ndjson").write_bytes(lines_of(resources))
    locked = tmp_path / "Locked.ndjson"
    locked.write_bytes(lines_of(resources))
    real_open = partition._open

    def denied(path: Path):  # the suite may run as root, for whom chmod 000 still reads
        if path == locked:
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path)

    monkeypatch.setattr(partition, "_open", denied)
    result = CliRunner().invoke(main, ["replay", str(tmp_path), "--now", NOW, "--format", "json"])
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [f"{locked}: cannot read: Permission denied"]
    assert [orjson.loads(x)["patient"] for x in result.stdout.splitlines()] == [pid]
