"""Replay of a whole data set: every input's resources grouped by patient across files.

A Bulk Data export writes one NDJSON per resource type, so a patient's Condition and
Observation sit in different files; evaluating file by file misses every alert that needs
both. Memory must not grow with the export either, so grouping is an external partition:

1. *spill*: inputs are streamed (NDJSON line by line, gzip on the fly; a JSON file is one
   document), each resource is assigned to its patient by ``fhir_adapters.intake.group`` (the
   same rules as a single file, ``urn:uuid`` references inside a Bundle included) and appended
   as one line ``pid TAB seq TAB source TAB json`` to one of K spill files chosen by a stable
   hash of the patient reference (``crc32``: the same in every process, so a later ``--jobs``
   can hand whole partitions to workers); a context resource (an Encounter, alone in its line)
   goes to the partition of the patient it names, marked, and is joined to that patient only
   if one of its resources references it (``intake.join_context``, as within one input); one
   that names no patient (a Medication on its own line) goes to a small SQLite index in the
   private folder (``redflags.replay.context_index``), looked up by the references a patient makes;
2. *evaluate*: one partition at a time is grouped in memory (raw bytes; a patient's resources
   are parsed only when it is evaluated), each patient evaluated once, its output line written
   to the partition's output file tagged with the sequence number of its first resource;
3. *merge*: the sorted output files are merged on that number, so the output order is the
   input order of each patient's first resource, whatever K (or the number of workers).

Peak memory is one partition's bytes (K is chosen so a partition stays near
``TARGET_PARTITION_BYTES``) plus one batch of parsed patients, not the input.
"""

from __future__ import annotations

import errno
import gc
import gzip
import heapq
import io
import math
import os
import resource
import shutil
import signal
import sys
import tempfile
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_EXCEPTION, Future, wait
from contextlib import contextmanager, redirect_stderr, suppress
from dataclasses import dataclass, field
from pathlib import Path
from queue import Empty
from threading import Condition, Event, Lock, Thread
from typing import TYPE_CHECKING, BinaryIO
from urllib.parse import unquote, urlparse

import orjson

from engine.errors import EngineError
from fhir_adapters.errors import InputError
from fhir_adapters.intake import (
    ContextIndex,
    Entry,
    Intake,
    PatientGroup,
    context_target,
    group,
    index_context,
    join_context,
    local_reference,
    names_a_type,
    reference_of,
    resource_type,
    resources_of,
)
from redflags.pipeline import PatientResult, Pipeline
from redflags.replay.context_index import ContextReader, ContextWriter, IndexFull
from redflags.replay.progress import NO_PROGRESS, ReplayProgress, counted_open

if TYPE_CHECKING:  # multiprocessing (~19 ms) is imported when --jobs starts workers
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing.queues import Queue

SUFFIXES = (".json", ".ndjson", ".json.gz", ".ndjson.gz")
SKIPPED_SUFFIX = ".expected.json"
SKIPPED_DIRS = frozenset({"cds-hooks"})
#: Spill bytes aimed at per partition: what one evaluation step holds in memory (plus parsing).
TARGET_PARTITION_BYTES = 16 * 1024 * 1024
#: Open spill files at once (each with its write buffer); also kept under RLIMIT_NOFILE.
MAX_PARTITIONS = 1024
#: Assumed expansion of gzip inputs when sizing partitions (FHIR NDJSON compresses ~8-12x).
GZIP_RATIO = 10
#: Largest .json file examined for the manifest shape (an $export manifest is small).
MANIFEST_MAX_BYTES = 16 * 1024 * 1024
#: With --jobs N, at least this many partitions per worker, so a slow partition does not idle the rest.
PARTITIONS_PER_JOB = 4
#: Patients handed to the engine in one call.
BATCH = 64
_WAIT_SLICE = 0.2  # seconds: how soon the parent acts on a Ctrl-C while workers evaluate
_BUFFER = 16 * 1024  # per open spill file: K of them at once
_NO_PATIENT = " names no Patient in subject/patient; skipped"
_FULL_DISK = {errno.ENOSPC, errno.EDQUOT}
#: First byte of a spill record's JSON part when the resource is context (an Encounter) of its
#: patient: joined only if one of the patient's resources references it, never a patient by itself.
#: In the JSON part because every reader of spill lines (the Spark path too) keeps it verbatim.
CONTEXT_MARK = b"C"


class SpillError(Exception):
    """Temporary files could not be written (full disk, no permission): the replay stops."""


class WorkerError(Exception):
    """A --jobs worker process failed (exception or died): the replay stops."""


Render = Callable[["Evaluated"], bytes]
#: Built once in each --jobs worker (picklable: a top-level function, or a partial of one):
#: its own evaluator, the same render as the parent, and whether render saw a failing patient.
WorkerSetup = Callable[[], tuple["Pipeline", Render, Callable[[], bool]]]


