"""A Bulk Data export evaluated on Apache Spark: the local replay's JSON lines, computed by executors.

For a data platform that already runs Spark (hospital platforms, Databricks), a notebook calls
:func:`evaluate_export`; ``redflags replay PATH --executor spark`` uses the same stages:

1. *read* (executors): ``partition.expand`` lists the inputs on the driver (folders, manifests);
   then one task per input runs the local replay's own ``partition.spill`` on that input alone
   (``documents`` + ``fhir_adapters.intake.group``: the same patient assignment, ``urn:uuid``
   included). Each record keeps its spill line, its sequence number made global as
   ``input index << SEQ_BITS | position in the input`` (the order of the local replay). The
   inputs must be readable where the executors run (local mode: they are; a cluster: shared
   storage). The read is persisted on the executors' disks; its per-input summaries (error
   lines, resources naming no patient, damaged inputs) come back to the driver first, because a
   patient's line names the damaged inputs it was read from. Context resources naming no
   patient (Medications on their own lines) come back with the summaries; the driver writes them
   into one SQLite index (``redflags.replay.context_index``) broadcast to the executors (up to
   ``CONTEXT_MAX_BYTES``; beyond, they are not joined and a line says so).
2. *shuffle*: ``partitionBy`` on a stable hash of the patient reference: every record of a
   patient lands in one Spark partition.
3. *evaluate* (executors): each partition's lines go to a local temporary file and through the
   local replay's ``partition.evaluate_partition``, with one engine per Python worker process,
   built lazily from an :class:`EngineSpec` (plain data pickled into the task closure: the site
   parameters, the bytes of the site's ValueSet/ConceptMap files, strict, max facts, ``now``):
   nothing on an executor depends on the driver's files or ``$REDFLAGS_CONFIG``. Lines are
   rendered by the command line's own renderer, so they are the same bytes as ``replay``'s.
"""

from __future__ import annotations

import io
import os
import shutil
import sys
import tempfile
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import redirect_stderr
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import orjson

from redflags import config, logs
from redflags.pipeline import DEFAULT_MAX_FACTS, Pipeline
from redflags.replay import context_index
from redflags.replay.partition import (
    Stats,
    _merge,
    estimated_bytes,
    evaluate_partition,
    expand,
    plan,
    private_dir,
    spill,
)

if TYPE_CHECKING:
    from pyspark import RDD, SparkContext
    from pyspark.broadcast import Broadcast
    from pyspark.sql import DataFrame, SparkSession

#: Bits of a global sequence number for the position within one input (2**40 resources per file).
SEQ_BITS = 40
#: Largest total of context resources naming no patient (Medications of an export) broadcast to
#: the executors; larger, they are not joined on Spark (reported).
CONTEXT_MAX_BYTES = 256 * 1024 * 1024
Report = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class EngineSpec:
    """What an executor needs to build the driver's pipeline: plain data, no paths of the driver."""

    params: dict[str, dict[str, float]] = field(default_factory=dict)
    valuesets: tuple[tuple[tuple[str, bytes], ...], ...] = ()  # per site folder: (name, bytes) of *.json
    conceptmaps: tuple[tuple[str, bytes], ...] = ()
    strict: bool = False
    max_facts: int = DEFAULT_MAX_FACTS
    fmt: str = "json"  # the command line's --format ("table": its row JSON)
    log_level: str = "warning"

    @classmethod
    def from_config(
        cls,
        config_path: Path | str | None = None,
        *,
        strict: bool = False,
        valueset_dirs: Sequence[Path] = (),
        max_facts: int = DEFAULT_MAX_FACTS,
        fmt: str = "json",
        log_level: str = "warning",
    ) -> EngineSpec:
        """The site configuration (``config_path`` or ``$REDFLAGS_CONFIG``) read on the driver."""
        site = config.load(config.resolve(Path(config_path) if config_path else None))
        folders = (*site.valueset_dirs, *valueset_dirs)
        return cls(
            params=site.params,
            valuesets=tuple(
                tuple((p.name, p.read_bytes()) for p in sorted(d.glob("*.json"))) for d in folders
            ),
            conceptmaps=tuple((p.name, p.read_bytes()) for p in site.conceptmaps),
            strict=strict,
            max_facts=max_facts,
            fmt=fmt,
            log_level=log_level,
        )

    def build(self) -> Pipeline:
        """The pipeline, its site files written to a private folder of this process (kept for it)."""
        root = Path(tempfile.mkdtemp(prefix="redflags-spark-site-"))
        dirs = []
        for n, files in enumerate(self.valuesets):
            folder = root / f"valuesets-{n}"
            folder.mkdir()
            for name, data in files:
                (folder / name).write_bytes(data)
            dirs.append(folder)
        maps = []
        for n, (name, data) in enumerate(self.conceptmaps):
            path = root / f"{n}-{name}"
            path.write_bytes(data)
            maps.append(path)
        site = config.SiteConfig(params=dict(self.params), valueset_dirs=tuple(dirs), conceptmaps=tuple(maps))
        return Pipeline.from_config(site, strict=self.strict, max_facts=self.max_facts)


