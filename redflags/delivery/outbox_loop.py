"""The service's delivery loop: the outbox the engine processes fill, sent from this process.

Runs on a worker thread (``requests`` blocks), one pass per second: every item due is sent,
failures are scheduled or recorded by ``redflags.delivery.sender``. Once a day (and at start) it also
deletes delivered items older than the keep period. Stopping waits for the item being sent
(not the rest of the pass); undelivered items stay in the store for the next start or
``redflags outbox flush``.
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Protocol

from anyio import to_thread

from engine.logger import get_logger
from fhir_adapters.fhir_client import Auth, FhirClient
from fhir_adapters.smart_auth import server_auth
from redflags import metrics
from redflags.delivery.sender import DELIVERED_KEEP_S, deliver_due, purge
from redflags.state.model import StateStore, StateStoreError
from redflags.state.stores import open_state

log = get_logger("redflags.service.outbox")

#: ``FhirError.reason`` of a configuration error (logged on its own line, not among the reasons).
CONFIG_REASON = "configuration error"

#: Seconds between passes over the outbox.
INTERVAL_S = 1.0
#: Seconds an item is held by this worker while it sends it (longer than the client's retries);
#: ``serve --outbox-lease`` (after it, a replica killed mid-send leaves the item to the others).
LEASE_S = 120
#: Seconds between two deletions of old delivered items.
PURGE_EVERY_S = 86_400


class OutboxSettings(Protocol):
    """What the loop reads of the service's settings (``redflags.service.settings``)."""

    @property
    def state(self) -> str | None: ...
    @property
    def fhir_server(self) -> str | None: ...
    @property
    def fhir_token(self) -> str | None: ...
    @property
    def fhir_smart(self) -> str | None: ...
    @property
    def delivered_keep_days(self) -> int: ...
    @property
    def outbox_lease_s(self) -> int: ...


def outbox_auth(settings: OutboxSettings) -> Auth | None:
    """The credentials for --fhir-server (ValueError if the SMART file is wrong)."""
    return server_auth(settings.fhir_token, Path(settings.fhir_smart) if settings.fhir_smart else None)


class OutboxWorker:
    def __init__(
        self, store: StateStore, client: FhirClient, keep_s: int = DELIVERED_KEEP_S, lease_s: int = LEASE_S
    ) -> None:
        self.store = store
        self.client = client
        self.keep_s = keep_s
        self.lease_s = lease_s
        self._purged_at: float | None = None
        self._stopping = threading.Event()
        self._task = asyncio.get_running_loop().create_task(self._run())

    @classmethod
    def start(cls, settings: OutboxSettings) -> OutboxWorker | None:
        """A running worker when the service has a state store and a FHIR server, else None."""
        if not (settings.state and settings.fhir_server):
            return None
        client = FhirClient(settings.fhir_server, auth=outbox_auth(settings), on_retry=metrics.fhir_retry)
        keep_s = settings.delivered_keep_days * 86_400
        return cls(open_state(settings.state), client, keep_s, settings.outbox_lease_s)

    async def _run(self) -> None:
        while True:
            try:
                await to_thread.run_sync(self._pass)
            except Exception as exc:  # a store or client bug must not end deliveries for good
                log.error("outbox_pass_failed", error=type(exc).__name__)
                if isinstance(exc, StateStoreError):
                    metrics.store_error("state")
            await asyncio.sleep(INTERVAL_S)

    def _pass(self) -> None:
        now = time.time()
        if self._purged_at is None or now - self._purged_at >= PURGE_EVERY_S:
            self._purged_at = now
            purge(self.store, int(now), self.keep_s)
        done = deliver_due(self.store, self.client, int(now), lease=self.lease_s, stop=self._stopping)
        metrics.outbox_pass(done.delivered, done.retried, done.failed)
        if done.delivered or done.failed or done.retried:
            log.info("outbox_pass", delivered=done.delivered, failed=done.failed, retried=done.retried)
        reasons = {k: n for k, n in done.by_reason().items() if k != CONFIG_REASON}
        if reasons:  # why, by kind (no patient): "connection refused", "HTTP 400", ...
            log.warning("outbox_not_delivered", reasons=reasons)
        if done.config_error:  # the pass stopped at its first item: one line per pass
            log.error("outbox_configuration_error", detail=done.config_error)

    async def stop(self) -> None:
        self._stopping.set()
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass
        self.client.close()
        self.store.close()
