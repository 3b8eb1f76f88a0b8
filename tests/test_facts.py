"""FHIR resources of one patient -> flat facts (docs/clinical-policy.md#laterality,
docs/clinical-policy.md#status-handling, docs/clinical-policy.md#units)."""

from __future__ import annotations

import orjson
import pytest

from fhir_adapters import terminology
from fhir_adapters.facts import patient_facts
from fhir_adapters.identifiers import LATERALITY_EXTENSION, MUSCLE_GROUP_SYSTEM
from fhir_adapters.intake import read_json
from fhir_adapters.terminology import Terminology
from rulesets import VALUESET_DIR
from rulesets.meta import FINDING_SYSTEM, ICD10CM, LOINC, SNOMED

from .facts_helpers import (
    LEFT,
    LOWER_LIMB,
    PID,
    RIGHT,
    RXNORM,
    T_WHEN,
    UCUM,
    WHEN,
    _epoch,
    by_key,
    cc,
    condition,
    observation,
    one,
    patient,
    quantity,
    run,
    site,
)


@pytest.fixture(scope="module")
def term() -> Terminology:
    return terminology.load(VALUESET_DIR)


class TestConditionFacts:
    def test_active_confirmed_condition_is_a_current_finding(self, term):
        fact = one(run(term, condition()), "sciatica")
        assert fact["t"] == "finding" and fact["state"] == "present" and fact["span"] == "state"
        assert (fact["active"], fact["suspected"], fact["prelim"]) == (1, 0, 0)
        assert fact["onset"] == fact["ts"] == T_WHEN
        assert fact["pid"] == PID and fact["ref"] == "Condition/c1"

    @pytest.mark.parametrize("verification", ["refuted", "entered-in-error"])
    def test_refuted_or_entered_in_error_gives_no_facts(self, term, verification):
        result = run(term, condition(verification=verification))
        assert result.facts == [] and result.issues == []

    @pytest.mark.parametrize("clinical", ["resolved", "inactive", "remission"])
    def test_not_current_clinical_status_is_inactive(self, term, clinical):
        assert one(run(term, condition(clinical=clinical)), "sciatica")["active"] == 0

    @pytest.mark.parametrize("clinical", ["recurrence", "relapse"])
    def test_recurrence_and_relapse_are_current(self, term, clinical):
        assert one(run(term, condition(clinical=clinical)), "sciatica")["active"] == 1

    def test_absent_clinical_status_without_abatement_is_current(self, term):
        assert one(run(term, condition(clinical=None)), "sciatica")["active"] == 1

    def test_absent_clinical_status_with_abatement_is_resolved(self, term):
        res = condition(clinical=None, abatementDateTime="2025-03-12T00:00:00Z")
        fact = one(run(term, res), "sciatica")
        assert fact["active"] == 0
        assert fact["abated"] == _epoch(2025, 3, 12)

    def test_abatement_is_kept_even_when_status_says_active(self, term):
        fact = one(run(term, condition(abatementDateTime="2025-03-12T00:00:00Z")), "sciatica")
        assert fact["abated"] == _epoch(2025, 3, 12)  # the engine compares it with now

    @pytest.mark.parametrize("verification", ["provisional", "differential", "unconfirmed", None])
    def test_unconfirmed_verification_is_suspected(self, term, verification):
        assert one(run(term, condition(verification=verification)), "sciatica")["suspected"] == 1

    def test_unknown_clinical_status_is_an_issue_at_its_path(self, term):
        result = run(term, condition(clinical="dormant"))
        assert result.facts == []
        assert [i.path for i in result.issues] == ["Bundle.entry[0].resource.clinicalStatus"]

    def test_onset_age_uses_patient_birth_date(self, term):
        res = condition(recordedDate="2025-03-10T09:00:00Z")
        del res["onsetDateTime"]
        res["onsetAge"] = {"value": 60, "unit": "years", "system": UCUM, "code": "a"}
        fact = one(run(term, patient(birthDate="1960-01-01"), res), "sciatica")
        assert fact["onset"] == _epoch(2020, 1, 1)
        assert fact["ts"] == T_WHEN  # recorded later than onset: event time is the record

    def test_onset_age_without_birth_date_falls_back_to_recorded_date(self, term):
        res = condition(recordedDate="2025-03-01T00:00:00Z")
        del res["onsetDateTime"]
        res["onsetAge"] = {"value": 60, "unit": "years", "system": UCUM, "code": "a"}
        assert one(run(term, res), "sciatica")["onset"] == _epoch(2025, 3, 1)

    def test_onset_age_in_months_is_an_issue(self, term):
        res = condition()
        del res["onsetDateTime"]
        res["onsetAge"] = {"value": 6, "unit": "months", "system": UCUM, "code": "mo"}
        result = run(term, patient(birthDate="2024-01-01"), res)
        assert by_key(result, "sciatica") == []
        assert [i.path for i in result.issues] == ["Bundle.entry[1].resource.onsetAge"]

    def test_precoordinated_icd_side(self, term):
        assert one(run(term, condition(ICD10CM, "M54.32")), "sciatica")["side"] == "left"

    def test_condition_with_unmapped_code_gives_no_facts(self, term):
        assert run(term, condition(SNOMED, "195967001")).facts == []  # asthma


