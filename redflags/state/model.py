"""The stores' records and interfaces: ``StateStore``, ``FeedbackStore``, ``JtiStore``.

Callers hold these protocol types and open stores through ``redflags.state.stores``; an
implementation on another database (issue 14) sits beside the SQLite ones without them changing.

One evaluation of one patient commits in one transaction: the facts it read (history), the
alert transitions it decided (ledger) and the deliveries they need (outbox). Nothing is
acknowledged to anyone before that commit, so a crash loses nothing already accepted; the
delivery worker then sends outbox items until each is delivered or has failed for good.

Everything is kept per *tenant* + patient: the tenant is who sent the data (a CDS client and
its FHIR server, a static-token caller, or the operator's ``default``); ``Patient/1`` of one
tenant is another person than ``Patient/1`` of the next, and a tenant never reads or changes
another's rows. Several evaluations of one patient may run at once (``serve --workers``): an
evaluation reads a ``Snapshot`` and commits with the sequence number it saw, and a commit that
finds the patient changed since is refused (``StaleRead``): the evaluation is done again on the
new state, so no alert is raised twice and none withdrawn comes back.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol

Fact = dict[str, object]
#: Outbox item states: waiting (possibly for a retry time), sent and acknowledged, given up.
Status = Literal["pending", "delivered", "failed"]
#: Alert transitions (docs/clinical-policy.md#alert-lifecycle).
Change = Literal["raised", "updated", "withdrawn"]
#: The tenant of ``redflags replay`` and of every row written before tenants existed.
DEFAULT_TENANT = "default"


class StateStoreError(Exception):
    """The store cannot be opened, read or written; the message is one line naming the file."""


class StoreUnavailable(Exception):
    """Any store's database cannot be reached now (connection refused or lost, the server
    restarting, no pooled connection within the wait): the call may succeed later, so the
    service answers 503, never 500. Raised as one of the subclasses below."""


class StateStoreUnavailable(StateStoreError, StoreUnavailable):
    """The state store's database is unreachable for now (``StoreUnavailable``)."""


class NoStateStore(StateStoreError):
    """A command that reads or changes a store was given a file that does not exist."""


class PatientBusy(StateStoreError, StoreUnavailable):
    """Other evaluations kept changing the patient while this one ran: contention, not a fault,
    so the caller may call again (503), like an unreachable database."""


class StaleRead(StateStoreError):
    """The patient changed after the evaluation read it: evaluate again on the new state."""


@dataclass(frozen=True, slots=True)
class Unfinished:
    """What erasing one patient would abandon: alerts active on the FHIR server (nobody would
    withdraw their Flags any more) and outbox items not delivered (pending: an alert lost
    without a word; failed: waiting for an operator)."""

    active: int = 0
    pending: int = 0
    failed: int = 0

    def __bool__(self) -> bool:
        return bool(self.active or self.pending or self.failed)


class ForgetRefused(StateStoreError):
    """``forget`` without ``force`` of a patient with active alerts or undelivered items:
    nothing was erased (``left`` says what is outstanding)."""

    def __init__(self, left: Unfinished) -> None:
        super().__init__(
            f"{left.active} active alerts, {left.pending} pending and {left.failed} failed outbox items"
        )
        self.left = left


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
    tenant: str = DEFAULT_TENANT


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
    tenant: str = DEFAULT_TENANT
    #: the last attempt's HTTP status or kind of failure ("400", "refused", "timeout", ...)
    last_status: str | None = None


