"""One replayed patient as its output line (table row or JSON), its --out Bundle and its stderr issues.

The same in the command, in every --jobs worker and in every Spark task (``redflags.spark``).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import click
import orjson

from engine.logger import get_logger
from redflags import logs
from redflags.pipeline import Pipeline
from redflags.replay.partition import (
    Evaluated,
    Render,
)
from redflags.replay.per_file import InputResult

log = get_logger("redflags.cli")
#: Engine events replay reports itself on a terminal, naming the input files (the engine cannot).
TOLD_BY_REPLAY = frozenset({"future_records_ignored"})
#: Such lines per process; past it, one line says more were left out.
MAX_TOLD = 20


def renderer(
    pipeline: Pipeline, fmt: str, out: Path | None, say: Callable[[str], None] | None = None
) -> tuple[Render, Callable[[], bool]]:
    """One patient's output line (and --out Bundle, stderr issues); the same in every --jobs worker.

    The second callable tells whether any rendered patient had an invalid element (exit 1).
    """
    invalid = False
    tell = teller(say or stderr_line)

    def render(done: Evaluated) -> bytes:
        nonlocal invalid
        invalid |= patient_issues(done, say or stderr_line)
        tell(done.sources, done.result.future)
        result = InputResult(done.sources[0], [done.result], [])
        write_bundles(result, out, pipeline)
        patient, changed = done.result, done.changes
        for alert in patient.alerts:
            log.info(
                "alert", rule=alert.rule, severity=alert.severity, patient=logs.patient_token(alert.patient)
            )
        if fmt != "json":
            shown = [f"{a.rule} ({a.severity})" for a in patient.alerts]
            shown += [f"{t.rule}: {t.change}" for t in changed]
            return orjson.dumps([", ".join(done.sources), patient.pid, "\n".join(shown) or "-"])
        line: dict[str, object] = {
            "source": done.sources[0],
            "patient": patient.pid,
            "alerts": [a.summary() for a in patient.alerts],
        }
        if len(done.sources) > 1:  # the patient's resources came from several inputs
            line["sources"] = done.sources
        if done.damaged:  # evaluated on what was read: part of these inputs could not be
            line["inputs_with_errors"] = done.damaged
        if changed:  # with --state: what this evaluation changed (raised, updated, withdrawn)
            line["changes"] = [{"rule": t.rule, "change": t.change, "tier": t.tier} for t in changed]
        return orjson.dumps(line)

    return render, lambda: invalid


def teller(say: Callable[[str], None]) -> Callable[[Sequence[str], int], None]:
    """On a terminal, one line per patient with records dated after --now, naming its files.

    The engine's ``future_records_ignored`` log cannot name them; JSON logs (not a terminal)
    keep that event as it is. At most ``MAX_TOLD`` lines per process.
    """
    told = 0
    terminal = logs.readable(sys.stderr)  # JSON logs (--log-format json) keep the event instead

    def tell(sources: Sequence[str], future: int) -> None:
        nonlocal told
        if not (future and terminal):
            return
        told += 1
        if told <= MAX_TOLD:
            named = ", ".join(sources[:3]) + (f" and {len(sources) - 3} more" if len(sources) > 3 else "")
            records = "record" if future == 1 else "records"
            say(f"{named}: {future} {records} dated after --now ignored")
        elif told == MAX_TOLD + 1:
            say("replay: more inputs have records dated after --now (not listed)")

    return tell


def stderr_line(line: str) -> None:
    click.echo(line, err=True)


def patient_issues(done: Evaluated, say: Callable[[str], None] = stderr_line) -> bool:
    """Print a patient's invalid elements (paths carry their input); True when any is an error."""
    failed = False
    for issue in done.result.issues:
        where = (
            issue.path
            if issue.path.startswith(tuple(f"{s}: " for s in done.sources))
            else f"{done.sources[0]}: {issue.path}"
        )
        if issue.severity == "error":
            say(f"{where}: {issue.message}")
            failed = True
        else:
            log.info("input_issue", path=issue.path, issue=issue.message)
    return failed


def write_bundles(result: InputResult, out: Path | None, pipeline: Pipeline) -> None:
    """--out: one transaction Bundle per alerting patient."""
    if not out:
        return
    for patient in result.patients:
        if patient.alerts:
            bundle = patient.transaction(pipeline)
            name = re.sub(
                r"[^A-Za-z0-9._-]", "_", f"{Path(result.source).stem}__{patient.pid.split('/')[-1]}"
            )
            (out / f"{name}.json").write_bytes(orjson.dumps(bundle, option=orjson.OPT_INDENT_2))