Report = Callable[[str], None]  # one stderr line for the user


@dataclass(slots=True)
class Stats:
    """What a replay read and evaluated: for the summary line and the memory test."""

    inputs: int = 0
    resources: int = 0
    patients: int = 0
    errors: int = 0
    without_patient: Counter[str] = field(default_factory=Counter)  # per resource type
    partitions: int = 0
    partition_bytes: list[int] = field(default_factory=list)
    peak_records: int = 0  # spill records held at once while evaluating (one partition)
    peak_parsed: int = 0  # resources parsed at once (one batch of patients)
    damaged: set[int] = field(default_factory=set)  # inputs (by index) with a part that was unreadable
    worker_failed: bool = False  # a --jobs worker's render saw a patient with an invalid element
    alerts: Counter[str] = field(default_factory=Counter)  # alerts by tier (summary line)
    invalid_patients: int = 0  # patients with an invalid element (an error issue)
    joined_context: set[int] = field(default_factory=set)  # rows of the context index joined (Spark)


def is_input(path: Path, root: Path) -> bool:
    name = path.name
    return (
        name.endswith(SUFFIXES)
        and not name.endswith(SKIPPED_SUFFIX)
        and SKIPPED_DIRS.isdisjoint(path.relative_to(root).parts[:-1])
    )


def manifest_outputs(path: Path) -> list[str] | None:
    """The ``output[].url`` of a Bulk Data manifest, or None when ``path`` is not one (by shape)."""
    if not path.name.endswith(".json"):
        return None
    try:
        if path.stat().st_size > MANIFEST_MAX_BYTES:
            return None
        doc = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None  # reported when read as an input
    if not isinstance(doc, dict) or names_a_type(doc) or not isinstance(doc.get("output"), list):
        return None
    return [o["url"] for o in doc["output"] if isinstance(o, dict) and isinstance(o.get("url"), str)]


def _local(url: str, manifest: Path) -> Path | None:
    """A manifest url as a local path: relative to the manifest, or ``file:``; None for http(s)."""
    parsed = urlparse(url)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path))
    if parsed.scheme:
        return None
    return manifest.parent / unquote(url)


def expand(paths: Iterable[Path], report: Report) -> list[Path]:
    """Data files in order: files named, files under folders (sorted), a manifest's outputs.

    A file reached twice (a manifest beside the files it lists) is read once.
    """
    seen: set[Path] = set()
    out: list[Path] = []

    def add(path: Path) -> None:
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            out.append(path)

    def one(path: Path) -> None:
        urls = manifest_outputs(path)
        if urls is None:
            add(path)
            return
        seen.add(path.resolve())
        for url in urls:
            target = _local(url, path)
            if target is None:
                report(f"{path}: {url}: not a local file (download the export first)")
            elif not target.is_file():
                report(f"{target}: no such file (listed in the manifest {path})")
            else:
                add(target)

    for path in paths:
        if path.is_dir():
            for child in sorted(path.rglob("*")):
                if child.is_file() and is_input(child, path):
                    one(child)
        elif path.exists():
            one(path)
    return out


def _open(path: Path) -> BinaryIO:
    return gzip.open(path, "rb") if path.name.endswith(".gz") else path.open("rb")  # type: ignore[return-value]


def documents(
    path: Path, report: Report, tick: Callable[[int], None] | None = None
) -> Iterator[tuple[str, object]]:
    """(element path, parsed JSON) of each document of one input; bad parts reported, rest read."""
    for where, doc, _raw in _documents(path, report, tick):
        yield where, doc


def _documents(
    path: Path, report: Report, tick: Callable[[int], None] | None = None
) -> Iterator[tuple[str, object, bytes | None]]:
    """``documents`` with each NDJSON line's own bytes (None for a JSON file): a resource that is
    a whole line is spilled as those bytes, not serialised again."""
    source = str(path)
    ndjson = path.name.removesuffix(".gz").endswith(".ndjson")
    number, content = 0, False
    try:
        # with progress: bytes of the file itself (compressed for gzip) counted as they are read
        with _open(path) if tick is None else counted_open(path, tick) as stream:
            if not ndjson:
                data = stream.read()
                if not data.strip():
                    report(f"{source}: empty file")
                    return
                try:
                    doc = orjson.loads(data)
                except orjson.JSONDecodeError as exc:
                    report(f"{source}: invalid JSON: {exc}")
                    return
                root = resource_type(doc)
                yield str(root or "$"), doc, None
                return
            for number, line in enumerate(stream, start=1):
                if not line.strip():
                    continue
                content = True
                try:
                    doc = orjson.loads(line)
                except orjson.JSONDecodeError as exc:
                    report(f"{source}: line {number}: invalid JSON: {exc}")
                    continue
                yield f"line {number}", doc, line
    except (OSError, EOFError, zlib.error) as exc:
        if isinstance(exc, OSError) and exc.errno is not None and exc.strerror:
            report(f"{source}: cannot read: {exc.strerror}")
        else:  # gzip.BadGzipFile, a truncated stream
            where = f" after line {number}" if number else ""
            report(f"{source}: unreadable gzip{where}: {exc}")
        return
    if ndjson and not content:
        report(f"{source}: empty file")


