"""One tenant's part of a state store, for the commands that act on a shared store.

``redflags outbox --tenant`` and ``redflags replay --state`` deliver, count and list the outbox
items of one tenant only: a replay must not send the service's items to the replay's server.
Everything the view does not narrow goes to the store unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from redflags.state.model import Delivery, OutboxEvent, StateStore, Status


class TenantView:
    """``store`` with its outbox views (``due``, ``claim``, ``counts``, ``deliveries``,
    ``retry_now``, ``retry_failed``, ``outbox_events``) narrowed to ``tenant``."""

    def __init__(self, store: StateStore, tenant: str) -> None:
        self.store = store
        self.tenant = tenant

    def due(self, now: int, limit: int = 100, **_: object) -> list[Delivery]:
        return self.store.due(now, limit, tenant=self.tenant)

    def claim(self, now: int, limit: int = 100, lease: int = 60, **_: object) -> list[Delivery]:
        return self.store.claim(now, limit, lease, tenant=self.tenant)

    def counts(self, **_: object) -> dict[Status, int]:
        return self.store.counts(tenant=self.tenant)

    def deliveries(self, status: Status | None = None, **_: object) -> list[Delivery]:
        return self.store.deliveries(status, tenant=self.tenant)

    def retry_now(self, now: int, **_: object) -> int:
        return self.store.retry_now(now, tenant=self.tenant)

    def retry_failed(
        self, items: Sequence[int] | None, now: int, actor: str = "operator", **_: object
    ) -> list[int]:
        return self.store.retry_failed(items, now, actor, tenant=self.tenant)

    def outbox_events(self, item: int | None = None, **_: object) -> list[OutboxEvent]:
        return self.store.outbox_events(item, tenant=self.tenant)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)
