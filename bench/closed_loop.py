"""What a closed-loop load test can show: Little's law and the CPU each call costs, by process.

``bench/service.py`` runs C clients that each send the next call as soon as the last is
answered (a closed loop). Then the mean latency IS ``C / throughput`` (Little's law), and on a
machine whose cores are all busy the throughput is ``cores / CPU per call`` (every process's CPU:
the HTTP process, the engine processes, the load generator). So the latency a target asks for
is a bound on the total CPU of one call, whatever the service does with its time; this module
computes that bound so the benchmark can print it next to what was measured.

CPU per process is read from ``/proc/<pid>/stat`` (Linux); elsewhere the figures are omitted.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU of process ``pid`` so far (None: not readable here)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / _TICK  # utime, stime (fields 14 and 15)


def children(pid: int) -> list[int]:
    """The child processes of ``pid`` (Linux), e.g. a ``serve``'s engine processes."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            found += [int(child) for child in task.read_text().split()]
        except OSError:
            continue
    return found


@dataclass(frozen=True)
class Floor:
    """Little's law applied to one closed-loop run (times in ms)."""

    clients: int
    cores: int
    rate: float  # calls per second
    cpu_ms: float  # total CPU of one call, all processes together
    inproc_ms: float  # the in-process work of one call (what the target is a multiple of)
    target: float  # e.g. 6: p99 <= 6x in-process

    @property
    def mean_ms(self) -> float:
        """Mean latency of a closed loop: clients / throughput (the p50 is close to it)."""
        return 1000.0 * self.clients / self.rate

    @property
    def busy_floor_ms(self) -> float:
        """Mean latency once every core is busy: clients x CPU per call / cores."""
        return self.clients * self.cpu_ms / self.cores

    @property
    def zero_overhead_ms(self) -> float:
        """The same floor if a call cost only its in-process work (no HTTP, pipes, client)."""
        return self.clients * self.inproc_ms / self.cores

    @property
    def cpu_budget_ms(self) -> float:
        """Total CPU per call at which the mean latency alone reaches the target (p99 >= mean)."""
        return self.target * self.inproc_ms * self.cores / self.clients

    def lines(self) -> list[str]:
        return [
            f"Little's law: mean latency = {self.clients} clients / {self.rate:.0f} calls/s = "
            f"{self.mean_ms:.1f} ms; with every core busy >= {self.clients} x {self.cpu_ms:.2f} ms "
            f"CPU per call / {self.cores} cores = {self.busy_floor_ms:.1f} ms",
            f"p99 <= {self.target:g}x in-process ({self.target * self.inproc_ms:.1f} ms) needs at most "
            f"{self.cpu_budget_ms:.2f} ms CPU per call, all processes, even with p99 = mean "
            f"(now {self.cpu_ms:.2f}); with no overhead at all (in-process {self.inproc_ms:.2f} ms "
            f"per call) the mean is {self.zero_overhead_ms:.1f} ms = "
            f"{self.zero_overhead_ms / self.inproc_ms:.1f}x in-process",
        ]