def plan(total_bytes: int, target: int = TARGET_PARTITION_BYTES) -> int:
    """Partitions for an input of ``total_bytes`` (uncompressed, estimated)."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    cap = MAX_PARTITIONS if soft == resource.RLIM_INFINITY else max(16, min(MAX_PARTITIONS, soft - 64))
    return max(1, min(cap, math.ceil(total_bytes / max(1, target))))


def estimated_bytes(files: Iterable[Path]) -> int:
    total = 0
    for path in files:
        with suppress(OSError):
            total += path.stat().st_size * (GZIP_RATIO if path.name.endswith(".gz") else 1)
    return total


def partition_of(pid: str, k: int) -> int:
    """Stable across processes and runs (unlike ``hash``), so any worker finds the same partition."""
    return zlib.crc32(pid.encode()) % k


class _Interrupts:
    """SIGINT/SIGTERM received during a replay, kept so that nothing can swallow them.

    Python runs a signal's handler in the main thread at whatever it is doing: inside a finalizer
    (``__del__``, a weakref or gc callback) the KeyboardInterrupt/SystemExit is printed as
    "Exception ignored" and the replay went on to exit 0. The signal is recorded here and raised
    again before each patient batch and when the replay ends. While ``deferred`` (creating or
    removing the temporary folder, stopping workers) it is only recorded, so a second Ctrl-C
    cannot cut the clean-up short.
    """

    received: int | None = None
    deferred: int = 0


def _on_signal(signum: int, _frame: object) -> None:
    if _Interrupts.received is None:
        _Interrupts.received = signum
    if not _Interrupts.deferred:
        _raise(signum)


def _raise(signum: int) -> None:
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise SystemExit(128 + signum)


def check_interrupted() -> None:
    """Raise again a signal received during this replay (whatever swallowed it)."""
    if _Interrupts.received is not None and not _Interrupts.deferred:
        _raise(_Interrupts.received)


@contextmanager
def _deferred() -> Iterator[None]:
    """SIGINT/SIGTERM recorded but not raised inside: clean-up runs to its end."""
    _Interrupts.deferred += 1
    try:
        yield
    finally:
        _Interrupts.deferred -= 1


@contextmanager
def _handlers() -> Iterator[None]:
    """SIGINT and SIGTERM through ``_on_signal`` (main thread only; SIGINT only if Python's own:
    a SIGINT ignored by whoever started us stays ignored), the previous handlers restored after."""
    previous: dict[int, object] = {}
    _Interrupts.received = None
    for signum in (signal.SIGINT, signal.SIGTERM):
        if signum == signal.SIGINT and signal.getsignal(signum) is not signal.default_int_handler:
            continue
        with suppress(ValueError):  # not the main thread: the caller handles signals
            previous[signum] = signal.signal(signum, _on_signal)
    try:
        yield
    finally:
        with _deferred():
            for signum, handler in previous.items():
                signal.signal(signum, handler)  # type: ignore[arg-type]
            _Interrupts.received = None  # this replay's: not a later evaluate_partition's caller's


@contextmanager
def private_dir(parent: Path | None) -> Iterator[Path]:
    """A private temporary folder, removed on success, error, Ctrl-C and SIGTERM.

    Signals are deferred from before ``mkdtemp`` to the ``try`` and during the removal, so no
    signal can fall between creating the folder and owning its removal, or cut the removal short.
    """
    with _handlers():
        with _deferred():
            try:
                folder = Path(tempfile.mkdtemp(prefix="redflags-replay-", dir=parent))
            except OSError as exc:
                raise SpillError(
                    f"cannot create a temporary folder under {parent or tempfile.gettempdir()}: "
                    f"{exc.strerror or exc}"
                ) from None
        try:
            check_interrupted()  # a signal while it was created: now, with the folder to remove
            yield folder
        finally:
            with _deferred():
                shutil.rmtree(folder, ignore_errors=True)
        check_interrupted()  # received and swallowed somewhere, or during the removal: not a success


def _spill_failed(exc: OSError, folder: Path) -> SpillError:
    if exc.errno in _FULL_DISK:
        return SpillError(
            f"no space left for temporary files under {folder.parent} (choose another with --tmp-dir)"
        )
    return SpillError(f"cannot write temporary files under {folder.parent}: {exc.strerror or exc}")


class Spill:
    """K append-only partition files of ``pid TAB seq TAB source TAB resource-json`` lines."""

    def __init__(self, folder: Path, k: int) -> None:
        self.folder, self.k = folder, k
        self.paths = [folder / f"part-{i:04d}.spill" for i in range(k)]
        self.sizes = [0] * k
        self.files = [self._open(p) for p in self.paths]
        self.seq = 0
        #: The on-disk index of context resources naming no patient (None: there were none),
        #: how many of them no patient's resource referenced (per type), and how many were.
        self.context_index: Path | None = None
        self.context_unreferenced: Counter[str] = Counter()
        self.context_referenced = 0

    def _open(self, path: Path) -> BinaryIO:
        try:
            return path.open("wb", buffering=_BUFFER)
        except OSError as exc:
            raise _spill_failed(exc, self.folder) from None

    def add(
        self,
        pid: str,
        source: int,
        path: str,
        url: str | None,
        resource: dict,
        raw: bytes | None = None,
        context: bool = False,
    ) -> None:
        """``raw``: the JSON text ``resource`` was parsed from, written as it is (same record).
        ``context``: a context resource of ``pid`` (CONTEXT_MARK), joined when referenced."""
        body = _body(path, url, resource, raw)
        if context:
            body = CONTEXT_MARK + body
        line = b"%s\t%d\t%d\t%s\n" % (pid.encode(), self.seq, source, body)
        part = partition_of(pid, self.k)
        try:
            self.files[part].write(line)
        except OSError as exc:
            raise _spill_failed(exc, self.folder) from None
        self.sizes[part] += len(line)
        self.seq += 1

    def close(self) -> None:
        try:
            for f in self.files:
                f.close()
        except OSError as exc:
            raise _spill_failed(exc, self.folder) from None


def _body(path: str, url: str | None, resource: dict, raw: bytes | None) -> bytes:
    """A spill record's JSON part: ``[path, url, resource]`` (``raw``: the resource's own text)."""
    if raw is None:
        return orjson.dumps([path, url, resource])
    return b"%s,%s]" % (orjson.dumps([path, url])[:-1], raw.strip())  # parses to the same list


def _keys(entry: Entry) -> set[str]:
    """The references that find a context resource (as ``intake.index_context`` files it)."""
    return {key for key in (reference_of(entry.resource, entry.full_url), entry.full_url) if key}


def spill(
    files: list[Path],
    folder: Path,
    k: int,
    report: Report,
    stats: Stats,
    progress: ReplayProgress = NO_PROGRESS,
    join: bool = True,
) -> Spill:
    """Phase 1: every resource of every input into the partition of its patient.

    ``join``: context resources naming no patient go to the on-disk index (``context_index``)
    and are joined at evaluation to the patients referencing them; without it (the Spark path
    reads each input alone) they are counted as naming no patient, as before.
    """
    out = Spill(folder, k)
    index_file = folder / "context.sqlite"
    try:
        writer = ContextWriter(index_file) if join else None
    except IndexFull as exc:
        out.close()
        raise _spill_failed(exc, folder) from None
    tick = None if progress is NO_PROGRESS else progress.tick_read  # untouched read path without one
    try:
        for index, path in enumerate(files):
            source = str(path)
            stats.inputs += 1

            def damaged(line: str, index: int = index) -> None:
                stats.damaged.add(index)
                report(line)

            for where, doc, raw in _documents(path, damaged, tick):
                try:
                    intake = group(source, resources_of(doc, where))
                except InputError as exc:
                    damaged(f"{source}: {exc}")
                    continue
                for issue in intake.issues:
                    if issue.severity == "error":
                        damaged(f"{source}: {issue.path}: {issue.message}")
                    elif issue.message.endswith(_NO_PATIENT):
                        stats.without_patient[issue.message.split(" ", 1)[0]] += 1
                for pid, members in intake.patients.items():
                    for entry in members.entries:
                        same = raw if entry.resource is doc else None  # a Bundle's entry: serialised
                        out.add(pid, index, f"{source}: {entry.path}", entry.full_url, entry.resource, same)
                        stats.resources += 1
                        if writer is not None and (target := context_target(entry.resource)):
                            writer.referenced({target, local_reference(target)})
                # A context resource (Encounter, Medication) alone in its line or not referenced in
                # its Bundle: to its patient's partition, joined there if a resource of that patient
                # references it. One naming no patient goes to the on-disk index (context_index),
                # joined to every patient referencing it; counted as naming no patient if none does.
                for owner, entry in intake.context:
                    same = raw if entry.resource is doc else None
                    path_ = f"{source}: {entry.path}"
                    if owner is None and writer is not None:  # counted at the end unless referenced
                        body = _body(path_, entry.full_url, entry.resource, same)
                        writer.add(str(resource_type(entry.resource)), index, _keys(entry), body)
                        continue
                    if owner is None:
                        stats.without_patient[str(resource_type(entry.resource))] += 1
                        continue
                    out.add(owner, index, path_, entry.full_url, entry.resource, same, context=True)
                    # not counted in ``resources``: read only to date a Condition, when one cites it
        if writer is not None:
            unreferenced, referenced = writer.close()
            writer = None
            stats.without_patient.update(unreferenced)  # read through a reference: not counted
            out.context_unreferenced, out.context_referenced = unreferenced, referenced
            out.context_index = index_file if index_file.exists() else None
    except IndexFull as exc:
        raise _spill_failed(exc, folder) from None
    finally:
        if writer is not None:
            writer.abort()
        out.close()
    stats.partitions, stats.partition_bytes = k, list(out.sizes)
    return out


@dataclass(slots=True)
class Evaluated:
    """One patient's result with where its resources came from (sources: input order)."""

    seq: int
    sources: list[str]
    result: PatientResult
    changes: list = field(default_factory=list)  # with a state store: its transitions
    damaged: list[str] = field(default_factory=list)  # its inputs of which a part could not be read


