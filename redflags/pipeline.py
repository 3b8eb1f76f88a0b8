"""The one pipeline every entry point shares: FHIR in -> facts -> rules -> alerts -> FHIR out."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from engine.alert import Alert
from engine.session import Engine
from fhir_adapters import terminology
from fhir_adapters.facts import PatientFacts, patient_facts
from fhir_adapters.intake import Intake, Issue
from fhir_adapters.output import patient_transaction
from fhir_adapters.validate import FhirValidationError, validate_resource
from redflags.config import SiteConfig
from rulesets import MODULES

log = structlog.get_logger("redflags.pipeline")

#: Resource types checked in --strict mode (the ones whose elements the rules read).
STRICT_TYPES = frozenset({"Patient", "Condition", "Observation"})


@dataclass(slots=True)
class PatientResult:
    pid: str
    alerts: list[Alert]
    issues: list[Issue] = field(default_factory=list)

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
    ) -> None:
        self.term = terminology.load(valueset_dirs, conceptmaps)
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
            if entry.resource.get("resourceType") not in STRICT_TYPES:
                continue
            try:
                validate_resource(entry.resource, entry.path)
            except FhirValidationError as exc:
                issues.extend(
                    Issue(entry.path, f"{i.expression}: {i.message}", i.code) for i in exc.issues[:1]
                )
        return issues

    def evaluate(self, intake: Intake, now: int) -> list[PatientResult]:
        """Evaluate every patient of one input at ``now``."""
        batch = list(self.facts(intake))
        evaluations = self.engine.evaluate_many([(pf.pid, pf.facts) for pf in batch], now)
        return [
            PatientResult(mapped.pid, evaluation.alerts, mapped.issues)
            for mapped, evaluation in zip(batch, evaluations, strict=True)
        ]
