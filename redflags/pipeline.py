"""The one pipeline every entry point shares: FHIR in -> facts -> rules -> alerts -> FHIR out."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from engine.alert import Alert
from engine.session import Engine, Evaluation
from fhir_adapters import terminology
from fhir_adapters.facts import PatientFacts, patient_facts
from fhir_adapters.intake import Intake, Issue, resource_type
from fhir_adapters.output import patient_transaction
from fhir_adapters.validate import FhirValidationError, validate_resource
from redflags.config import SiteConfig
from rulesets import MODULES, VALUESET_DIR

log = structlog.get_logger("redflags.pipeline")

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
    pid: str
    alerts: list[Alert]
    issues: list[Issue] = field(default_factory=list)
    future: int = 0  # records dated after ``now``, ignored (the CLI names their files)
    #: rule -> the Flag and CarePlan this evaluation rendered for the ledger (raised or updated
    #: with a state store): a CDS card re-keys them instead of rendering them again
    rendered: dict[str, tuple[dict, dict]] = field(default_factory=dict)

    def transaction(self, pipeline: Pipeline) -> dict | None:
        return patient_transaction(self.alerts, pipeline.engine.metas) if self.alerts else None


class Pipeline:
    """Terminology and engine are loaded once; ``evaluate`` is called per input.

    ``valueset_dirs``, ``conceptmaps`` and ``params`` are a site's additions and overrides,
    usually read from its configuration file (``redflags.config``).
    """

    @classmethod
    def from_config(
        cls, site: SiteConfig, *, strict: bool = False, valueset_dirs: Sequence[Path] = ()
    ) -> Pipeline:
        """The pipeline a site's configuration asks for (plus folders given on the command line)."""
        return cls(
            strict=strict,
            valueset_dirs=(*site.valueset_dirs, *valueset_dirs),
            conceptmaps=site.conceptmaps,
            params=site.params,
        )

    def __init__(
        self,
        *,
        strict: bool = False,
        valueset_dirs: Sequence[Path] = (),
        conceptmaps: Sequence[Path] = (),
        params: Mapping[str, Mapping[str, float]] | None = None,
        max_facts: int | None = DEFAULT_MAX_FACTS,
    ) -> None:
        """``max_facts``: facts per patient handed to the engine (``bounded``; None: no limit)."""
        self.max_facts = max_facts
        self.term = terminology.load(VALUESET_DIR, valueset_dirs, conceptmaps)
        titles = {key: info.title for key, info in self.term.keys.items()}
        self.engine = Engine(MODULES, titles=titles, params=params)
        self.strict = strict

    def facts(self, intake: Intake) -> Iterator[PatientFacts]:
        for group in intake.patients.values():
            if self.strict:
                bad = self._strict_issues(group.entries)
                if bad:
                    group.entries = [e for e in group.entries if e.path not in {i.path for i in bad}]
            else:
                bad = []
            mapped = patient_facts(group, self.term)
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

    def evaluate(self, intake: Intake, now: int) -> list[PatientResult]:
        """Evaluate every patient of one input at ``now``."""
        batch = list(self.facts(intake))
        kept = [bounded(pf.pid, pf.facts, self.max_facts) for pf in batch]
        evaluations = self.engine.evaluate_many(
            [(pf.pid, k[0]) for pf, k in zip(batch, kept, strict=True)], now
        )
        return [
            PatientResult(mapped.pid, evaluation.alerts, [*mapped.issues, *over], evaluation.future)
            for mapped, (_facts, over), evaluation in zip(batch, kept, evaluations, strict=True)
        ]

    def evaluate_patient(self, pid: str, facts: Sequence[Fact], now: int) -> tuple[Evaluation, list[Issue]]:
        """One patient's facts (history included), at most ``max_facts`` of them (``bounded``)."""
        kept, over = bounded(pid, facts, self.max_facts)
        return self.engine.evaluate(pid, kept, now), over
