"""The service's engine processes: every evaluation of every request goes to the next free one.

The rules engine is process-global and single-threaded (docs/engine.md#the-safe-way), so
the service uses cores through processes. Uvicorn's own worker processes would each keep the
kept-alive connections they accepted: measured with ``bench/service.py``, one process then
queued most of 8 clients while the other idled (p99 93 ms). Here one HTTP process reads
requests and hands the work of each (decode, map, evaluate, render) to N engine processes
that wait on one queue, so no request waits while an engine is free.

The processes are children talking pickled frames over their stdin/stdout pipes, driven by
the event loop itself. ``concurrent.futures.ProcessPoolExecutor`` was measured first: its two
helper threads fought the event loop for the GIL (0.6 ms of CPU per call, and a slower loop);
anyio's process pool stops idle workers after 5 minutes (the next call would wait seconds for
the rules to compile) and discards their stderr (the engine's log lines).

Every exchange either ends at a frame boundary (the engine goes back to the pool) or the
engine is killed and replaced: an engine that dies, stops (SIGSTOP) or overruns the per-call
deadline fails the call it held with ``EngineUnavailable``. What crosses the pipes cannot
fail half-way: the message is pickled before an engine is taken (``UnsendableInput`` if it
cannot be), and an engine sends back an exception only if it survives a pickle round trip,
else a plain ``EngineError`` naming its type.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import gc
import itertools
import os
import pickle
import struct
import sys
import time
from collections.abc import Callable
from typing import Any, BinaryIO, TypeVar

from engine.logger import bind_contextvars, clear_contextvars, get_contextvars, get_logger
from redflags import logs, metrics

T = TypeVar("T")
log = get_logger("redflags.service.engine")

_FRAME = struct.Struct("!Q")  # length of the pickle that follows


#: Seconds an engine process may take to start (compile the rules) before it is killed.
START_TIMEOUT_S = 120.0
#: Seconds between attempts to start a replacement engine that failed to start.
RESTART_BACKOFF_S = (1.0, 2.0, 5.0, 10.0, 30.0)


class EngineUnavailable(Exception):
    """An engine process died, stopped or overran the deadline during this call (it is replaced)."""


class EngineBusy(EngineUnavailable):
    """No engine process became free within the deadline (the call is refused, nothing killed)."""


class EngineError(Exception):
    """An exception in an engine process that could not be sent back as itself (its type only)."""


class UnsendableInput(ValueError):
    """The call's data cannot be sent to an engine process (nested too deeply to pickle).

    The pool checks no depth itself (a walk of every argument would cost what pickling does):
    it relies on pickle's limit, which depends on the Python (3.11 and 3.12 stop near the
    recursion limit, ~1,000 levels; 3.13 only at its C stack guard, a few thousand). The
    service's calls do not meet it: $evaluate sends its body as bytes (orjson.loads in the
    engine stops at 1,024 levels) and a CDS call its record as one JSON text, whose limit is
    explicit and the same everywhere (``redflags.service.cds.answer.RESOURCE_DEPTH``).
    """


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


# -- the engine process side ---------------------------------------------------------------------
#: Bytes each pipe between the HTTP process and an engine holds (Linux's default is 64 kB). A
#: ~200-resource CDS call is a ~140 kB frame: with 64 kB it crossed in three writes and three
#: reads, each a wake-up of the other side and a turn of the event loop; now in one of each.
PIPE_BYTES = 1 << 20


def widen_pipes(*fds: int) -> None:
    """Give the pipes on ``fds`` ``PIPE_BYTES`` (not Linux, or above fs.pipe-max-size: left as is)."""
    setpipe = getattr(fcntl, "F_SETPIPE_SZ", None)
    for fd in fds if setpipe is not None else ():
        with contextlib.suppress(OSError):
            fcntl.fcntl(fd, setpipe, PIPE_BYTES)


def _read(stream: BinaryIO) -> bytes:
    """One whole frame (EOFError at the end of the stream): decoding it cannot desync the pipe."""
    head = stream.read(_FRAME.size)
    if len(head) < _FRAME.size:
        raise EOFError
    size = _FRAME.unpack(head)[0]
    data = stream.read(size)
    if len(data) < size:
        raise EOFError
    return data


def _write(stream: BinaryIO, data: bytes) -> None:
    stream.write(_FRAME.pack(len(data)) + data)
    stream.flush()


def _dumps(value: object) -> bytes:
    return pickle.dumps(value, pickle.HIGHEST_PROTOCOL)


def _plain_error(exc: BaseException) -> bytes:
    """An error record that always pickles and unpickles: the type's name, no message (data)."""
    return _dumps(("error", EngineError(f"{type(exc).__module__}.{type(exc).__qualname__}")))


def reply_frame(reply: tuple[str, object]) -> bytes:
    """The pickled reply, or a plain error record if the reply cannot make the trip.

    An exception is rebuilt on the other side from its ``args``: one whose ``__init__`` takes
    other arguments, or that holds something unpicklable or nested too deeply, would fail
    there (or here), so it is round-tripped before it is sent.
    """
    status, value = reply
    try:
        data = _dumps(reply)
        if status == "error":
            pickle.loads(data)
    except BaseException as exc:  # RecursionError, PicklingError, TypeError, anything
        log.error("engine_reply_unsendable", error=type(exc).__name__, value=type(value).__name__)
        return _plain_error(value if isinstance(value, BaseException) else exc)
    return data


