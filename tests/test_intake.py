"""Reading FHIR inputs (Bundles of every type, single resources, NDJSON) and grouping per patient."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from fhir_adapters.errors import InputError
from fhir_adapters.intake import Intake, read_bytes, read_json, read_ndjson, read_path

LOINC = "http://loinc.org"


def patient(pid: str | None = "p1", **extra) -> dict:
    res: dict = {"resourceType": "Patient", "gender": "female", **extra}
    if pid is not None:
        res["id"] = pid
    return res


def obs(oid: str | None = "o1", subject: str | None = "Patient/p1", **extra) -> dict:
    res: dict = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": LOINC, "code": "19870-5"}]},
        "effectiveDateTime": "2025-03-10T09:00:00Z",
        **extra,
    }
    if oid is not None:
        res["id"] = oid
    if subject is not None:
        res["subject"] = {"reference": subject}
    return res


def bundle(btype: str, *entries: dict) -> dict:
    return {"resourceType": "Bundle", "type": btype, "entry": list(entries)}


def write(tmp_path: Path, name: str, doc: object) -> Path:
    path = tmp_path / name
    path.write_bytes(doc if isinstance(doc, bytes) else orjson.dumps(doc))
    return path


def ids(intake: Intake, pid: str) -> list[str]:
    return [e.resource.get("id", "") for e in intake.patients[pid].entries]


class TestIntake:
    def test_collection_bundle_groups_resources_under_their_patient(self, tmp_path):
        doc = bundle("collection", {"resource": patient()}, {"resource": obs("o1")}, {"resource": obs("o2")})
        intake = read_path(write(tmp_path, "in.json", doc))
        assert list(intake.patients) == ["Patient/p1"]
        assert ids(intake, "Patient/p1") == ["p1", "o1", "o2"]
        assert intake.issues == []
        assert intake.source == str(tmp_path / "in.json")

    def test_entry_paths_name_the_bundle_entry(self, tmp_path):
        doc = bundle("collection", {"resource": patient()}, {"resource": obs("o1")})
        intake = read_path(write(tmp_path, "in.json", doc))
        paths = [e.path for e in intake.patients["Patient/p1"].entries]
        assert paths == ["Bundle.entry[0].resource", "Bundle.entry[1].resource"]

    def test_transaction_urn_uuid_references_join_the_patient_by_its_id(self, tmp_path):
        uuid = "urn:uuid:0b6a6f4e-1d1c-4a55-9a43-5b2a2f0a7e01"
        doc = bundle(
            "transaction",
            {"fullUrl": uuid, "resource": patient("p42"), "request": {"method": "PUT", "url": "Patient/p42"}},
            {
                "fullUrl": "urn:uuid:9c1e4d2a-0000-4000-8000-000000000001",
                "resource": obs(None, uuid),
                "request": {"method": "POST", "url": "Observation"},
            },
        )
        intake = read_path(write(tmp_path, "tx.json", doc))
        assert list(intake.patients) == ["Patient/p42"]
        entries = intake.patients["Patient/p42"].entries
        assert [e.resource["resourceType"] for e in entries] == ["Patient", "Observation"]
        assert intake.issues == []

    def test_transaction_patient_without_id_is_grouped_under_its_uuid(self, tmp_path):
        uuid = "urn:uuid:0b6a6f4e-1d1c-4a55-9a43-5b2a2f0a7e01"
        doc = bundle(
            "transaction",
            {"fullUrl": uuid, "resource": patient(None), "request": {"method": "POST", "url": "Patient"}},
            {"resource": obs(None, uuid), "request": {"method": "POST", "url": "Observation"}},
        )
        intake = read_path(write(tmp_path, "tx.json", doc))
        pid = "Patient/0b6a6f4e-1d1c-4a55-9a43-5b2a2f0a7e01"
        assert list(intake.patients) == [pid]
        assert len(intake.patients[pid].entries) == 2

    def test_searchset_with_absolute_full_urls(self, tmp_path):
        base = "http://x/fhir"
        doc = bundle(
            "searchset",
            {"fullUrl": f"{base}/Patient/7", "resource": patient("7"), "search": {"mode": "match"}},
            {
                "fullUrl": f"{base}/Observation/o1",
                "resource": obs("o1", f"{base}/Patient/7"),
                "search": {"mode": "include"},
            },
            {"fullUrl": f"{base}/Observation/o2", "resource": obs("o2", "Patient/7")},
        )
        intake = read_path(write(tmp_path, "search.json", doc))
        assert list(intake.patients) == ["Patient/7"]
        assert ids(intake, "Patient/7") == ["7", "o1", "o2"]

    def test_absolute_reference_to_patient_not_in_input_is_made_relative(self, tmp_path):
        doc = obs("o1", "http://x/fhir/Patient/7")
        intake = read_path(write(tmp_path, "obs.json", doc))
        assert list(intake.patients) == ["Patient/7"]

    def test_versioned_absolute_reference_drops_the_history_part(self, tmp_path):
        doc = obs("o1", "http://x/fhir/Patient/7/_history/3")
        intake = read_path(write(tmp_path, "obs.json", doc))
        assert list(intake.patients) == ["Patient/7"]

    def test_patient_without_id_and_absolute_full_url_is_patient_slash_id(self, tmp_path):
        # the Patient's identity comes from its fullUrl; relative and absolute references join it
        doc = bundle(
            "collection",
            {"fullUrl": "http://x/fhir/Patient/7", "resource": patient(None)},
            {"resource": obs("o1", "Patient/7")},
            {"resource": obs("o2", "http://x/fhir/Patient/7")},
        )
        intake = read_path(write(tmp_path, "in.json", doc))
        assert list(intake.patients) == ["Patient/7"]
        assert len(intake.patients["Patient/7"].entries) == 3

    def test_batch_bundle(self, tmp_path):
        doc = bundle(
            "batch",
            {"resource": patient(), "request": {"method": "PUT", "url": "Patient/p1"}},
            {"resource": obs("o1"), "request": {"method": "POST", "url": "Observation"}},
        )
        intake = read_path(write(tmp_path, "batch.json", doc))
        assert ids(intake, "Patient/p1") == ["p1", "o1"]

    def test_document_bundle_skips_composition_and_reads_the_rest(self, tmp_path):
        composition = {
            "resourceType": "Composition",
            "id": "c1",
            "status": "final",
            "subject": {"reference": "Patient/p1"},
        }
        doc = bundle(
            "document",
            {"fullUrl": "urn:uuid:c1", "resource": composition},
            {"fullUrl": "urn:uuid:p1", "resource": patient()},
            {"fullUrl": "urn:uuid:o1", "resource": obs("o1", "urn:uuid:p1")},
        )
        intake = read_path(write(tmp_path, "doc.json", doc))
        assert list(intake.patients) == ["Patient/p1"]
        assert ids(intake, "Patient/p1") == ["p1", "o1"]
        assert intake.issues == []

    def test_entries_without_resource_are_skipped(self, tmp_path):
        doc = bundle(
            "transaction",
            {"request": {"method": "DELETE", "url": "Observation/old"}},
            {"resource": patient(), "request": {"method": "PUT", "url": "Patient/p1"}},
            {"request": {"method": "GET", "url": "Patient/p1"}},
            {"resource": obs("o1"), "request": {"method": "POST", "url": "Observation"}},
        )
        intake = read_path(write(tmp_path, "tx.json", doc))
        assert [e.path for e in intake.patients["Patient/p1"].entries] == [
            "Bundle.entry[1].resource",
            "Bundle.entry[3].resource",
        ]
        assert intake.issues == []

    def test_single_resource(self, tmp_path):
        intake = read_path(write(tmp_path, "one.json", obs("o1", "Patient/9")))
        assert list(intake.patients) == ["Patient/9"]
        (entry,) = intake.patients["Patient/9"].entries
        assert entry.path == "Observation"

    def test_single_patient_resource_makes_a_group(self, tmp_path):
        intake = read_path(write(tmp_path, "pt.json", patient("p5")))
        assert list(intake.patients) == ["Patient/p5"]
        assert ids(intake, "Patient/p5") == ["p5"]

    def test_several_patients_each_get_their_own_resources(self, tmp_path):
        doc = bundle(
            "collection",
            {"resource": obs("o1", "Patient/b")},
            {"resource": patient("a")},
            {"resource": obs("o2", "Patient/a")},
            {"resource": obs("o3", "Patient/b")},
            {"resource": obs("o4", "Patient/c")},
        )
        intake = read_path(write(tmp_path, "in.json", doc))
        assert set(intake.patients) == {"Patient/a", "Patient/b", "Patient/c"}
        assert ids(intake, "Patient/a") == ["a", "o2"]
        assert ids(intake, "Patient/b") == ["o1", "o3"]
        assert ids(intake, "Patient/c") == ["o4"]

    def test_patients_are_listed_in_input_order(self, tmp_path):
        doc = bundle(
            "collection",
            {"resource": patient("b")},
            {"resource": patient("a")},
            {"resource": obs("o1", "Patient/a")},
            {"resource": obs("o2", "Patient/b")},
        )
        intake = read_path(write(tmp_path, "in.json", doc))
        assert list(intake.patients) == ["Patient/b", "Patient/a"]

    def test_medication_request_uses_subject_and_is_grouped(self, tmp_path):
        med = {
            "resourceType": "MedicationRequest",
            "id": "m1",
            "status": "active",
            "intent": "order",
            "subject": {"reference": "Patient/p1"},
        }
        intake = read_path(write(tmp_path, "m.json", bundle("collection", {"resource": med})))
        assert ids(intake, "Patient/p1") == ["m1"]

    def test_resource_without_subject_is_an_issue_with_its_path(self, tmp_path):
        doc = bundle("collection", {"resource": patient()}, {"resource": obs("o1", None)})
        intake = read_path(write(tmp_path, "in.json", doc))
        assert ids(intake, "Patient/p1") == ["p1"]
        (issue,) = intake.issues
        assert issue.path == "Bundle.entry[1].resource"
        assert "Observation" in issue.message
        assert issue.severity == "warning"

    def test_subject_that_is_not_a_patient_is_an_issue(self, tmp_path):
        intake = read_path(write(tmp_path, "o.json", obs("o1", "Group/g1")))
        assert intake.patients == {}
        assert [i.path for i in intake.issues] == ["Observation"]

    def test_unknown_resource_types_are_skipped_silently(self, tmp_path):
        encounter = {
            "resourceType": "Encounter",
            "id": "e1",
            "status": "finished",
            "subject": {"reference": "Patient/zz"},
        }
        practitioner = {"resourceType": "Practitioner", "id": "dr"}
        doc = bundle(
            "collection", {"resource": encounter}, {"resource": practitioner}, {"resource": obs("o1")}
        )
        intake = read_path(write(tmp_path, "in.json", doc))
        assert list(intake.patients) == ["Patient/p1"]
        assert ids(intake, "Patient/p1") == ["o1"]
        assert intake.issues == []

    def test_ndjson_bad_line_is_reported_and_other_lines_read(self, tmp_path):
        lines = [
            orjson.dumps(patient()),
            b'{"resourceType": "Observation", "id": ',
            b"",
            orjson.dumps(obs("o1")),
        ]
        intake = read_path(write(tmp_path, "bulk.ndjson", b"\n".join(lines) + b"\n"))
        assert ids(intake, "Patient/p1") == ["p1", "o1"]
        (issue,) = intake.issues
        assert issue.path == "line 2"
        entries = intake.patients["Patient/p1"].entries
        assert [e.path for e in entries] == ["line 1", "line 4"]

    def test_ndjson_non_fhir_line_is_reported_with_its_number(self, tmp_path):
        data = orjson.dumps(obs("o1")) + b"\n" + b'{"hello": 1}\n' + b"[1, 2]\n"
        intake = read_path(write(tmp_path, "bulk.ndjson", data))
        assert ids(intake, "Patient/p1") == ["o1"]
        assert [i.path for i in intake.issues] == ["line 2", "line 3"]

    def test_ndjson_several_patients(self, tmp_path):
        data = b"\n".join(
            orjson.dumps(r)
            for r in (patient("a"), patient("b"), obs("o1", "Patient/b"), obs("o2", "Patient/a"))
        )
        intake = read_path(write(tmp_path, "bulk.ndjson", data))
        assert list(intake.patients) == ["Patient/a", "Patient/b"]
        assert ids(intake, "Patient/a") == ["a", "o2"]
        assert ids(intake, "Patient/b") == ["b", "o1"]

    def test_ndjson_with_no_readable_line_is_an_input_error(self, tmp_path):
        with pytest.raises(InputError, match="line 1"):
            read_path(write(tmp_path, "bulk.ndjson", b"not json\n{\n"))

    def test_ndjson_is_chosen_by_file_suffix(self):
        data = orjson.dumps(obs("o1")) + b"\n" + orjson.dumps(obs("o2")) + b"\n"
        assert ids(read_bytes(data, "x.ndjson"), "Patient/p1") == ["o1", "o2"]
        with pytest.raises(InputError):
            read_bytes(data, "x.json")  # two documents are not one JSON value

    @pytest.mark.parametrize("doc", [b"[1, 2, 3]", b'"Observation"', b"42", b"null"])
    def test_non_object_json_is_an_input_error(self, tmp_path, doc):
        with pytest.raises(InputError):
            read_path(write(tmp_path, "x.json", doc))

    def test_json_object_without_resource_type_is_an_input_error(self, tmp_path):
        with pytest.raises(InputError, match="resourceType"):
            read_path(write(tmp_path, "x.json", {"id": "p1", "gender": "male"}))

    def test_invalid_json_is_an_input_error(self, tmp_path):
        with pytest.raises(InputError, match="invalid JSON"):
            read_path(write(tmp_path, "x.json", b'{"resourceType": "Patient",'))

    @pytest.mark.parametrize("data", [b"", b"  \n\t\n"])
    def test_empty_file_is_an_input_error(self, tmp_path, data):
        with pytest.raises(InputError, match="empty"):
            read_path(write(tmp_path, "x.json", data))

    def test_missing_file_is_an_input_error(self, tmp_path):
        with pytest.raises(InputError, match="cannot read"):
            read_path(tmp_path / "absent.json")

    def test_bundle_entry_that_is_not_an_object_is_an_input_error(self):
        doc = {"resourceType": "Bundle", "type": "collection", "entry": ["nope"]}
        with pytest.raises(InputError, match=r"Bundle\.entry\[0\]"):
            read_json(orjson.dumps(doc), "x.json")

    def test_empty_bundle_has_no_patients_and_no_issues(self):
        intake = read_json(orjson.dumps(bundle("searchset")), "x.json")
        assert intake.patients == {}
        assert intake.issues == []

    def test_read_ndjson_direct_keeps_source(self):
        intake = read_ndjson(orjson.dumps(obs("o1")), "bulk/Observation.ndjson")
        assert intake.source == "bulk/Observation.ndjson"
