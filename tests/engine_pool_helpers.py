"""Functions the engine-pool tests run inside engine processes (module level: sent by name)."""

from __future__ import annotations

import os

import structlog

from redflags.service.engine_pool import pipeline


def whoami() -> tuple[int, str | None, int]:
    """This process, the request id its log lines carry, and the rules its pipeline runs."""
    bound = structlog.contextvars.get_contextvars()
    return os.getpid(), bound.get("request_id"), len(pipeline().engine.metas)


def refuse(message: str) -> None:
    raise ValueError(message)


def die() -> None:
    os._exit(3)  # like a crash of the C engine: no exception, no answer
