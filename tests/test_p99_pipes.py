"""The pipes to an engine process hold a whole CDS call: one write and one read per crossing.

A ~200-resource call crosses as a ~140 kB frame; with Linux's 64 kB pipes it took three
writes, three reads and as many wake-ups of each side (``redflags.workers.pool.PIPE_BYTES``).
Real engine processes; the pipes' sizes are read back from this side of them.
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import os
import sys

import pytest

from redflags.service.engine_host import engine_pool
from redflags.workers.pool import PIPE_BYTES, EnginePool

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux") or not hasattr(fcntl, "F_GETPIPE_SZ"), reason="Linux pipes"
)


def digest(_pipeline: object, data: bytes) -> tuple[int, str]:
    """What the engine received (run there, as ``engine_host.call`` runs the CDS answer)."""
    return len(data), hashlib.sha256(data).hexdigest()


def _pipe_sizes(pool: EnginePool) -> list[int]:
    sizes = []
    for engine in pool._all:
        for stream in (engine.stdin, engine.stdout):
            pipe = stream._transport.get_extra_info("pipe")  # type: ignore[union-attr]
            sizes.append(fcntl.fcntl(pipe.fileno(), fcntl.F_GETPIPE_SZ))
    return sizes


def test_engine_pipes_hold_a_whole_call_and_frames_cross_intact() -> None:
    with open("/proc/sys/fs/pipe-max-size") as limit:
        if int(limit.read()) < PIPE_BYTES:
            pytest.skip("fs.pipe-max-size below PIPE_BYTES here")
    from redflags.service.engine_host import hosted

    data = os.urandom(3 * PIPE_BYTES // 2)  # more than a pipe holds: crosses in pieces, intact

    async def main() -> None:
        pool = engine_pool(1, None, "warning")
        await pool.start()
        try:
            assert _pipe_sizes(pool) == [PIPE_BYTES, PIPE_BYTES]
            assert await pool.run(hosted, digest, data) == (len(data), hashlib.sha256(data).hexdigest())
            small = b"x" * 140_000  # a CDS call's record
            assert await pool.run(hosted, digest, small) == (len(small), hashlib.sha256(small).hexdigest())
        finally:
            await pool.close()

    asyncio.run(main())