def _groups(
    path: Path, context: dict[str, list[tuple[int, bytes]]] | None = None
) -> dict[str, tuple[int, list[int], list[bytes]]]:
    """One partition's records by patient: (first seq, sources, raw resource JSON), input order.

    Context records (CONTEXT_MARK) go to ``context`` (patient -> (source, JSON)) instead: they
    neither make a patient nor count as its first resource or its source unless joined.
    """
    groups: dict[str, tuple[int, list[int], list[bytes]]] = {}
    with path.open("rb") as f:
        for line in f:
            pid_b, seq_b, src_b, body = line.split(b"\t", 3)
            pid = pid_b.decode()
            if body[:1] == CONTEXT_MARK:
                if context is not None:
                    context.setdefault(pid, []).append((int(src_b), body[1:]))
                continue
            found = groups.get(pid)
            if found is None:
                groups[pid] = found = (int(seq_b), [], [])
            src = int(src_b)
            if src not in found[1]:
                found[1].append(src)
            found[2].append(body)
    return groups


def evaluate_partition(
    path: Path,
    evaluator: Pipeline,
    now: int,
    sources: list[str],
    report: Report,
    stats: Stats,
    progress: ReplayProgress = NO_PROGRESS,
    context_index: Path | None = None,
) -> Iterator[Evaluated]:
    """Phase 2 for one partition: its patients in order of their first resource, each once.

    ``context_index``: the spill's index of context resources naming no patient (read-only).
    """
    reader = ContextReader(context_index) if context_index is not None else None
    try:
        yield from _evaluate_groups(path, evaluator, now, sources, report, stats, progress, reader)
    finally:
        if reader is not None:
            stats.joined_context |= reader.joined
            reader.close()


