"""Progress of a whole-data-set replay, per stage, for a person watching a terminal.

``redflags.replay.partition`` calls a :class:`ReplayProgress` at a few points (an observer: it never
decides anything), so the partition code stays free of terminal concerns and the default
:data:`NO_PROGRESS` costs nothing. Stages:

* *reading*: bytes of the inputs read so far / their total size on disk (a gzip input counts
  by compressed bytes read, the only size known before reading it);
* *evaluating*: patients evaluated, and resources evaluated / resources partitioned. The number
  of patients is only known once each is evaluated: counting distinct patients while
  partitioning would hold every patient id in memory, which the partition exists to avoid.
  With ``--jobs N`` the parent advances as each partition's worker finishes.

:class:`TerminalProgress` draws them with ``rich`` on stderr only (never on stdout, where the
JSON lines go); the command uses it only when stderr is a terminal (or ``--progress``).
:func:`summary_counts` / :func:`summary_line` are the replay's closing report (fixed keys, for
people and scripts), shared by the stderr line and the ``replay_counts`` log event.
"""

from __future__ import annotations

import gzip
import io
import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from threading import Lock
from types import TracebackType
from typing import TYPE_CHECKING, BinaryIO

if TYPE_CHECKING:  # rich is imported when a terminal shows the progress, not by every replay
    from rich.console import Console
    from rich.progress import TaskID

#: Read size of a counted input: one progress tick per MiB, not per line.
_CHUNK = 1024 * 1024


class ReplayProgress:
    """No-op observer of a replay; subclasses show it. ``evaluated`` may come from another thread."""

    def reading(self, files: Iterable[Path]) -> None:
        """Partitioning starts over these inputs."""

    def tick_read(self, nbytes: int) -> None:
        """``nbytes`` more of an input's file were read."""

    def evaluating(self, resources: int) -> None:
        """Partitioning is done: ``resources`` were written to partitions."""

    def evaluated(self, patients: int, resources: int) -> None:
        """``patients`` with ``resources`` between them were evaluated (a patient, or a partition)."""

    def done(self) -> None:
        """Every partition is evaluated; the result lines come next."""


NO_PROGRESS = ReplayProgress()


class _Counted(io.FileIO):
    """A file that reports how many bytes are read from it (read through a large buffer)."""

    def __init__(self, path: Path, tick: Callable[[int], None]) -> None:
        super().__init__(path, "rb")
        self._tick = tick

    def readinto(self, buffer: bytearray | memoryview) -> int | None:  # type: ignore[override]
        n = super().readinto(buffer)
        if n:
            self._tick(n)
        return n

    def readall(self) -> bytes:  # a whole .json read at once bypasses readinto
        data = super().readall()
        self._tick(len(data))
        return data


class _CountedGzip(gzip.GzipFile):
    """A gzip stream over a counted file; closing it closes that file too."""

    def __init__(self, raw: io.BufferedReader) -> None:
        super().__init__(fileobj=raw, mode="rb")
        self._raw = raw

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._raw.close()


def counted_open(path: Path, tick: Callable[[int], None]) -> BinaryIO:
    """``path`` opened for reading (gzip decompressed), calling ``tick`` with the file bytes read."""
    raw = io.BufferedReader(_Counted(path, tick), buffer_size=_CHUNK)
    if not path.name.endswith(".gz"):
        return raw  # type: ignore[return-value]
    try:
        return _CountedGzip(raw)  # type: ignore[return-value]
    except BaseException:
        raw.close()
        raise


def file_bytes(files: Iterable[Path]) -> int:
    """Total size on disk (what the reading stage counts up to); unreadable files count 0."""
    total = 0
    for path in files:
        try:
            total += os.stat(path).st_size
        except OSError:
            pass
    return total


