"""The one pipeline every entry point shares: FHIR in -> facts -> rules -> alerts -> FHIR out.

Every evaluation goes through ``Pipeline.evaluate``: the replay (per file, by partition, in
--jobs workers and Spark executors), the service's engine processes (CDS Hooks, ``$evaluate``)
and, with a state store (``redflags.stateful.Memory``), evaluations with history and ledger.
It is the only caller of the engine. ``Pipeline.from_config`` is where one is built.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from engine.alert import Alert
from engine.logger import get_logger
from engine.session import Engine
from fhir_adapters import terminology
from fhir_adapters.facts import PatientFacts, patient_facts
from fhir_adapters.facts_cache import FactsCache
from fhir_adapters.intake import Intake, Issue, reference_of, resource_type
from fhir_adapters.output import patient_transaction
from fhir_adapters.validate import FhirValidationError, validate_resource
from redflags.config import SiteConfig
from redflags.state.model import StateStore, Transition
from redflags.stateful import Memory, default_retention
from rulesets import MODULES, VALUESET_DIR
from rulesets.meta import RuleMeta

log = get_logger("redflags.pipeline")

#: Resource types checked in --strict mode (the ones whose elements the rules read).
STRICT_TYPES = frozenset({"Patient", "Condition", "Observation"})
#: Facts of one patient handed to the engine, history included: over it, the most recent are
#: kept (the patient record always) and the outcome says how many older ones were left out.
DEFAULT_MAX_FACTS = 10_000
Fact = dict[str, object]


def _recency(fact: Fact) -> int:
    """Newest time a fact carries; undated facts (the patient) sort first, kept."""
    if fact.get("t") == "patient":
        return 2**62
    times = [v for k in ("ts", "onset", "abated") if isinstance(v := fact.get(k), int)]
    return max(times, default=-(2**62))


def bounded(pid: str, facts: Sequence[Fact], limit: int | None) -> tuple[list[Fact], list[Issue]]:
    """At most ``limit`` facts (None or 0: all): the most recent, and an issue naming the limit."""
    if not limit or len(facts) <= limit:
        return list(facts), []
    order = sorted(range(len(facts)), key=lambda i: _recency(facts[i]), reverse=True)
    keep = sorted(order[:limit])  # in their original order: the engine's outcome is order-free
    dropped = len(facts) - limit
    message = (
        f"{len(facts)} facts for this patient (history included) are more than the limit of {limit} "
        f"facts per patient: the {dropped} oldest were not evaluated"
    )
    return [facts[i] for i in keep], [Issue(pid, message, "too-costly")]


@dataclass(slots=True)
class PatientResult:
    """One patient's evaluation, for every caller; the last three are filled with a state store."""

    pid: str
    alerts: list[Alert]
    issues: list[Issue] = field(default_factory=list)
    future: int = 0  # records dated after ``now``, ignored (the CLI names their files)
    transitions: list[Transition] = field(default_factory=list)  # alerts raised, updated, withdrawn
    deliveries: list[int] = field(default_factory=list)  # outbox items added
    remembered: int = 0  # facts from earlier deliveries that took part
    #: rule -> the Flag and CarePlan this evaluation rendered for the ledger (raised or updated
    #: with a state store): a CDS card re-keys them instead of rendering them again
    rendered: dict[str, tuple[dict, dict]] = field(default_factory=dict)

    def transaction(self, pipeline: Pipeline) -> dict | None:
        return patient_transaction(self.alerts, pipeline.rules) if self.alerts else None


