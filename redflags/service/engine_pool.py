"""The service's engine processes: every evaluation of every request goes to the next free one.

The rules engine is process-global and single-threaded (shared/design/durable-rules.md), so
the service uses cores through processes. Uvicorn's own worker processes would each keep the
kept-alive connections they accepted: measured with ``bench/service.py``, one process then
queued most of 8 clients while the other idled (p99 93 ms). Here one HTTP process reads
requests and hands the work of each (decode, map, evaluate, render) to a pool of N engine
processes fed from one queue, so no request waits while an engine is free.

Only bytes and plain values cross the boundary. An engine process that dies (a durable-rules
crash) fails the calls it held with ``EngineUnavailable`` and the pool is replaced.
"""

from __future__ import annotations

import asyncio
import gc
import multiprocessing
import os
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import TypeVar

import structlog

from redflags import config, logs
from redflags.pipeline import Pipeline

T = TypeVar("T")
log = structlog.get_logger("redflags.service.engine")

_pipeline: Pipeline | None = None  # in an engine process: its one pipeline


class EngineUnavailable(Exception):
    """An engine process died during this call (answered 500; the next call gets a new pool)."""


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


def start_here(config_path: str | None) -> Pipeline:
    """Make this process an engine process (the pool's initializer; benchmarks call it too)."""
    global _pipeline
    _pipeline = Pipeline.from_config(config.load(Path(config_path) if config_path else None))
    quiet_gc()
    return _pipeline


def _start(config_path: str | None, log_level: str, salt: bytes) -> None:
    logs.configure(log_level)
    logs.share_salt(salt)
    rules = len(start_here(config_path).engine.metas)
    log.info("engine_ready", engine=os.getpid(), rules=rules)


def _ready() -> int:
    pipeline()
    time.sleep(0.1)  # hold this process, so the next probe reaches another one
    return os.getpid()


def _call(fn: Callable[..., T], request_id: str | None, args: tuple) -> T:
    structlog.contextvars.bind_contextvars(engine=os.getpid())  # which process did the work
    if request_id:
        structlog.contextvars.bind_contextvars(request_id=request_id)
    try:
        return fn(*args)
    finally:
        structlog.contextvars.clear_contextvars()


class EnginePool:
    """``processes`` engine processes, each with the site's pipeline, fed from one queue."""

    def __init__(self, processes: int, config_path: str | None, log_level: str) -> None:
        self.processes = processes
        self._args = (config_path, log_level, logs.salt())
        self._pool = self._new()

    def _new(self) -> ProcessPoolExecutor:
        # spawn, not fork: the HTTP process has an event loop and threads running
        return ProcessPoolExecutor(
            self.processes,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_start,
            initargs=self._args,
        )

    def start(self) -> None:
        """Start every engine process now (each compiles the rules) rather than on first calls."""
        started: set[int] = set()
        while len(started) < self.processes:
            started |= {f.result() for f in [self._pool.submit(_ready) for _ in range(self.processes)]}

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        """``fn(*args)`` in an engine process, its log lines under this request's id.

        ``fn`` must be a module-level function; exceptions it raises come back as they are.
        """
        rid = structlog.contextvars.get_contextvars().get("request_id")
        pool = self._pool
        try:
            return await asyncio.get_running_loop().run_in_executor(pool, _call, fn, rid, args)
        except BrokenProcessPool:
            log.error("engine_process_died", detail="the engine pool is replaced; this call fails")
            if self._pool is pool:
                self._pool = self._new()
                pool.shutdown(wait=False, cancel_futures=True)
            raise EngineUnavailable("an engine process stopped during this evaluation") from None

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
