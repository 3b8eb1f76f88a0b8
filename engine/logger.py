"""Loggers that import structlog at their first log call, not at import time.

Why: importing structlog costs ~90 ms (its package imports rich and asyncio), a third of a
one-file ``redflags replay`` start-up that logs nothing. Every module takes its logger from
``get_logger`` here (tests/test_speed_startup_imports.py checks it), so structlog is loaded
only by a process that logs. The configuration a command chooses (``configure``) and the
run id it binds (``bind_contextvars``) are kept until then; once structlog is loaded they go
to it directly, so a logger made before the configuration still logs as configured.

A neutral leaf that knows no data formats and imports nothing of this project: every layer may import it.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from contextvars import ContextVar
from types import MappingProxyType, ModuleType
from typing import Any

#: the configuration to apply when structlog is first loaded (the last one chosen wins)
_pending_configuration: Callable[[ModuleType], None] | None = None
#: the chosen level (logging's numbers): a call below it needs no structlog (0: none chosen yet)
_threshold = 0
#: the level of each method of structlog's filtering logger (``log(level, ...)`` is not here)
LEVELS: dict[str, int] = {
    "debug": 10,
    "info": 20,
    "msg": 20,
    "warning": 30,
    "warn": 30,
    "error": 40,
    "err": 40,
    "exception": 40,
    "critical": 50,
    "fatal": 50,
}
#: run ids bound before structlog was loaded (a ContextVar: per thread and task, as structlog's)
_pending_context: ContextVar[Mapping[str, Any]] = ContextVar(
    "redflags_pending_log_context", default=MappingProxyType({})
)


def _loaded() -> ModuleType | None:
    """structlog if some module has imported it already (then nothing is pending any more)."""
    return sys.modules.get("structlog")


def _structlog() -> ModuleType:
    """Import structlog; apply the configuration chosen before it was loaded."""
    global _pending_configuration
    import structlog  # a dictionary look-up once loaded

    if _pending_configuration is not None:
        apply, _pending_configuration = _pending_configuration, None
        apply(structlog)
    return structlog


def configure(apply: Callable[[ModuleType], None], threshold: int = 0) -> None:
    """Run ``apply(structlog)`` now if structlog is loaded, else at the first log call.

    ``threshold``: the level ``apply`` filters at; calls below it are dropped unloaded.
    """
    global _pending_configuration, _threshold
    _pending_configuration, _threshold = apply, threshold
    if _loaded() is not None:
        _structlog()


class LazyLogger:
    """Stands for ``structlog.get_logger(name)``; the first attribute looked up loads it."""

    __slots__ = ("_logger", "_name")

    def __init__(self, name: str) -> None:
        self._name = name
        self._logger: Any = None

    def __getattr__(self, attr: str) -> Any:
        if self._logger is None:
            if LEVELS.get(attr, 100) < _threshold and _loaded() is None:
                return _ignore  # filtered out anyway: not worth loading structlog for
            # structlog's own lazy proxy: it reads the configuration at every call
            self._logger = _structlog().get_logger(self._name)
        return getattr(self._logger, attr)

    def __repr__(self) -> str:
        return f"<LazyLogger {self._name}>"


def _ignore(*_args: object, **_kw: object) -> None:
    """A log call below the configured level."""


def get_logger(name: str) -> Any:
    """The logger of ``name`` (a ``structlog`` bound logger once used)."""
    return LazyLogger(name)


def merge_pending_context(_logger: object, _method: str, event: MutableMapping[str, Any]) -> Any:
    """A structlog processor: the ids bound before structlog was loaded (structlog's win)."""
    for key, value in _pending_context.get().items():
        event.setdefault(key, value)
    return event


def bind_contextvars(**values: Any) -> None:
    """Bind ``values`` to every log line of this context (as structlog.contextvars does)."""
    module = _loaded()
    if module is None:
        _pending_context.set({**_pending_context.get(), **values})
    else:
        module.contextvars.bind_contextvars(**values)


def unbind_contextvars(*keys: str) -> None:
    """Remove ``keys`` from this context's log lines."""
    pending = _pending_context.get()
    if any(key in pending for key in keys):
        _pending_context.set({k: v for k, v in pending.items() if k not in keys})
    module = _loaded()
    if module is not None:
        module.contextvars.unbind_contextvars(*keys)


def clear_contextvars() -> None:
    """Remove everything bound to this context's log lines."""
    if _pending_context.get():
        _pending_context.set({})
    module = _loaded()
    if module is not None:
        module.contextvars.clear_contextvars()


def get_contextvars() -> dict[str, Any]:
    """What this context's log lines carry."""
    module = _loaded()
    return {**_pending_context.get(), **(module.contextvars.get_contextvars() if module else {})}


@contextlib.contextmanager
def bound_contextvars(**values: Any) -> Iterator[None]:
    """``values`` on this context's log lines inside the ``with`` block only."""
    with _structlog().contextvars.bound_contextvars(**values):
        yield