@dataclass(frozen=True, slots=True)
class OutboxEvent:
    """One row of the outbox's audit trail: an item changed status (failed by the deliverer,
    put back in the queue by an operator), when, by whom and why."""

    item: int
    tenant: str
    patient: str
    rule: str
    at: int  # epoch seconds
    before: str  # the item's status before
    after: str
    actor: str  # "delivery", "operator"
    reason: str


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One patient of one tenant as one read saw it: history, ledger and sequence number."""

    facts: dict[str, list[Fact]]  # by resource, as ``facts_by_resource``
    active: dict[str, ActiveAlert]
    seq: int  # bumped by every commit of this patient; 0: nothing stored


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
    tenant: str = DEFAULT_TENANT
    #: the ``Snapshot.seq`` this evaluation read; the commit is refused (``StaleRead``) when the
    #: patient has changed since. None: no check (a single writer, e.g. a test).
    seen: int | None = None


class StateStore(Protocol):
    """History, ledger and outbox of one site. Implementations are safe across processes."""

    # -- history --------------------------------------------------------------------------
    def history(
        self, patient: str, exclude: Sequence[str] = (), *, tenant: str = DEFAULT_TENANT
    ) -> list[Fact]:
        """Stored facts of ``patient``, except those of the resources in ``exclude``."""
        ...

    def facts_by_resource(self, patient: str, *, tenant: str = DEFAULT_TENANT) -> dict[str, list[Fact]]:
        """Stored facts of ``patient`` by the resource they came from, as ``history`` orders them."""
        ...

    def forget(self, patient: str, *, tenant: str = DEFAULT_TENANT, force: bool = False) -> int:
        """Erase a patient's history, ledger (alerts and transitions) and outbox items in one
        tenant; return rows removed. Delivered items go too: their bundles name the patient.

        ``ForgetRefused`` (nothing erased) while the patient has active alerts or pending or
        failed outbox items, unless ``force``: checked in the erasing transaction, so an
        evaluation cannot slip an alert in between. Logs ``state.forget`` with the counts."""
        ...

    def prune(self, before: int, *, tenant: str | None = None) -> int:
        """Drop history facts recorded (``ts``) before ``before`` (of one tenant, or of all);
        return how many."""
        ...

    # -- ledger ---------------------------------------------------------------------------
    def active(self, patient: str, *, tenant: str = DEFAULT_TENANT) -> dict[str, ActiveAlert]: ...

    def transitions(self, patient: str | None = None, *, tenant: str | None = None) -> list[Transition]:
        """Ledger rows, oldest first; ``tenant`` None: every tenant's (the operator's view)."""
        ...

    def snapshot(self, patient: str, *, tenant: str = DEFAULT_TENANT) -> Snapshot:
        """History, ledger and sequence number of one patient, read in one transaction."""
        ...

    def patient_lock(self, patient: str, *, tenant: str = DEFAULT_TENANT) -> AbstractContextManager[None]:
        """Held across one evaluation (snapshot -> evaluate -> commit) of ``patient``, so that
        evaluations of one patient by several processes or hosts run one after the other
        instead of being refused (``StaleRead``) and done again. The ``seen`` check of
        ``commit`` stays what makes them correct; the lock makes them cheap."""
        ...

    def tenants(self, patient: str | None = None) -> dict[str, int]:
        """Every tenant with stored rows (of ``patient`` only, if given), and how many patients
        it has history, alerts, transitions or outbox items for."""
        ...

    # -- one evaluation -------------------------------------------------------------------
    def commit(self, evaluated: Evaluated) -> list[int]:
        """Store history, ledger and new outbox items in one transaction; return their ids.

        ``StaleRead`` when ``evaluated.seen`` is set and the patient changed since that read."""
        ...

    # -- outbox ---------------------------------------------------------------------------
    def due(self, now: int, limit: int = 100, *, tenant: str | None = None) -> list[Delivery]:
        """Pending items whose time has come, oldest first, never two of one tenant, patient and
        rule (a later change waits until the earlier one is delivered or has failed)."""
        ...

    def claim(
        self, now: int, limit: int = 100, lease: int = 60, *, tenant: str | None = None
    ) -> list[Delivery]:
        """``due``, each item postponed by ``lease`` seconds: for deliverers that may run side
        by side (two never send one item at once; a dead one's items come back after the lease)."""
        ...

    def mark_delivered(self, item: int, now: int, last_status: str | None = "delivered") -> None: ...

    def mark_retry(
        self, item: int, next_attempt: int, error: str, last_status: str | None = None, audited: bool = False
    ) -> None: ...

    def mark_failed(
        self, item: int, error: str, outcome: dict[str, Any] | None, last_status: str | None = None
    ) -> None: ...

    def retry_now(self, now: int, *, tenant: str | None = None) -> int:
        """Make every pending item due now (``redflags outbox flush``); return how many."""
        ...

    def counts(self, *, tenant: str | None = None) -> dict[Status, int]: ...

    def deliveries(self, status: Status | None = None, *, tenant: str | None = None) -> list[Delivery]: ...

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

    # -- added for operators (issue 12) -----------------------------------------------------
    def retry_failed(
        self, items: Sequence[int] | None, now: int, actor: str = "operator", *, tenant: str | None = None
    ) -> list[int]:
        """Put failed items (or every failed one) back in the queue; return the ids moved."""
        ...

    def outbox_events(self, item: int | None = None, *, tenant: str | None = None) -> list[OutboxEvent]:
        """The outbox's audit trail, oldest first."""
        ...

    # -- added for /readyz and /metrics (issue 14) --------------------------------------------
    def ping(self) -> None:
        """Return if the store can serve now, else raise ``StateStoreError`` (cheap: per probe)."""
        ...

    def oldest_pending(self) -> int | None:
        """When (epoch seconds) the oldest pending outbox item was made; None if none (cheap)."""
        ...


# == feedback (``redflags.state.feedback`` tells what is kept and why) ===========================
Outcome = Literal["accepted", "overridden"]


class FeedbackStoreError(Exception):
    """The store cannot be opened or written; the message is one line for a person."""


class FeedbackStoreUnavailable(FeedbackStoreError, StoreUnavailable):
    """The feedback store's database is unreachable for now (``StoreUnavailable``)."""


@dataclass(frozen=True, slots=True)
class ShownCard:
    """A card the service returned: its uuid and the alert behind it."""

    card: str  # card.uuid
    rule: str  # RuleMeta.id of the alert
    tier: str  # the tier that fired (highest only)
    indicator: str  # info | warning | critical
    client: str = ""  # who it was shown to (the client feedback must come from); "": anyone


@dataclass(frozen=True, slots=True)
class Reason:
    """The Coding a clinician chose among the card's overrideReasons."""

    system: str
    code: str
    display: str | None = None


@dataclass(frozen=True, slots=True)
class Feedback:
    """One element of a CDS Hooks feedback request, validated."""

    card: str
    outcome: Outcome
    outcome_at: str  # UTC instant, ISO 8601
    accepted_suggestions: tuple[str, ...] = ()
    reason: Reason | None = None
    comment: str | None = None


@dataclass(frozen=True, slots=True)
class ReasonCount:
    system: str
    code: str
    display: str | None
    cards: int  # distinct cards overridden with this reason


@dataclass(frozen=True, slots=True)
class RuleSummary:
    """Alert-fatigue numbers of one rule; card counts are distinct cards.

    A card may be reported several times (the spec allows repeats) and may be both accepted and
    overridden; ``feedback_items`` counts every item received.
    """

    rule: str
    shown: int
    accepted: int
    overridden: int
    no_feedback: int  # shown cards nobody reported on ("ignored" in CDS Hooks terms)
    feedback_items: int
    overridden_without_reason: int  # overridden cards with no coded reason (comment only or none)
    override_reasons: tuple[ReasonCount, ...] = ()
    site: str = ""  # the ``serve --site`` that showed the cards; "": the unprefixed (default) site

    def as_dict(self) -> dict[str, object]:
        """Without ``site`` for the default site: reports of single-site databases stay as they were."""
        row = asdict(self)
        if not self.site:
            del row["site"]
        return row


@dataclass(frozen=True, slots=True)
class UnknownCards:
    """Feedback whose card uuid was never recorded as shown."""

    feedback_items: int = 0
    cards: int = 0
    accepted: int = 0
    overridden: int = 0


@dataclass(frozen=True, slots=True)
class FeedbackReport:
    """Rows per (site, rule), default site first; ``unknown_cards`` totals every site's."""

    rules: tuple[RuleSummary, ...]
    unknown_cards: UnknownCards = field(default_factory=UnknownCards)
    #: (site, its unknown cards) for every site with some, default ("") first.
    unknown_by_site: tuple[tuple[str, UnknownCards], ...] = ()

    @property
    def sites(self) -> tuple[str, ...]:
        """The sites with rows or unknown cards, "" (default) first."""
        names = {r.site for r in self.rules} | {site for site, _ in self.unknown_by_site}
        return tuple(sorted(names))

    def for_site(self, site: str) -> FeedbackReport:
        """This report restricted to one site (``redflags feedback report --site``)."""
        unknown = dict(self.unknown_by_site).get(site, UnknownCards())
        rows = tuple(r for r in self.rules if r.site == site)
        return FeedbackReport(rows, unknown, ((site, unknown),) if unknown.feedback_items else ())

    def as_dict(self) -> dict[str, object]:
        doc: dict[str, object] = {
            "rules": [r.as_dict() for r in self.rules],
            "unknown_cards": asdict(self.unknown_cards),
        }
        if any(site for site, _ in self.unknown_by_site):  # only once a non-default site has some
            doc["unknown_cards_by_site"] = {site: asdict(u) for site, u in self.unknown_by_site}
        return doc


class FeedbackStore(Protocol):
    """What the service and ``redflags feedback report`` need from a feedback database.

    Writes return only once the data is durable (the HTTP answer follows them); failures raise
    ``FeedbackStoreError``.
    """

    def record_cards(
        self, service_id: str, cards: Iterable[ShownCard], shown_at: int, *, site: str | None = None
    ) -> None:
        """``site``: the ``serve --site`` that showed them (None: the unprefixed, default site)."""
        ...

    def record_feedback(
        self,
        service_id: str,
        items: Sequence[Feedback],
        client: str,
        received_at: int,
        *,
        site: str | None = None,
    ) -> None:
        """``site``: the site it was sent to; it counts only for a card shown at that site."""
        ...

    def report(self) -> FeedbackReport: ...

    def ping(self) -> None:
        """Return if the store can serve now, else raise ``FeedbackStoreError`` (for /readyz)."""
        ...

    def close(self) -> None: ...


# == jti (``redflags.state.jti``) ===============================================================
class JtiStore(Protocol):
    """Seen JWT ids, shared by every process that accepts the tokens (a replay guard)."""

    def first_use(self, iss: str, jti: str, expires: float) -> bool:
        """Record the token id; False when it was already seen and has not expired yet."""
        ...