class TestObservationStatus:
    @pytest.mark.parametrize("status", ["cancelled", "entered-in-error", "registered", "unknown"])
    def test_ignored_status_gives_no_facts(self, term, status):
        result = run(term, observation(status=status))
        assert result.facts == [] and result.issues == []

    @pytest.mark.parametrize("status", ["final", "amended", "corrected"])
    def test_final_statuses_are_not_preliminary(self, term, status):
        assert one(run(term, observation(status=status)), "saddle_anesthesia")["prelim"] == 0

    def test_preliminary_is_flagged(self, term):
        assert one(run(term, observation(status="preliminary")), "saddle_anesthesia")["prelim"] == 1

    def test_missing_status_is_an_issue_at_the_status_path(self, term):
        result = run(term, patient(), observation(status=None))
        assert by_key(result, "saddle_anesthesia") == []
        (issue,) = result.issues
        assert issue.path == "Bundle.entry[1].resource.status"

    def test_unknown_status_code_is_an_issue(self, term):
        result = run(term, observation(status="done"))
        assert result.facts == []
        assert [i.path for i in result.issues] == ["Bundle.entry[0].resource.status"]

    def test_data_absent_reason_gives_no_fact(self, term):
        res = observation(
            dataAbsentReason=cc("http://terminology.hl7.org/CodeSystem/data-absent-reason", "not-performed")
        )
        result = run(term, res)
        assert result.facts == []
        assert all(i.severity != "error" for i in result.issues)

    def test_effective_period_gives_onset_start_and_time_end(self, term):
        res = observation(effectivePeriod={"start": "2025-03-09T00:00:00Z", "end": "2025-03-10T00:00:00Z"})
        del res["effectiveDateTime"]
        fact = one(run(term, res), "saddle_anesthesia")
        assert fact["onset"] == _epoch(2025, 3, 9) and fact["ts"] == _epoch(2025, 3, 10)

    def test_issued_is_used_when_no_effective_time(self, term):
        res = observation(issued="2025-03-10T10:00:00Z")
        del res["effectiveDateTime"]
        assert one(run(term, res), "saddle_anesthesia")["ts"] == _epoch(2025, 3, 10, 10)

    def test_no_time_at_all_is_an_issue(self, term):
        res = observation()
        del res["effectiveDateTime"]
        result = run(term, res)
        assert result.facts == []
        assert [i.path for i in result.issues] == ["Bundle.entry[0].resource.effective[x]"]

    def test_time_without_zone_is_an_issue_at_its_path(self, term):
        result = run(term, observation(effectiveDateTime="2025-03-10T09:00:00"))
        assert result.facts == []
        assert [i.path for i in result.issues] == ["Bundle.entry[0].resource.effectiveDateTime"]

    def test_future_dated_fact_is_kept_with_its_time(self, term):
        fact = one(run(term, observation(effectiveDateTime="2099-01-01T00:00:00Z")), "saddle_anesthesia")
        assert fact["ts"] == _epoch(2099, 1, 1)


