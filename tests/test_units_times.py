"""Unit normalisation (red-flags.md 15.1) and FHIR date/time parsing."""

from __future__ import annotations

import math
from datetime import UTC, date, datetime

import pytest

from fhir_adapters import units
from fhir_adapters.errors import IntakeError
from fhir_adapters.times import birth_date, iso, parse_now, to_epoch

UCUM = "http://unitsofmeasure.org"


def _epoch(*args: int) -> int:
    return int(datetime(*args, tzinfo=UTC).timestamp())


# (key, value, from unit, canonical unit, expected) -- every 15.1 row that units.py implements
CONVERSIONS = [
    ("b12_total", 150, "pmol/L", "pg/mL", 203.25),  # 15.1 example: 150 pmol/L = 203 pg/mL
    ("b12_total", 250, "ng/L", "pg/mL", 250),
    ("b12_total", 250, "pg/mL", "pg/mL", 250),
    ("potassium", 4.2, "meq/L", "mmol/L", 4.2),
    ("calcium_total", 10.0, "mg/dL", "mmol/L", 2.495),
    ("calcium_ionized", 4.8, "mg/dL", "mmol/L", 1.1976),
    ("magnesium", 2.4, "mg/dL", "mmol/L", 0.98736),
    ("magnesium", 2.0, "meq/L", "mmol/L", 1.0),
    ("phosphate", 3.1, "mg/dL", "mmol/L", 1.00099),
    ("albumin", 4.0, "g/dL", "g/L", 40.0),
    ("creatinine", 1.0, "mg/dL", "umol/L", 88.4),
    ("creatinine", 0.1, "mmol/L", "umol/L", 100.0),
    ("glucose", 90, "mg/dL", "mmol/L", 5.0),
    ("ck", 1200, "[IU]/L", "U/L", 1200),
    ("ck", 2.0, "ukat/L", "U/L", 120.0),
    ("fvc", 1.2, "L", "mL", 1200.0),
    ("fvc", 900, "mL", "mL", 900.0),
    ("body_weight", 154, "[lb_av]", "kg", 69.853225),
    ("body_weight", 70000, "g", "kg", 70.0),
    ("csf_protein", 0.45, "g/L", "mg/dL", 45.0),
    ("csf_protein", 450, "mg/L", "mg/dL", 45.0),
    ("csf_wbc", 12, "/mm3", "/uL", 12),
    ("csf_wbc", 12, "10*6/L", "/uL", 12),
    ("mma", 450, "nmol/L", "umol/L", 0.45),
    ("d_dimer", 0.8, "ug/mL", "mg/L", 0.8),
    ("d_dimer", 500, "ng/mL", "mg/L", 0.5),
]


class TestUnits:
    @pytest.mark.parametrize(("key", "value", "unit", "canonical", "expected"), CONVERSIONS)
    def test_converts_to_the_canonical_unit_of_15_1(self, key, value, unit, canonical, expected):
        assert units.normalise(key, value, unit, canonical) == pytest.approx(expected, rel=1e-4)

    def test_b12_150_pmol_per_l_is_indeterminate_not_deficient(self):
        value = units.normalise("b12_total", 150, "pmol/L", "pg/mL")
        assert value is not None and 200 < value < 205  # ~203 pg/mL, above the 200 cut-off

    def test_body_weight_pounds_uses_the_avoirdupois_pound(self):
        assert units.normalise("body_weight", 100, "[lb_av]", "kg") == pytest.approx(45.36, abs=0.01)

    def test_analyte_factor_is_not_applied_to_another_analyte(self):
        # mg/dL -> mmol/L depends on the molar mass: potassium has no such conversion
        assert units.normalise("potassium", 10, "mg/dL", "mmol/L") is None

    @pytest.mark.parametrize("unit", ["mmHg", "furlongs", "kg"])
    def test_unknown_or_wrong_dimension_unit_gives_none(self, unit):
        assert units.normalise("pvr_volume", 300, unit, "mL") is None

    def test_missing_unit_on_a_quantity_gives_none(self):
        assert units.normalise("fvc", 1.2, None, "mL") is None
        assert units.normalise("fvc", 1.2, "", "mL") is None

    @pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
    def test_non_finite_value_gives_none(self, bad):
        assert units.normalise("fvc", bad, "L", "mL") is None
        assert units.normalise("mrc_grade", bad, None, None) is None

    def test_unitless_score_is_taken_as_sent(self):
        assert units.normalise("mrc_grade", 3, None, None) == 3
        assert units.normalise("mrc_grade", 3, "{score}", None) == 3

    @pytest.mark.parametrize("unit", ["{ratio}", "1"])
    def test_unitless_annotations_are_read_for_scores(self, unit):
        # GENERIC maps {ratio} -> 1: an ankle-brachial index sent as 0.8 {ratio} is 0.8
        assert units.normalise("abi_left", 0.8, unit, None) == pytest.approx(0.8)

    def test_unitless_score_with_a_real_unit_gives_none(self):
        assert units.normalise("mrc_grade", 3, "mg", None) is None

    def test_ucum_code_prefers_the_ucum_code_over_the_display_unit(self):
        qty = {"value": 1, "unit": "litres", "system": UCUM, "code": "L"}
        assert units.ucum_code(qty) == "L"

    def test_ucum_code_ignores_codes_of_other_systems_and_reads_the_unit(self):
        qty = {"value": 1, "unit": "mL", "system": "http://snomed.info/sct", "code": "258773002"}
        assert units.ucum_code(qty) == "mL"

    @pytest.mark.parametrize(
        ("unit", "code"),
        [("mEq/L", "meq/L"), ("lbs", "[lb_av]"), ("ML", "mL"), ("mg/dl", "mg/dL"), ("bpm", "/min")],
    )
    def test_ucum_code_maps_common_unit_strings(self, unit, code):
        assert units.ucum_code({"value": 1, "unit": unit}) == code

    def test_ucum_code_without_code_or_unit_is_none(self):
        assert units.ucum_code({"value": 1}) is None


