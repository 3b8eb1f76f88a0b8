"""Sends outbox items to the FHIR server until each is delivered or has failed for good.

An item is a small transaction Bundle whose entries are conditional creates and updates on
stable identifiers, so sending it twice changes nothing: after a crash between the server's
answer and ``mark_delivered`` the item simply goes again. Transient failures (server down,
timeouts, 429, 5xx, a 2xx answer that is not a transaction-response) are retried later with a
growing delay, honouring ``Retry-After`` up to ``MAX_RETRY_S``; a 4xx is the request's own
fault and the item is marked failed with the server's OperationOutcome, except a rejection
because cited evidence is not on the server: the Flag and CarePlan then go again with that
evidence cited by identifier only (``fhir_adapters.evidence_fallback``), and the outbox item
and the ledger keep what was sent.

Every answer ends as delivered, retry (attempts counted, bounded delay) or failed with a
reason; whatever goes wrong with one item (even a bug) is recorded on it and the pass goes on.
A pass claims a bounded batch of ids and reads one bundle at a time.

An answer showing that the URL or credentials are wrong (``FhirConfigError``: 404 on the base,
an HTML page, 401/403) says nothing about the alert: the item stays pending (the attempt is
counted, and the change is in the audit trail) and the pass ends there, reporting a
configuration error (``drain`` ends too): every further send would meet the same server. Each item not
delivered leaves a ``Problem`` in the round (its id, rule and the reason, never its patient),
so commands can say why.
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from engine.logger import get_logger
from fhir_adapters.evidence_fallback import (
    alert_resources_of,
    downgrade_note,
    missing_evidence,
    without_references,
)
from fhir_adapters.fhir_client import (
    FhirClient,
    FhirConfigError,
    FhirError,
    FhirPermanentError,
    FhirTransientError,
)
from redflags.logs import patient_token
from redflags.state.model import Delivery, StateStore

log = get_logger("redflags.delivery")

#: Delay before the n-th retry of an item (seconds): doubles from 5 s, at most 15 minutes; a
#: longer Retry-After is cut to the same bound.
FIRST_RETRY_S = 5
MAX_RETRY_S = 900
#: Delivered items are kept this long (``outbox status``, audits), then deleted by a deliverer.
DELIVERED_KEEP_S = 30 * 86_400
#: Ids read per query by a deliverer without a lease (one bundle is read at a time anyway).
BATCH = 10

Outcome = Literal["delivered", "failed", "retry", "config"]


def retry_delay(attempts: int, retry_after: float | None, rng: Callable[[], float] = random.random) -> int:
    """Seconds until the next attempt, in [1, MAX_RETRY_S]: the server's Retry-After if it
    gave a usable one, else backoff."""
    if retry_after is not None and math.isfinite(retry_after):
        return int(min(MAX_RETRY_S, max(1, math.ceil(retry_after))))
    ceiling = min(MAX_RETRY_S, FIRST_RETRY_S * 2 ** min(max(attempts - 1, 0), 16))
    return max(1, int(ceiling / 2 + rng() * ceiling / 2))  # jitter: not every client at once


@dataclass(frozen=True, slots=True)
class Problem:
    """Why one item was not delivered: ``message`` names the request and the server's answer
    (with the item's patient reference blanked), ``reason`` is its short category."""

    item: int
    rule: str
    change: str
    outcome: Outcome  # "failed", "retry" or "config"
    reason: str  # "connection refused", "timeout", "HTTP 422", "configuration error", ...
    message: str


@dataclass(slots=True)
class Round:
    """What one pass over the due items did."""

    delivered: int = 0
    failed: int = 0
    retried: int = 0
    #: the last problem of each item not delivered (a later delivery of it removes it)
    problems: dict[int, Problem] = field(default_factory=dict)
    #: set when the server's answer showed the URL or credentials are wrong
    config_error: str | None = None
    #: items delivered in this round (their earlier problems no longer hold)
    cleared: set[int] = field(default_factory=set)

    def add(self, other: Round) -> None:
        self.delivered += other.delivered
        self.failed += other.failed
        self.retried += other.retried
        for item in other.cleared:
            self.problems.pop(item, None)
        self.problems.update(other.problems)
        self.cleared |= other.cleared
        self.config_error = self.config_error or other.config_error

    def by_reason(self) -> dict[str, int]:
        """Items not delivered, counted by reason, most frequent first."""
        return dict(Counter(p.reason for p in self.problems.values()).most_common())


#: ``FhirError.reason`` -> the short last status stored on an item when there is no HTTP status.
_STATUS_OF_REASON = {"connection refused": "refused", "timeout": "timeout", "cannot connect": "no connection"}


def last_status(exc: BaseException) -> str:
    """The status an attempt ended with, for ``outbox list``: the HTTP status, else its kind."""
    if not isinstance(exc, FhirError):
        return "error"
    return str(exc.status) if exc.status else _STATUS_OF_REASON.get(exc.reason, exc.reason)


def _problem(item: Delivery, outcome: Outcome, exc: BaseException) -> Problem:
    reason = exc.reason if isinstance(exc, FhirError) else f"delivery error: {type(exc).__name__}"
    message = " ".join(str(exc).split()).replace(item.patient, "Patient/…") or reason
    return Problem(item.id, item.rule, item.change, outcome, reason, message)


def send(
    item: Delivery, client: FhirClient, store: StateStore, now: int, report: Round | None = None
) -> Outcome:
    """Send one item and record the outcome; never raises for an item's sake.

    An unexpected error (a bug, the store failing) is recorded as a retry, so the item counts
    the attempt and waits instead of coming back at once. ``report``: the round that keeps
    why the item was not delivered.
    """
    try:
        return _send(item, client, store, now, report)
    except Exception as exc:
        log.error("delivery_error", item=item.id, rule=item.rule, error=type(exc).__name__)
        if report is not None:
            report.problems[item.id] = _problem(item, "retry", exc)
        try:
            store.mark_retry(
                item.id,
                now + retry_delay(item.attempts + 1, None),
                f"delivery error: {type(exc).__name__}",
                last_status(exc),
            )
        except Exception as again:  # the store itself: the lease brings the item back later
            log.error("delivery_error_unrecorded", item=item.id, error=type(again).__name__)
        return "retry"


def _send(item: Delivery, client: FhirClient, store: StateStore, now: int, report: Round | None) -> Outcome:
    who = patient_token(item.patient)
    problems = report.problems if report is not None else {}
    bundle = item.bundle
    downgraded: tuple[str, ...] = ()
    while True:
        try:
            client.transaction(bundle)
            break
        except FhirPermanentError as exc:
            fresh = [r for r in missing_evidence(exc.outcome, bundle) or () if r not in downgraded]
            if not fresh:
                store.mark_failed(item.id, str(exc), exc.outcome, last_status(exc))
                log.warning("delivery_failed", item=item.id, rule=item.rule, patient=who, status=exc.status)
                problems[item.id] = _problem(item, "failed", exc)
                return "failed"
            try:
                revised = without_references(bundle, fresh)
            except Exception as bug:  # the fallback cannot be built: the rejection stands
                store.mark_failed(
                    item.id, f"{exc}; evidence fallback: {type(bug).__name__}", exc.outcome, last_status(exc)
                )
                log.error("delivery_fallback_failed", item=item.id, rule=item.rule, error=type(bug).__name__)
                problems[item.id] = _problem(item, "failed", exc)
                return "failed"
            downgraded += tuple(fresh)
            store.revise(item.id, revised, downgrade_note(downgraded, exc.outcome))
            store.revise_active(item.id, alert_resources_of(bundle), alert_resources_of(revised))
            bundle = revised
            log.warning(
                "delivery_evidence_downgraded",
                item=item.id,
                rule=item.rule,
                patient=who,
                references=len(fresh),
            )
        except FhirTransientError as exc:
            wait = retry_delay(item.attempts + 1, exc.retry_after)
            store.mark_retry(item.id, now + wait, str(exc), last_status(exc))
            log.info(
                "delivery_retry", item=item.id, rule=item.rule, patient=who, status=exc.status, wait_s=wait
            )
            problems[item.id] = _problem(item, "retry", exc)
            return "retry"
        except FhirConfigError as exc:  # wrong URL or credentials: the item is not at fault
            wait = retry_delay(item.attempts + 1, None)
            store.mark_retry(item.id, now + wait, str(exc), last_status(exc), audited=True)
            problems[item.id] = problem = _problem(item, "config", exc)
            if report is not None:  # the deliverer logs it once per pass (``deliver_due`` stops here)
                report.config_error = report.config_error or problem.message
            else:
                log.warning(
                    "delivery_config_error", item=item.id, rule=item.rule, status=exc.status, wait_s=wait
                )
            return "config"
    store.mark_delivered(item.id, now)
    problems.pop(item.id, None)
    if report is not None:
        report.cleared.add(item.id)
    log.info(
        "delivered", item=item.id, rule=item.rule, change=item.change, patient=who, downgraded=len(downgraded)
    )
    return "delivered"


def deliver_due(
    store: StateStore,
    client: FhirClient,
    now: int,
    limit: int = 100,
    lease: int | None = None,
    batch: int = BATCH,
    stop: threading.Event | None = None,
) -> Round:
    """One pass: the items due at ``now`` (at most ``limit``), in outbox order, each bundle read
    only when it is sent. An item delivered makes the next change of its patient and rule due
    in the same pass.

    ``lease``: claim each item just before sending it (``StateStore.claim_ids``), for a
    deliverer that may run beside another one, like the service's worker beside
    ``redflags outbox flush``; the lease then covers one send, however long the pass.
    ``stop``: when set, the pass ends after the item being sent (a service shutting down).
    """
    done = Round()
    seen: set[int] = set()
    while len(seen) < limit:
        size = 1 if lease else min(batch, limit - len(seen))
        ids = store.claim_ids(now, size, lease) if lease else store.due_ids(now, size)
        fresh = [i for i in ids if i not in seen]
        if not fresh:
            return done  # nothing due, or only items this pass could not record
        for item_id in fresh:
            if stop is not None and stop.is_set():
                return done  # claimed items not sent come back when their lease runs out
            seen.add(item_id)
            item = store.delivery(item_id)
            if item is None or item.status != "pending":
                continue  # forgotten or finished meanwhile
            outcome = send(item, client, store, now, done)
            if outcome == "delivered":
                done.delivered += 1
            elif outcome == "failed":
                done.failed += 1
            else:
                done.retried += 1
            if outcome == "config":
                return done  # every further send would meet the same wrong server or credentials
    return done


def purge(store: StateStore, now: int, keep_s: int = DELIVERED_KEEP_S) -> int:
    """Delete items delivered more than ``keep_s`` before ``now`` (the deliverer's clock)."""
    return store.purge_delivered(now - keep_s)


def drain(
    store: StateStore,
    client: FhirClient,
    *,
    patience_s: float = 30.0,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
    keep_s: int = DELIVERED_KEEP_S,
) -> Round:
    """Deliver until nothing is due within ``patience_s``: for commands that must return.

    Items whose next attempt lies beyond the patience (a server that stays down), or that are
    still being retried when it runs out, stay pending for ``redflags outbox flush`` or the
    next run; nothing waits forever. Delivered items older than ``keep_s`` are deleted first.
    """
    total = Round()
    deadline = clock() + patience_s
    purge(store, int(clock()), keep_s)
    while True:
        done = deliver_due(store, client, int(clock()))
        total.add(done)
        if done.config_error:
            return total  # every further send would meet the same wrong server
        if done.delivered or done.failed:
            continue  # items left the queue: the next change of their patient/rule may be due
        upcoming = store.next_due()  # items waiting behind an earlier one do not count
        if upcoming is None or upcoming > deadline:
            return total  # (retries always lie ahead: a server asking again and again ends here)
        sleep(max(0.05, upcoming - clock()))
