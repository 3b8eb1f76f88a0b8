"""The deadline of the call a store works for, so a networked store gives up before it.

The service sets it around each evaluation in an engine process (``--call-deadline``,
``redflags.service.engine_host``); a store reads ``remaining()`` to bound what it waits for (a
pooled connection, ``postgres_db``) and refuses the call as unavailable (503) in time, instead of
overrunning: the pool would then kill the engine process and answer a server error. Without a
deadline (the CLI, tests) stores keep their own bounds. ``time.monotonic`` is one clock for
every process of the host, so the HTTP process can hand its deadline to an engine process.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from contextvars import ContextVar

_DEADLINE: ContextVar[float | None] = ContextVar("redflags_call_deadline", default=None)


@contextmanager
def until(deadline: float | None) -> Iterator[None]:
    """Within the block, store calls end by ``deadline`` (``time.monotonic``; None: no deadline)."""
    token = _DEADLINE.set(deadline)
    try:
        yield
    finally:
        _DEADLINE.reset(token)


def within(seconds: float) -> AbstractContextManager[None]:
    """``until`` ``seconds`` from now."""
    return until(time.monotonic() + seconds)


def remaining() -> float | None:
    """Seconds left before the current call's deadline (None: no deadline; may be negative)."""
    deadline = _DEADLINE.get()
    return None if deadline is None else deadline - time.monotonic()


__all__ = ["remaining", "until", "within"]
