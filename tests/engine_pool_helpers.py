"""Functions the engine-pool tests run inside engine processes (module level: sent by name)."""

from __future__ import annotations

import os
import threading
import time

import structlog

from redflags.service.engine_host import hosted


def whoami() -> tuple[int, str | None, int]:
    """This process, the request id its log lines carry, and the rules its pipeline runs."""
    bound = structlog.contextvars.get_contextvars()
    return os.getpid(), bound.get("request_id"), hosted(lambda pipeline: len(pipeline.rules))


def refuse(message: str) -> None:
    raise ValueError(message)


def die() -> None:
    os._exit(3)  # like a crash of the C engine: no exception, no answer


def sleep_for(seconds: float) -> int:
    """A call that overruns a short deadline (the engine is killed: it never returns)."""
    time.sleep(seconds)
    return os.getpid()


def nested(depth: int) -> dict[str, object]:
    """A value nested ``depth`` dicts deep: too deep to pickle."""
    value: dict[str, object] = {}
    for _ in range(depth):
        value = {"a": value}
    return value


class TwoArgError(Exception):
    """Pickles, but cannot be rebuilt from its ``args`` (its ``__init__`` takes two)."""

    def __init__(self, first: str, second: str) -> None:
        super().__init__(f"{first} {second}")


class HoldsLock(Exception):
    """Cannot be pickled at all: it holds a lock."""

    def __init__(self) -> None:
        super().__init__("with a lock")
        self.lock = threading.Lock()


class OnlyInItsProcess(Exception):
    """Round-trips in the engine process, fails to unpickle anywhere else."""

    def __init__(self) -> None:
        super().__init__("local")
        self.origin = os.getpid()

    def __setstate__(self, state: dict[str, object]) -> None:
        if state["origin"] != os.getpid():
            raise RuntimeError("rebuilt in another process")
        self.__dict__.update(state)


def raise_two_arg() -> None:
    raise TwoArgError("a", "b")


def raise_holding_lock() -> None:
    raise HoldsLock


def raise_only_here() -> None:
    raise OnlyInItsProcess


def return_nested(depth: int) -> dict[str, object]:
    return nested(depth)
