"""``redflags replay`` of one file starts without what only other runs need (issue 15 item 6):
the state stores and SQLite store modules (--state), the two-configuration comparison
(--compare), the corpus report (--expect), the TOML reader (--config); and without cyclic
garbage collection while the command is imported and its pipeline built (long-lived objects
only: the collector found nothing there). Those runs still get what they need."""

from __future__ import annotations

import gc
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner

from redflags.cli import main as cli_main
from redflags.cli.startup_gc import collection_paused

ROOT = Path(__file__).resolve().parents[1]
ONE_FILE = ROOT / "fixtures" / "hypokalemic_or_electrolyte_weakness" / "tierB-potassium-6.2-weakness.json"
NOW = ("--now", "2025-03-10T12:00:00Z")
ONLY_OTHER_RUNS = ("redflags.state.stores", "redflags.state.sqlite_store", "redflags.compare", "tomllib")
ONLY_EXPECT = ("redflags.replay.corpus",)

#: runs the CLI in this process; on stderr: the modules of ``watched`` it loaded, the cyclic
#: collections run while the replay command was imported or its pipeline built, and whether
#: the collector is on at the end; at interpreter exit, whether it was frozen
_PROBE = """
import atexit, gc, sys
atexit.register(lambda: print("FROZEN", gc.get_freeze_count() > 0, file=sys.stderr))  # runs last
watched = {watched!r}
during = []

def _count(phase, info):
    if phase != "start":
        return
    frame = sys._getframe(1)
    while frame is not None:
        code = frame.f_code
        if code.co_name == "site_pipeline" or (
            code.co_name == "<module>" and code.co_filename.endswith("replay.py")
        ):
            during.append(code.co_name)
            return
        frame = frame.f_back

gc.callbacks.append(_count)
sys.argv = ["redflags", *sys.argv[1:]]
from redflags.cli import main
try:
    main()
except SystemExit as exit:
    code = exit.code
print("LOADED", *sorted(m for m in watched if m in sys.modules), file=sys.stderr)
print("COLLECTIONS", len(during), "ENABLED", gc.isenabled(), file=sys.stderr)
sys.exit(code)
"""


def _run(*args: str) -> tuple[int, list[str], int, bool, bytes]:
    return _run_frozen(*args)[:5]


def _run_frozen(*args: str) -> tuple[int, list[str], int, bool, bytes, bool]:
    probe = _PROBE.format(watched=(*ONLY_OTHER_RUNS, *ONLY_EXPECT))
    run = subprocess.run([sys.executable, "-c", probe, *args], capture_output=True, cwd=ROOT, check=False)
    lines = run.stderr.decode().splitlines()
    loaded = next(x for x in lines if x.startswith("LOADED")).split()[1:]
    _, count, _, enabled = next(x for x in lines if x.startswith("COLLECTIONS")).split()
    frozen = next(x for x in lines if x.startswith("FROZEN")).split()[1] == "True"
    return run.returncode, loaded, int(count), enabled == "True", run.stdout, frozen


def test_a_one_file_replay_loads_no_store_comparison_corpus_or_toml_module() -> None:
    code, loaded, _, _, out = _run("replay", str(ONE_FILE), *NOW, "--format", "json")
    assert code == 0
    assert loaded == []
    alerts = [a["rule"] for line in out.splitlines() for a in orjson.loads(line)["alerts"]]
    assert alerts == ["hypokalemic_or_electrolyte_weakness"]


def test_a_one_file_replay_runs_no_collection_while_it_starts_and_leaves_the_collector_on() -> None:
    code, _, collections, enabled, _ = _run("replay", str(ONE_FILE), *NOW, "--format", "json")
    assert code == 0
    assert collections == 0
    assert enabled


def test_the_replay_process_freezes_the_collector_at_exit_and_writes_everything(tmp_path: Path) -> None:
    out, state = tmp_path / "out", tmp_path / "state.db"
    args = ("replay", str(ONE_FILE), *NOW, "--format", "json", "--out", str(out), "--state", str(state))
    code, _, _, _, stdout, frozen = _run_frozen(*args)
    assert code == 0
    assert frozen
    assert [orjson.loads(p.read_bytes())["type"] for p in out.iterdir()] == ["transaction"]
    with closing(sqlite3.connect(state)) as db:
        assert db.execute("SELECT count(*) FROM active_alert").fetchone() == (1,)
    assert b"hypokalemic_or_electrolyte_weakness" in stdout


def test_a_replay_run_in_process_leaves_the_collector_running_and_unfrozen() -> None:
    gc.unfreeze()  # nothing frozen to start with: an earlier test may have frozen this process's heap
    result = CliRunner().invoke(cli_main, ["replay", str(ONE_FILE), *NOW, "--format", "json"])
    assert result.exit_code == 0, result.output
    assert gc.isenabled()
    assert gc.get_freeze_count() == 0


def test_expect_still_prints_its_per_rule_table(tmp_path: Path) -> None:
    code, loaded, _, enabled, out = _run("replay", str(ONE_FILE), "--expect", "--format", "json")
    assert code == 0, out
    assert loaded == list(ONLY_EXPECT)
    report = orjson.loads(out)
    assert report["ok"]
    by_rule = {r["rule"]: r for r in report["rules"]}
    assert by_rule["hypokalemic_or_electrolyte_weakness"]["tp"] == 1
    assert enabled


def test_state_opens_its_store_and_a_config_file_is_read(tmp_path: Path) -> None:
    config = tmp_path / "site.toml"
    config.write_text("", encoding="utf-8")
    state = tmp_path / "state.db"
    args = ("replay", str(ONE_FILE), *NOW, "--format", "json", "--state", str(state), "--config", str(config))
    code, loaded, _, _, out = _run(*args)
    assert code == 0
    assert {"redflags.state.stores", "redflags.state.sqlite_store", "tomllib"} <= set(loaded)
    assert state.is_file()
    assert out.strip()


def test_a_missing_store_is_still_one_line_and_exit_2(tmp_path: Path) -> None:
    missing = tmp_path / "none.db"
    run = subprocess.run(
        [sys.executable, "-m", "redflags.cli", "history", "tenants", "--state", str(missing)],
        capture_output=True,
        cwd=ROOT,
        check=False,
    )
    assert run.returncode == 2, run.stderr
    assert str(missing) in run.stderr.decode()


def test_the_pause_restores_the_collector_as_it_was_even_on_an_error() -> None:
    assert gc.isenabled()
    with pytest.raises(RuntimeError), collection_paused():
        assert not gc.isenabled()
        raise RuntimeError("boom")
    assert gc.isenabled()
    gc.disable()
    try:
        with collection_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()  # a caller that had it off keeps it off
    finally:
        gc.enable()