def _evaluate_groups(
    path: Path,
    evaluator: Pipeline,
    now: int,
    sources: list[str],
    report: Report,
    stats: Stats,
    progress: ReplayProgress,
    reader: ContextReader | None,
) -> Iterator[Evaluated]:
    context: dict[str, list[tuple[int, bytes]]] = {}
    groups = _groups(path, context)
    held = sum(len(g[2]) for g in groups.values()) + sum(map(len, context.values()))
    stats.peak_records = max(stats.peak_records, held)
    order = sorted(groups.items(), key=lambda item: item[1][0])
    del groups
    for start in range(0, len(order), BATCH):
        check_interrupted()  # a Ctrl-C that something swallowed stops the replay here
        batch = order[start : start + BATCH]
        intake = Intake(source="replay")
        for pid, (_seq, srcs, bodies) in batch:
            entries = [Entry(p, res, url) for p, url, res in map(orjson.loads, bodies)]
            intake.patients[pid] = PatientGroup(pid, entries)
            if pid in context or reader is not None:
                _join(intake.patients[pid], context.pop(pid, []), srcs, reader)
        stats.peak_parsed = max(stats.peak_parsed, sum(len(g.entries) for g in intake.patients.values()))
        try:
            results = evaluator.evaluate(intake, now)
        except EngineError as exc:  # a broken rule fails these patients loudly, not the replay
            names = sorted({sources[s] for _pid, (_q, srcs, _b) in batch for s in srcs})
            report(f"{', '.join(names)}: evaluation failed: {exc}")
            progress.evaluated(0, sum(len(bodies) for _pid, (_q, _s, bodies) in batch))
            continue
        for (_pid, (seq, srcs, bodies)), result in zip(batch, results, strict=True):
            stats.patients += 1
            stats.alerts.update(a.tier for a in result.alerts)
            stats.invalid_patients += any(i.severity == "error" for i in result.issues)
            progress.evaluated(1, len(bodies))
            hurt = [sources[s] for s in srcs if s in stats.damaged]
            yield Evaluated(seq, [sources[s] for s in srcs], result, result.transitions, hurt)