@dataclass(slots=True)
class InputSummary:
    """What reading one input found (back to the driver before evaluation)."""

    index: int
    lines: list[str]
    without_patient: dict[str, int]
    damaged: bool
    resources: int
    #: Context resources naming no patient: (type, input index, keys, spill body).
    context: list[tuple[str, int, list[str], bytes]] = field(default_factory=list)


@dataclass(slots=True)
class SparkStats:
    """Counts of a Spark replay (the summary the command line prints and logs)."""

    inputs: int = 0
    resources: int = 0
    patients: int = 0
    errors: int = 0
    invalid: bool = False  # a patient had an invalid element (exit 1 as locally)
    without_patient: Counter[str] = field(default_factory=Counter)
    partitions: int = 0


#: The pipelines of this Python worker process, each with the spec it was built from: built by the
#: first task that needs it (never in the driver's pickled closure, never forked). A worker reused
#: for another site configuration builds that one too: each configuration compiles its own
#: durable ruleset (docs/engine.md#several-configurations-in-one-process).
_built: list[tuple[EngineSpec, Pipeline]] = []


def _pipeline(spec: EngineSpec) -> Pipeline:
    for built, pipeline in _built:
        if built == spec:
            return pipeline
    logs.configure(spec.log_level)
    pipeline = spec.build()
    _built.append((spec, pipeline))
    return pipeline


def _local_dir() -> str | None:
    """The executor's scratch folder (Spark sets it for its Python workers), else the system's."""
    return os.environ.get("SPARK_LOCAL_DIRS", "").split(",")[0] or None


def _scratch() -> Path:
    """A task's scratch folder in the executor's local dir; the task removes it in ``finally``."""
    return Path(tempfile.mkdtemp(prefix="redflags-spark-", dir=_local_dir()))


def _patient_key(pid: str) -> int:
    """Stable across processes and runs (Python's ``hash`` of a str is not)."""
    return zlib.crc32(pid.encode())


def _read(item: tuple[int, str]) -> Iterator[tuple[str | None, object]]:
    """Executor: one input through the local spill; (pid, spill line) per resource, then its summary."""
    index, name = item
    stats, lines = Stats(), []
    folder = _scratch()
    try:  # also when the task is killed or abandoned (generator closed)
        parts = spill([Path(name)], folder, 1, lines.append, stats)
        with parts.paths[0].open("rb") as f:
            for line in f:
                pid, seq, _source, body = line.split(b"\t", 3)
                yield pid.decode(), b"%s\t%d\t%d\t%s" % (pid, index << SEQ_BITS | int(seq), index, body)
        # context resources naming no patient: to the driver, which ships them to every evaluation
        # (counted there: a reference may come from any input)
        context = []
        if parts.context_index is not None:
            context = [(t, index, k, b) for _r, t, _s, k, b in context_index.rows(parts.context_index)]
        without = Counter(stats.without_patient)
        without.subtract(parts.context_unreferenced)
        resources = stats.resources - parts.context_referenced
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    yield None, InputSummary(index, lines, dict(+without), bool(stats.damaged), resources, context)


