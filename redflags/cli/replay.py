"""``redflags replay``: FHIR files, folders and Bulk Data manifests through the rules, offline."""

from __future__ import annotations

import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager, nullcontext
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import orjson

from engine.logger import bind_contextvars, get_logger
from fhir_adapters.times import iso
from redflags import logs
from redflags.cli import root_log_level
from redflags.cli.compare import compare_option, replay_compare
from redflags.cli.options import config_option, now_option, site_pipeline, wide_console
from redflags.cli.startup_gc import collection_paused, no_collection_at_exit
from redflags.cli.state_options import (
    fhir_options,
    narrowed,
    open_state,
    outbox_line,
    state_option,
    tenant_option,
)
from redflags.pipeline import DEFAULT_MAX_FACTS, Pipeline
from redflags.replay.partition import (
    Render,
    SpillError,
    Stats,
    WorkerError,
    WorkerSetup,
    jobs_for,
    replay_all,
)
from redflags.replay.per_file import expand, without_expectations
from redflags.replay.progress import NO_PROGRESS, TerminalProgress, summary_counts, summary_line
from redflags.replay.render import TOLD_BY_REPLAY, renderer, stderr_line, teller, write_bundles
from redflags.state.model import StateStore
from redflags.stateful import Memory

if TYPE_CHECKING:  # rich and the delivery (requests) are imported when used, not by every replay
    from rich.table import Table

    from redflags.delivery.target import FhirTarget
    from redflags.replay.corpus import Report

log = get_logger("redflags.cli")