def _join(
    patient: PatientGroup,
    records: list[tuple[int, bytes]],
    srcs: list[int],
    reader: ContextReader | None = None,
) -> None:
    """The patient's context records its resources reference joined as ``group`` joins them in
    one input (``intake.join_context``), with those naming no patient found in the on-disk index
    by the same references; their inputs added to ``srcs`` (after its own)."""
    targets = {t for e in patient.entries if (t := context_target(e.resource))}
    if not targets:
        return  # nothing references a context resource: not even parsed
    index: ContextIndex = {}
    came: dict[int, int] = {}  # id(entry) -> its input
    for src, body in records:
        p, url, res = orjson.loads(body)
        entry = Entry(p, res, url)
        came[id(entry)] = src
        index_context(index, patient.pid, entry)
    found = reader.find(targets | {local_reference(t) for t in targets}) if reader is not None else []
    rows: dict[int, int] = {}  # id(entry) -> its row in the index
    for row, src, body in found:
        p, url, res = orjson.loads(body)
        entry = Entry(p, res, url)
        came[id(entry)] = src
        rows[id(entry)] = row
        index_context(index, None, entry)
    for entry in join_context(patient, index):
        if reader is not None and id(entry) in rows:
            reader.joined.add(rows[id(entry)])
        if came[id(entry)] not in srcs:  # the first stays the input of its first own resource
            srcs[1:] = sorted([*srcs[1:], came[id(entry)]])


def replay_all(
    paths: Iterable[Path],
    evaluator: Pipeline,
    now: int,
    render: Callable[[Evaluated], bytes],
    report: Report,
    *,
    tmp_dir: Path | None = None,
    target_bytes: int = TARGET_PARTITION_BYTES,
    stats: Stats | None = None,
    jobs: int = 1,
    setup: WorkerSetup | None = None,
    progress: ReplayProgress = NO_PROGRESS,
) -> Iterator[bytes]:
    """Every input as one data set; ``render``'s bytes per patient, in first-resource order.

    ``render`` runs once per patient as partitions are evaluated (side effects such as --out
    happen then); what it returns is merged into input order and yielded. With ``jobs`` > 1
    partitions are evaluated in that many spawned processes, each built by ``setup`` (its own
    engine and render); their output files are merged the same way, so the output is the same.
    """
    stats = stats if stats is not None else Stats()

    def counted(line: str) -> None:
        stats.errors += 1
        report(line)

    files = expand(paths, counted)
    sources = [str(p) for p in files]
    k = plan(estimated_bytes(files), target_bytes)
    if jobs > 1:  # enough partitions to keep every worker busy (the output does not depend on K)
        k = max(k, PARTITIONS_PER_JOB * jobs)
    with private_dir(tmp_dir) as folder, _frozen_heap():
        progress.reading(files)
        parts = spill(files, folder, k, counted, stats, progress)
        progress.evaluating(stats.resources)
        workers = min(jobs, k)
        if workers > 1 and setup is not None:
            outputs = _evaluate_in_workers(
                parts.paths,
                folder,
                workers,
                setup,
                now,
                sources,
                stats,
                progress,
                report,
                parts.context_index,
            )
        else:
            outputs = [
                _evaluate_one(
                    index,
                    path,
                    folder,
                    evaluator,
                    render,
                    now,
                    sources,
                    counted,
                    stats,
                    progress,
                    parts.context_index,
                )
                for index, path in enumerate(parts.paths)
            ]
        progress.done()  # before the first result line: the display never mixes with them
        yield from _merge(outputs)


@contextmanager
def _frozen_heap() -> Iterator[None]:
    """Everything alive now (imported modules, the compiled rules) out of the collector's sight.

    A replay allocates millions of short-lived acyclic objects (parsed resources, facts), which
    trigger full collections; each walked the whole start-up heap (fhir.resources, the rules):
    a quarter of the CPU time of a split-by-type replay. Unfrozen afterwards, so a caller that
    replays in a long-lived process keeps its normal collections; but a heap the caller had
    frozen itself stays frozen (``gc.unfreeze`` cannot tell its objects from ours).
    """
    frozen_by_caller = gc.get_freeze_count() > 0
    gc.freeze()
    try:
        yield
    finally:
        if not frozen_by_caller:
            gc.unfreeze()


def _evaluate_one(
    index: int,
    path: Path,
    folder: Path,
    evaluator: Pipeline,
    render: Render,
    now: int,
    sources: list[str],
    report: Report,
    stats: Stats,
    progress: ReplayProgress = NO_PROGRESS,
    context_index: Path | None = None,
) -> Path:
    """One partition evaluated and rendered into its output file, sorted by first-resource seq."""
    done = sorted(
        (
            (e.seq, render(e))
            for e in evaluate_partition(path, evaluator, now, sources, report, stats, progress, context_index)
        ),
        key=lambda pair: pair[0],
    )
    path.unlink()
    out = folder / f"out-{index:04d}"
    try:
        with out.open("wb", buffering=_BUFFER) as f:
            for seq, data in done:  # render gives one line (JSON: no raw newline)
                f.write(b"%d\t%s\n" % (seq, data))
    except OSError as exc:
        raise _spill_failed(exc, folder) from None
    return out


