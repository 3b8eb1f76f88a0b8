"""The external partition by patient: bounded partitions, order independent of their number,
temporary files removed on success, failure and Ctrl-C, a full disk as one clear line."""

from __future__ import annotations

import errno
import signal
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner

from bench.synthetic import generate
from fhir_adapters.intake import read_path
from fhir_adapters.times import parse_now
from redflags.cli import main
from redflags.pipeline import Pipeline
from redflags.replay import partition
from redflags.replay.partition import BATCH, Evaluated, Stats, plan, replay_all, temp_dirs

from .sigint_helpers import assert_stopped_cleanly, interrupt, make_big, spilling

NOW = "2025-03-10T12:00:00Z"


def to_ndjson(folder: Path, target: Path) -> int:
    """The corpus's Bundles as one NDJSON; returns the largest patient's resource count."""
    largest = 0
    with target.open("wb") as out:
        for path in sorted(folder.glob("*.json")):
            for members in read_path(path).patients.values():
                largest = max(largest, len(members.entries))
                for entry in members.entries:
                    out.write(orjson.dumps(entry.resource) + b"\n")
    return largest


@pytest.fixture(scope="module")
def ndjson(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    folder = tmp_path_factory.mktemp("corpus")
    generate(folder, 200, parse_now(NOW), per_file=50)
    return folder / "all.ndjson", to_ndjson(folder, folder / "all.ndjson")


def render(done: Evaluated) -> bytes:
    return orjson.dumps([done.result.pid, [a.summary() for a in done.result.alerts]])


def test_partitions_are_bounded_and_the_output_does_not_depend_on_their_number(
    ndjson: tuple[Path, int], pipeline: Pipeline, tmp_path: Path
) -> None:
    path, largest = ndjson
    now = parse_now(NOW)
    whole, parted = Stats(), Stats()
    one = list(replay_all([path], pipeline, now, render, pytest.fail, tmp_dir=tmp_path, stats=whole))
    size = path.stat().st_size
    target = size // 20 + 1
    many = list(
        replay_all(
            [path], pipeline, now, render, pytest.fail, tmp_dir=tmp_path, target_bytes=target, stats=parted
        )
    )
    assert whole.partitions == 1 and parted.partitions == plan(size, target) == 20
    assert many == one and len(one) == 200 == parted.patients  # same lines, same order
    # What is held at once: one partition's records, one batch of parsed patients.
    spilled = sum(parted.partition_bytes)
    assert max(parted.partition_bytes) <= 2 * spilled / parted.partitions
    assert parted.peak_records <= whole.peak_records / 5
    assert parted.peak_parsed <= BATCH * largest
    # one partition holds every record: the patients' own and each one's Encounter (context, not counted)
    assert whole.resources == parted.resources == whole.peak_records - parted.patients
    assert temp_dirs(tmp_path) == []


def test_output_order_is_input_order_of_each_patients_first_resource(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    rows = [
        {
            "resourceType": "Observation",
            "id": f"o{n}",
            "status": "final",
            "code": {"text": "x"},
            "subject": {"reference": f"Patient/{pid}"},
        }
        for n, pid in enumerate(["zed", "alpha", "zed", "mid", "alpha"])
    ]
    path = tmp_path / "Observation.ndjson"
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    for target in (10**9, 1):  # one partition, or one per ~resource
        out = replay_all(
            [path], pipeline, parse_now(NOW), render, pytest.fail, tmp_dir=tmp_path, target_bytes=target
        )
        assert [orjson.loads(line)[0] for line in out] == ["Patient/zed", "Patient/alpha", "Patient/mid"]


class FullDisk:
    def write(self, _data: bytes) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    def close(self) -> None:
        pass


def test_full_disk_is_one_clear_line_and_leaves_nothing(
    ndjson: tuple[Path, int], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(partition.Spill, "_open", lambda self, path: FullDisk())
    result = CliRunner().invoke(
        main, ["replay", str(ndjson[0]), "--now", NOW, "--format", "json", "--tmp-dir", str(tmp_path)]
    )
    assert result.exit_code == 1
    errors = result.stderr.strip().splitlines()
    assert errors == [
        f"replay: no space left for temporary files under {tmp_path} (choose another with --tmp-dir)"
    ]
    assert result.stdout == "" and temp_dirs(tmp_path) == []


def test_temporary_files_removed_after_success(ndjson: tuple[Path, int], tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main, ["replay", str(ndjson[0]), "--now", NOW, "--format", "json", "--tmp-dir", str(tmp_path)]
    )
    assert result.exit_code == 0, result.stderr
    assert len(result.stdout.splitlines()) == 200 and temp_dirs(tmp_path) == []


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_big(tmp_path_factory)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupted_replay_removes_its_temporary_files(
    big: Path, tmp_path: Path, sig: signal.Signals
) -> None:
    """Signalled once its partition files exist: stopped (non-zero, not every line) or, if the
    signal came after the work was done, 0 with every line; no folder, no process left."""
    assert_stopped_cleanly(interrupt(big, tmp_path, spilling, sig), tmp_path)