class TestPresence:
    def test_no_value_means_present(self, term):
        assert one(run(term, observation()), "saddle_anesthesia")["state"] == "present"

    @pytest.mark.parametrize("code", ["2667000", "373067005", "410516002", "410594000", "260413007"])
    def test_absent_value_codes_mean_explicitly_absent(self, term, code):
        fact = one(run(term, observation(valueCodeableConcept=cc(SNOMED, code))), "saddle_anesthesia")
        assert fact["state"] == "absent"

    @pytest.mark.parametrize("code", ["52101004", "373066001", "410605003"])
    def test_present_value_codes_mean_present(self, term, code):
        fact = one(run(term, observation(valueCodeableConcept=cc(SNOMED, code))), "saddle_anesthesia")
        assert fact["state"] == "present"

    def test_unknown_value_gives_no_fact(self, term):
        result = run(term, observation(valueCodeableConcept=cc(SNOMED, "261665006")))
        assert result.facts == []

    def test_value_boolean_false_is_absent(self, term):
        assert one(run(term, observation(valueBoolean=False)), "saddle_anesthesia")["state"] == "absent"

    def test_value_boolean_true_is_present(self, term):
        assert one(run(term, observation(valueBoolean=True)), "saddle_anesthesia")["state"] == "present"

    def test_value_boolean_as_string_is_an_issue(self, term):
        result = run(term, observation(valueBoolean="false"))
        assert result.facts == []
        assert [i.path for i in result.issues] == ["Bundle.entry[0].resource.valueBoolean"]


class TestLateralityAndSites:
    def test_precoordinated_left_leg_paresis(self, term):
        fact = one(run(term, observation(SNOMED, "16018391000119104")), "leg_weakness")
        assert fact["side"] == "left"

    def test_project_laterality_extension_on_body_site(self, term):
        res = observation(SNOMED, "102568007", bodySite=site(side=LEFT))
        fact = one(run(term, res), "leg_weakness")
        assert fact["side"] == "left"
        assert fact["site"] == LOWER_LIMB and fact["limb"] == "leg"

    def test_laterality_code_in_any_body_site_extension(self, term):
        res = observation(
            SNOMED,
            "102568007",
            bodySite=site(side=RIGHT, url="http://other.example/fhir/StructureDefinition/side"),
        )
        assert one(run(term, res), "leg_weakness")["side"] == "right"

    def test_project_laterality_extension_with_value_code(self, term):
        bs = cc(SNOMED, LOWER_LIMB, extension=[{"url": LATERALITY_EXTENSION, "valueCode": "bilateral"}])
        assert one(run(term, observation(SNOMED, "102568007", bodySite=bs)), "leg_weakness")["side"] == (
            "bilateral"
        )

    def test_condition_body_site_list_carries_laterality(self, term):
        res = condition(SNOMED, "102568007", bodySite=[site(side=RIGHT)])
        assert one(run(term, res), "leg_weakness")["side"] == "right"

    def test_no_laterality_is_unknown(self, term):
        assert one(run(term, observation(SNOMED, "102568007", bodySite=site())), "leg_weakness")["side"] == (
            "unknown"
        )

    def test_unilateral_qualifier_is_unknown_side(self, term):
        res = observation(SNOMED, "102568007", bodySite=site(side="66459002"))
        assert one(run(term, res), "leg_weakness")["side"] == "unknown"

    def test_precoordinated_side_wins_over_body_site(self, term):
        res = observation(SNOMED, "16018391000119104", bodySite=site(side=RIGHT))
        assert one(run(term, res), "leg_weakness")["side"] == "left"

    def test_muscle_weakness_with_lower_limb_site_is_leg_weakness(self, term):
        result = run(term, observation(SNOMED, "26544005", bodySite=site(side=LEFT)))
        assert one(result, "leg_weakness")["side"] == "left"
        assert by_key(result, "muscle_weakness_generalized") == []

    def test_muscle_weakness_without_site_is_generalised_not_leg(self, term):
        result = run(term, observation(SNOMED, "26544005"))
        assert by_key(result, "leg_weakness") == []
        assert one(result, "muscle_weakness_generalized")["state"] == "present"

    def test_muscle_weakness_with_non_limb_site_is_neither(self, term):
        result = run(term, condition(SNOMED, "26544005", bodySite=[cc(SNOMED, "69536005")]))
        assert by_key(result, "leg_weakness") == [] and by_key(result, "muscle_weakness_generalized") == []

    def test_malformed_body_site_issue_names_the_body_site_path(self, term):
        res = observation(SNOMED, "102568007", bodySite={"coding": {"system": SNOMED, "code": LOWER_LIMB}})
        result = run(term, res)
        assert result.facts == []
        assert [i.path for i in result.issues] == ["Bundle.entry[0].resource.bodySite.coding"]

    def test_malformed_laterality_extension_is_reported_not_a_crash(self, term):
        bs = cc(
            SNOMED,
            LOWER_LIMB,
            extension=[{"url": LATERALITY_EXTENSION, "valueCodeableConcept": {"coding": ["left"]}}],
        )
        good = dict(observation(FINDING_SYSTEM, "saddle_anesthesia"), id="o2")
        result = run(term, observation(SNOMED, "102568007", bodySite=bs), good)
        assert one(result, "saddle_anesthesia")["state"] == "present"  # the other resource is still mapped
        weak = by_key(result, "leg_weakness")
        reported = [i for i in result.issues if i.path.startswith("Bundle.entry[0].resource.bodySite")]
        assert reported or [f["side"] for f in weak] == ["unknown"]

    def test_abi_sent_as_ucum_ratio_is_read(self, term):
        res = observation(FINDING_SYSTEM, "abi_left", valueQuantity=quantity(0.8, "{ratio}"))
        result = run(term, res)
        assert one(result, "abi_left")["v"] == pytest.approx(0.8)
        assert result.issues == []


