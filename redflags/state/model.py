"""The state store's records and interface; every entry point goes through ``StateStore``.

One evaluation of one patient commits in one transaction: the facts it read (history), the
alert transitions it decided (ledger) and the deliveries they need (outbox). Nothing is
acknowledged to anyone before that commit, so a crash loses nothing already accepted; the
delivery worker then sends outbox items until each is delivered or has failed for good.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

Fact = dict[str, object]
#: Outbox item states: waiting (possibly for a retry time), sent and acknowledged, given up.
Status = Literal["pending", "delivered", "failed"]
#: Alert transitions (red-flags.md 16.1/16.2).
Change = Literal["raised", "updated", "withdrawn"]


class StateStoreError(Exception):
    """The store cannot be opened, read or written; the message is one line naming the file."""


@dataclass(frozen=True, slots=True)
class ActiveAlert:
    """The ledger's current view of one (patient, rule): the Flag that is active on the server."""

    patient: str  # "Patient/<id>"
    rule: str
    tier: str
    severity: str
    flag: dict[str, Any]  # the Flag as last sent (identifier, period.start kept across updates)
    careplan: dict[str, Any]  # the CarePlan as last sent
    since: int  # epoch seconds the alert was first raised
    evidence: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Transition:
    """One ledger row: who changed what, when, on which evidence."""

    patient: str
    rule: str
    change: Change
    tier: str | None  # the tier after the change (None when withdrawn)
    at: int  # evaluation time, epoch seconds
    actor: str  # what decided it: "replay:<id>", "service:<request id>", "cli"
    evidence: tuple[str, ...] = ()
    reason: str = ""  # why (for a withdrawal: which evidence no longer holds)


@dataclass(frozen=True, slots=True)
class NewDelivery:
    """An outbox item to add: one transaction Bundle for one patient (at most 8 entries)."""

    patient: str
    rule: str
    change: Change
    bundle: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Delivery:
    """An outbox item as stored."""

    id: int
    patient: str
    rule: str
    change: Change
    bundle: dict[str, Any]
    status: Status
    attempts: int
    next_attempt: int  # epoch seconds: not sent before this time
    created: int
    delivered: int | None = None
    last_error: str | None = None
    outcome: dict[str, Any] | None = None  # the server's OperationOutcome on a failure


@dataclass(frozen=True, slots=True)
class Evaluated:
    """Everything one patient's evaluation commits, atomically (``StateStore.commit``)."""

    patient: str
    now: int
    #: facts read in this delivery, by the resource they came from ("Observation/1"); a
    #: resource sent again replaces its earlier facts (an empty list erases them)
    facts: Mapping[str, Sequence[Fact]] = field(default_factory=dict)
    #: the ledger after this evaluation: rule -> active alert (rules absent here are not active)
    active: Mapping[str, ActiveAlert] = field(default_factory=dict)
    transitions: Sequence[Transition] = ()
    deliveries: Sequence[NewDelivery] = ()


class StateStore(Protocol):
    """History, ledger and outbox of one site. Implementations are safe across processes."""

    # -- history --------------------------------------------------------------------------
    def history(self, patient: str, exclude: Sequence[str] = ()) -> list[Fact]:
        """Stored facts of ``patient``, except those of the resources in ``exclude``."""
        ...

    def facts_by_resource(self, patient: str) -> dict[str, list[Fact]]:
        """Stored facts of ``patient`` by the resource they came from, as ``history`` orders them."""
        ...

    def forget(self, patient: str) -> int:
        """Erase a patient's history, ledger (alerts and transitions) and outbox items; return rows
        removed. Delivered items go too: their bundles name the patient."""
        ...

    def prune(self, before: int) -> int:
        """Drop history facts recorded (``ts``) before ``before``; return how many."""
        ...

    # -- ledger ---------------------------------------------------------------------------
    def active(self, patient: str) -> dict[str, ActiveAlert]: ...

    def transitions(self, patient: str | None = None) -> list[Transition]: ...

    # -- one evaluation -------------------------------------------------------------------
    def commit(self, evaluated: Evaluated) -> list[int]:
        """Store history, ledger and new outbox items in one transaction; return their ids."""
        ...

    # -- outbox ---------------------------------------------------------------------------
    def due(self, now: int, limit: int = 100) -> list[Delivery]:
        """Pending items whose time has come, oldest first, never two of one patient and rule
        (a later change waits until the earlier one is delivered or has failed)."""
        ...

    def claim(self, now: int, limit: int = 100, lease: int = 60) -> list[Delivery]:
        """``due``, each item postponed by ``lease`` seconds: for deliverers that may run side
        by side (two never send one item at once; a dead one's items come back after the lease)."""
        ...

    def mark_delivered(self, item: int, now: int) -> None: ...

    def mark_retry(self, item: int, next_attempt: int, error: str) -> None: ...

    def mark_failed(self, item: int, error: str, outcome: dict[str, Any] | None) -> None: ...

    def retry_now(self, now: int) -> int:
        """Make every pending item due now (``redflags outbox flush``); return how many."""
        ...

    def counts(self) -> dict[Status, int]: ...

    def deliveries(self, status: Status | None = None) -> list[Delivery]: ...

    def close(self) -> None: ...

    # -- added for delivery (issue 10) ------------------------------------------------------
    def due_ids(self, now: int, limit: int = 100) -> list[int]:
        """The ids of ``due`` (no bundle is read)."""
        ...

    def claim_ids(self, now: int, limit: int = 100, lease: int = 60) -> list[int]:
        """The ids of ``claim`` (no bundle is read)."""
        ...

    def delivery(self, item: int) -> Delivery | None:
        """One item with its bundle, None if it is gone."""
        ...

    def next_due(self) -> int | None:
        """The earliest ``next_attempt`` among items not waiting behind another; None if none."""
        ...

    def revise(self, item: int, bundle: dict[str, Any], note: dict[str, Any]) -> bool:
        """Replace a pending item's bundle, keeping ``note`` (an OperationOutcome) as its outcome."""
        ...

    def revise_active(
        self, item: int, before: dict[str, dict[str, Any]], after: dict[str, dict[str, Any]]
    ) -> bool:
        """Record in the ledger the Flag/CarePlan actually delivered for ``item`` (if unchanged since)."""
        ...

    def purge_delivered(self, before: int) -> int:
        """Delete items delivered before ``before``; return how many."""
        ...
