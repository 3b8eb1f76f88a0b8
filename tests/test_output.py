"""Write-back resources: Flag, CarePlan, transaction Bundle, ConceptMap and their validation."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from engine.alert import Alert
from fhir_adapters.identifiers import ALERT_SYSTEM
from fhir_adapters.output import (
    CAREPLAN_EPISODE_SYSTEM,
    CONCEPT_MAP_URL,
    ENGINE_DEVICE,
    ENGINE_DEVICE_URL,
    FLAG_EPISODE_SYSTEM,
    MAX_CONDITIONAL_TRANSACTION_ENTRIES,
    alert_concept_map,
    careplan_for,
    episode_identifier,
    fhir_instant,
    flag_for,
    patient_transaction,
)
from fhir_adapters.validate import (
    FhirValidationError,
    validate,
    validate_required_codes,
    validate_resource,
)
from rulesets.meta import SNOMED, Code

from .output_helpers import CES, DVT, NOW, make_alert

PRIORITY_URL = "http://hl7.org/fhir/StructureDefinition/flag-priority"


def walk(node: Any, path: str = "$") -> Iterator[tuple[str, Any]]:
    """Every (path, value) in a JSON tree, containers included."""
    yield path, node
    if isinstance(node, dict):
        for key, value in node.items():
            yield from walk(value, f"{path}.{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from walk(value, f"{path}[{index}]")


def as_json(resource: dict[str, Any]) -> dict[str, Any]:
    """Round-trip through orjson: what a server would receive."""
    return orjson.loads(orjson.dumps(resource))


def expressions(error: pytest.ExceptionInfo[FhirValidationError]) -> dict[str, str]:
    return {issue.expression: issue.code for issue in error.value.issues}


def valid_flag() -> dict[str, Any]:
    return flag_for(make_alert(), CES)


class TestFhirInstant:
    def test_epoch_seconds_become_utc_with_z_suffix(self) -> None:
        assert fhir_instant(NOW) == "2025-03-10T12:00:00Z"

    def test_fractional_seconds_are_rounded_away(self) -> None:
        assert fhir_instant(NOW + 0.6) == "2025-03-10T12:00:01Z"


class TestFlag:
    @pytest.mark.parametrize(("severity", "code"), [("critical", "PH"), ("urgent", "PM"), ("routine", "PL")])
    def test_priority_extension_follows_severity(self, severity: str, code: str) -> None:
        flag = flag_for(make_alert(severity=severity), CES)
        (extension,) = flag["extension"]
        assert extension["url"] == PRIORITY_URL
        (coding,) = extension["valueCodeableConcept"]["coding"]
        assert (coding["system"], coding["code"]) == ("http://hl7.org/fhir/flag-priority-code", code)

    def test_unknown_severity_is_refused(self) -> None:
        with pytest.raises(ValueError, match="severity"):
            flag_for(make_alert(severity="catastrophic"), CES)

    def test_elements_follow_section_16_1(self) -> None:
        flag = valid_flag()
        assert flag["status"] == "active"
        assert flag["category"][0]["coding"][0]["code"] == "clinical"
        assert flag["code"]["coding"] == [
            {"system": ALERT_SYSTEM, "code": "cauda_equina_syndrome",
             "display": "Cauda equina syndrome"}
        ]  # fmt: skip
        assert flag["subject"] == {"reference": "Patient/v01"}
        assert flag["period"] == {"start": "2025-03-10T12:00:00Z"}
        assert flag["author"]["reference"] == ENGINE_DEVICE_URL
        assert flag["identifier"] == [
            {"system": FLAG_EPISODE_SYSTEM, "value": episode_identifier(make_alert())}
        ]

    def test_text_names_tier_label_and_suspicion(self) -> None:
        assert "sphincter or saddle signs" in valid_flag()["code"]["text"]
        assert "(suspected)" not in valid_flag()["code"]["text"]
        suspected = flag_for(make_alert(tier="B", suspected=True), CES)["code"]["text"]
        assert "bilateral sciatica" in suspected
        assert suspected.endswith("(suspected)")

    def test_metadata_of_another_rule_is_refused(self) -> None:
        with pytest.raises(ValueError, match="deep_vein_thrombosis"):
            flag_for(make_alert(), DVT)


class TestEpisodeIdentifier:
    def test_same_episode_gives_same_identifier(self) -> None:
        first = make_alert()
        later = make_alert(now=NOW + 3600, tier="B", severity="urgent")
        assert episode_identifier(first) == episode_identifier(later)
        assert flag_for(first, CES)["identifier"] == flag_for(later, CES)["identifier"]

    @pytest.mark.parametrize(
        "change",
        [
            {"episode": "2025-03-01"},
            {"patient": "Patient/v02"},
            {"rule": "deep_vein_thrombosis"},
        ],
    )
    def test_other_episode_patient_or_rule_gives_another(self, change: dict[str, str]) -> None:
        assert episode_identifier(make_alert(**change)) != episode_identifier(make_alert())

    def test_is_a_uuid(self) -> None:
        assert re.fullmatch(r"[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}",
                            episode_identifier(make_alert()))  # fmt: skip


class TestCarePlan:
    @pytest.mark.parametrize("tier", ["A", "B", "C"])
    def test_one_activity_per_action_of_the_tier(self, tier: str) -> None:
        careplan = careplan_for(make_alert(tier=tier), CES, "urn:uuid:flag")
        texts = [a["detail"]["code"]["text"] for a in careplan["activity"]]
        assert texts == [a.text for a in CES.actions_for(tier)]

    def test_elements_follow_section_16_2(self) -> None:
        careplan = careplan_for(make_alert(), CES, "urn:uuid:flag")
        assert (careplan["status"], careplan["intent"]) == ("draft", "proposal")
        assert careplan["identifier"][0]["system"] == CAREPLAN_EPISODE_SYSTEM
        assert careplan["created"] == "2025-03-10T12:00:00Z"
        assert careplan["addresses"] == [{"reference": "Condition/retention"}]
        assert [r["reference"] for r in careplan["supportingInfo"]] == [
            "urn:uuid:flag", "Observation/saddle", "Condition/retention"
        ]  # fmt: skip
        assert "sphincter or saddle signs" in careplan["title"]
        assert "urinary retention with saddle anaesthesia" in careplan["description"]

    def test_activity_detail_carries_codes_timing_and_reason(self) -> None:
        mri = careplan_for(make_alert(), CES, "urn:uuid:flag")["activity"][0]["detail"]
        assert mri["kind"] == "ServiceRequest"
        assert mri["status"] == "not-started"
        assert mri["code"]["coding"][0]["code"] == "36531-2"
        assert mri["reasonCode"][0]["coding"][0]["code"] == "192970008"
        assert mri["scheduledPeriod"] == {
            "start": "2025-03-10T12:00:00Z", "end": "2025-03-10T16:00:00Z"
        }  # fmt: skip
        assert mri["description"] == "Emergency MRI spine (target: within 4 h)"

    def test_kind_outside_r4_activity_kinds_is_left_out(self) -> None:
        surgery = careplan_for(make_alert(), CES, "urn:uuid:flag")["activity"][2]["detail"]
        assert "kind" not in surgery
        assert surgery["scheduledPeriod"]["end"] == "2025-03-12T12:00:00Z"

    def test_action_without_codes_has_text_only(self) -> None:
        exam = careplan_for(make_alert(), CES, "urn:uuid:flag")["activity"][1]["detail"]
        assert exam["code"] == {"text": "Documented neurological exam"}
        assert exam["description"].endswith("(target: now)")

    def test_no_condition_evidence_means_no_addresses(self) -> None:
        alert = make_alert(evidence=("Observation/saddle",))
        assert "addresses" not in careplan_for(alert, CES, "urn:uuid:flag")


def transaction_for(*alerts: Alert) -> dict[str, Any]:
    bundle = patient_transaction(list(alerts), [CES, DVT])
    assert bundle is not None
    return as_json(bundle)


def two_alert_bundle() -> dict[str, Any]:
    return transaction_for(
        make_alert(),
        make_alert(rule="deep_vein_thrombosis", tier="A", severity="urgent",
                   evidence=("Observation/dimer",)),
    )  # fmt: skip


class TestPatientTransaction:
    def test_no_alerts_gives_none(self) -> None:
        assert patient_transaction([], [CES]) is None

    def test_device_then_flag_and_careplan_per_alert(self) -> None:
        bundle = two_alert_bundle()
        assert (bundle["resourceType"], bundle["type"]) == ("Bundle", "transaction")
        kinds = [e["resource"]["resourceType"] for e in bundle["entry"]]
        assert kinds == ["Device", "Flag", "CarePlan", "Flag", "CarePlan"]
        assert bundle["entry"][0]["resource"] == ENGINE_DEVICE
        assert bundle["entry"][0]["fullUrl"] == ENGINE_DEVICE_URL

    def test_every_entry_is_a_conditional_create_on_its_identifier(self) -> None:
        for entry in two_alert_bundle()["entry"]:
            (ident,) = entry["resource"]["identifier"]
            assert entry["fullUrl"].startswith("urn:uuid:")
            assert entry["request"] == {
                "method": "POST",
                "url": entry["resource"]["resourceType"],
                "ifNoneExist": f"identifier={ident['system']}|{ident['value']}",
            }

    def test_urn_references_resolve_inside_the_bundle(self) -> None:
        bundle = two_alert_bundle()
        full_urls = {e["fullUrl"] for e in bundle["entry"]}
        assert len(full_urls) == len(bundle["entry"])
        references = [v for p, v in walk(bundle) if p.endswith(".reference")]
        internal = [r for r in references if r.startswith("urn:uuid:")]
        assert len(internal) == 6  # 2 Flag authors, 2 CarePlan authors, 2 Flags as support
        assert set(internal) <= full_urls

    def test_careplan_supports_its_own_flag(self) -> None:
        _, flag, careplan, *_ = two_alert_bundle()["entry"]
        assert careplan["resource"]["supportingInfo"][0]["reference"] == flag["fullUrl"]

    def test_no_none_or_empty_value_anywhere(self) -> None:
        for path, value in walk(two_alert_bundle()):
            assert value not in (None, "", [], {}), path

    def test_is_deterministic(self) -> None:
        assert orjson.dumps(two_alert_bundle()) == orjson.dumps(two_alert_bundle())

    def test_more_than_the_server_limit_still_gives_one_bundle(self) -> None:
        episodes = [f"2025-03-0{day}" for day in range(1, 5)]
        bundle = transaction_for(*(make_alert(episode=e) for e in episodes))
        assert len(bundle["entry"]) == 9 > MAX_CONDITIONAL_TRANSACTION_ENTRIES

    def test_alerts_of_two_patients_are_refused(self) -> None:
        with pytest.raises(ValueError, match="one transaction per patient"):
            patient_transaction([make_alert(), make_alert(patient="Patient/v02")], [CES])

    def test_alert_without_metadata_is_refused(self) -> None:
        with pytest.raises(ValueError, match="cauda_equina_syndrome"):
            patient_transaction([make_alert()], [DVT])

    def test_two_alerts_of_one_episode_are_refused(self) -> None:
        with pytest.raises(ValueError, match="episode"):
            patient_transaction([make_alert(), make_alert(tier="B")], [CES])

    def test_invalid_output_raises_instead_of_shipping(self) -> None:
        # A FHIR code may not start with a space; a typo in a ruleset must not reach the server.
        broken = dataclasses.replace(CES, disorder=Code(SNOMED, " 192970008", "CES"))
        with pytest.raises(FhirValidationError) as error:
            patient_transaction([make_alert()], [broken])
        assert "Bundle.entry[2].resource.activity[0].detail.reasonCode[0].coding[0].code" in (
            expressions(error)
        )


class TestValidation:
    def test_written_resources_pass(self) -> None:
        validate_resource(valid_flag())
        validate_required_codes(valid_flag())
        validate_resource(dict(ENGINE_DEVICE))

    def test_bad_flag_status_is_a_code_error_at_its_path(self) -> None:
        flag = {**valid_flag(), "status": "done"}
        validate_resource(flag)  # fhir.resources ignores required bindings...
        with pytest.raises(FhirValidationError) as error:
            validate_required_codes(flag)  # ...so we check them
        assert expressions(error) == {"Flag.status": "code-invalid"}
        assert "'done'" in str(error.value)

    def test_missing_subject_is_required_at_its_path(self) -> None:
        flag = valid_flag()
        del flag["subject"]
        with pytest.raises(FhirValidationError) as error:
            validate_resource(flag)
        assert expressions(error) == {"Flag.subject": "required"}

    def test_both_faults_are_reported_together(self) -> None:
        flag = {**valid_flag(), "status": "done"}
        del flag["subject"]
        with pytest.raises(FhirValidationError) as error:
            validate(flag)
        assert expressions(error) == {"Flag.subject": "required", "Flag.status": "code-invalid"}

    def test_nested_location_becomes_fhirpath(self) -> None:
        flag = valid_flag()
        flag["extension"][0]["valueCodeableConcept"] = "PH"
        with pytest.raises(FhirValidationError) as error:
            validate_resource(flag)
        assert expressions(error) == {"Flag.extension[0].valueCodeableConcept": "value"}

    def test_unknown_element_is_a_structure_error(self) -> None:
        with pytest.raises(FhirValidationError) as error:
            validate_resource({**valid_flag(), "colour": "red"})
        assert expressions(error) == {"Flag.colour": "structure"}

    def test_path_prefix_locates_a_resource_inside_an_incoming_bundle(self) -> None:
        observation = {"resourceType": "Observation", "status": "final",
                       "code": {"text": "K"}, "effectiveDateTime": "10 March"}  # fmt: skip
        with pytest.raises(FhirValidationError) as error:
            validate_resource(observation, path="Bundle.entry[3].resource")
        assert expressions(error) == {"Bundle.entry[3].resource.effectiveDateTime": "value"}

    def test_unknown_resource_type_is_not_supported(self) -> None:
        with pytest.raises(FhirValidationError) as error:
            validate_resource({"resourceType": "CodeableConcept", "text": "x"})
        assert expressions(error) == {"CodeableConcept": "not-supported"}

    def test_r4_type_missing_from_r4b_is_located_in_a_bundle(self) -> None:
        bundle = {"resourceType": "Bundle", "type": "collection",
                  "entry": [{"resource": {"resourceType": "MedicinalProduct"}}]}  # fmt: skip
        with pytest.raises(FhirValidationError) as error:
            validate_resource(bundle)
        assert expressions(error) == {"Bundle.entry[0].resource": "not-supported"}

    def test_careplan_activity_codes_are_checked_per_activity(self) -> None:
        careplan = careplan_for(make_alert(), CES, "urn:uuid:flag")
        careplan["activity"][1]["detail"]["kind"] = "Procedure"
        del careplan["activity"][0]["detail"]["status"]
        with pytest.raises(FhirValidationError) as error:
            validate_required_codes(careplan)
        assert expressions(error) == {
            "CarePlan.activity[0].detail.status": "required",
            "CarePlan.activity[1].detail.kind": "code-invalid",
        }

    def test_required_codes_are_checked_inside_a_transaction(self) -> None:
        bundle = two_alert_bundle()
        bundle["entry"][2]["resource"]["intent"] = "suggestion"
        with pytest.raises(FhirValidationError) as error:
            validate(bundle)
        assert expressions(error) == {"Bundle.entry[2].resource.intent": "code-invalid"}

    def test_operation_outcome_of_an_error_is_itself_valid(self) -> None:
        with pytest.raises(FhirValidationError) as error:
            validate_required_codes({**valid_flag(), "status": "done"})
        outcome = error.value.operation_outcome()
        validate_resource(outcome)
        assert outcome["issue"][0]["expression"] == ["Flag.status"]


class TestConceptMap:
    def test_maps_each_alert_id_to_its_disorder(self) -> None:
        concept_map = as_json(alert_concept_map([DVT, CES]))
        assert concept_map["url"] == CONCEPT_MAP_URL
        (group,) = concept_map["group"]
        assert (group["source"], group["target"]) == (ALERT_SYSTEM, SNOMED)
        assert [(e["code"], e["target"][0]["code"], e["target"][0]["equivalence"])
                for e in group["element"]] == [
            ("cauda_equina_syndrome", "192970008", "relatedto"),
            ("deep_vein_thrombosis", "128053003", "relatedto"),
        ]  # fmt: skip

    def test_accepts_a_registry_mapping(self) -> None:
        assert alert_concept_map({m.id: m for m in (CES, DVT)}) == alert_concept_map([CES, DVT])

    def test_passes_validation_and_a_bad_equivalence_does_not(self) -> None:
        concept_map = alert_concept_map([CES])
        validate(concept_map)
        concept_map["group"][0]["element"][0]["target"][0]["equivalence"] = "same"
        with pytest.raises(FhirValidationError) as error:
            validate(concept_map)
        assert expressions(error) == {"ConceptMap.group[0].element[0].target[0].equivalence": "code-invalid"}

    def test_duplicate_rule_ids_are_refused(self) -> None:
        with pytest.raises(ValueError, match="duplicate"):
            alert_concept_map([CES, CES])


def test_concept_map_lists_the_disorders_single_branches_suggest(pipeline) -> None:
    concept_map = alert_concept_map(pipeline.engine.metas, pipeline.engine.branch_disorders())
    validate(concept_map)
    targets = {
        e["code"]: {t["code"] for t in e["target"]} for g in concept_map["group"] for e in g["element"]
    }
    assert {"230690007", "266257000"} <= targets["acute_stroke_or_tia"]  # stroke and TIA
    assert {"43339004", "14140009"} <= targets["hypokalemic_or_electrolyte_weakness"]
    assert len(targets) == 12
