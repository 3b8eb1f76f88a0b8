"""The floor ``bench/service.py`` prints: Little's law for a closed loop, and CPU read per process."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from bench.closed_loop import Floor, children, cpu_seconds


def test_the_ratio_target_is_a_bound_on_the_cpu_of_one_call() -> None:
    floor = Floor(clients=8, cores=2, rate=250.0, cpu_ms=8.0, inproc_ms=3.8, target=6.0)
    assert floor.mean_ms == pytest.approx(32.0)  # 8 clients / 250 calls/s
    assert floor.busy_floor_ms == pytest.approx(32.0)  # 8 x 8 ms / 2 cores: the cores were the limit
    assert floor.cpu_budget_ms == pytest.approx(5.7)  # 6 x 3.8 ms x 2 cores / 8 clients
    assert floor.zero_overhead_ms / floor.inproc_ms == pytest.approx(4.0)  # clients / cores
    text = "\n".join(floor.lines())
    assert "5.70 ms CPU per call" in text and "4.0x in-process" in text


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc")
def test_cpu_is_read_per_process_and_children_are_found() -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", "import sys; sum(range(3_000_000)); sys.stdin.read()"],
        stdin=subprocess.PIPE,
    )
    try:
        assert child.pid in children(os.getpid())
        mine = cpu_seconds(os.getpid())
        assert mine is not None and mine > 0
        assert cpu_seconds(child.pid) is not None
    finally:
        child.communicate(b"")
    assert cpu_seconds(child.pid) is None  # gone: no figure rather than a wrong one
