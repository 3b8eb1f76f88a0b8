"""Metadata every ruleset module carries: identity, tiers, source and CarePlan actions.

The vocabulary (RuleMeta, Tier, Action, Code) is defined in ``engine.vocabulary`` and
re-exported here; this module adds the code systems and the site-parameter contracts.
"""

from __future__ import annotations

from dataclasses import dataclass

# The rule vocabulary is the engine's (the engine never imports rulesets); re-exported here.
from engine.vocabulary import Action as Action
from engine.vocabulary import Code as Code
from engine.vocabulary import RuleMeta as RuleMeta
from engine.vocabulary import Tier as Tier

SNOMED = "http://snomed.info/sct"
LOINC = "http://loinc.org"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
CVX = "http://hl7.org/fhir/sid/cvx"
UCUM = "http://unitsofmeasure.org"
ATC = "http://www.whocc.no/atc"  # WHO ATC classification (drug classes by code prefix)

#: Canonical base of everything redflags publishes (code systems, extensions, value sets).
CANONICAL_BASE = "https://redflags.dev/fhir"
ALERT_SYSTEM = f"{CANONICAL_BASE}/CodeSystem/leg-weakness-alert"
FINDING_SYSTEM = f"{CANONICAL_BASE}/CodeSystem/leg-weakness-finding"
ACTION_SYSTEM = f"{CANONICAL_BASE}/CodeSystem/leg-weakness-action"
MUSCLE_GROUP_SYSTEM = f"{CANONICAL_BASE}/CodeSystem/muscle-group"
LATERALITY_EXTENSION = f"{CANONICAL_BASE}/StructureDefinition/laterality"


@dataclass(frozen=True, slots=True)
class ParamRange:
    """The unit and plausible range (inclusive) of one site parameter, and why that range.

    A site value outside it stops the run (``redflags.config``): a threshold of 0 days or
    -5 mL/kg is a typing slip, never a clinical choice, and would silently disable a rule.
    """

    unit: str
    low: float
    high: float
    source: str  # red-flags.md section, or the reason the range is defensible

    def text(self) -> str:
        return f"{self.low:g}-{self.high:g} {self.unit}"


#: The unit of an on/off parameter: the site writes ``true``/``false`` (or 1/0), never 0.5.
SWITCH = "switch"


@dataclass(frozen=True, slots=True)
class ParamOrder:
    """Two parameters of one rule whose values must stay ordered: ``lower < upper``.

    Each may be in range while the pair is not (a critical potassium cut-off less extreme than
    the urgent one would make the critical tier unreachable); ``redflags.config`` refuses it.
    """

    lower: str
    upper: str
    reason: str
