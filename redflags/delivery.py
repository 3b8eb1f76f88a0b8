"""Sends outbox items to the FHIR server until each is delivered or has failed for good.

An item is a small transaction Bundle whose entries are conditional creates and updates on
stable identifiers, so sending it twice changes nothing: after a crash between the server's
answer and ``mark_delivered`` the item simply goes again. Transient failures (server down,
timeouts, 429, 5xx) are retried later with a growing delay, honouring ``Retry-After``; a 4xx is
the request's own fault and the item is marked failed with the server's OperationOutcome.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from fhir_adapters.fhir_client import FhirClient, FhirPermanentError, FhirTransientError
from redflags.logs import patient_token
from redflags.state.model import Delivery, StateStore

log = structlog.get_logger("redflags.delivery")

#: Delay before the n-th retry of an item (seconds): doubles from 5 s, at most 15 minutes.
FIRST_RETRY_S = 5
MAX_RETRY_S = 900


def retry_delay(attempts: int, retry_after: float | None, rng: Callable[[], float] = random.random) -> int:
    """Seconds until the next attempt: the server's Retry-After if it gave one, else backoff."""
    if retry_after is not None:
        return max(1, int(retry_after + 0.999))
    ceiling = min(MAX_RETRY_S, FIRST_RETRY_S * 2 ** max(attempts - 1, 0))
    return max(1, int(ceiling / 2 + rng() * ceiling / 2))  # jitter: not every client at once


@dataclass(slots=True)
class Round:
    """What one pass over the due items did."""

    delivered: int = 0
    failed: int = 0
    retried: int = 0


def send(item: Delivery, client: FhirClient, store: StateStore, now: int) -> str:
    """Send one item and record the outcome: "delivered", "failed" or "retry"."""
    who = patient_token(item.patient)
    try:
        client.transaction(item.bundle)
    except FhirPermanentError as exc:
        store.mark_failed(item.id, str(exc), exc.outcome)
        log.warning("delivery_failed", item=item.id, rule=item.rule, patient=who, status=exc.status)
        return "failed"
    except FhirTransientError as exc:
        wait = retry_delay(item.attempts + 1, exc.retry_after)
        store.mark_retry(item.id, now + wait, str(exc))
        log.info("delivery_retry", item=item.id, rule=item.rule, patient=who, status=exc.status, wait_s=wait)
        return "retry"
    store.mark_delivered(item.id, now)
    log.info("delivered", item=item.id, rule=item.rule, change=item.change, patient=who)
    return "delivered"


def deliver_due(
    store: StateStore, client: FhirClient, now: int, limit: int = 100, lease: int | None = None
) -> Round:
    """One pass: every item due at ``now`` (at most ``limit``), in outbox order.

    ``lease``: claim the items first (``StateStore.claim``), for a deliverer that may run beside
    another one, like the service's worker beside ``redflags outbox flush``.
    """
    done = Round()
    items = store.claim(now, limit, lease) if lease else store.due(now, limit)
    for item in items:
        outcome = send(item, client, store, now)
        if outcome == "delivered":
            done.delivered += 1
        elif outcome == "failed":
            done.failed += 1
        else:
            done.retried += 1
    return done


def drain(
    store: StateStore,
    client: FhirClient,
    *,
    patience_s: float = 30.0,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
) -> Round:
    """Deliver until nothing is due within ``patience_s``: for commands that must return.

    Items whose next attempt lies beyond the patience (a server that stays down) stay pending
    for ``redflags outbox flush`` or the next run; nothing waits forever.
    """
    total = Round()
    deadline = clock() + patience_s
    while True:
        done = deliver_due(store, client, int(clock()))
        total.delivered += done.delivered
        total.failed += done.failed
        total.retried += done.retried
        if done.delivered or done.failed or done.retried:
            continue  # more may have become due behind them (the next change of a patient/rule)
        upcoming = [d.next_attempt for d in store.deliveries("pending")]
        if not upcoming or min(upcoming) > deadline:
            return total
        sleep(max(0.05, min(upcoming) - clock()))
