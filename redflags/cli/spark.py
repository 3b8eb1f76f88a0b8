"""``redflags replay --executor spark``: the command line's side of ``redflags.spark``.

Kept apart from ``redflags.cli`` so the command stays one dispatch line and PySpark is imported
only when asked for (it is an extra: ``pip install 'redflags[spark]'``).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import closing, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import click
import orjson

from engine.logger import get_logger
from redflags.pipeline import DEFAULT_MAX_FACTS
from redflags.replay.partition import SpillError, private_dir

if TYPE_CHECKING:
    from pyspark.sql import SparkSession
    from rich.table import Table

log = get_logger("redflags.spark")
MISSING = "replay: --executor spark needs PySpark: pip install 'redflags[spark]'"


@contextmanager
def session(master: str, log_level: str = "ERROR", local_dir: Path | None = None) -> Iterator[SparkSession]:
    """A SparkSession on ``master``; a local one binds to loopback and runs this Python in workers.

    A local one keeps its scratch (block manager, shuffle files, the tasks' folders) in
    ``local_dir``, which the caller owns and removes: a task killed by Ctrl-C cannot leave files
    in the system's temporary folder. An already active session (a notebook's, a test's) is used
    as it is and left running.
    """
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        yield active
        return
    builder = (
        SparkSession.builder.master(master)
        .appName("redflags-replay")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")  # stderr is for the replay's own lines
    )
    saved = os.environ.get("SPARK_LOCAL_DIRS")
    if master.startswith("local"):
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)  # workers import redflags + durable
        builder = (
            builder.config("spark.driver.host", "127.0.0.1")
            .config("spark.driver.bindAddress", "127.0.0.1")
            .config("spark.log.level", log_level)
        )
        if local_dir is not None:  # the variable wins over spark.local.dir in the JVM: set both
            os.environ["SPARK_LOCAL_DIRS"] = str(local_dir)
            builder = builder.config("spark.local.dir", str(local_dir))
    try:
        spark = builder.getOrCreate()
        try:
            yield spark
        finally:
            spark.stop()
    finally:
        if saved is None:
            os.environ.pop("SPARK_LOCAL_DIRS", None)
        else:
            os.environ["SPARK_LOCAL_DIRS"] = saved


def replay_on_spark(
    paths: Sequence[Path],
    now: int,
    fmt: str,
    table: Table | None,
    master: str,
    tmp_dir: Path | None,
    config_path: Path | None,
    strict: bool = False,
    valueset_dirs: Sequence[Path] = (),
    max_facts: int = DEFAULT_MAX_FACTS,
    log_level: str = "warning",
) -> bool:
    """Print what the local replay prints, evaluated by Spark; True when anything failed."""
    try:
        import pyspark  # noqa: F401
    except ImportError:
        click.echo(MISSING, err=True)
        sys.exit(2)
    from redflags.spark import EngineSpec, SparkStats, replay_lines

    spec = EngineSpec.from_config(
        config_path,
        strict=strict,
        valueset_dirs=valueset_dirs,
        max_facts=max_facts,
        fmt=fmt,
        log_level=log_level,
    )
    stats = SparkStats()

    def report(line: str) -> None:
        click.echo(line, err=True)

    try:
        # the local session's scratch: private, under --tmp-dir, removed on exit, error and Ctrl-C
        with private_dir(tmp_dir) as scratch, session(master, local_dir=scratch) as spark:
            lines = replay_lines(spark, paths, spec, now, report, stats, tmp_dir=tmp_dir)
            with closing(lines):
                for data in lines:
                    if table is not None:
                        table.add_row(*orjson.loads(data))
                    else:
                        sys.stdout.buffer.write(data + b"\n")
    except SpillError as exc:
        click.echo(f"replay: {exc}", err=True)
        return True
    except Exception as exc:  # Py4J/Spark failures: one line, not a JVM stack trace
        if type(exc).__module__.startswith(("py4j", "pyspark")):
            click.echo(f"replay: Spark failed: {' '.join(str(exc).split())[:500]}", err=True)
            return True
        raise
    finally:
        sys.stdout.flush()
    if stats.without_patient:
        counts = ", ".join(f"{n} {t}" for t, n in sorted(stats.without_patient.items()))
        click.echo(f"replay: resources naming no patient (not evaluated): {counts}", err=True)
    log.info(
        "replay_counts",
        executor="spark",
        inputs=stats.inputs,
        patients=stats.patients,
        resources=stats.resources,
        without_patient=sum(stats.without_patient.values()),
        errors=stats.errors,
        partitions=stats.partitions,
    )
    return stats.invalid or stats.errors > 0