def jobs_for(jobs: int) -> int:
    """--jobs: 0 means one process per core."""
    return jobs if jobs > 0 else (os.cpu_count() or 1)


# One per worker process, built by its first task from the parent's WorkerSetup (never forked:
# the durable-rules engine is process-global state, so workers are spawned and compile their own).
# Built in a task, not an initializer, so a failure comes back to the parent as that task's error.
_worker: tuple[Pipeline, Render, Callable[[], bool]] | None = None


_ticks: Queue | None = None  # a worker's channel for progress to the parent (None: no display)


def _init(ticks: Queue | None = None) -> None:
    global _ticks
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and stops workers
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})  # blocked by the parent while spawning
    _ticks = ticks


class _Forward(ReplayProgress):
    """In a worker: evaluated patients sent to the parent's display every BATCH patients (one
    queue message per batch: bounded overhead), the rest when the partition ends."""

    def __init__(self, ticks: Queue) -> None:
        self._ticks = ticks
        self._patients = 0
        self._resources = 0
        self.sent = (0, 0)  # totals put on the queue: the parent waits for them before stopping workers

    def evaluated(self, patients: int, resources: int) -> None:
        self._patients += patients
        self._resources += resources
        if self._patients >= BATCH or (patients == 0 and resources):  # a failed batch: sent too
            self.done()

    def done(self) -> None:
        if self._patients or self._resources:
            self._ticks.put((self._patients, self._resources))
            self.sent = (self.sent[0] + self._patients, self.sent[1] + self._resources)
            self._patients = self._resources = 0


def _work(
    setup: WorkerSetup,
    index: int,
    path: Path,
    folder: Path,
    now: int,
    sources: list[str],
    damaged: set[int],
    context_index: Path | None = None,
) -> tuple[int, int, int, int, bool, Counter[str], int, list[str], tuple[int, int]]:
    """In a worker: one partition to its output file; (patients, errors, peaks, failed, alerts by tier,
    invalid patients, stderr lines, progress sent) back (its peak records are the partition's resources: one
    partition per Stats)."""
    global _worker
    if _worker is None:
        _worker = setup()
        gc.freeze()  # this process's start-up heap, as the parent does in replay_all
    evaluator, render, failed = _worker
    stats = Stats(damaged=damaged)

    def counted(line: str) -> None:
        stats.errors += 1
        print(line, file=sys.stderr)

    # every line this partition prints (its errors, render's invalid elements) goes back to the
    # parent, which prints them in partition order through its display: as --jobs 1 prints them
    lines = io.StringIO()
    forward = _Forward(_ticks) if _ticks is not None else None
    with redirect_stderr(lines):
        _evaluate_one(
            index,
            path,
            folder,
            evaluator,
            render,
            now,
            sources,
            counted,
            stats,
            forward or NO_PROGRESS,
            context_index,
        )
    if forward is not None:
        forward.done()
    return (
        stats.patients,
        stats.errors,
        stats.peak_records,
        stats.peak_parsed,
        failed(),
        stats.alerts,
        stats.invalid_patients,
        lines.getvalue().splitlines(),
        forward.sent if forward is not None else (0, 0),
    )