def _evaluate(
    spec: EngineSpec,
    now: int,
    sources: list[str],
    damaged: set[int],
    context: Broadcast | None,
    index: int,
    records: Iterable[tuple[str, bytes]],
) -> Iterator[tuple[int, int, object]]:
    """Executor: one partition (whole patients) through the local ``evaluate_partition``.

    Yields (partition, seq, (rendered line, the patient's stderr text)) in seq order, then
    (partition, -1, (patients, error lines, invalid, context index rows joined)). The stderr text
    is what the command line's renderer prints for the patient (its invalid elements): it goes
    back to the driver, which prints it, instead of landing in an executor's log.
    """
    from redflags.replay.render import renderer  # the command line's own line format

    pipeline = _pipeline(spec)
    render, invalid = renderer(pipeline, spec.fmt, None)
    stats, errors = Stats(damaged=damaged), []
    folder = _scratch()
    try:  # also when the task is killed or abandoned (generator closed)
        path = folder / "part.spill"
        with path.open("wb") as f:
            for _pid, line in records:
                f.write(line)
        index_path = None
        if context is not None:  # the driver's index of context resources naming no patient
            index_path = folder / "context.sqlite"
            index_path.write_bytes(context.value)
        for done in evaluate_partition(
            path, pipeline, now, sources, errors.append, stats, context_index=index_path
        ):
            with redirect_stderr(io.StringIO()) as printed:
                data = render(done)
            yield index, done.seq, (data, printed.getvalue())
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    yield index, -1, (stats.patients, errors, invalid(), sorted(stats.joined_context))


@dataclass(slots=True)
class Job:
    """A prepared Spark evaluation: ``tagged`` yields lines and per-partition summaries."""

    tagged: RDD
    read: RDD
    stats: SparkStats
    context: Broadcast | None = None  # the index of context resources naming no patient
    context_types: list[str] = field(default_factory=list)  # its rows' types (row n at n - 1)
    context_joined: set[int] = field(default_factory=set)  # rows joined by some partition

    def unpersist(self) -> None:
        self.tagged.unpersist()
        self.read.unpersist()
        if self.context is not None:
            self.context.unpersist()

    def joined(self, rows: Iterable[int]) -> None:
        """Rows of the context index joined to a patient: read, no longer naming no patient."""
        for row in set(rows) - self.context_joined:
            self.context_joined.add(row)
            self.stats.without_patient[self.context_types[row - 1]] -= 1
            self.stats.resources += 1
        self.stats.without_patient = +self.stats.without_patient


def prepare(
    spark: SparkSession,
    paths: Iterable[Path | str],
    spec: EngineSpec,
    now: int,
    report: Report,
    *,
    partitions: int | None = None,
) -> Job:
    """Stage 1 run (inputs read by executors, summaries reported); stages 2-3 planned, lazy."""
    from pyspark import StorageLevel

    stats = SparkStats()

    def counted(line: str) -> None:
        stats.errors += 1
        report(line)

    files = expand([Path(p) for p in paths], counted)
    sources = [str(p) for p in files]
    sc = spark.sparkContext
    read = sc.parallelize(list(enumerate(sources)), max(1, len(sources))).flatMap(_read)
    read.persist(StorageLevel.DISK_ONLY)
    damaged: set[int] = set()
    summaries = sorted(read.filter(lambda kv: kv[0] is None).values().collect(), key=lambda s: s.index)
    context = [row for summary in summaries for row in summary.context]
    for summary in summaries:
        for line in summary.lines:
            counted(line)
        stats.without_patient.update(summary.without_patient)
        stats.resources += summary.resources
        if summary.damaged:
            damaged.add(summary.index)
    del summaries
    shipped = _ship_context(sc, context, report)
    stats.without_patient.update(t for t, *_rest in context)  # until a patient's resource joins one
    types = [t for t, *_rest in context] if shipped is not None else []
    del context
    stats.inputs = len(sources)
    stats.partitions = partitions or max(plan(estimated_bytes(files)), sc.defaultParallelism)
    tagged = (
        read.filter(lambda kv: kv[0] is not None)
        .partitionBy(stats.partitions, _patient_key)
        .mapPartitionsWithIndex(partial(_evaluate, spec, now, sources, damaged, shipped))
    )
    return Job(tagged, read, stats, shipped, types)