class TestValueFacts:
    def test_fvc_litres_become_millilitres(self, term):
        res = observation(LOINC, "19870-5", valueQuantity=quantity(1.2, "L"))
        fact = one(run(term, res), "fvc")
        assert fact["t"] == "value"
        assert fact["v"] == 1200 and fact["unit"] == "mL"
        assert fact["ts"] == T_WHEN and fact["prelim"] == 0
        assert "state" not in fact and "active" not in fact

    def test_unit_given_only_as_display_string(self, term):
        res = observation(LOINC, "19870-5", valueQuantity={"value": 1.2, "unit": "L"})
        assert one(run(term, res), "fvc")["v"] == 1200

    def test_pvr_in_unknown_unit_is_missing_with_a_warning(self, term):
        res = observation(FINDING_SYSTEM, "pvr_volume", valueQuantity=quantity(450, "mm[Hg]"))
        result = run(term, res)
        assert result.facts == []
        (issue,) = result.issues
        assert issue.severity == "warning"
        assert issue.path == "Bundle.entry[0].resource.valueQuantity"
        assert "mm[Hg]" in issue.message

    def test_pvr_without_unit_is_missing(self, term):
        res = observation(FINDING_SYSTEM, "pvr_volume", valueQuantity={"value": 450})
        result = run(term, res)
        assert result.facts == [] and len(result.issues) == 1

    def test_value_as_string_is_an_issue_naming_the_value(self, term):
        res = observation(LOINC, "2823-3", valueQuantity=quantity("6.1", "mmol/L"))
        result = run(term, patient(), res)
        assert by_key(result, "potassium") == []
        (issue,) = result.issues
        assert issue.path == "Bundle.entry[1].resource.valueQuantity.value"

    def test_quantity_with_comparator_is_an_issue(self, term):
        res = observation(LOINC, "2823-3", valueQuantity=quantity(2.0, "mmol/L", comparator="<"))
        result = run(term, res)
        assert result.facts == []
        (issue,) = result.issues
        assert issue.path.startswith("Bundle.entry[0].resource.valueQuantity")
        assert issue.path.endswith("comparator")

    def test_reference_range_is_normalised_to_the_canonical_unit(self, term):
        res = observation(
            LOINC,
            "2160-0",
            valueQuantity=quantity(1.5, "mg/dL"),
            referenceRange=[{"low": quantity(0.6, "mg/dL"), "high": quantity(1.2, "mg/dL")}],
        )
        fact = one(run(term, res), "creatinine")
        assert fact["unit"] == "umol/L"
        assert fact["v"] == pytest.approx(132.6)
        assert fact["high"] == pytest.approx(106.08)
        assert fact["low"] == pytest.approx(53.04)

    def test_interpretation_code_is_kept(self, term):
        res = observation(
            LOINC,
            "2823-3",
            valueQuantity=quantity(6.1, "mmol/L"),
            interpretation=[cc("http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation", "H")],
        )
        fact = one(run(term, res), "potassium")
        assert fact["v"] == pytest.approx(6.1) and fact["interp"] == "H"

    def test_qualitative_result_without_number_keeps_interpretation(self, term):
        res = observation(
            LOINC,
            "5060-9",
            interpretation=[cc("http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation", "POS")],
        )
        fact = one(run(term, res), "lyme_ab_serum")
        assert fact["interp"] == "POS" and "v" not in fact

    def test_preliminary_value_is_flagged(self, term):
        res = observation(LOINC, "19870-5", status="preliminary", valueQuantity=quantity(1.2, "L"))
        assert one(run(term, res), "fvc")["prelim"] == 1

    def test_mrc_grade_on_lower_limb_muscle_group(self, term):
        res = observation(
            FINDING_SYSTEM,
            "mrc_grade",
            valueInteger=3,
            bodySite=site("hip_flexors", MUSCLE_GROUP_SYSTEM, side=LEFT),
        )
        fact = one(run(term, res), "mrc_grade")
        assert fact["v"] == 3 and fact["unit"] == "1"
        assert fact["limb"] == "leg" and fact["site"] == "hip_flexors" and fact["side"] == "left"

    def test_mrc_grade_on_upper_limb_muscle_group_is_arm(self, term):
        res = observation(
            FINDING_SYSTEM,
            "mrc_grade",
            valueInteger=5,
            bodySite=site("shoulder_abductors", MUSCLE_GROUP_SYSTEM, side=RIGHT),
        )
        fact = one(run(term, res), "mrc_grade")
        assert fact["limb"] == "arm" and fact["side"] == "right"

    def test_value_integer_that_is_not_an_integer_is_an_issue(self, term):
        res = observation(FINDING_SYSTEM, "mrc_grade", valueInteger=3.5)
        result = run(term, res)
        assert result.facts == []
        assert [i.path for i in result.issues] == ["Bundle.entry[0].resource.valueInteger"]

    def test_datetime_value(self, term):
        res = observation(FINDING_SYSTEM, "lkw_time", valueDateTime="2025-03-10T07:30:00+01:00")
        fact = one(run(term, res), "lkw_time")
        assert fact["v"] == _epoch(2025, 3, 10, 6, 30) and fact["unit"] == "s"

    def test_bad_resource_is_skipped_and_the_rest_mapped(self, term):
        bad = observation(LOINC, "2823-3", valueQuantity=quantity("6.1", "mmol/L"))
        good = dict(observation(LOINC, "19870-5", valueQuantity=quantity(1.2, "L")), id="o2")
        result = run(term, bad, good)
        assert [f["key"] for f in result.facts] == ["fvc"]
        assert len(result.issues) == 1