class Pipeline:
    """Terminology and engine are loaded once; ``evaluate`` is called per input.

    ``valueset_dirs``, ``conceptmaps`` and ``params`` are a site's additions and overrides,
    usually read from its configuration file (``redflags.config``). ``memory``: the state store
    evaluations read and commit (history, ledger, outbox); None: each input on its own.
    """

    @classmethod
    def from_config(
        cls,
        site: SiteConfig,
        *,
        strict: bool = False,
        valueset_dirs: Sequence[Path] = (),
        max_facts: int | None = DEFAULT_MAX_FACTS,
        memory: Callable[[], Memory] | None = None,
        facts_cache: FactsCache | None = None,
    ) -> Pipeline:
        """The pipeline a site's configuration asks for (plus folders given on the command line).

        ``memory`` is opened once the rules compiled: a site's mistake leaves no store behind.
        """
        pipeline = cls(
            strict=strict,
            valueset_dirs=(*site.valueset_dirs, *valueset_dirs),
            conceptmaps=site.conceptmaps,
            params=site.params,
            max_facts=max_facts,
            facts_cache=facts_cache,
        )
        if memory is not None:
            pipeline.remember(memory())
        return pipeline

    def __init__(
        self,
        *,
        strict: bool = False,
        valueset_dirs: Sequence[Path] = (),
        conceptmaps: Sequence[Path] = (),
        params: Mapping[str, Mapping[str, float]] | None = None,
        max_facts: int | None = DEFAULT_MAX_FACTS,
        memory: Memory | None = None,
        facts_cache: FactsCache | None = None,
    ) -> None:
        """``max_facts``: facts per patient handed to the engine (``bounded``; None: no limit).

        ``facts_cache``: keep the facts of mapped resources, for inputs that repeat them (the
        service: a CDS client resends the whole prefetch); None (a replay): map each once.
        """
        self.max_facts = max_facts
        self.facts_cache = facts_cache
        self.term = terminology.load(VALUESET_DIR, valueset_dirs, conceptmaps)
        titles = {key: info.title for key, info in self.term.keys.items()}
        self.engine = Engine(MODULES, titles=titles, params=params)
        self.strict = strict
        self.memory: Memory | None = None
        if memory is not None:
            self.remember(memory)

    def remember(self, memory: Memory) -> None:
        """Evaluate from now on with ``memory`` (its retention, when unset, from these rules)."""
        if memory.retention_s is None:
            memory.retention_s = default_retention(self.engine.longest_window)
        self.memory = memory

    @property
    def rules(self) -> Mapping[str, RuleMeta]:
        """Each rule's metadata, for whoever renders the alerts (cards, Flags, CarePlans)."""
        return self.engine.metas

    @property
    def store(self) -> StateStore | None:
        return self.memory.store if self.memory is not None else None

    def facts(self, intake: Intake) -> Iterator[PatientFacts]:
        for group in intake.patients.values():
            if self.strict:
                bad = self._strict_issues(group.entries)
                if bad:
                    group.entries = [e for e in group.entries if e.path not in {i.path for i in bad}]
            else:
                bad = []
            mapped = patient_facts(group, self.term, self.facts_cache)
            mapped.issues[:0] = bad
            yield mapped

    def _strict_issues(self, entries: Sequence) -> list[Issue]:
        issues: list[Issue] = []
        for entry in entries:
            if resource_type(entry.resource) not in STRICT_TYPES:
                continue
            try:
                validate_resource(entry.resource, entry.path)
            except FhirValidationError as exc:
                # the expression already starts with the entry's path (its file): named once
                issues.extend(Issue(i.expression, i.message, i.code) for i in exc.issues[:1])
        return issues

    def evaluate(
        self,
        intake: Intake,
        now: int,
        *,
        commit: bool = True,
        tenant: str | None = None,
        actor: str | None = None,
    ) -> list[PatientResult]:
        """Evaluate every patient of one input at ``now``.

        With a state store each patient is evaluated with its history and committed (history,
        ledger, outbox) before the next. ``commit=False``: a what-if (CDS Hooks order-sign
        counts orders not yet signed; an ``$evaluate`` at the caller's own instant): history is
        read, nothing is stored or pruned, no alert changes. ``tenant``: whose patients (default:
        the memory's, else ``default``); ``actor``: who is named in the ledger (default: the
        memory's). Without a store the three change nothing.
        """
        if self.memory is None:
            return self._each_on_its_own(intake, now)
        memory = self.memory
        if commit:
            memory.prune_due(now)
        results: list[PatientResult] = []
        for mapped in self.facts(intake):
            group = intake.patients[mapped.pid]
            sent: dict[str, list[Fact]] = {reference_of(e.resource, e.full_url): [] for e in group.entries}
            for fact in mapped.facts:
                sent.setdefault(str(fact["ref"]), []).append(fact)
            done = memory.settled(
                mapped,
                sent,
                now,
                lambda pid, facts: self._one(pid, facts, now),
                self.rules,
                actor=actor or memory.actor,
                commit=commit,
                tenant=memory.tenant_of(tenant),
            )
            issues = [*mapped.issues, *done.over]
            remembered = (done.transitions, done.deliveries, done.remembered, done.rendered)
            results.append(PatientResult(mapped.pid, done.alerts, issues, done.future, *remembered))
        return results

    def _each_on_its_own(self, intake: Intake, now: int) -> list[PatientResult]:
        """Every patient of the input in one hop to the engine (replay throughput)."""
        batch = list(self.facts(intake))
        kept = [bounded(pf.pid, pf.facts, self.max_facts) for pf in batch]
        # a rule whose calculation raised is left out and named, the patient's other rules kept
        evaluations = self.engine.evaluate_many(
            [(pf.pid, k[0]) for pf, k in zip(batch, kept, strict=True)], now, isolate=True
        )
        return [
            PatientResult(
                mapped.pid,
                evaluation.alerts,
                [*mapped.issues, *over, *(Issue("rules", f, "exception") for f in evaluation.failed)],
                evaluation.future,
            )
            for mapped, (_facts, over), evaluation in zip(batch, kept, evaluations, strict=True)
        ]

    def _one(self, pid: str, facts: Sequence[Fact], now: int) -> tuple[list[Alert], int, list[Issue]]:
        """One patient's facts (history included), at most ``max_facts`` of them (``bounded``)."""
        kept, over = bounded(pid, facts, self.max_facts)
        evaluation = self.engine.evaluate(pid, kept, now)
        return evaluation.alerts, evaluation.future, over
