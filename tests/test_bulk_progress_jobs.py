"""`replay --jobs N` reports through the parent: workers' stderr lines come back and the parent
prints them in partition order (so above a terminal display, with the text and order of --jobs 1),
and evaluation progress arrives per batch of patients, not once per partition."""

from __future__ import annotations

import subprocess
import sys
from functools import partial
from pathlib import Path
from threading import Lock

import orjson
import pytest

from bench.synthetic import generate
from fhir_adapters.times import parse_now
from redflags.cli.options import site_pipeline as _pipeline
from redflags.cli.replay import _worker_setup
from redflags.replay.partition import BATCH, Stats, replay_all
from redflags.replay.progress import NO_PROGRESS, ReplayProgress
from redflags.replay.render import renderer as _renderer

from .bulk_helpers import NOW
from .conftest import ROOT
from .pty_helpers import ANSI, BAR, command, run_on_a_pty

SETUP = partial(_worker_setup, None, False, (), 0, "json", None, "warning", "progress-jobs-test")


def to_stderr(line: str) -> None:
    """The CLI's report: one line on (the current) stderr."""
    print(line, file=sys.stderr)


def replay(
    paths: list[Path], jobs: int, tmp: Path, target: int, progress: ReplayProgress = NO_PROGRESS
) -> tuple[list[bytes], Stats]:
    pipeline = _pipeline(None, strict=False, valueset_dirs=())
    render, _invalid = _renderer(pipeline, "json", None)
    stats = Stats()
    lines = replay_all(
        paths,
        pipeline,
        parse_now(NOW),
        render,
        to_stderr,
        tmp_dir=tmp,
        target_bytes=target,
        stats=stats,
        jobs=jobs,
        setup=SETUP,
        progress=progress,
    )
    return list(lines), stats


def with_bad_elements(folder: Path, patients: int) -> Path:
    """A synthetic bundle in which every 9th Observation has an invalid status (one stderr line each)."""
    folder.mkdir()
    generate(folder, patients, parse_now(NOW), per_file=patients)
    [path] = folder.glob("*.json")
    bundle = orjson.loads(path.read_bytes())
    observations = [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Observation"]
    for resource in observations[::9]:
        resource["status"] = "done"
    path.write_bytes(orjson.dumps(bundle))
    return path


def test_jobs_2_prints_worker_lines_through_the_parent_in_the_order_of_jobs_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    corpus = with_bad_elements(tmp_path / "corpus", 200)
    # a small target: the same partitions in both runs, invalid elements in every one of them
    out1, stats1 = replay([corpus], 1, tmp_path, corpus.stat().st_size // 12)
    one = capsys.readouterr().err.splitlines()
    out2, stats2 = replay([corpus], 2, tmp_path, corpus.stat().st_size // 12)
    two = capsys.readouterr().err.splitlines()
    assert out2 == out1
    assert stats2.partitions == stats1.partitions >= 12
    assert len(one) >= 2 * stats1.partitions, one
    # before: each worker printed to the fd 2 it inherited, past the parent (and its display)
    assert two == one
    assert stats2.errors == stats1.errors


class Recorder(ReplayProgress):
    def __init__(self) -> None:
        self.events: list[tuple[int, int]] = []
        self.lock = Lock()

    def evaluated(self, patients: int, resources: int) -> None:
        with self.lock:
            self.events.append((patients, resources))


def test_jobs_2_progress_comes_per_batch_of_patients_not_per_partition(tmp_path: Path) -> None:
    single = tmp_path / "single"
    single.mkdir()
    patients = 8 * BATCH
    generate(single, patients, parse_now(NOW), per_file=patients)
    recorder = Recorder()
    _out, stats = replay([single], 2, tmp_path, 1 << 30, recorder)
    assert stats.partitions == 8  # 4 per job: about BATCH patients each
    assert stats.patients == patients
    assert sum(p for p, _r in recorder.events) == patients
    assert sum(r for _p, r in recorder.events) == stats.resources
    # before: one event per partition; now one per batch of BATCH patients (bounded) and per end
    assert stats.partitions < len(recorder.events) <= patients // BATCH + 2 * stats.partitions


def test_jobs_2_progress_on_a_large_partition_moves_before_it_ends(tmp_path: Path) -> None:
    """Several events within one partition (about 3 batches each here)."""
    single = tmp_path / "single"
    single.mkdir()
    patients = 24 * BATCH
    generate(single, patients, parse_now(NOW), per_file=patients)
    recorder = Recorder()
    _out, stats = replay([single], 2, tmp_path, 1 << 30, recorder)
    assert len(recorder.events) >= 2 * stats.partitions
    assert max(p for p, _r in recorder.events) <= BATCH + 1


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_on_a_terminal_error_lines_are_whole_lines_above_the_display(tmp_path: Path, jobs: str) -> None:
    """On a pty every error line (a worker's too) is a line of its own, never inside a bar line,
    and the lines are those printed off a terminal."""
    corpus = with_bad_elements(tmp_path / "corpus", 200)
    args = ["replay", corpus, "--now", NOW, "--format", "json"]
    plain = subprocess.run(command(*args), capture_output=True, cwd=ROOT, timeout=300, text=True)
    expected = [x for x in plain.stderr.splitlines() if not x.startswith("{")]
    assert len(expected) >= 10
    status, out, screen = run_on_a_pty([*args, "--jobs", jobs, "--progress"])
    assert status == plain.returncode == 1
    assert out.decode() == plain.stdout
    rows = ANSI.sub(b"", screen).decode().replace("\r\n", "\n").replace("\r", "\n").splitlines()
    assert any(BAR in row for row in rows), "the display was drawn"
    shown = [row.rstrip() for row in rows if "Bundle.entry[" in row]
    assert not [row for row in shown if BAR in row or "evaluating" in row], shown
    # each line whole (a worker's JSON log lines still go to its own fd 2: not compared here)
    text = "\n".join(rows)
    assert [line for line in expected if line not in text] == []
    assert len(shown) >= len(expected)
