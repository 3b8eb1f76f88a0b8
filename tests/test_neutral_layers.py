"""The engine is generic: no FHIR, no clinical policy; FHIR identifiers live in one leaf module.

A reader of ``engine/`` learns nothing of FHIR (no resource type, no code-system URI, not even
in a comment), the rules hand the engine their policy as data, actions have neutral kinds that
``fhir_adapters.output`` maps to resource types, and the adapters take every FHIR identifier
from ``fhir_adapters.identifiers``, which imports nothing of the project.
"""

from __future__ import annotations

import ast
import inspect
import io
import re
import tokenize
from pathlib import Path

import pytest

from engine import dsl
from engine.alert import Alert
from engine.collect import Match, collect
from engine.dsl import DAY, HOUR, Spec, present
from engine.vocabulary import ACTION_KINDS, Action, Code, RuleMeta, Tier
from fhir_adapters import identifiers, terminology
from fhir_adapters.output import ACTION_RESOURCE
from redflags.pipeline import Pipeline
from rulesets import RULES, VALUESET_DIR, common, meta
from rulesets.policy import PRELIMINARY_SUPPORTS, TEMPO, tempo

ROOT = Path(__file__).resolve().parent.parent

#: FHIR resource and data type names a generic engine has no reason to spell.
FHIR_NAMES = (
    "Bundle CarePlan CodeSystem CodeableConcept Coding ConceptMap Condition Device DiagnosticReport "
    "Encounter Extension Flag Medication MedicationAdministration MedicationRequest "
    "MedicationStatement Observation OperationOutcome Patient Practitioner Procedure Reference "
    "ServiceRequest Specimen StructureDefinition Task ValueSet"
).split()
_NAME = re.compile(rf"\b(?:{'|'.join(FHIR_NAMES)})\b")
_URI = re.compile(r"fhir|hl7\.org|snomed|loinc|rxnorm|unitsofmeasure|whocc|icd-?10", re.IGNORECASE)


def fhir_mentions(source: str) -> list[tuple[int, str]]:
    """(line, word) of each FHIR name or identifier in the strings and comments of ``source``."""
    found: list[tuple[int, str]] = []
    text_tokens = {tokenize.STRING, tokenize.COMMENT, getattr(tokenize, "FSTRING_MIDDLE", tokenize.STRING)}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type in text_tokens:
            found.extend(
                (tok.start[0], m.group(0)) for m in (*_NAME.finditer(tok.string), *_URI.finditer(tok.string))
            )
    return found


def test_the_engine_spells_no_fhir() -> None:
    files = sorted((ROOT / "engine").rglob("*.py"))
    assert files, "no engine files: the scan would pass vacuously"
    hits = [
        f"{p.relative_to(ROOT)}:{line} {word}" for p in files for line, word in fhir_mentions(p.read_text())
    ]
    assert hits == []


def test_the_scan_sees_names_uris_and_comments() -> None:
    source = (
        'if f.get("src") == "Condition":\n'
        "    pass  # a Flag\n"
        'URL = "http://snomed.info/sct"\n'
        'x = f"{a}Patient/"\n'
        'ok = "conditions, flags and observations in lower case are words"\n'
    )
    assert [line for line, _ in fhir_mentions(source)] == [1, 2, 3, 4]


def test_the_engine_holds_no_clinical_policy() -> None:
    """Tempo and the preliminary-result rule are the rules' (``rulesets.policy``), passed as data."""
    assert not hasattr(dsl, "TEMPO") and not hasattr(dsl.Cond, "tempo")
    assert common.PRELIMINARY_SUPPORTS == PRELIMINARY_SUPPORTS == frozenset({"critical"})


def test_the_engine_applies_the_preliminary_policy_it_is_given(pipeline: Pipeline) -> None:
    assert pipeline.engine.preliminary_supports == PRELIMINARY_SUPPORTS
    rule = RuleMeta(
        id="r", version="1", title="Thing", source_label="s", source_url="u",
        tiers=(Tier("A", "critical", "now"), Tier("B", "urgent", "soon")),
        disorder=Code("sys", "1", "thing"), actions=(),
    )  # fmt: skip
    fired = Match(
        Spec("r", "r.fire.B.0", "fire", (), tiers=("B",)), [{"t": "value", "prelim": 1, "ref": "rec-1"}]
    )

    def tiers(supports: frozenset[str] | None) -> list[str]:
        alerts = collect("subject-1", 1000, [fired], {"r": rule}, {}, preliminary_supports=supports)
        return [a.tier for a in alerts]

    assert tiers(None) == ["B"]  # no policy: a preliminary result counts like any other
    assert tiers(frozenset({"critical"})) == []  # the rules' policy: it cannot support "urgent"


def test_evidence_leaves_out_the_subject_whatever_its_reference_looks_like() -> None:
    rule = RuleMeta(
        id="r", version="1", title="Thing", source_label="s", source_url="u",
        tiers=(Tier("A", "urgent", "soon"),), disorder=Code("sys", "1", "thing"), actions=(),
    )  # fmt: skip
    facts = [{"t": "patient", "ref": "subject-1"}, {"t": "derived", "refs": "subject-1 rec-1 rec-2"}]
    (alert,) = collect(
        "subject-1", 1000, [Match(Spec("r", "r.fire.A.0", "fire", (), tiers=("A",)), facts)], {"r": rule}, {}
    )
    assert alert.evidence == ("rec-1", "rec-2")
    assert not hasattr(Alert, "addresses")  # what a plan addresses is the output format's choice


@pytest.mark.parametrize(
    ("name", "window"), [("hyperacute", "within 1 day"), ("acute", "more than 1 day ago")]
)
def test_tempo_is_a_rules_helper_over_the_generic_onset_window(name: str, window: str) -> None:
    cond = tempo(present("leg_weakness"), name)
    assert cond.phrase.endswith(f"({name})") and window in cond.phrase
    assert TEMPO["acute"] == (24 * HOUR, 7 * DAY)


def test_action_kinds_are_neutral_and_each_maps_to_a_resource_type() -> None:
    assert set(ACTION_RESOURCE) == set(ACTION_KINDS)
    assert {a.kind for m in RULES.values() for a in m.actions} <= set(ACTION_KINDS)
    with pytest.raises(ValueError, match="ServiceRequest"):
        Action("Emergency MRI", (), "ServiceRequest", 4)  # the FHIR name is the adapter's


def test_identifiers_is_a_leaf_and_agrees_with_the_rules() -> None:
    tree = ast.parse((ROOT / "fhir_adapters" / "identifiers.py").read_text())
    imports = [n for n in ast.walk(tree) if isinstance(n, ast.Import | ast.ImportFrom)]
    assert [getattr(n, "module", None) for n in imports] == ["__future__"]
    # The rules write their codes in systems they declare (they may not import the adapters):
    # every one is an identifier the adapters know, with the same value.
    declared = {n: v for n, v in vars(meta).items() if n.isupper() and isinstance(v, str) and "://" in v}
    assert len(declared) >= 7
    assert declared == {n: getattr(identifiers, n, None) for n in declared}


def test_the_value_set_folder_is_passed_in(tmp_path: Path) -> None:
    assert inspect.signature(terminology.load).parameters["builtin_dir"].default is inspect.Parameter.empty
    assert "rulesets" not in (ROOT / "fhir_adapters" / "terminology.py").read_text().replace(
        "``rulesets.VALUESET_DIR``", ""
    )
    assert terminology.load(tmp_path).keys == {}
    assert "leg_weakness" in terminology.load(VALUESET_DIR).keys