class TestRestrictedCodes:
    def test_abnormal_reflex_counts_as_absent_reflexes_when_note_says_absent(self, term):
        res = observation(ICD10CM, "R29.2", note=[{"text": "Ankle reflexes Absent bilaterally"}])
        assert one(run(term, res), "reflexes_absent")["state"] == "present"

    def test_abnormal_reflex_counts_when_value_text_says_areflexia(self, term):
        res = observation(ICD10CM, "R29.2", valueString="areflexia in both legs")
        assert len(by_key(run(term, res), "reflexes_absent")) == 1

    def test_abnormal_reflex_without_confirming_text_is_not_absent_reflexes(self, term):
        result = run(term, observation(ICD10CM, "R29.2", note=[{"text": "brisk knee jerks"}]))
        assert by_key(result, "reflexes_absent") == []
        assert by_key(run(term, observation(ICD10CM, "R29.2")), "reflexes_absent") == []

    def test_proxy_only_diagnosis_code_is_never_a_value(self, term):
        result = run(term, condition(ICD10CM, "R74.8"))
        assert by_key(result, "ck") == []


class TestProcedureAndMedication:
    def procedure(self, status: str) -> dict:
        return {
            "resourceType": "Procedure",
            "id": "pr1",
            "status": status,
            "subject": {"reference": PID},
            "code": cc(SNOMED, "10836008"),
            "performedDateTime": WHEN,
        }

    def med(self, status: str) -> dict:
        return {
            "resourceType": "MedicationRequest",
            "id": "m1",
            "status": status,
            "intent": "order",
            "subject": {"reference": PID},
            "medicationCodeableConcept": cc(RXNORM, "1364430"),
            "authoredOn": WHEN,
        }

    def test_completed_procedure_is_a_fact(self, term):
        (fact,) = run(term, self.procedure("completed")).facts
        assert fact == {
            "t": "procedure",
            "pid": PID,
            "ref": "Procedure/pr1",
            "key": "spinal_decompression_done",
            "ts": T_WHEN,
        }

    def test_procedure_period_time_is_its_start(self, term):
        # docs/clinical-policy.md#which-time: Procedure onset and event time = performedDateTime /
        # performedPeriod.start
        res = self.procedure("completed")
        del res["performedDateTime"]
        res["performedPeriod"] = {"start": "2025-03-09T22:00:00Z", "end": "2025-03-10T01:00:00Z"}
        (fact,) = run(term, res).facts
        assert fact["ts"] == _epoch(2025, 3, 9, 22)

    @pytest.mark.parametrize("status", ["in-progress", "preparation", "not-done", "entered-in-error"])
    def test_procedure_not_completed_gives_no_fact(self, term, status):
        assert run(term, self.procedure(status)).facts == []

    def test_active_medication_request(self, term):
        (fact,) = run(term, self.med("active")).facts
        assert fact == {
            "t": "medication",
            "pid": PID,
            "ref": "MedicationRequest/m1",
            "key": "anticoagulant_active",
            "active": 1,
            "ts": T_WHEN,
        }

    def test_completed_medication_request_is_past_use(self, term):
        (fact,) = run(term, self.med("completed")).facts
        assert fact["active"] == 0

    @pytest.mark.parametrize("status", ["cancelled", "stopped", "entered-in-error", "draft"])
    def test_medication_request_not_taken_gives_no_fact(self, term, status):
        assert run(term, self.med(status)).facts == []


