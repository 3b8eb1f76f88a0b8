"""The service's engine processes: every evaluation of every request goes to the next free one.

The rules engine is process-global and single-threaded (shared/design/durable-rules.md), so
the service uses cores through processes. Uvicorn's own worker processes would each keep the
kept-alive connections they accepted: measured with ``bench/service.py``, one process then
queued most of 8 clients while the other idled (p99 93 ms). Here one HTTP process reads
requests and hands the work of each (decode, map, evaluate, render) to N engine processes
that wait on one queue, so no request waits while an engine is free.

The processes are children talking pickled frames over their stdin/stdout pipes, driven by
the event loop itself. ``concurrent.futures.ProcessPoolExecutor`` was measured first: its two
helper threads fought the event loop for the GIL (0.6 ms of CPU per call, and a slower loop);
anyio's process pool stops idle workers after 5 minutes (the next call would wait seconds for
the rules to compile) and discards their stderr (the engine's log lines). An engine process
that dies fails the call it held with ``EngineUnavailable`` and is replaced.
"""

from __future__ import annotations

import asyncio
import gc
import os
import pickle
import struct
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

import structlog

from engine.host import run_engine_here
from fhir_adapters.intake import Intake
from redflags import config, logs
from redflags.pipeline import PatientResult, Pipeline
from redflags.service.limits import call_limits
from redflags.state.sqlite_store import open_store
from redflags.stateful import Tracker

T = TypeVar("T")
log = structlog.get_logger("redflags.service.engine")

_FRAME = struct.Struct("!Q")  # length of the pickle that follows
_pipeline: Pipeline | None = None  # in an engine process: its one pipeline
_tracker: Tracker | None = None  # ... and its state store, when the service keeps one


class EngineUnavailable(Exception):
    """An engine process died during this call (answered 500; it is replaced for the next)."""


def pipeline() -> Pipeline:
    """The pipeline of this engine process (for the functions the pool runs)."""
    if _pipeline is None:
        raise RuntimeError("not in an engine process")
    return _pipeline


def quiet_gc() -> None:
    """Keep the collector off the long-lived objects and out of the per-request allocations.

    After start-up the heap holds the libraries and the compiled rules, none of them garbage;
    each request then allocates tens of thousands of acyclic objects (decoded JSON, facts),
    freed by reference counting. With default thresholds the collector ran several full
    passes per request over all of it: measured, orjson decoding a 140 kB body took 2.9 ms in
    the service against 0.5 ms alone.
    """
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


def evaluate(intake: Intake, now: int, *, what_if: bool = False) -> list[PatientResult]:
    """Evaluate in this engine process: with the state store (history, ledger, outbox) if any.

    ``what_if``: the input holds what is not yet so (order-sign's draft orders): history is
    read, nothing is remembered and no alert changes.
    """
    if _tracker is None:
        return pipeline().evaluate(intake, now)
    request = structlog.contextvars.get_contextvars().get("request_id")
    tracked = _tracker.evaluate(intake, now, actor=f"service:{request}", commit=not what_if)
    return [t.result for t in tracked]


def start_here(
    config_path: str | None, state: str | None = None, queue: bool = False, retention_days: int | None = None
) -> Pipeline:
    """Make this process an engine process (engine processes call it; benchmarks too).

    ``state``: the state store file; ``queue``: also queue deliveries (a FHIR server is set).
    """
    global _pipeline, _tracker
    run_engine_here()  # this process only evaluates, on this thread
    _pipeline = Pipeline.from_config(config.load(Path(config_path) if config_path else None))
    _pipeline.max_facts = call_limits().max_facts_per_patient  # redflags serve --max-facts-per-patient
    if state:
        retention = retention_days * 86_400 if retention_days else None
        _tracker = Tracker(_pipeline, open_store(state), actor="service", retention_s=retention, queue=queue)
    quiet_gc()
    return _pipeline


# -- the engine process side ---------------------------------------------------------------------
def _read(stream: BinaryIO) -> Any:
    head = stream.read(_FRAME.size)
    if len(head) < _FRAME.size:
        raise EOFError
    return pickle.loads(stream.read(_FRAME.unpack(head)[0]))


