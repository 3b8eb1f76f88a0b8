"""Every failure of an exchange with an engine process ends the call and leaves the pool whole.

Real engine processes, driven directly (``EnginePool``): data that cannot be pickled, an
exception that cannot be rebuilt on the other side, a stopped process (SIGSTOP), a call past
the deadline. Each scenario runs under an outer bound, so a regression fails instead of hanging.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Awaitable, Callable

import pytest

from redflags.service.engine_host import engine_pool
from redflags.workers.pool import EngineError, EnginePool, EngineUnavailable, UnsendableInput
from rulesets import RULES

from . import engine_pool_helpers as helpers

#: Outer bound of one scenario (engine start-ups included): reached only if something hangs.
BOUND_S = 120


def _with_pool(scenario: Callable[[EnginePool], Awaitable[None]], deadline_s: float = 30.0) -> None:
    async def main() -> None:
        pool = engine_pool(1, None, "warning", deadline_s=deadline_s)
        await pool.start()
        try:
            await asyncio.wait_for(scenario(pool), BOUND_S)
        finally:
            await pool.close()

    asyncio.run(main())


async def _pid(pool: EnginePool) -> int:
    pid, _rid, rules = await pool.run(helpers.whoami)
    assert rules == len(RULES)
    return pid


def test_data_nested_too_deeply_to_send_is_refused_and_costs_no_engine() -> None:
    async def scenario(pool: EnginePool) -> None:
        before = await _pid(pool)
        with pytest.raises(UnsendableInput, match="nested too deeply"):
            await pool.run(helpers.whoami, helpers.nested(100_000))  # past pickle's limit on every Python
        assert await _pid(pool) == before  # the same engine serves the next call
        assert pool.health()["ready"]

    _with_pool(scenario)


@pytest.mark.parametrize(
    "raiser",
    [helpers.raise_two_arg, helpers.raise_holding_lock, helpers.raise_only_here],
    ids=["not-rebuildable", "not-picklable", "not-rebuildable-here"],
)
def test_an_exception_that_cannot_make_the_trip_comes_back_as_engine_error(
    raiser: Callable[[], None],
) -> None:
    async def scenario(pool: EnginePool) -> None:
        before = await _pid(pool)
        with pytest.raises(EngineError):
            await pool.run(raiser)
        assert await _pid(pool) == before

    _with_pool(scenario)


def test_a_message_the_engine_cannot_rebuild_is_an_error_not_a_dead_engine() -> None:
    async def scenario(pool: EnginePool) -> None:
        before = await _pid(pool)
        with pytest.raises(EngineError, match="message not readable"):
            await pool.run(helpers.whoami, helpers.OnlyInItsProcess())  # rebuilt only here
        assert await _pid(pool) == before

    _with_pool(scenario)


def test_an_answer_too_deep_to_send_back_is_an_error_not_a_dead_engine() -> None:
    async def scenario(pool: EnginePool) -> None:
        before = await _pid(pool)
        with pytest.raises(EngineError, match="RecursionError"):
            await pool.run(helpers.return_nested, 5000)
        assert await _pid(pool) == before

    _with_pool(scenario)


def test_a_call_past_the_deadline_kills_and_replaces_its_engine() -> None:
    async def scenario(pool: EnginePool) -> None:
        before = await _pid(pool)
        with pytest.raises(EngineUnavailable, match="did not finish within 1 s"):
            await pool.run(helpers.sleep_for, 3600)
        await _until_ready(pool)
        with pytest.raises(ProcessLookupError):  # killed, and reaped
            os.kill(before, 0)
        assert await _pid(pool) != before

    _with_pool(scenario, deadline_s=1.0)


def test_a_stopped_engine_fails_its_call_at_the_deadline_and_is_replaced() -> None:
    async def scenario(pool: EnginePool) -> None:
        before = await _pid(pool)
        os.kill(before, signal.SIGSTOP)
        with pytest.raises(EngineUnavailable):
            await pool.run(helpers.whoami)
        health = pool.health()  # killed; its replacement still compiling the rules
        assert not health["ready"] and health["alive"] == 0, health
        await _until_ready(pool)
        assert await _pid(pool) != before

    _with_pool(scenario, deadline_s=2.0)


def test_an_engine_that_died_while_idle_is_reported_and_replaced_not_handed_a_call() -> None:
    async def scenario(pool: EnginePool) -> None:
        before = await _pid(pool)
        os.kill(before, signal.SIGKILL)
        while pool.health()["ready"]:  # readiness sees it as soon as the process is reaped
            await asyncio.sleep(0.05)
        assert await _pid(pool) != before  # the call waits for the replacement, it does not fail

    _with_pool(scenario)


def test_close_ends_a_stopped_engine() -> None:
    async def main() -> None:
        pool = engine_pool(1, None, "warning")
        await pool.start()
        pid = await _pid(pool)
        os.kill(pid, signal.SIGSTOP)
        await asyncio.wait_for(pool.close(grace_s=1.0), BOUND_S)
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)

    asyncio.run(main())


async def _until_ready(pool: EnginePool) -> None:
    """The replacement compiles the rules: wait for readiness (bounded by the scenario's bound)."""
    while not pool.health()["ready"]:
        await asyncio.sleep(0.05)