class TestPatientFacts:
    def test_gender_and_birth_date(self, term):
        (fact,) = run(term, patient(gender="female", birthDate="1960-05-01")).facts
        assert fact == {"t": "patient", "pid": PID, "ref": PID, "sex": "female", "birth": "1960-05-01"}

    def test_partial_birth_date_is_first_day(self, term):
        (fact,) = run(term, patient(birthDate="1960")).facts
        assert fact["birth"] == "1960-01-01" and "sex" not in fact

    def test_invalid_gender_is_an_issue(self, term):
        result = run(term, patient(gender="F"))
        assert result.facts == []
        assert [i.path for i in result.issues] == ["Bundle.entry[0].resource.gender"]

    def test_only_one_patient_fact_per_patient(self, term):
        result = run(term, patient(gender="male"), patient(gender="male"))
        assert [f["t"] for f in result.facts] == ["patient"]


class TestFactsFromIntake:
    def test_transaction_resources_without_id_are_referenced_by_full_url(self, term):
        obs_a = observation(SNOMED, "449813001")
        obs_b = observation(LOINC, "19870-5", valueQuantity=quantity(1.2, "L"))
        for res in (obs_a, obs_b):
            del res["id"]
            res["subject"] = {"reference": "urn:uuid:pat"}
        doc = {
            "resourceType": "Bundle",
            "type": "transaction",
            "entry": [
                {
                    "fullUrl": "urn:uuid:pat",
                    "resource": patient(),
                    "request": {"method": "PUT", "url": "Patient/p1"},
                },
                {
                    "fullUrl": "urn:uuid:obs-a",
                    "resource": obs_a,
                    "request": {"method": "POST", "url": "Observation"},
                },
                {
                    "fullUrl": "urn:uuid:obs-b",
                    "resource": obs_b,
                    "request": {"method": "POST", "url": "Observation"},
                },
            ],
        }
        intake = read_json(orjson.dumps(doc), "tx.json")
        result = patient_facts(intake.patients[PID], term)
        assert one(result, "saddle_anesthesia")["ref"] == "urn:uuid:obs-a"
        assert one(result, "fvc")["ref"] == "urn:uuid:obs-b"
