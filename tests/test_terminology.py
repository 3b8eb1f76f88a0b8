"""Value sets as data: loading, code lookups, regex filters and site-local extension folders."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from fhir_adapters import terminology
from fhir_adapters.facts import patient_facts
from fhir_adapters.intake import read_json
from fhir_adapters.terminology import EXT_KEY, Terminology
from fhir_adapters.validate import CONCEPTMAP_EQUIVALENCE
from rulesets import VALUESET_DIR
from rulesets.meta import FINDING_SYSTEM, ICD10CM, LOINC, SNOMED

from .conftest import ROOT

LOCAL_SYSTEM = "http://hospital.example/codes"


@pytest.fixture(scope="module")
def term() -> Terminology:
    return terminology.load(VALUESET_DIR)


def keys_of(term: Terminology, system: str, code: str) -> set[str]:
    return {m.key for m in term.matches(system, code)}


def local_valueset(key: str | None = "saddle_anesthesia", code: str = "SADDLE-NUMB") -> dict:
    vs: dict = {
        "resourceType": "ValueSet",
        "url": "http://hospital.example/fhir/ValueSet/local-saddle",
        "status": "active",
        "title": "Local saddle codes",
        "compose": {
            "include": [{"system": LOCAL_SYSTEM, "concept": [{"code": code, "display": "Saddle numb"}]}]
        },
    }
    if key is not None:
        vs["extension"] = [{"url": EXT_KEY, "valueCode": key}]
    return vs


def site_folder(tmp_path: Path, *docs: dict) -> Path:
    folder = tmp_path / "site-valuesets"
    folder.mkdir()
    for i, doc in enumerate(docs):
        (folder / f"local{i}.json").write_bytes(orjson.dumps(doc))
    return folder


def saddle_input(code_system: str, code: str) -> bytes:
    return orjson.dumps(
        {
            "resourceType": "Bundle",
            "type": "collection",
            "entry": [
                {"resource": {"resourceType": "Patient", "id": "p1", "gender": "male"}},
                {
                    "resource": {
                        "resourceType": "Observation",
                        "id": "o1",
                        "status": "final",
                        "subject": {"reference": "Patient/p1"},
                        "code": {
                            "coding": [{"system": code_system, "code": code}],
                            "text": "saddle numbness",
                        },
                        "effectiveDateTime": "2025-03-10T09:00:00Z",
                    }
                },
            ],
        }
    )


class TestTerminology:
    def test_load_finds_finding_keys_with_kind_unit_and_resource_types(self, term):
        weak = term.keys["leg_weakness"]
        assert weak.kind == "finding" and weak.unit is None
        assert weak.resource_types == {"Condition", "Observation"}
        assert weak.url == term.set_url("leg_weakness")
        fvc = term.keys["fvc"]
        assert fvc.kind == "quantity" and fvc.unit == "mL"
        assert term.keys["anticoagulant_active"].resource_types == {
            "MedicationRequest",
            "MedicationStatement",
            "MedicationAdministration",
        }

    def test_helper_sets_are_not_finding_keys(self, term):
        assert "laterality" not in term.keys
        assert "body-site-lower-limb" not in term.keys
        assert term.set_url("body-site-lower-limb") in term.sets

    def test_code_systems_are_not_loaded_as_value_sets(self, term):
        assert not any("CodeSystem-" in source for source in term.sources)

    def test_every_key_is_reachable_by_its_local_finding_code(self, term):
        missing = [k for k in term.keys if k not in keys_of(term, FINDING_SYSTEM, k)]
        assert missing == []

    def test_muscle_weakness_code_maps_to_leg_weakness_only_with_a_lower_limb_site(self, term):
        matches = {m.key: m for m in term.matches(SNOMED, "26544005")}
        assert matches["leg_weakness"].requires_site == term.set_url("body-site-lower-limb")
        assert matches["leg_weakness"].requires_no_site is False
        assert matches["muscle_weakness_generalized"].requires_no_site is True
        assert matches["muscle_weakness_generalized"].requires_site is None

    def test_precoordinated_code_carries_its_side(self, term):
        (match,) = term.matches(SNOMED, "16018391000119104")
        assert (match.key, match.side) == ("leg_weakness", "left")
        sides = {m.key: m.side for m in term.matches(ICD10CM, "M54.31")}
        assert sides == {"sciatica": "right", "radicular_pain": "right"}

    def test_match_restrictions(self, term):
        (reflex,) = term.matches(ICD10CM, "R29.2")
        assert (reflex.key, reflex.restriction) == ("reflexes_absent", "value-must-confirm")
        assert {m.restriction for m in term.matches(ICD10CM, "R74.8") if m.key == "ck"} == {"proxy-only"}

    def test_lookup_is_by_system_and_code(self, term):
        assert keys_of(term, LOINC, "19870-5") == {"fvc"}
        assert keys_of(term, SNOMED, "19870-5") == set()
        assert keys_of(term, LOINC, "19870-6") == set()

    @pytest.mark.parametrize("code", ["C50.9", "C00", "C96.4", "C34.90", "C80.1"])
    def test_cancer_regex_filter_matches_icd_c00_to_c96(self, term, code):
        assert "cancer_any" in keys_of(term, ICD10CM, code)

    @pytest.mark.parametrize("code", ["D50.9", "C97", "C97.1", "XC50.9", "c50.9"])
    def test_cancer_regex_filter_rejects_codes_outside_the_range(self, term, code):
        assert "cancer_any" not in keys_of(term, ICD10CM, code)

    def test_regex_filter_applies_to_its_own_system_only(self, term):
        assert "cancer_any" not in keys_of(term, SNOMED, "C50.9")

    def test_stroke_and_nihss_regex_filters(self, term):
        assert "stroke_dx" in keys_of(term, ICD10CM, "I63.512")
        assert "stroke_dx" not in keys_of(term, ICD10CM, "I64")
        assert "nihss" in keys_of(term, ICD10CM, "R29.715")
        assert "nihss" not in keys_of(term, ICD10CM, "R29.2")

    def test_body_site_membership(self, term):
        lower = term.set_url("body-site-lower-limb")
        assert term.in_set(lower, SNOMED, "61685007")
        assert not term.in_set(lower, SNOMED, "69536005")
        assert not term.in_set(term.set_url("no-such-set"), SNOMED, "61685007")

    def test_laterality_set_sides(self, term):
        assert term.set_sides[(SNOMED, "7771000")] == "left"
        assert term.set_sides[(SNOMED, "51440002")] == "bilateral"
        assert term.set_sides[(SNOMED, "66459002")] == "unknown"

    def test_title_falls_back_to_the_key_in_words(self, term):
        assert term.title("leg_weakness") == "Leg weakness"
        assert term.title("made_up_key") == "made up key"

    def test_builtin_terminology_does_not_know_the_local_code(self, term):
        assert term.matches(LOCAL_SYSTEM, "SADDLE-NUMB") == []
        intake = read_json(saddle_input(LOCAL_SYSTEM, "SADDLE-NUMB"), "in.json")
        result = patient_facts(intake.patients["Patient/p1"], term)
        assert [f for f in result.facts if f.get("key") == "saddle_anesthesia"] == []

    def test_site_folder_adds_a_local_code_to_an_existing_key(self, tmp_path, term):
        site_term = terminology.load(VALUESET_DIR, [site_folder(tmp_path, local_valueset())])
        assert keys_of(site_term, LOCAL_SYSTEM, "SADDLE-NUMB") == {"saddle_anesthesia"}
        # the built-in definition of the key is kept, and its built-in codes still match
        assert site_term.keys["saddle_anesthesia"].url == term.keys["saddle_anesthesia"].url
        assert site_term.keys["saddle_anesthesia"].resource_types == {"Condition", "Observation"}
        assert "saddle_anesthesia" in keys_of(site_term, SNOMED, "449813001")

    def test_site_folder_code_produces_a_fact_end_to_end(self, tmp_path):
        site_term = terminology.load(VALUESET_DIR, [site_folder(tmp_path, local_valueset())])
        intake = read_json(saddle_input(LOCAL_SYSTEM, "SADDLE-NUMB"), "in.json")
        result = patient_facts(intake.patients["Patient/p1"], site_term)
        facts = [f for f in result.facts if f.get("key") == "saddle_anesthesia"]
        assert len(facts) == 1
        assert facts[0]["state"] == "present" and facts[0]["ref"] == "Observation/o1"
        assert result.issues == []

    def test_site_value_set_without_finding_key_adds_no_matches(self, tmp_path):
        site_term = terminology.load(VALUESET_DIR, [site_folder(tmp_path, local_valueset(key=None))])
        assert site_term.matches(LOCAL_SYSTEM, "SADDLE-NUMB") == []
        assert site_term.in_set(
            "http://hospital.example/fhir/ValueSet/local-saddle", LOCAL_SYSTEM, "SADDLE-NUMB"
        )

    def test_site_folder_can_define_a_new_key(self, tmp_path):
        site_term = terminology.load(
            VALUESET_DIR, [site_folder(tmp_path, local_valueset(key="hospital_thing"))]
        )
        assert site_term.keys["hospital_thing"].title == "Local saddle codes"
        assert site_term.keys["hospital_thing"].kind == "finding"

    def test_site_folder_ignores_non_value_set_files(self, tmp_path):
        folder = site_folder(tmp_path, {"resourceType": "CodeSystem", "url": "http://hospital.example/cs"})
        assert (
            terminology.load(VALUESET_DIR, [folder]).keys.keys() == terminology.load(VALUESET_DIR).keys.keys()
        )

    def test_value_set_without_url_is_refused(self, tmp_path):
        vs = local_valueset()
        del vs["url"]
        with pytest.raises(ValueError, match="url"):
            terminology.load(VALUESET_DIR, [site_folder(tmp_path, vs)])

    def test_unsupported_filter_is_refused(self, tmp_path):
        vs = local_valueset()
        vs["compose"]["include"].append(
            {"system": SNOMED, "filter": [{"property": "concept", "op": "is-a", "value": "363346000"}]}
        )
        with pytest.raises(ValueError, match="filter"):
            terminology.load(VALUESET_DIR, [site_folder(tmp_path, vs)])


def concept_map(*targets: tuple[str, str], target_system: str = FINDING_SYSTEM, code: str = "LOCAL-1"):
    """A ConceptMap from LOCAL_SYSTEM ``code`` to each (target code, equivalence)."""
    return {
        "resourceType": "ConceptMap",
        "url": "http://hospital.example/fhir/ConceptMap/local",
        "status": "active",
        "group": [
            {
                "source": LOCAL_SYSTEM,
                "target": target_system,
                "element": [{"code": code, "target": [{"code": c, "equivalence": e} for c, e in targets]}],
            }
        ],
    }


def map_file(tmp_path: Path, doc: dict) -> Path:
    path = tmp_path / "local.conceptmap.json"
    path.write_bytes(orjson.dumps(doc))
    return path


class TestConceptMaps:
    @pytest.mark.parametrize("equivalence", sorted(terminology.COUNTED_EQUIVALENCE))
    def test_a_local_code_means_its_target_finding(self, tmp_path, equivalence):
        path = map_file(tmp_path, concept_map(("saddle_anesthesia", equivalence)))
        site_term = terminology.load(VALUESET_DIR, conceptmaps=[path])
        assert keys_of(site_term, LOCAL_SYSTEM, "LOCAL-1") == {"saddle_anesthesia"}
        assert str(path) in site_term.sources

    @pytest.mark.parametrize(
        "equivalence", ["narrower", "specializes", "relatedto", "inexact", "unmatched", "disjoint"]
    )
    def test_mappings_that_do_not_imply_the_target_are_not_counted(self, tmp_path, equivalence):
        path = map_file(tmp_path, concept_map(("leg_weakness", equivalence)))
        site_term = terminology.load(VALUESET_DIR, conceptmaps=[path])
        assert site_term.matches(LOCAL_SYSTEM, "LOCAL-1") == []

    def test_counted_equivalences_are_r4_codes(self):
        assert terminology.COUNTED_EQUIVALENCE < CONCEPTMAP_EQUIVALENCE

    def test_local_code_produces_a_fact_only_with_the_map(self, tmp_path):
        intake = read_json(saddle_input(LOCAL_SYSTEM, "LOCAL-1"), "in.json")
        path = map_file(tmp_path, concept_map(("saddle_anesthesia", "equivalent")))
        for term, count in (
            (terminology.load(VALUESET_DIR), 0),
            (terminology.load(VALUESET_DIR, conceptmaps=[path]), 1),
        ):
            result = patient_facts(intake.patients["Patient/p1"], term)
            assert len([f for f in result.facts if f.get("key") == "saddle_anesthesia"]) == count

    def test_a_local_code_inherits_the_side_of_a_lateral_finding_code(self, tmp_path):
        path = map_file(tmp_path, concept_map(("abi_left", "equivalent")))
        site_term = terminology.load(VALUESET_DIR, conceptmaps=[path])
        assert [(m.key, m.side) for m in site_term.matches(LOCAL_SYSTEM, "LOCAL-1")] == [("abi_left", "left")]

    def test_a_map_to_a_standard_code_takes_its_keys_conditions_and_sets(self, tmp_path, term):
        weakness = map_file(tmp_path, concept_map(("26544005", "equivalent"), target_system=SNOMED))
        site_term = terminology.load(VALUESET_DIR, conceptmaps=[weakness])
        assert site_term.matches(LOCAL_SYSTEM, "LOCAL-1") == term.matches(SNOMED, "26544005")
        limb = tmp_path / "limb"
        limb.mkdir()
        map_file(limb, concept_map(("61685007", "equivalent"), target_system=SNOMED, code="LEG"))
        site_term = terminology.load(VALUESET_DIR, [limb])  # a ConceptMap in a site folder is applied too
        assert site_term.in_set(site_term.set_url("body-site-lower-limb"), LOCAL_SYSTEM, "LEG")
        assert site_term.matches(LOCAL_SYSTEM, "LEG") == []

    def test_a_map_may_point_at_a_site_value_set_code(self, tmp_path):
        folder = site_folder(tmp_path, local_valueset())
        path = map_file(tmp_path, concept_map(("SADDLE-NUMB", "equivalent"), target_system=LOCAL_SYSTEM))
        site_term = terminology.load(VALUESET_DIR, [folder], [path])
        assert keys_of(site_term, LOCAL_SYSTEM, "LOCAL-1") == {"saddle_anesthesia"}

    def test_an_unknown_finding_target_is_refused(self, tmp_path):
        path = map_file(tmp_path, concept_map(("saddle_anaesthesia", "equivalent")))
        with pytest.raises(terminology.TerminologyError, match="LOCAL-1 maps to unknown finding"):
            terminology.load(VALUESET_DIR, conceptmaps=[path])

    def test_an_unknown_standard_target_is_ignored(self, tmp_path):
        path = map_file(tmp_path, concept_map(("1234", "equivalent"), target_system=SNOMED))
        assert terminology.load(VALUESET_DIR, conceptmaps=[path]).matches(LOCAL_SYSTEM, "LOCAL-1") == []

    def test_an_invalid_concept_map_is_refused_with_its_file(self, tmp_path):
        doc = concept_map(("leg_weakness", "same"))
        path = map_file(tmp_path, doc)
        with pytest.raises(terminology.TerminologyError, match="equivalence") as error:
            terminology.load(VALUESET_DIR, conceptmaps=[path])
        assert str(error.value).startswith(f"{path}: ")

    def test_a_target_without_equivalence_is_refused(self, tmp_path):
        doc = concept_map(("leg_weakness", "equivalent"))
        del doc["group"][0]["element"][0]["target"][0]["equivalence"]
        with pytest.raises(terminology.TerminologyError, match="equivalence"):
            terminology.load(VALUESET_DIR, conceptmaps=[map_file(tmp_path, doc)])

    def test_a_listed_file_must_be_a_concept_map(self, tmp_path):
        path = map_file(tmp_path, local_valueset())
        with pytest.raises(terminology.TerminologyError, match="not a ConceptMap"):
            terminology.load(VALUESET_DIR, conceptmaps=[path])

    def test_unreadable_json_is_refused_with_its_file(self, tmp_path):
        path = tmp_path / "broken.json"
        path.write_text("{")
        with pytest.raises(terminology.TerminologyError, match="cannot read JSON"):
            terminology.load(VALUESET_DIR, conceptmaps=[path])

    def test_the_example_site_map(self):
        site = ROOT / "examples" / "site"
        site_term = terminology.load(
            VALUESET_DIR, [site / "valuesets"], [site / "local-codes.conceptmap.json"]
        )
        system = "https://hospital.example.org/codes"
        assert keys_of(site_term, system, "LWK-01") == {"leg_weakness"}
        assert keys_of(site_term, system, "LWK-02") == {"leg_weakness"}  # wider: left leg weakness
        assert keys_of(site_term, system, "WK-00") == set()  # narrower: any weakness is not leg weakness
        assert keys_of(site_term, system, "SADDLE-01") == {"saddle_anesthesia"}


def test_an_invalid_site_value_set_is_refused_with_its_file(tmp_path):
    vs = local_valueset()
    del vs["compose"]["include"][0]["concept"][0]["code"]
    folder = site_folder(tmp_path, vs)
    with pytest.raises(terminology.TerminologyError, match="code") as error:
        terminology.load(VALUESET_DIR, [folder])
    assert str(error.value).startswith(f"{folder / 'local0.json'}: ")


def test_builtin_value_sets_are_valid_r4():
    from fhir_adapters.validate import validate

    paths = sorted(VALUESET_DIR.glob("*.json"))
    assert paths, f"no value sets in {VALUESET_DIR}: the loop below would prove nothing"
    for path in paths:
        validate(orjson.loads(path.read_bytes()))