def _call(data: bytes) -> tuple[str, object]:
    try:
        fn, request_id, args = pickle.loads(data)
    except Exception as exc:  # a message this process cannot rebuild: answered, not fatal
        return "error", EngineError(f"message not readable in the engine: {type(exc).__name__}")
    bind_contextvars(engine=os.getpid(), request_id=request_id)
    try:
        return "ok", fn(*args)
    except Exception as exc:  # the caller gets it back, as from a local call
        return "error", exc
    finally:
        clear_contextvars()


def serve_engine() -> None:
    """The engine process: one start frame (a module-level ``start(*args) -> dict`` of fields for the
    ready line), then (function, request id, args) frames until EOF."""
    inbox, outbox = sys.stdin.buffer, sys.stdout.buffer
    widen_pipes(inbox.fileno(), outbox.fileno())
    sys.stdout = sys.stderr  # a stray print must not corrupt the frames
    start, args, log_level, salt = pickle.loads(_read(inbox))
    logs.configure(log_level)
    logs.share_salt(salt)
    ready = start(*args)  # what this process hosts, made ready (e.g. the rules compiled)
    log.info("engine_ready", engine=os.getpid(), **ready)
    _write(outbox, _dumps(("ok", os.getpid())))
    while True:
        try:
            data = _read(inbox)
        except EOFError:
            return
        _write(outbox, reply_frame(_call(data)))


# -- the HTTP process side -----------------------------------------------------------------------
class _Engine:
    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        assert process.stdin is not None and process.stdout is not None
        self.stdin, self.stdout = process.stdin, process.stdout
        self.busy_since: float | None = None  # monotonic time its current call was sent

    async def exchange(self, data: bytes) -> bytes:
        """Send one frame, read one whole frame back (undecoded: decoding cannot desync)."""
        self.stdin.write(_FRAME.pack(len(data)) + data)
        await self.stdin.drain()
        head = await self.stdout.readexactly(_FRAME.size)
        return await self.stdout.readexactly(_FRAME.unpack(head)[0])


def _message(fn: Callable[..., object], rid: object, args: tuple[object, ...]) -> bytes:
    try:
        return _dumps((fn, rid, args))
    except RecursionError:
        raise UnsendableInput("the data is nested too deeply to be evaluated") from None
    except Exception as exc:  # PicklingError, TypeError: a value that is not plain data
        raise UnsendableInput(f"the data cannot be evaluated ({type(exc).__name__})") from None


def _reply(data: bytes) -> tuple[str, Any]:
    try:
        return pickle.loads(data)
    except Exception as exc:  # rebuilt here from what the engine sent: a class that cannot be
        log.error("engine_reply_unreadable", error=type(exc).__name__)
        return "error", EngineError(f"an engine's answer could not be read ({type(exc).__name__})")


