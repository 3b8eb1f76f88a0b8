"""The FHIR identifiers redflags reads and writes: code systems, its canonical base, extensions.

A leaf: it imports nothing from the project, so every FHIR adapter takes its URIs from here and
none has to reach into the rules for them. ``rulesets.meta`` declares the same code-system URIs
for the codes the rules are written in (the two layers may not import each other);
``tests/test_neutral_layers.py`` proves the two tables agree.
"""

from __future__ import annotations

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
MUSCLE_GROUP_SYSTEM = f"{CANONICAL_BASE}/CodeSystem/muscle-group"
LATERALITY_EXTENSION = f"{CANONICAL_BASE}/StructureDefinition/laterality"
