"""``python -m bench.replay --startup N --startup-vs CHECKOUT``: both trees started alternately
in one run, the ratio printed (no timing asserted here: figures go in bench/ as ratios)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _bench(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bench.replay", *args], capture_output=True, text=True, cwd=ROOT, check=False
    )


def test_a_folder_that_is_no_checkout_is_one_line_and_exit_2(tmp_path: Path) -> None:
    run = _bench("--startup", "1", "--startup-vs", str(tmp_path))
    assert run.returncode == 2
    assert run.stderr.strip().splitlines()[-1].endswith(f"--startup-vs {tmp_path}: not a redflags checkout")


def test_this_tree_against_itself_prints_both_medians_and_the_ratio() -> None:
    run = _bench("--startup", "1", "--startup-vs", str(ROOT))
    assert run.returncode in (0, 1), run.stderr  # 1: the fixed 30fb331 figure was missed (a busy machine)
    line = next(x for x in run.stdout.splitlines() if x.startswith("start-up, runs alternating"))
    assert "this tree " in line and f"{ROOT} " in line and "x faster" in line