class EnginePool:
    """``processes`` engine processes, each made ready by ``start(*args)``, taken in turn when free."""

    def __init__(
        self,
        processes: int,
        start: Callable[..., dict[str, object]],
        args: tuple[object, ...],
        log_level: str,
        deadline_s: float = 60.0,
    ) -> None:
        self.processes = processes
        self.deadline_s = deadline_s  # per call: waiting for an engine, then the exchange
        self._start = _dumps((start, args, log_level, logs.salt()))  # sent by reference: module level
        self._idle: asyncio.Queue[_Engine] = asyncio.Queue()
        self._all: set[_Engine] = set()
        self._dying: set[_Engine] = set()  # killed, not yet reaped
        self._restarts: set[asyncio.Task[None]] = set()
        self._waiting = 0  # calls waiting for a free engine
        self._all_busy_since: float | None = None  # monotonic; None while an engine is idle
        self._closing = False

    async def start(self) -> None:
        """Start every engine process (each compiles the rules) before the first call."""
        engines = await asyncio.gather(*(self._spawn() for _ in range(self.processes)))
        for engine in engines:
            self._idle.put_nowait(engine)

    async def _spawn(self) -> _Engine:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "redflags.workers.process",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        engine = _Engine(process)
        try:
            async with asyncio.timeout(START_TIMEOUT_S):
                status, _pid = pickle.loads(await engine.exchange(self._start))
        except BaseException:
            _kill(engine)
            raise
        if status != "ok":
            _kill(engine)
            raise RuntimeError("an engine process failed to start")
        self._all.add(engine)
        return engine

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        """``fn(*args)`` in an engine process, its log lines under this request's id.

        ``fn`` must be a module-level function; an exception it raises is raised here.
        ``EngineBusy`` if no engine is free within the deadline; ``EngineUnavailable`` if the
        engine fails or overruns the deadline (it is then killed and replaced).
        """
        rid = get_contextvars().get("request_id")
        data = _message(fn, rid, args)  # before an engine is taken: a failure here costs none
        engine = await self._take()
        try:
            async with asyncio.timeout(self.deadline_s):
                reply = await engine.exchange(data)
        except BaseException as exc:  # mid-frame, dead, stopped or late: it cannot be reused
            self._discard(engine)
            timeout, failed = isinstance(exc, TimeoutError), isinstance(exc, Exception)
            metrics.engine_restart("deadline" if timeout else "died" if failed else "cancelled")
            if isinstance(exc, TimeoutError):
                log.error("engine_call_timeout", deadline_s=self.deadline_s, detail="killed and replaced")
                raise EngineUnavailable(
                    f"the evaluation did not finish within {self.deadline_s:g} s (server error)"
                ) from None
            if not isinstance(exc, Exception):
                raise  # cancelled (the client left, or shutdown): the engine is replaced all the same
            log.error("engine_process_died", error=type(exc).__name__, detail="replaced; this call fails")
            raise EngineUnavailable("an engine process stopped during this evaluation") from None
        self._release(engine)
        status, value = _reply(reply)
        if status == "error":
            raise value
        return value

    async def _take(self) -> _Engine:
        was_idle = not self._idle.empty()
        self._waiting += 1
        try:
            async with asyncio.timeout(self.deadline_s):
                engine = await self._idle.get()
                while engine.process.returncode is not None:  # died while idle: replace, take another
                    log.error("engine_process_died", detail="while idle; replaced")
                    self._discard(engine)
                    metrics.engine_restart("died")
                    engine = await self._idle.get()
        except TimeoutError:
            log.warning("engine_busy", deadline_s=self.deadline_s, waiting=self._waiting)
            metrics.engine_busy()
            raise EngineBusy(
                f"every engine process stayed busy for {self.deadline_s:g} s: try again"
            ) from None
        finally:
            self._waiting -= 1
        if was_idle:  # an engine was idle until now: any older mark is stale
            self._all_busy_since = None
        if self._idle.empty() and self._all_busy_since is None:
            self._all_busy_since = time.monotonic()
        engine.busy_since = time.monotonic()
        return engine

    def _release(self, engine: _Engine) -> None:
        engine.busy_since = None
        if not self._waiting:  # no call takes it at once: an engine is idle again
            self._all_busy_since = None
        self._idle.put_nowait(engine)

    def _discard(self, engine: _Engine) -> None:
        """Kill it now (a stopped process too) and start a replacement in the background."""
        self._all.discard(engine)
        self._dying.add(engine)
        _kill(engine)
        if self._closing:
            return
        task = asyncio.get_running_loop().create_task(self._replace(engine))
        self._restarts.add(task)
        task.add_done_callback(self._restarts.discard)

    async def _replace(self, engine: _Engine) -> None:
        await engine.process.wait()
        self._dying.discard(engine)
        for attempt in itertools.count():  # until one starts or the pool closes
            try:
                fresh = await self._spawn()
            except Exception as exc:
                pause = RESTART_BACKOFF_S[min(attempt, len(RESTART_BACKOFF_S) - 1)]
                log.error("engine_restart_failed", error=type(exc).__name__, retry_in_s=pause)
                await asyncio.sleep(pause)
                if self._closing:
                    return
                continue
            if self._closing:
                _kill(fresh)
                return
            self._release(fresh)
            return

    def health(self) -> dict[str, object]:
        """What readiness reports: ``ready`` is False while a call could not be served in time.

        Not ready: fewer engine processes alive than configured (dead, restarting or failed
        to restart), one busy with a call past the deadline, or every one busy for longer
        than the deadline (calls would wait past it).
        """
        now = time.monotonic()
        alive = [e for e in self._all if e.process.returncode is None]
        stuck = sum(1 for e in alive if e.busy_since is not None and now - e.busy_since > self.deadline_s)
        busy = sum(1 for e in alive if e.busy_since is not None)
        since = self._all_busy_since
        saturated = self._idle.empty() and since is not None and now - since > self.deadline_s
        ready = not self._closing and len(alive) >= self.processes and not stuck and not saturated
        return {
            "ready": ready,
            "processes": self.processes,
            "alive": len(alive),
            "busy": busy,
            "stuck": stuck,
            "waiting": self._waiting,
            "saturated": saturated,
        }

    async def close(self, grace_s: float = 5.0) -> None:
        """End every engine process within ``grace_s``: EOF first, then SIGKILL (a stopped one too)."""
        self._closing = True
        for task in list(self._restarts):
            task.cancel()
        engines = list(self._all)
        for engine in engines:
            engine.stdin.close()  # EOF: the engine process ends its loop
        engines += self._dying
        if engines:
            _done, late = await asyncio.wait(
                [asyncio.ensure_future(e.process.wait()) for e in engines], timeout=grace_s
            )
            for engine in engines:
                _kill(engine)
            if late:
                await asyncio.wait(late, timeout=grace_s)
        self._all.clear()
        self._dying.clear()


def _kill(engine: _Engine) -> None:
    if engine.process.returncode is None:
        try:
            engine.process.kill()  # SIGKILL ends a SIGSTOPped process too
        except ProcessLookupError:
            pass