@click.command("replay")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--now",
    "now_text",
    metavar="ISO-8601",
    help="Evaluation time (default: the current time; with --expect, a file's expected 'now' wins).",
)
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    help="Write each patient's transaction Bundle of Flags and CarePlans here.",
)
@click.option("--strict", is_flag=True, help="Validate Patient/Condition/Observation fully (fhir.resources).")
@click.option(
    "--valueset-dir",
    "valueset_dirs",
    multiple=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Folder of site ValueSet files adding local codes.",
)
@click.option(
    "--progress/--no-progress", default=None, help="Progress bar (default: when stderr is a terminal)."
)
@click.option(
    "--expect",
    is_flag=True,
    help="Compare with each file's NAME.expected.json (evaluated at its 'now') and print a per-rule "
    "TP/FP/FN/wrong-tier/TN table and every miss, instead of the alerts.",
)
@state_option()
@fhir_options
@click.option(
    "--retention-days",
    type=click.IntRange(1),
    help="With --state: days of history kept (default: the longest rule window plus 30 days).",
)
@config_option()
@compare_option()
@tenant_option(what="replayed into (with --state: pruned at --now; only its outbox is sent)")
@click.option(
    "--max-facts-per-patient",
    type=click.IntRange(1),
    default=DEFAULT_MAX_FACTS,
    show_default=True,
    help="Facts per patient handed to the engine (history included); over it the most recent are "
    "kept and the patient is named on stderr (exit 1).",
)
@click.option(
    "--tmp-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where the replay partitions resources by patient (default: the system's temporary folder); "
    "its private folder there is removed on success, error and Ctrl-C.",
)
@click.option(
    "--summary/--no-summary",
    default=None,
    help="One 'replay summary: key=value ...' line on stderr at the end (default: when stderr is a "
    "terminal and logs are not JSON); the same counts are logged as replay_counts.",
)
@click.option(
    "--jobs",
    type=click.IntRange(0),
    default=1,
    show_default=True,
    help="Processes evaluating partitions (0: one per core); the output is the same as with 1. "
    "Not with --state; ignored with --expect (each file on its own).",
)
@click.option(
    "--executor",
    type=click.Choice(["local", "spark"]),
    default="local",
    show_default=True,
    help="spark: evaluate on Apache Spark (pip install 'redflags[spark]'); the same lines as local. "
    "Not with --state, --expect, --out.",
)
@click.option("--spark-master", default="local[*]", show_default=True, help="With --executor spark.")
def replay_command(
    paths: tuple[Path, ...],
    now_text: str | None,
    fmt: str,
    out: Path | None,
    strict: bool,
    valueset_dirs: tuple[Path, ...],
    progress: bool | None,
    expect: bool,
    state_path: Path | None,
    fhir_server: str | None,
    fhir_token: str | None,
    fhir_smart: Path | None,
    fhir_timeout: float,
    delivery_wait: float,
    retention_days: int | None,
    config_path: Path | None,
    tenant: str,
    max_facts_per_patient: int,
    tmp_dir: Path | None,
    summary: bool | None,
    jobs: int,
    executor: str = "local",
    spark_master: str = "local[*]",
    compare_path: Path | None = None,
) -> None:
    """Replay FHIR files, folders and Bulk Data manifests (.json, .ndjson, .json.gz, .ndjson.gz).

    All inputs form one data set: each patient is evaluated once with its resources from every
    file, and printed once, in the input order of its first resource. With --expect each file
    is compared on its own with its NAME.expected.json.

    Exit status: 0 when every input was read (and, with --expect, every expectation met);
    1 when any input or expected file could not be read, an element was invalid, or (with
    --expect) any alert or patient differs from the expected file. Files without an expected
    file are listed as "no expectation" and do not change the status, unless no input had one
    ("no expectations found", exit 1). A file named NAME.expected.json is skipped with a note.

    With --state the replay has memory: each patient's facts are kept between runs, alerts are
    tracked (raised, updated, withdrawn) and their Flags and CarePlans queued in the outbox;
    with --fhir-server they are delivered before the command returns (exit 1 if any item
    failed or is still pending: a server that stays down leaves them for `outbox flush`).
    """
    now = now_option(now_text)
    no_collection_at_exit()  # the shutdown collections cost a one-file replay ~25 ms (startup_gc)
    root_level = root_log_level()
    logs.configure(root_level, told=TOLD_BY_REPLAY)
    replay_id = uuid.uuid4().hex[:12]
    bind_contextvars(replay_id=replay_id)
    if fhir_server and not state_path:
        raise click.UsageError("--fhir-server needs --state (the outbox it delivers from)")
    if expect and state_path:
        raise click.UsageError("--expect compares each file on its own: it cannot be used with --state")
    if compare_path is not None:  # the differences under two configurations, not the alerts
        if state_path or expect or out or executor == "spark" or jobs != 1:
            raise click.UsageError(
                "--compare cannot be used with --state, --expect, --out, --executor spark or --jobs"
            )
        sys.exit(
            _compare(paths, config_path, compare_path, now, fmt, strict, valueset_dirs, max_facts_per_patient)
        )
    jobs = 1 if expect else jobs_for(jobs)
    if jobs > 1 and state_path:
        raise click.UsageError("--jobs above 1 cannot be used with --state (one process keeps the history)")
    if executor == "spark" and (state_path or expect or out):
        raise click.UsageError("--executor spark cannot be used with --state, --expect or --out")
    retention = retention_days * 86_400 if retention_days else None
    memory = partial(_memory, state_path, tenant, f"replay:{replay_id}", retention) if state_path else None
    with collection_paused():  # the rule program and terminology: long-lived, no garbage
        pipeline = site_pipeline(
            config_path,
            strict=strict,
            valueset_dirs=valueset_dirs,
            max_facts=max_facts_per_patient,
            memory=memory,
        )
    store = pipeline.store
    inputs, expectations = without_expectations(paths)
    for path in expectations:  # e.g. a shell glob V01*.json: read beside its input by --expect
        click.echo(f"{path}: expected file, not an input: skipped", err=True)
    paths = tuple(inputs)
    files = list(expand(paths))
    missing = [p for p in paths if not p.exists()]
    failed = bool(missing)
    for path in missing:
        click.echo(f"{path}: no such file or folder", err=True)
    if out:
        out.mkdir(parents=True, exist_ok=True)
    # a person at a terminal: not when logs there are JSON (--log-format json feeds a collector)
    for_a_person = sys.stderr.isatty() and logs.readable(sys.stderr)
    show_bar = progress if progress is not None else for_a_person
    table = _table(now) if fmt == "table" and not expect else None
    if executor == "spark":  # the same data set evaluated by Spark executors (redflags.spark)
        from redflags.cli.spark import replay_on_spark

        root = root_log_level()
        args = (fmt, table, spark_master, tmp_dir, config_path, strict, valueset_dirs, max_facts_per_patient)
        failed |= replay_on_spark(paths, now, *args, log_level=root)
        if table is not None:
            wide_console().print(table)
        sys.exit(1 if failed else 0)
    report: Report | None = None  # --expect's per-rule table (redflags.replay.corpus: imported for it)
    log.info("replay_started", inputs=len(files), now=iso(now), strict=strict)
    with _file_bar(show_bar and expect) as bar:  # the data-set replay shows its stages itself
        task = bar.add_task("replay", total=len(files))
        if expect:
            from redflags.replay.corpus import Report, replay_expected

            report = Report(rules=pipeline.rules)
            tell = teller(stderr_line)
            for checked in replay_expected(files, pipeline, now):
                report.add(checked)
                for patient in checked.result.patients:
                    tell([checked.result.source], patient.future)
                write_bundles(checked.result, out, pipeline)
                bar.advance(task)
        else:
            root = root_log_level()
            setup = partial(
                _worker_setup,
                config_path,
                strict,
                valueset_dirs,
                max_facts_per_patient,
                fmt,
                out,
                root,
                replay_id,
            )
            failed |= _replay_all(
                paths,
                pipeline,
                now,
                fmt,
                table,
                out,
                tmp_dir,
                jobs,
                setup,
                show_progress=show_bar,
                missing=len(missing),
                show_summary=for_a_person if summary is None else summary,
            )
    if table is not None:
        wide_console().print(table)
    if store is not None:
        from redflags.delivery.target import FhirTarget

        target = (
            FhirTarget(fhir_server, fhir_token, fhir_smart, fhir_timeout, delivery_wait)
            if fhir_server
            else None
        )
        failed |= _finish_state(store, target)
    if report is not None:
        _print_corpus(report, fmt)
        failed |= not report.ok
    log.info("replay_finished", inputs=len(files), failed=failed)
    sys.exit(1 if failed else 0)


