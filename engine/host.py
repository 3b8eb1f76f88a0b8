"""The one durable-rules host of this process, run the safe way (docs/engine.md#the-safe-way).

- Timer threads off: durable's two re-arming timer threads read freed memory after a
  ``delete_state``; redflags uses no timers (re-evaluation instead), so they never start.
- One engine thread: every durable call of the process goes through ``EngineThread.run``; the
  C engine and its session table are process-global and not thread-safe.
- One live session at a time, deleted in ``finally``: the 1,024-session cap, the stale-list
  crash and 32-bit session-id collisions cannot occur.
- durable's Python side encodes and decodes JSON around every action (the matched facts, the
  session state): with the standard ``json`` module that was a tenth of an evaluation, so its
  module reads orjson instead (``_OrjsonCodec``; same JSON for the values facts hold).
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import durable.engine as durable_engine
import orjson

T = TypeVar("T")


class _QuietHost(durable_engine.Host):  # type: ignore[misc]  # durable ships no types: Host is Any
    """A durable Host whose background dispatch/timer threads are never started."""

    def _run(self) -> None:  # durable starts its timer threads here
        return


class _OrjsonCodec:
    """The two ``json`` functions durable.engine calls, on orjson (UTF-8 out, as ensure_ascii=False)."""

    @staticmethod
    def dumps(value: object, ensure_ascii: bool = False) -> str:
        return orjson.dumps(value).decode()

    loads = staticmethod(orjson.loads)


durable_engine.json = _OrjsonCodec

_lock = threading.Lock()
_host: _QuietHost | None = None
_thread: EngineThread | None = None


class EngineThread:
    """A single worker thread that owns every durable-rules call of the process.

    ``own=False``: the calling thread is the engine thread (a process that does nothing else,
    like the service's engine processes, saves a thread hand-off per call).
    """

    def __init__(self, own: bool = True) -> None:
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="redflags-engine") if own else None
        self._ident = self._pool.submit(threading.get_ident).result() if self._pool else threading.get_ident()

    def run(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the engine thread (directly when already there) and return its result.

        ``fn`` runs in a copy of the caller's context, so the engine's log lines carry the
        caller's bound values (the service's request id).
        """
        if threading.get_ident() == self._ident:
            return fn()
        if self._pool is None:
            raise RuntimeError("this process's rules engine runs on the thread that started it only")
        return self._pool.submit(contextvars.copy_context().run, fn).result()

    @property
    def ident(self) -> int:
        return self._ident


def engine_thread() -> EngineThread:
    global _thread
    with _lock:
        if _thread is None:
            _thread = EngineThread()
        return _thread


def run_engine_here() -> None:
    """Make the calling thread the engine thread; call it before the first Engine is built."""
    global _thread
    with _lock:
        if _thread is not None:
            raise RuntimeError("the engine thread of this process is already chosen")
        _thread = EngineThread(own=False)


def host() -> _QuietHost:
    """The process's host; created on first use (call it on the engine thread)."""
    global _host
    with _lock:
        if _host is None:
            _host = _QuietHost()
        return _host


def background_threads() -> list[str]:
    """Names of threads durable would have started (for tests: must stay empty)."""
    return [t.name for t in threading.enumerate() if isinstance(t, threading.Timer)]