def human_bytes(n: float) -> str:
    """1,023 B, 1.5 KiB, 12.3 MiB, 1.2 GiB: the unit people read sizes in."""
    if n < 1024:
        return f"{int(n):,} B"
    for unit in ("KiB", "MiB", "GiB"):
        n /= 1024
        if n < 1024 or unit == "GiB":
            break
    return f"{n:,.1f} {unit}"


class TerminalProgress(ReplayProgress):
    """One line per stage on stderr (``rich``), removed when the replay ends.

    Use as a context manager around the replay; the final figures of each stage are drawn when
    the stage ends (and on exit), so even a replay faster than the refresh rate shows them once.
    """

    def __init__(self, console: Console | None = None) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        self._bar = Progress(
            TextColumn("{task.description:<10}"),
            BarColumn(),
            TextColumn("{task.fields[detail]}"),
            TimeRemainingColumn(),
            console=console or Console(stderr=True),
            transient=True,
            redirect_stdout=False,  # stdout carries the result lines: never touched
        )
        self._lock = Lock()
        self._read: TaskID | None = None
        self._read_total = 0
        self._read_done = 0
        self._eval: TaskID | None = None
        self._patients = 0
        self._resources = 0
        self._resources_total = 0
        self._stopped = False

    def __enter__(self) -> TerminalProgress:
        self._bar.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.done()

    def done(self) -> None:
        """Draw the final figures and remove the display: result lines may go to the same terminal."""
        if not self._stopped:
            self._stopped = True
            self._bar.stop()

    def reading(self, files: Iterable[Path]) -> None:
        self._read_total = file_bytes(files)
        self._read = self._bar.add_task("reading", total=self._read_total or None, detail=self._read_detail())

    def tick_read(self, nbytes: int) -> None:
        self._read_done += nbytes
        if self._read is not None:
            self._bar.update(self._read, completed=self._read_done, detail=self._read_detail())

    def _read_detail(self) -> str:
        return f"{human_bytes(self._read_done)} / {human_bytes(self._read_total)}"

    def evaluating(self, resources: int) -> None:
        self._resources_total = resources
        self._eval = self._bar.add_task("evaluating", total=resources or None, detail=self._eval_detail())
        self._bar.refresh()  # the reading stage's final figures, drawn once however fast it was

    def evaluated(self, patients: int, resources: int) -> None:
        with self._lock:  # --jobs: called from the worker pool's thread
            self._patients += patients
            self._resources += resources
            if self._eval is not None:
                self._bar.update(self._eval, completed=self._resources, detail=self._eval_detail())

    def message(self, line: str) -> None:
        """One stderr line above the display (as is: no markup, no inserted line breaks); the
        display is redrawn below it. Thread-safe (rich's console lock)."""
        from rich.text import Text

        self._bar.console.print(Text(line), soft_wrap=True)

    def _eval_detail(self) -> str:
        return f"{self._patients:,} patients, {self._resources:,} / {self._resources_total:,} resources"


#: Alert tiers always printed in the summary (0 included), so its keys do not depend on the data.
TIERS = ("A", "B", "C")


def summary_counts(
    *,
    inputs: int,
    patients: int,
    resources: int,
    without_patient: int,
    alerts: Mapping[str, int],
    errors: int,
) -> dict[str, int]:
    """The replay's counts in a fixed order: the summary line and the ``replay_counts`` log event."""
    counts = {
        "inputs": inputs,
        "patients": patients,
        "resources": resources,
        "without_patient": without_patient,
        "alerts": sum(alerts.values()),
    }
    for tier in (*TIERS, *sorted(set(alerts) - set(TIERS))):
        counts[f"tier_{tier}"] = alerts.get(tier, 0)
    counts["errors"] = errors
    return counts


def summary_line(counts: Mapping[str, int]) -> str:
    """``replay summary: inputs=3 patients=52 ...``: one line of ``key=value`` words (split on spaces)."""
    return "replay summary: " + " ".join(f"{key}={value}" for key, value in counts.items())