def _replay_all(
    paths: tuple[Path, ...],
    pipeline: Pipeline,
    now: int,
    fmt: str,
    table: Table | None,
    out: Path | None,
    tmp_dir: Path | None,
    jobs: int = 1,
    setup: WorkerSetup | None = None,
    show_progress: bool = False,
    missing: int = 0,
    show_summary: bool = False,
) -> bool:
    """Every input as one data set (``redflags.replay.partition``); True when anything was unreadable.

    With ``show_summary`` it ends with one line on stderr (``replay summary: key=value ...``, fixed
    keys and order, for people and scripts alike; off by default when stderr is not a terminal, so a
    clean run's stderr stays empty); with ``show_progress`` each stage is drawn on stderr meanwhile.
    """
    stats = Stats()

    shown = TerminalProgress() if show_progress else None

    def report(line: str) -> None:  # above the display while it is drawn (never inside a bar line)
        if shown is not None:
            shown.message(line)
        else:
            click.echo(line, err=True)

    render, invalid = renderer(pipeline, fmt, out, report)

    lines = replay_all(
        paths,
        pipeline,
        now,
        render,
        report,
        tmp_dir=tmp_dir,
        stats=stats,
        jobs=jobs,
        setup=setup,
        progress=shown or NO_PROGRESS,
    )
    try:
        # closing: an interrupt here, outside the generator, still removes its temporary files now
        with shown or nullcontext(), closing(lines):
            for data in lines:
                if table is not None:
                    table.add_row(*orjson.loads(data))
                else:
                    sys.stdout.buffer.write(data + b"\n")
    except (SpillError, WorkerError) as exc:
        click.echo(f"replay: {exc}", err=True)
        return True
    finally:
        sys.stdout.flush()
    if stats.without_patient:
        counts = ", ".join(f"{n} {t}" for t, n in sorted(stats.without_patient.items()))
        click.echo(f"replay: resources naming no patient (not evaluated): {counts}", err=True)
    counts = summary_counts(
        inputs=stats.inputs,
        patients=stats.patients,
        resources=stats.resources,
        without_patient=sum(stats.without_patient.values()),
        alerts=stats.alerts,
        errors=stats.errors + missing + stats.invalid_patients,
    )
    if show_summary:
        click.echo(summary_line(counts), err=True)
    log.info(
        "replay_counts",
        **counts,
        partitions=stats.partitions,
        input_errors=stats.errors + missing,
        invalid_patients=stats.invalid_patients,
    )
    return invalid() or stats.worker_failed or stats.errors > 0