def _evaluate_in_workers(
    paths: list[Path],
    folder: Path,
    workers: int,
    setup: WorkerSetup,
    now: int,
    sources: list[str],
    stats: Stats,
    progress: ReplayProgress = NO_PROGRESS,
    report: Report | None = None,
    context_index: Path | None = None,
) -> list[Path]:
    """Partitions spread over ``workers`` spawned processes; the outputs are the same files."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    context = multiprocessing.get_context("spawn")
    ticks = None if progress is NO_PROGRESS else context.Queue()
    pool = ProcessPoolExecutor(workers, mp_context=context, initializer=_init, initargs=(ticks,))
    drain = _Drain(ticks, progress) if ticks is not None else None
    try:
        with _spawning():
            futures: list[Future] = [
                pool.submit(_work, setup, i, p, folder, now, sources, stats.damaged, context_index)
                for i, p in enumerate(paths)
            ]
        in_order = _InOrder(futures, report or _stderr)
        for future in futures:  # lines in partition order as partitions complete (the pool's thread)
            future.add_done_callback(in_order.done)
        done = _wait(futures)
        # a waiter wakes before the done callbacks run: print what is left here, under the same
        # lock, so no partition's lines come after the display is removed
        in_order.done(None)
        for future in futures:
            exc = future.exception() if future in done else None
            if exc is not None:
                raise WorkerError(
                    f"a worker process failed: {' '.join(str(exc).split()) or type(exc).__name__}"
                )
        for future in futures:
            patients, errors, peak_records, peak_parsed, failed, alerts, invalid, _lines, sent = (
                future.result()
            )
            stats.patients += patients
            stats.errors += errors
            stats.peak_records = max(stats.peak_records, peak_records)
            stats.peak_parsed = max(stats.peak_parsed, peak_parsed)
            stats.worker_failed |= failed
            stats.alerts.update(alerts)
            stats.invalid_patients += invalid
            if drain is not None:
                drain.expect(*sent)
        if drain is not None:  # what the workers sent is drawn before they are stopped
            drain.wait(timeout=10)
    finally:
        with _deferred():  # a second Ctrl-C cannot leave a worker writing into a removed folder
            _stop(pool)
            if drain is not None:
                drain.stop()
    return [folder / f"out-{i:04d}" for i in range(len(paths))]


def _stop(pool: ProcessPoolExecutor) -> None:
    """Ctrl-C, an error or done: no worker may outlive this (it would write into a removed folder)."""
    processes = list((pool._processes or {}).values())  # no public handle to kill them
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        if process.is_alive():
            process.kill()
    for process in processes:
        process.join()  # SIGKILL cannot be ignored: bounded, and the folder is removed only after


@contextmanager
def _spawning() -> Iterator[None]:
    """SIGINT blocked while workers are spawned: they inherit the mask through exec, so a Ctrl-C
    (sent to the whole process group) cannot kill one half started, before its ``_init`` ignores
    SIGINT. The parent's is deferred, not lost: an interrupted ``submit`` left a child waiting
    for its preparation data (EOFError traceback) and unknown to the pool (never stopped)."""
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        with _deferred():  # the kernel may give the parent's SIGINT to another of its threads
            yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
    check_interrupted()  # now, with every spawned worker registered (and so stopped)


def _wait(futures: list[Future]) -> set[Future]:
    """All done or the first failure. In slices: a signal the kernel delivers to another thread
    (the pool's) only sets a flag, which the main thread acts on when it next runs Python code:
    an untimed wait would hold a Ctrl-C until every partition is evaluated."""
    while True:
        done, pending = wait(futures, timeout=_WAIT_SLICE, return_when=FIRST_EXCEPTION)
        if not pending or any(f.exception() is not None for f in done if not f.cancelled()):
            return done


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


class _InOrder:
    """Workers' stderr lines reported in partition order: each partition's once every earlier
    one has completed (done callbacks run in the pool's thread, or the caller's: hence the lock)."""

    def __init__(self, futures: list[Future], report: Report) -> None:
        self._futures = futures
        self._report = report
        self._next = 0
        self._lock = Lock()

    def done(self, _future: Future) -> None:
        with self._lock:
            while self._next < len(self._futures) and self._futures[self._next].done():
                future = self._futures[self._next]
                self._next += 1
                if not future.cancelled() and future.exception() is None:
                    for line in future.result()[7]:
                        self._report(line)


class _Drain:
    """The parent's thread that moves workers' progress messages onto the display."""

    def __init__(self, ticks: Queue, progress: ReplayProgress) -> None:
        self._ticks = ticks
        self._progress = progress
        self._stop = Event()
        self._got = Condition()
        self._received = [0, 0]
        self._expected = [0, 0]
        self._thread = Thread(target=self._run, name="replay-progress", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            try:
                patients, resources = self._ticks.get(timeout=0.1)
            except Empty:
                if self._stop.is_set():
                    return
                continue
            self._progress.evaluated(patients, resources)
            with self._got:
                self._received[0] += patients
                self._received[1] += resources
                self._got.notify_all()

    def expect(self, patients: int, resources: int) -> None:
        """A worker reported sending these (its partition's result came back)."""
        self._expected[0] += patients
        self._expected[1] += resources

    def wait(self, timeout: float) -> None:
        """Until everything the workers sent has arrived (their queue writes are asynchronous)."""
        with self._got:
            self._got.wait_for(lambda: self._received == self._expected, timeout)

    def stop(self) -> None:
        """After the workers ended: what they sent is drawn, then the thread ends (bounded)."""
        self._stop.set()
        self._thread.join(timeout=5)
        self._ticks.cancel_join_thread()
        self._ticks.close()


def _merge(outputs: list[Path]) -> Iterator[bytes]:
    def read(path: Path) -> Iterator[tuple[int, bytes]]:
        with path.open("rb") as f:
            for line in f:
                seq, data = line.split(b"\t", 1)
                yield int(seq), data[:-1]

    for _seq, data in heapq.merge(*map(read, outputs), key=lambda pair: pair[0]):
        yield data


def temp_dirs(parent: Path) -> list[Path]:
    """This module's temporary folders under ``parent`` (for tests and clean-up checks)."""
    return sorted(parent.glob("redflags-replay-*"))
