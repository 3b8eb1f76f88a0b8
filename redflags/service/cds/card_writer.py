"""The cards a CDS call returned, recorded by one writer task instead of a thread hop per call.

Feedback on a card is attributed to its rule by the card's uuid (``redflags.state.feedback``),
so every card shown is recorded before its answer leaves: a card answered and then lost to a
killed process would make its feedback an "unknown card". The write itself costs ~0.03 ms; the
hop to a worker thread that kept it off the event loop cost more than that, and under load (the
engines busy on the same cores) ~0.3 ms of the HTTP process's CPU per call. Here a call queues
its cards and waits; one task takes whatever is queued when it wakes, writes it in one hop (each
call's cards in its own transaction) and releases those calls together.

A full queue (the store slower than the calls) makes a call wait for room, never drops its
cards; ``close`` (the end of the app's lifespan, before the store closes) writes what is queued.
Each call's cards are recorded under the site it was made to (``sites.current``, read when queued).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable

from anyio import to_thread

from engine.logger import get_logger
from redflags import metrics
from redflags.service import sites
from redflags.state.feedback import FeedbackStore, FeedbackStoreError, ShownCard

log = get_logger("redflags.service.feedback")

#: Calls whose cards may wait to be written; past it a call waits for room.
CAPACITY = 4096

_Shown = tuple[str, list[ShownCard], int, str | None, asyncio.Future[None]]


class CardWriter:
    """``record`` queues, one task writes (``start`` in the lifespan, ``close`` at its end)."""

    def __init__(self, store: FeedbackStore, capacity: int = CAPACITY) -> None:
        self.store = store
        self._queue: asyncio.Queue[_Shown] = asyncio.Queue(capacity)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._drain(), name="card-writer")

    async def record(self, service_id: str, cards: Iterable[ShownCard], shown_at: int) -> None:
        """Return once the cards of one answer are written (or their write failed and was logged)."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        shown = (service_id, list(cards), shown_at, sites.current(), done)
        if self._task is None or self._task.done():  # not started, or closed: write now
            await to_thread.run_sync(self._write, [shown])
            return
        await self._queue.put(shown)
        await asyncio.shield(done)  # a cancelled call still has its cards written

    async def close(self) -> None:
        """Write everything queued, then stop the writer task."""
        if self._task is None:
            return
        await self._queue.join()
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _drain(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:  # shielded by anyio: a cancel lands once the batch is written
                await to_thread.run_sync(self._write, batch)
            finally:
                for *_, done in batch:
                    if not done.done():
                        done.set_result(None)
                    self._queue.task_done()

    def _write(self, batch: list[_Shown]) -> None:
        """Each call's cards in its own transaction, as before; a failure costs only its statistics."""
        for service_id, cards, shown_at, site, _ in batch:
            try:
                self.store.record_cards(service_id, cards, shown_at, site=site)
            except Exception as exc:  # the writer must outlive any one bad write
                said = str(exc) if isinstance(exc, FeedbackStoreError) else type(exc).__name__
                log.error("cards_not_recorded", service=service_id, error=said)
                metrics.store_error("feedback")
