"""Evaluation with memory: the pipeline plus a state store (patient history, alert ledger, outbox).

Each delivery's facts are kept per patient and resource, so rules see what earlier deliveries
said (Monday's weakness and Wednesday's absent reflexes make Wednesday's Guillain-Barré); a
resource sent again replaces its earlier facts, even when its new version yields none (an
Observation now entered-in-error). The alerts are then compared with the ledger
(``redflags.lifecycle``) and the result of one patient's evaluation (history, ledger,
deliveries) is committed in one transaction before anyone is told about it.

Retention runs at the evaluation's time only when the evaluation commits: a what-if (a caller's
own instant over HTTP, order-sign's drafts) reads and never deletes. Each patient is read as one
snapshot and committed with the sequence number it saw; when another process committed the
same tenant's patient in between, the commit is refused and the evaluation done again on what
is stored now (``MAX_ATTEMPTS``), so concurrent calls cannot raise one alert twice or bring a
withdrawn one back.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import orjson
import structlog

from fhir_adapters.facts import PatientFacts, upgraded
from fhir_adapters.intake import Intake, reference_of
from redflags import lifecycle
from redflags.logs import patient_token
from redflags.pipeline import PatientResult, Pipeline
from redflags.state.model import (
    DEFAULT_TENANT,
    Evaluated,
    Fact,
    StaleRead,
    StateStore,
    StateStoreError,
    Transition,
)

log = structlog.get_logger("redflags.stateful")

DAY = 86_400
#: History is kept this long beyond the longest window any rule looks back over.
RETENTION_MARGIN_S = 30 * DAY
#: A long-running tracker (the service) drops expired history at most this often.
PRUNE_EVERY_S = DAY
#: Evaluations of one patient before giving up when other processes keep changing it meanwhile.
MAX_ATTEMPTS = 8


def default_retention(pipeline: Pipeline) -> int:
    """Seconds of history to keep: the longest rule window plus a margin."""
    return int(pipeline.engine.longest_window + RETENTION_MARGIN_S)


@dataclass(slots=True)
class Tracked:
    """One patient's evaluation with memory: the alerts, what changed, the outbox items added."""

    result: PatientResult
    transitions: list[Transition] = field(default_factory=list)
    deliveries: list[int] = field(default_factory=list)
    remembered: int = 0  # facts from earlier deliveries that took part


def _rendered(plan: lifecycle.Plan) -> list[str]:
    """Rules whose Flag and CarePlan the plan rendered (raised or updated; withdrawn is a copy)."""
    return [t.rule for t in plan.transitions if t.change != "withdrawn"]


def _stored_form(facts: list[Fact]) -> list[Fact]:
    """Facts as the store gives them back (JSON), to compare with what it holds."""
    return orjson.loads(orjson.dumps(facts))


class Tracker:
    """Evaluates inputs against, and into, one state store."""

    def __init__(
        self,
        pipeline: Pipeline,
        store: StateStore,
        actor: str,
        retention_s: int | None = None,
        *,
        queue: bool = True,
        tenant: str | None = None,
    ) -> None:
        """``queue=False``: track alerts without outbox items (no FHIR server to deliver to).

        ``tenant``: the one tenant this tracker evaluates and prunes (a replay); None: the
        service's, which names the tenant per evaluation and prunes every tenant's history.
        """
        self.pipeline = pipeline
        self.store = store
        self.actor = actor
        self.queue = queue
        self.tenant = tenant
        self.retention_s = retention_s if retention_s is not None else default_retention(pipeline)
        self._pruned_at: int | None = None

    def prune(self, now: int) -> int:
        """Forget history older than the retention window; return the facts removed."""
        self._pruned_at = now
        removed = self.store.prune(now - self.retention_s, tenant=self.tenant)
        if removed:
            log.info("history_pruned", facts=removed, retention_days=round(self.retention_s / DAY))
        return removed

    def evaluate(
        self,
        intake: Intake,
        now: int,
        actor: str | None = None,
        *,
        commit: bool = True,
        tenant: str | None = None,
    ) -> Iterator[Tracked]:
        """Every patient of ``intake`` at ``now``, each committed before it is yielded.

        ``commit=False``: a what-if (CDS Hooks order-sign counts orders not yet signed; an
        ``$evaluate`` at the caller's own instant): the history is read, nothing is stored or
        pruned, no alert changes. ``tenant``: whose patients (default: the tracker's, else
        ``default``).
        """
        tenant = tenant or self.tenant or DEFAULT_TENANT
        if commit and (self._pruned_at is None or abs(now - self._pruned_at) >= PRUNE_EVERY_S):
            self.prune(now)
        for mapped in self.pipeline.facts(intake):
            group = intake.patients[mapped.pid]
            sent: dict[str, list[Fact]] = {reference_of(e.resource, e.full_url): [] for e in group.entries}
            for fact in mapped.facts:
                sent.setdefault(str(fact["ref"]), []).append(fact)
            yield self._settled(mapped, sent, now, actor or self.actor, commit, tenant)

    def _settled(
        self,
        mapped: PatientFacts,
        sent: dict[str, list[Fact]],
        now: int,
        actor: str,
        commit: bool,
        tenant: str,
    ) -> Tracked:
        """``_patient`` again while other processes commit the same patient in between."""
        for attempt in range(1, MAX_ATTEMPTS + 1):
            try:
                return self._patient(mapped, sent, now, actor, commit, tenant)
            except StaleRead:
                log.info("evaluation_repeated", attempt=attempt, reason="patient changed meanwhile")
        raise StateStoreError(f"a patient was changed by other evaluations {MAX_ATTEMPTS} times; try again")

    def _patient(
        self,
        mapped: PatientFacts,
        sent: dict[str, list[Fact]],
        now: int,
        actor: str,
        commit: bool,
        tenant: str,
    ) -> Tracked:
        """One patient against one snapshot; StaleRead when another commit came in between."""
        snapshot = self.store.snapshot(mapped.pid, tenant=tenant)
        stored = {ref: upgraded(facts) for ref, facts in snapshot.facts.items()}
        earlier = [f for ref, facts in stored.items() if ref not in sent for f in facts]
        evaluation, over = self.pipeline.evaluate_patient(mapped.pid, [*earlier, *mapped.facts], now)
        result = PatientResult(mapped.pid, evaluation.alerts, [*mapped.issues, *over], evaluation.future)
        if not commit:
            return Tracked(result, remembered=len(earlier))
        plan = lifecycle.plan(
            mapped.pid, snapshot.active, evaluation.alerts, self.pipeline.engine.metas, now, actor, tenant
        )
        result.rendered = {r: (plan.active[r].flag, plan.active[r].careplan) for r in _rendered(plan)}
        # a record sent again unchanged (a chart opened again) rewrites nothing
        changed = {ref: facts for ref, facts in sent.items() if stored.get(ref, []) != _stored_form(facts)}
        deliveries = plan.deliveries if self.queue else ()
        ids: list[int] = []
        if changed or plan.transitions:
            ids = self.store.commit(
                Evaluated(
                    mapped.pid,
                    now,
                    changed,
                    plan.active,
                    plan.transitions,
                    deliveries,
                    tenant=tenant,
                    seen=snapshot.seq,
                )
            )
        for transition in plan.transitions:
            log.info(
                "alert_transition",
                rule=transition.rule,
                change=transition.change,
                tier=transition.tier,
                patient=patient_token(mapped.pid),
            )
        return Tracked(result, list(plan.transitions), ids, len(earlier))