def _ship_context(
    sc: SparkContext, context: list[tuple[str, int, list[str], bytes]], report: Report
) -> Broadcast | None:
    """The context resources naming no patient as one SQLite index broadcast to the executors
    (each evaluation task joins them as the local replay does); None when there are none, or when
    they exceed CONTEXT_MAX_BYTES (then reported: orders by reference to them read no drug)."""
    if not context:
        return None
    size = sum(len(body) for *_rest, body in context)
    if size > CONTEXT_MAX_BYTES:
        report(
            f"replay: {len(context)} resources naming no patient ({size >> 20} MiB) exceed the "
            f"{CONTEXT_MAX_BYTES >> 20} MiB shipped to Spark executors: not joined (references to them "
            "read nothing; the local replay joins them)"
        )
        return None
    folder = Path(tempfile.mkdtemp(prefix="redflags-spark-context-"))
    try:
        writer = context_index.ContextWriter(folder / "context.sqlite")
        for rtype, src, keys, body in context:
            writer.add(rtype, src, keys, body)
        writer.close()
        return sc.broadcast((folder / "context.sqlite").read_bytes())
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def replay_lines(
    spark: SparkSession,
    paths: Iterable[Path | str],
    spec: EngineSpec,
    now: int,
    report: Report,
    stats: SparkStats,
    *,
    tmp_dir: Path | None = None,
    partitions: int | None = None,
) -> Iterator[bytes]:
    """The rendered lines in the local replay's order (input order of each patient's first resource).

    Evaluated partitions are persisted on the executors and streamed to the driver one at a time
    into sorted files under ``tmp_dir``, then merged as the local replay merges: the driver holds
    one line at a time. A patient's stderr lines (invalid elements) are kept the same way and
    reported, in the same order, before the first output line, as the local replay prints them.
    """
    from pyspark import StorageLevel

    job = prepare(spark, paths, spec, now, report, partitions=partitions)
    for name in ("inputs", "resources", "errors", "without_patient", "partitions"):
        setattr(stats, name, getattr(job.stats, name))
    try:
        job.tagged.persist(StorageLevel.DISK_ONLY)
        job.tagged.count()  # every partition evaluated in parallel (toLocalIterator runs one at a time)
        with private_dir(tmp_dir) as folder:
            outputs = [folder / f"out-{i:04d}" for i in range(stats.partitions)]
            printed = [folder / f"err-{i:04d}" for i in range(stats.partitions)]
            current, out, err = -1, None, None
            try:
                for index, seq, data in job.tagged.toLocalIterator():
                    if seq < 0:
                        patients, errors, invalid, joined = data  # type: ignore[misc]
                        job.joined(joined)
                        stats.patients += patients
                        stats.invalid |= invalid
                        for line in errors:
                            stats.errors += 1
                            report(line)
                        continue
                    if index != current:
                        for f in (out, err):
                            if f is not None:
                                f.close()
                        current, out, err = index, outputs[index].open("wb"), printed[index].open("wb")
                    line, text = data  # type: ignore[misc]
                    out.write(b"%d\t%s\n" % (seq, line))  # type: ignore[union-attr]
                    if text:
                        err.write(b"%d\t%s\n" % (seq, orjson.dumps(text)))  # type: ignore[union-attr]
            finally:
                for f in (out, err):
                    if f is not None:
                        f.close()
            for path in (*outputs, *printed):
                path.touch()
            stats.resources, stats.without_patient = job.stats.resources, job.stats.without_patient
            for text in _merge(printed):
                for line in orjson.loads(text).splitlines():
                    report(line)
            yield from _merge(outputs)
    finally:
        job.unpersist()


def evaluate_export(
    spark: SparkSession,
    paths: Iterable[Path | str],
    *,
    now: int | None = None,
    config_path: Path | str | None = None,
    strict: bool = False,
    valueset_dirs: Sequence[Path] = (),
    max_facts: int = DEFAULT_MAX_FACTS,
    partitions: int | None = None,
    report: Report | None = None,
) -> DataFrame:
    """A Bulk Data export evaluated on ``spark``: a DataFrame ``(seq: long, line: string)``.

    ``line`` is the JSON line ``redflags replay --format json`` prints for one patient;
    ``df.orderBy("seq")`` gives them in the replay's order. The inputs (files, folders, a
    ``$export`` manifest) must be readable by the driver and the executors. They are read now
    (problems go to ``report``, default stderr); rules run when the DataFrame is used (``cache()``
    it to evaluate once). ``now`` is epoch seconds (default: now); the site configuration is
    ``config_path`` or ``$REDFLAGS_CONFIG`` as on the command line, read here on the driver.
    """
    import time

    spec = EngineSpec.from_config(
        config_path, strict=strict, valueset_dirs=valueset_dirs, max_facts=max_facts
    )
    when = int(time.time()) if now is None else now
    job = prepare(spark, paths, spec, when, report or _stderr, partitions=partitions)
    rows = job.tagged.filter(lambda t: t[1] >= 0).map(lambda t: (t[1], t[2][0].decode()))
    return spark.createDataFrame(rows, "seq long, line string")


def _stderr(line: str) -> None:
    print(line, file=sys.stderr)
