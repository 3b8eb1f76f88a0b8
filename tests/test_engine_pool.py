"""The service's engine processes (``redflags.workers.pool``), driven directly.

Real child processes: each compiles the rules; answers and errors come back as from a local
call; a process that dies fails only the call it held and is replaced.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable

import pytest
import structlog

from redflags.service.engine_host import engine_pool
from redflags.workers.pool import EnginePool, EngineUnavailable
from rulesets import RULES

from . import engine_pool_helpers as helpers


def _with_pool(processes: int, scenario: Callable[[EnginePool], Awaitable[None]]) -> None:
    async def main() -> None:
        pool = engine_pool(processes, None, "warning")
        await pool.start()
        try:
            await scenario(pool)
        finally:
            await pool.close()

    asyncio.run(main())


def test_answers_and_errors_come_back_as_from_a_local_call() -> None:
    async def scenario(pool: EnginePool) -> None:
        structlog.contextvars.bind_contextvars(request_id="r1")
        pid, request_id, rules = await pool.run(helpers.whoami)
        assert rules == len(RULES)
        assert request_id == "r1"  # the engine's log lines carry the caller's request id
        with pytest.raises(ValueError, match="no such thing"):
            await pool.run(helpers.refuse, "no such thing")
        assert (await pool.run(helpers.whoami))[0] == pid  # an error does not cost the process

    _with_pool(1, scenario)


def test_concurrent_calls_share_the_engines() -> None:
    async def scenario(pool: EnginePool) -> None:
        answers = await asyncio.gather(*(pool.run(helpers.whoami) for _ in range(40)))
        per_process = Counter(pid for pid, _rid, _rules in answers)
        assert len(per_process) == 2, per_process

    _with_pool(2, scenario)


def test_a_dead_engine_fails_its_call_only_and_is_replaced() -> None:
    async def scenario(pool: EnginePool) -> None:
        (before,) = {(await pool.run(helpers.whoami))[0] for _ in range(3)}
        with pytest.raises(EngineUnavailable):
            await pool.run(helpers.die)
        after, _rid, rules = await pool.run(helpers.whoami)  # waits for the replacement
        assert after != before and rules == len(RULES)

    _with_pool(1, scenario)
