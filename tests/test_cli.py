"""The redflags command as a user runs it: a real process over real files."""

from __future__ import annotations

import shutil
from pathlib import Path

import orjson

from .cli_helpers import C3, NOW, V01, run
from .conftest import FIXTURES
from .leak_helpers import identifying_values, leaked


class TestReplayJson:
    def test_one_line_per_patient_with_the_documented_shape(self) -> None:
        done = run("replay", V01, C3, "--now", NOW, "--format", "json")
        assert done.returncode == 0, done.stderr
        lines = [orjson.loads(line) for line in done.stdout.splitlines()]
        assert [line["patient"] for line in lines] == ["Patient/v01", "Patient/c3"]
        first = lines[0]
        assert set(first) == {"source", "patient", "alerts"} and first["source"] == str(V01)
        alert = first["alerts"][0]
        assert set(alert) == {"rule", "version", "severity", "rationale", "evidence"}
        assert (alert["rule"], alert["severity"]) == ("cauda_equina_syndrome", "critical")
        assert "350 mL" in alert["rationale"] and "2025-03-10" in alert["rationale"]
        assert "Observation/v01-pvr" in alert["evidence"]

    def test_patients_without_alerts_are_listed_with_an_empty_list(self) -> None:
        done = run(
            "replay",
            FIXTURES / "vignettes" / "V02-ces-near-miss-unilateral-sciatica.json",
            "--now",
            NOW,
            "--format",
            "json",
        )
        assert orjson.loads(done.stdout)["alerts"] == []

    def test_ndjson_input(self, tmp_path: Path) -> None:
        bundle = orjson.loads(V01.read_bytes())
        lines = b"\n".join(orjson.dumps(e["resource"]) for e in bundle["entry"])
        path = tmp_path / "export.ndjson"
        path.write_bytes(lines + b"\n")
        done = run("replay", path, "--now", NOW, "--format", "json")
        assert done.returncode == 0, done.stderr
        assert orjson.loads(done.stdout)["alerts"][0]["rule"] == "cauda_equina_syndrome"


class TestBadInput:
    def test_bad_file_is_one_stderr_line_and_the_rest_still_runs(self, tmp_path: Path) -> None:
        broken = tmp_path / "broken.json"
        broken.write_text('{"resourceType": "Bundle", "entry": [')
        empty = tmp_path / "empty.json"
        empty.write_text("")
        notfhir = tmp_path / "notfhir.json"
        notfhir.write_text('{"hello": "world"}')
        done = run("replay", broken, V01, empty, notfhir, "--now", NOW, "--format", "json")
        assert done.returncode == 1
        errors = done.stderr.strip().splitlines()
        assert len(errors) == 3
        assert errors[0].startswith(f"{broken}: invalid JSON")
        assert errors[1] == f"{empty}: empty file"
        assert errors[2].startswith(f"{notfhir}: ") and "resourceType" in errors[2]
        assert [orjson.loads(x)["patient"] for x in done.stdout.splitlines()] == ["Patient/v01"]

    def test_invalid_element_names_its_path_and_keeps_the_patient(self, tmp_path: Path) -> None:
        bundle = orjson.loads(V01.read_bytes())
        index = next(
            i for i, e in enumerate(bundle["entry"]) if e["resource"]["resourceType"] == "Observation"
        )
        bundle["entry"][index]["resource"]["status"] = "done"
        path = tmp_path / "bad-status.json"
        path.write_bytes(orjson.dumps(bundle))
        done = run("replay", path, "--now", NOW, "--format", "json")
        assert done.returncode == 1
        assert f"Bundle.entry[{index}].resource.status" in done.stderr
        assert orjson.loads(done.stdout)["patient"] == "Patient/v01"

    def test_missing_path_and_bad_now(self, tmp_path: Path) -> None:
        done = run("replay", tmp_path / "nope.json", "--now", NOW)
        assert done.returncode == 1 and "no such file" in done.stderr
        done = run("replay", V01, "--now", "yesterday")
        assert done.returncode == 2 and "--now" in done.stderr