def _compare(
    paths: tuple[Path, ...],
    config_path: Path | None,
    other: Path,
    now: int,
    fmt: str,
    strict: bool,
    valueset_dirs: tuple[Path, ...],
    max_facts: int,
) -> int:
    """``--compare``: each file on its own under both configurations; the exit status."""
    inputs, _expectations = without_expectations(paths)
    missing = [p for p in inputs if not p.exists()]
    for path in missing:
        click.echo(f"{path}: no such file or folder", err=True)
    failed = replay_compare(
        list(expand(inputs)),
        config_path,
        other,
        now,
        fmt,
        strict=strict,
        valueset_dirs=valueset_dirs,
        max_facts=max_facts,
    )
    return 1 if failed or missing else 0


def _memory(state_path: Path, tenant: str, actor: str, retention_s: int | None) -> Memory:
    """The replay's state store (``--state``), narrowed to ``--tenant``."""
    store = narrowed(open_state(state_path, create=True), tenant)
    return Memory(store, actor=actor, retention_s=retention_s, tenant=tenant)


def _worker_setup(
    config_path: Path | None,
    strict: bool,
    valueset_dirs: tuple[Path, ...],
    max_facts: int,
    fmt: str,
    out: Path | None,
    log_level: str,
    replay_id: str,
) -> tuple[Pipeline, Render, Callable[[], bool]]:
    """In a spawned --jobs worker: the parent's pipeline rebuilt from the same options."""
    logs.configure(log_level, told=TOLD_BY_REPLAY)
    bind_contextvars(replay_id=replay_id)
    pipeline = site_pipeline(config_path, strict=strict, valueset_dirs=valueset_dirs, max_facts=max_facts)
    render, invalid = renderer(pipeline, fmt, out)
    return pipeline, render, invalid


def _finish_state(store: StateStore, target: FhirTarget | None) -> bool:
    """Deliver the outbox when a server is given; True when items failed or are left pending."""
    from redflags.delivery.target import deliver

    try:
        done = deliver(store, target) if target else None
        click.echo(outbox_line(store, done), err=True)
        counts = store.counts()
    finally:
        store.close()
    return target is not None and bool(counts["pending"] or (done and done.failed))


class _NoBar:
    """The per-file bar when none is drawn: rich is not imported for it."""

    def add_task(self, *_args: Any, **_kwargs: Any) -> int:
        return 0

    def advance(self, *_args: Any) -> None:
        pass


@contextmanager
def _file_bar(enabled: bool) -> Iterator[Any]:
    """A transient per-file progress bar on stderr, or a silent stand-in."""
    if not enabled:
        yield _NoBar()
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn("replay"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        yield bar


def _table(now: int) -> Table:
    from rich.table import Table

    table = Table(title=f"redflags replay at {iso(now)}", show_lines=False)
    for column in ("input", "patient", "alerts"):
        table.add_column(column, overflow="fold")
    return table


def _print_corpus(report: Report, fmt: str) -> None:
    """--expect: the per-rule table, then one line per miss, file without expectation and error."""
    from redflags.replay.corpus import COUNTS

    if fmt == "json":
        sys.stdout.buffer.write(orjson.dumps(report.as_dict(), option=orjson.OPT_INDENT_2) + b"\n")
        sys.stdout.flush()
        if report.nothing_expected:
            click.echo(f"replay: {report.nothing_expected_line()}", err=True)
        return
    from rich.table import Table

    table = Table(
        title=f"redflags corpus: {report.files} files, {report.compared_patients} patients compared",
        show_footer=True,
    )
    totals = report.totals()
    table.add_column("rule", footer="total")
    for name, header in zip(COUNTS, ("TP", "FP", "FN", "wrong tier", "TN"), strict=True):
        table.add_column(header, justify="right", footer=str(getattr(totals, name)))
    for rule, counts in report.rows():
        table.add_row(rule, *(str(getattr(counts, name)) for name in COUNTS))
    wide_console().print(table)
    for line in report.lines():
        click.echo(line)
    for source, patients, alerts in report.no_expectation:
        click.echo(f"NOEXP {source} (patients: {patients}, alerts: {alerts})")
    differences = len(report.misses) + len(report.patient_differences)
    if report.nothing_expected:
        click.echo(report.nothing_expected_line())
    else:
        click.echo(
            "all expectations met" if report.ok else f"{differences} differences, {len(report.errors)} errors"
        )
    if report.no_expectation and not report.nothing_expected:
        click.echo(f"files without expectation: {len(report.no_expectation)} (listed above, not compared)")