class TestTimes:
    def test_date_only_is_midnight_utc(self):
        assert to_epoch("2025-03-10", "p") == _epoch(2025, 3, 10)

    def test_year_month_is_first_day_of_month(self):
        assert to_epoch("2025-03", "p") == _epoch(2025, 3, 1)

    def test_year_is_first_of_january(self):
        assert to_epoch("2025", "p") == _epoch(2025, 1, 1)

    def test_zulu_datetime(self):
        assert to_epoch("2025-03-10T12:30:15Z", "p") == _epoch(2025, 3, 10, 12, 30, 15)

    def test_positive_offset_shifts_back_to_utc(self):
        assert to_epoch("2025-03-10T12:00:00+02:00", "p") == _epoch(2025, 3, 10, 10, 0, 0)

    def test_negative_offset_shifts_forward_to_utc(self):
        assert to_epoch("2025-03-10T22:30:00-05:30", "p") == _epoch(2025, 3, 11, 4, 0, 0)

    def test_offset_across_midnight_changes_the_date(self):
        assert to_epoch("2025-01-01T01:00:00+02:00", "p") == _epoch(2024, 12, 31, 23, 0, 0)

    def test_fractional_seconds_are_accepted(self):
        assert to_epoch("2025-03-10T12:00:00.789Z", "p") == _epoch(2025, 3, 10, 12, 0, 0)

    def test_time_without_zone_is_refused_with_the_path(self):
        with pytest.raises(IntakeError) as err:
            to_epoch("2025-03-10T12:00:00", "Observation.effectiveDateTime")
        assert err.value.path == "Observation.effectiveDateTime"
        assert "zone" in err.value.message

    @pytest.mark.parametrize("text", ["2025-02-30", "2023-02-29", "2025-13-01", "2025-03-10T25:00:00Z"])
    def test_impossible_date_is_refused(self, text):
        with pytest.raises(IntakeError) as err:
            to_epoch(text, "Condition.onsetDateTime")
        assert err.value.path == "Condition.onsetDateTime"

    def test_leap_day_in_leap_year_is_accepted(self):
        assert to_epoch("2024-02-29", "p") == _epoch(2024, 2, 29)

    @pytest.mark.parametrize("text", ["10/03/2025", "2025-3-10", "", "2025-03-10Z", "yesterday"])
    def test_malformed_text_is_refused(self, text):
        with pytest.raises(IntakeError):
            to_epoch(text, "p")

    @pytest.mark.parametrize("value", [20250310, None, ["2025-03-10"]])
    def test_non_string_is_refused(self, value):
        with pytest.raises(IntakeError) as err:
            to_epoch(value, "Observation.issued")
        assert err.value.path == "Observation.issued"

    @pytest.mark.parametrize("epoch", [0, 1741608000, 1741608000 + 59, 951782400, 4102444800])
    def test_iso_round_trips(self, epoch):
        text = iso(epoch)
        assert text.endswith("Z")
        assert to_epoch(text, "p") == epoch

    def test_iso_formats_as_fhir_instant(self):
        assert iso(_epoch(2025, 3, 10, 9, 5, 7)) == "2025-03-10T09:05:07Z"

    def test_parse_now_requires_a_zone(self):
        assert parse_now("2025-03-10T12:00:00Z") == _epoch(2025, 3, 10, 12)
        with pytest.raises(IntakeError):
            parse_now("2025-03-10T12:00:00")

    def test_birth_date_accepts_partial_dates(self):
        assert birth_date("1960", "Patient.birthDate") == date(1960, 1, 1)
        assert birth_date("1960-07", "Patient.birthDate") == date(1960, 7, 1)
        assert birth_date("1960-07-15", "Patient.birthDate") == date(1960, 7, 15)

    @pytest.mark.parametrize("text", ["1960-02-30", "1960-07-15T00:00:00Z", 1960])
    def test_birth_date_refuses_impossible_or_non_date(self, text):
        with pytest.raises(IntakeError) as err:
            birth_date(text, "Patient.birthDate")
        assert err.value.path == "Patient.birthDate"