class TestOutputs:
    def test_out_writes_valid_transaction_bundles(self, tmp_path: Path) -> None:
        done = run(
            "replay", FIXTURES / "vignettes", "--now", NOW, "--out", tmp_path / "out", "--format", "json"
        )
        assert done.returncode == 0, done.stderr
        written = {p.name for p in (tmp_path / "out").iterdir()}
        # the vignette corpus grows with every rule; these three alert under the CES/GBS rules
        assert {
            "C3-provisional-gbs__c3.json",
            "V01-ces-positive__v01.json",
            "V03-gbs-positive__v03.json",
        } <= written
        assert not {n for n in written if "near-miss" in n or n.startswith(("C1-", "C2-", "C4-"))}
        bundle = orjson.loads((tmp_path / "out" / "V01-ces-positive__v01.json").read_bytes())
        kinds = [e["resource"]["resourceType"] for e in bundle["entry"]]
        assert kinds.count("Flag") == 1 and kinds.count("CarePlan") == 1
        assert all(e["request"]["method"] == "POST" and e["request"]["ifNoneExist"] for e in bundle["entry"])

    def test_table_and_rules_listing(self) -> None:
        done = run("replay", V01, "--now", NOW)
        assert (
            done.returncode == 0 and "cauda_equina_syndrome" in done.stdout and "Patient/v01" in done.stdout
        )
        listing = run("rules")
        assert "cauda_equina_syndrome" in listing.stdout and "guillain_barre_syndrome" in listing.stdout
        assert "critical" in listing.stdout

    def test_logs_are_json_with_replay_id_and_no_patient_ids(self, tmp_path: Path) -> None:
        copy = tmp_path / "v01.json"
        shutil.copy(V01, copy)
        done = run("--log-level", "info", "replay", copy, "--now", NOW, "--format", "json")
        records = [orjson.loads(line) for line in done.stderr.splitlines()]
        assert records and all(r.get("replay_id") for r in records)
        assert any(r["event"] == "alert" for r in records)
        # whole words only: hex tokens and timestamps hold any digits (a "1981" check flaked)
        assert (
            leaked(done.stderr.replace(str(copy), ""), identifying_values(orjson.loads(V01.read_bytes())))
            == []
        )


class TestStrict:
    def test_strict_mode_rejects_what_the_fast_reader_ignores(self, tmp_path: Path) -> None:
        bundle = orjson.loads(V01.read_bytes())
        index = next(
            i for i, e in enumerate(bundle["entry"]) if e["resource"]["resourceType"] == "Observation"
        )
        bundle["entry"][index]["resource"]["favouriteColour"] = "blue"  # not an R4 element
        path = tmp_path / "unknown-element.json"
        path.write_bytes(orjson.dumps(bundle))
        fast = run("replay", path, "--now", NOW, "--format", "json")
        assert fast.returncode == 0, fast.stderr
        strict = run("replay", path, "--now", NOW, "--format", "json", "--strict")
        assert strict.returncode == 1
        assert f"Bundle.entry[{index}].resource" in strict.stderr and "favouriteColour" in strict.stderr
        assert orjson.loads(strict.stdout)["patient"] == "Patient/v01"  # the rest is still evaluated


class TestExplain:
    def test_explain_is_generated_from_the_running_rules(self, pipeline) -> None:
        from redflags.explain import explain

        text = explain("guillain_barre_syndrome", pipeline.engine, pipeline.term)
        for name, value in pipeline.engine.params["guillain_barre_syndrome"].items():
            assert f"{name} = {value:g}" in text
        own = [s for s in pipeline.engine.specs if s.rule == "guillain_barre_syndrome"]
        assert text.count("\n  - derives [") >= sum(s.does == "derive" for s in own)
        assert "fires tier A when: [gbs_core] AND [gbs_respiratory]" in text
        assert "https://redflags.dev/fhir/ValueSet/reflexes_absent" in text and "sct 37280007" in text
        assert "[fvc_per_kg]" in text and "derives [fvc_per_kg] when: latest fvc within 1 day" in text
        assert "NO VALUE SET" not in text

    def test_explain_from_the_command_line(self) -> None:
        done = run("rules", "--explain", "cauda_equina_syndrome")
        assert done.returncode == 0, done.stderr
        assert (
            "pvr_ml = 200" in done.stdout
            and "tier B is not raised while spinal_cord_compression" in done.stdout
        )
        unknown = run("rules", "--explain", "no_such_rule")
        assert unknown.returncode == 2 and "unknown rule" in unknown.stderr


def test_rules_concept_map_prints_a_valid_concept_map() -> None:
    import orjson

    from fhir_adapters.validate import validate

    done = run("rules", "--concept-map")
    assert done.returncode == 0, done.stderr
    document = orjson.loads(done.stdout)
    validate(document)
    codes = {e["code"] for g in document["group"] for e in g["element"]}
    assert len(codes) == 12
