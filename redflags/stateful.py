"""The memory of an evaluation: a state store (patient history, alert ledger, outbox) and its use.

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
withdrawn one back. An evaluation that commits holds the store's ``patient_lock`` from read to
commit, so evaluations of one patient on several hosts (PostgreSQL) take turns instead of
being done again.

``redflags.pipeline.Pipeline`` holds an optional ``Memory`` and is the one that evaluates: this
module never calls the engine, it is handed the pipeline's evaluation of one patient.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import orjson

from engine.alert import Alert
from engine.logger import get_logger
from fhir_adapters.facts import PatientFacts, upgraded
from redflags import lifecycle, metrics
from redflags.logs import patient_token
from redflags.state.model import (
    DEFAULT_TENANT,
    Evaluated,
    Fact,
    PatientBusy,
    StaleRead,
    StateStore,
    Transition,
)
from rulesets.meta import RuleMeta

log = get_logger("redflags.stateful")

DAY = 86_400
#: History is kept this long beyond the longest window any rule looks back over.
RETENTION_MARGIN_S = 30 * DAY
#: A long-running pipeline (the service) drops expired history at most this often.
PRUNE_EVERY_S = DAY
#: Evaluations of one patient before giving up when other processes keep changing it meanwhile.
MAX_ATTEMPTS = 8

#: The pipeline's evaluation of one patient's facts (history included): alerts, future records.
PatientEvaluation = Callable[[str, Sequence[Fact]], tuple[list[Alert], int, list]]


def default_retention(longest_window: float) -> int:
    """Seconds of history to keep: the longest rule window plus a margin."""
    return int(longest_window + RETENTION_MARGIN_S)


@dataclass(slots=True)
class Remembered:
    """One patient evaluated against the store: what the pipeline's result adds to the alerts."""

    alerts: list[Alert]
    future: int
    over: list  # issues of the fact cap (``pipeline.bounded``)
    transitions: list[Transition] = field(default_factory=list)
    deliveries: list[int] = field(default_factory=list)
    remembered: int = 0  # facts from earlier deliveries that took part
    #: rule -> the Flag and CarePlan rendered for the ledger (raised or updated): a CDS card
    #: re-keys them instead of rendering them again
    rendered: dict[str, tuple[dict, dict]] = field(default_factory=dict)


def _rendered(plan: lifecycle.Plan) -> list[str]:
    """Rules whose Flag and CarePlan the plan rendered (raised or updated; withdrawn is a copy)."""
    return [t.rule for t in plan.transitions if t.change != "withdrawn"]


def _unchanged(stored: list[Fact], sent: list[Fact]) -> bool:
    """Whether the store holds ``sent`` already: compared as the JSON text it writes (each fact
    is stored as ``orjson.dumps`` of it and read back in the same key order), so two encodings
    and a byte comparison, not an encode, a decode and a deep comparison (2.5x the CPU per
    resource). Stricter than ``==`` where JSON tells values apart (``5`` and ``5.0``)."""
    return orjson.dumps(stored) == orjson.dumps(sent)


class Memory:
    """A state store and how evaluations use it: who acts, how long history is kept, the outbox."""

    def __init__(
        self,
        store: StateStore,
        actor: str,
        retention_s: int | None = None,
        *,
        queue: bool = True,
        tenant: str | None = None,
    ) -> None:
        """``queue=False``: track alerts without outbox items (no FHIR server to deliver to).

        ``tenant``: the one tenant evaluated and pruned (a replay); None: the service's, which
        names the tenant per evaluation and prunes every tenant's history. ``retention_s``
        None: the pipeline sets ``default_retention`` of its rules.
        """
        self.store = store
        self.actor = actor
        self.queue = queue
        self.tenant = tenant
        self.retention_s = retention_s
        self._pruned_at: int | None = None

    def prune(self, now: int) -> int:
        """Forget history older than the retention window; return the facts removed."""
        assert self.retention_s is not None, "the pipeline sets the retention"
        self._pruned_at = now
        removed = self.store.prune(now - self.retention_s, tenant=self.tenant)
        if removed:
            log.info("history_pruned", facts=removed, retention_days=round(self.retention_s / DAY))
        return removed

    def prune_due(self, now: int) -> None:
        """Prune when the last pruning is a day away from ``now`` (or never happened)."""
        if self._pruned_at is None or abs(now - self._pruned_at) >= PRUNE_EVERY_S:
            self.prune(now)

    def settled(
        self,
        mapped: PatientFacts,
        sent: dict[str, list[Fact]],
        now: int,
        evaluate: PatientEvaluation,
        metas: Mapping[str, RuleMeta],
        *,
        actor: str,
        commit: bool,
        tenant: str,
    ) -> Remembered:
        """``_patient`` again while other processes commit the same patient in between."""
        for attempt in range(1, MAX_ATTEMPTS + 1):
            try:
                if not commit:  # a what-if only reads: nobody waits for it
                    return self._patient(mapped, sent, now, evaluate, metas, actor, commit, tenant)
                # read -> evaluate -> commit of one patient, one process or host at a time
                with self.store.patient_lock(mapped.pid, tenant=tenant):
                    return self._patient(mapped, sent, now, evaluate, metas, actor, commit, tenant)
            except StaleRead:
                log.info("evaluation_repeated", attempt=attempt, reason="patient changed meanwhile")
        raise PatientBusy(f"a patient was changed by other evaluations {MAX_ATTEMPTS} times; try again")

    def _patient(
        self,
        mapped: PatientFacts,
        sent: dict[str, list[Fact]],
        now: int,
        evaluate: PatientEvaluation,
        metas: Mapping[str, RuleMeta],
        actor: str,
        commit: bool,
        tenant: str,
    ) -> Remembered:
        """One patient against one snapshot; StaleRead when another commit came in between."""
        snapshot = self.store.snapshot(mapped.pid, tenant=tenant)
        stored = {ref: upgraded(facts) for ref, facts in snapshot.facts.items()}
        earlier = [f for ref, facts in stored.items() if ref not in sent for f in facts]
        alerts, future, over = evaluate(mapped.pid, [*earlier, *mapped.facts])
        if not commit:
            return Remembered(alerts, future, over, remembered=len(earlier))
        plan = lifecycle.plan(mapped.pid, snapshot.active, alerts, metas, now, actor, tenant)
        rendered = {r: (plan.active[r].flag, plan.active[r].careplan) for r in _rendered(plan)}
        # a record sent again unchanged (a chart opened again) rewrites nothing
        changed = {ref: facts for ref, facts in sent.items() if not _unchanged(stored.get(ref, []), facts)}
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
            metrics.alert_transition(transition.rule, transition.tier, transition.change)
        return Remembered(alerts, future, over, list(plan.transitions), ids, len(earlier), rendered)

    def tenant_of(self, tenant: str | None) -> str:
        """Whose patients: the one named, else this memory's, else ``default``."""
        return tenant or self.tenant or DEFAULT_TENANT