def _write(stream: BinaryIO, value: object) -> None:
    data = pickle.dumps(value, pickle.HIGHEST_PROTOCOL)
    stream.write(_FRAME.pack(len(data)) + data)
    stream.flush()


def serve_engine() -> None:
    """The engine process: one start frame, then (function, request id, args) frames until EOF."""
    inbox, outbox = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # a stray print must not corrupt the frames
    config_path, log_level, salt, state, queue, retention_days = _read(inbox)
    logs.configure(log_level)
    logs.share_salt(salt)
    rules = len(start_here(config_path, state, queue, retention_days).engine.metas)
    log.info("engine_ready", engine=os.getpid(), rules=rules)
    _write(outbox, ("ok", os.getpid()))
    while True:
        try:
            fn, request_id, args = _read(inbox)
        except EOFError:
            return
        structlog.contextvars.bind_contextvars(engine=os.getpid(), request_id=request_id)
        try:
            reply = ("ok", fn(*args))
        except Exception as exc:  # the caller gets it back, as from a local call
            reply = ("error", exc)
        finally:
            structlog.contextvars.clear_contextvars()
        _write(outbox, reply)


# -- the HTTP process side -----------------------------------------------------------------------
class _Engine:
    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        assert process.stdin is not None and process.stdout is not None
        self.stdin, self.stdout = process.stdin, process.stdout

    async def exchange(self, message: object) -> Any:
        data = pickle.dumps(message, pickle.HIGHEST_PROTOCOL)
        self.stdin.write(_FRAME.pack(len(data)) + data)
        await self.stdin.drain()
        head = await self.stdout.readexactly(_FRAME.size)
        return pickle.loads(await self.stdout.readexactly(_FRAME.unpack(head)[0]))


class EnginePool:
    """``processes`` engine processes, each with the site's pipeline, taken in turn when free."""

    def __init__(
        self,
        processes: int,
        config_path: str | None,
        log_level: str,
        state: str | None = None,
        queue: bool = False,
        retention_days: int | None = None,
    ) -> None:
        self.processes = processes
        self._start = (config_path, log_level, logs.salt(), state, queue, retention_days)
        self._idle: asyncio.Queue[_Engine] = asyncio.Queue()
        self._all: set[_Engine] = set()
        self._restarts: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Start every engine process (each compiles the rules) before the first call."""
        engines = await asyncio.gather(*(self._spawn() for _ in range(self.processes)))
        for engine in engines:
            self._idle.put_nowait(engine)

    async def _spawn(self) -> _Engine:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "redflags.service.engine_worker",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        engine = _Engine(process)
        status, _pid = await engine.exchange(self._start)
        if status != "ok":
            raise RuntimeError("an engine process failed to start")
        self._all.add(engine)
        return engine

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        """``fn(*args)`` in an engine process, its log lines under this request's id.

        ``fn`` must be a module-level function; an exception it raises is raised here.
        """
        rid = structlog.contextvars.get_contextvars().get("request_id")
        engine = await self._idle.get()
        try:
            status, value = await engine.exchange((fn, rid, args))
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError) as exc:
            # dead, or its stream is mid-frame: it cannot be reused; a new one starts meanwhile
            task = asyncio.get_running_loop().create_task(self._replace(engine))
            self._restarts.add(task)
            task.add_done_callback(self._restarts.discard)
            if isinstance(exc, asyncio.CancelledError):
                raise
            log.error("engine_process_died", detail="replaced; this call fails")
            raise EngineUnavailable("an engine process stopped during this evaluation") from None
        self._idle.put_nowait(engine)
        if status == "error":
            raise value
        return value

    async def _replace(self, engine: _Engine) -> None:
        self._all.discard(engine)
        if engine.process.returncode is None:
            engine.process.kill()
        await engine.process.wait()
        try:
            self._idle.put_nowait(await self._spawn())
        except Exception as exc:  # the pool runs one engine short; the next failure retries
            log.error("engine_restart_failed", error=type(exc).__name__)

    async def close(self) -> None:
        for engine in self._all:
            engine.stdin.close()  # EOF: the engine process ends its loop
        for engine in self._all:
            try:
                await asyncio.wait_for(engine.process.wait(), 10)
            except TimeoutError:
                engine.process.kill()
        self._all.clear()
