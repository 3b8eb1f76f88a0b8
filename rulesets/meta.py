"""Metadata every ruleset module carries: identity, tiers, source and CarePlan actions.

The vocabulary (RuleMeta, Tier, Action, Code) is defined in ``engine.vocabulary`` and
re-exported here; this module adds the code systems the rules write their codes in and the
site-parameter contracts. The code-system URIs are the rules' data as much as the FHIR
adapters' (``fhir_adapters.identifiers``, which holds every FHIR identifier); the two layers may
not import each other, so each declares the URIs it uses and a test proves they agree.
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

#: Canonical base of everything redflags publishes (code systems, extensions, value sets).
CANONICAL_BASE = "https://redflags.dev/fhir"
FINDING_SYSTEM = f"{CANONICAL_BASE}/CodeSystem/leg-weakness-finding"


@dataclass(frozen=True, slots=True)
class ParamRange:
    """The unit and plausible range (inclusive) of one site parameter, and why that range.

    A site value outside it stops the run (``redflags.config``): a threshold of 0 days or
    -5 mL/kg is a typing slip, never a clinical choice, and would silently disable a rule.
    """

    unit: str
    low: float
    high: float
    source: str  # the rule's section of docs/rules/, or the reason the range is defensible

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
