"""Unit normalisation (docs/clinical-policy.md#units) and FHIR date/time parsing."""

from __future__ import annotations

import math
from datetime import UTC, date, datetime

import pytest

from fhir_adapters import terminology, units
from fhir_adapters.errors import IntakeError
from fhir_adapters.times import birth_date, iso, parse_now, to_epoch
from rulesets import VALUESET_DIR

UCUM = "http://unitsofmeasure.org"


def _epoch(*args: int) -> int:
    return int(datetime(*args, tzinfo=UTC).timestamp())


# (key, value, from unit, canonical unit, value in it): every conversion of 15.1 the rules use,
# with the reference's own example values where it gives them; each is checked both ways.
CONVERSIONS = [
    ("b12_total", 150, "pmol/L", "pg/mL", 203.25),  # 15.1 example: 150 pmol/L = 203 pg/mL
    ("b12_total", 250, "ng/L", "pg/mL", 250),  # pg/mL = ng/L (identical)
    ("b12_total", 250, "pg/mL", "pg/mL", 250),
    ("potassium", 4.2, "meq/L", "mmol/L", 4.2),  # monovalent
    ("potassium", 3.1, "mmol/L", "mmol/L", 3.1),
    ("calcium_total", 10.0, "mg/dL", "mmol/L", 2.495),
    ("calcium_total", 2.1, "mmol/L", "mmol/L", 2.1),
    ("calcium_ionized", 4.8, "mg/dL", "mmol/L", 1.1976),
    ("calcium_ionized", 1.05, "mmol/L", "mmol/L", 1.05),
    ("magnesium", 2.4, "mg/dL", "mmol/L", 0.98736),
    ("magnesium", 2.0, "meq/L", "mmol/L", 1.0),  # divalent
    ("phosphate", 3.1, "mg/dL", "mmol/L", 1.00099),
    ("albumin", 4.0, "g/dL", "g/L", 40.0),
    ("albumin", 35, "g/L", "g/L", 35),
    ("creatinine", 1.0, "mg/dL", "umol/L", 88.4),
    ("creatinine", 0.1, "mmol/L", "umol/L", 100.0),
    ("glucose", 90, "mg/dL", "mmol/L", 5.0),
    ("glucose", 5.5, "mmol/L", "mmol/L", 5.5),
    ("ck", 1200, "U/L", "U/L", 1200),
    ("troponin", 52, "ng/L", "pg/mL", 52),  # hs-troponin: ng/L = pg/mL
    ("troponin", 0.052, "ng/mL", "pg/mL", 52),
    ("serum_myoglobin", 250, "ug/L", "ng/mL", 250),  # ug/L = ng/mL
    ("serum_myoglobin", 0.25, "mg/L", "ng/mL", 250),
    ("ck", 1200, "[IU]/L", "U/L", 1200),  # U/L = IU/L
    ("ck", 2.0, "ukat/L", "U/L", 120.0),  # x 60
    ("ggt", 80, "[IU]/L", "U/L", 80),
    ("fvc", 1.2, "L", "mL", 1200.0),
    ("fvc", 900, "mL", "mL", 900.0),
    ("pvr_volume", 0.35, "L", "mL", 350.0),
    ("pvr_volume", 3.5, "dL", "mL", 350.0),
    ("body_weight", 154, "[lb_av]", "kg", 69.853225),  # x 0.4536
    ("body_weight", 70000, "g", "kg", 70.0),
    ("csf_protein", 0.45, "g/L", "mg/dL", 45.0),  # 15.1 example: 0.45 g/L = 45 mg/dL
    ("csf_protein", 450, "mg/L", "mg/dL", 45.0),
    ("csf_wbc", 12, "/mm3", "/uL", 12),  # /uL = /mm3 = 10*6/L
    ("csf_wbc", 12, "10*6/L", "/uL", 12),
    ("csf_wbc", 0.012, "10*9/L", "/uL", 12),
    ("csf_wbc", 0.012, "10*3/uL", "/uL", 12),
    ("mma", 450, "nmol/L", "umol/L", 0.45),
    ("homocysteine", 15, "umol/L", "umol/L", 15),
    ("achr_ab", 600, "pmol/L", "nmol/L", 0.6),
    ("d_dimer", 0.8, "ug/mL", "mg/L", 0.8),  # ug/mL = mg/L
    ("d_dimer", 500, "ng/mL", "mg/L", 0.5),  # ng/mL / 1000
    ("d_dimer", 500, "ug/L", "mg/L", 0.5),
    ("d_dimer", 500, "ug/L{FEU}", "mg/L", 0.5),  # 5.1: 0.5 mg/L FEU (500 ug/L FEU)
    ("d_dimer", 0.5, "mg/L{FEU}", "mg/L", 0.5),
    ("d_dimer", 0.8, "ug/mL{FEU}", "mg/L", 0.8),
    ("d_dimer", 800, "ng/mL{FEU}", "mg/L", 0.8),
    ("d_dimer_ddu", 250, "ng/mL{DDU}", "mg/L", 0.25),  # the DDU key reads DDU units ...
    ("d_dimer_ddu", 250, "ug/L{DDU}", "mg/L", 0.25),
    ("d_dimer_ddu", 0.25, "mg/L{DDU}", "mg/L", 0.25),
    ("d_dimer_ddu", 0.25, "ug/mL{DDU}", "mg/L", 0.25),
    ("d_dimer_ddu", 250, "ng/mL", "mg/L", 0.25),  # ... and plain mass/volume (LOINC 48066-5)
    ("calf_circumference_diff", 35, "mm", "cm", 3.5),
    ("heart_rate", 110, "{beats}/min", "/min", 110),
    ("heart_rate", 110, "/min", "/min", 110),
    ("spo2", 93, "%", "%", 93),
    ("mip", -25, "cm[H2O]", "cm[H2O]", -25),
    ("mep", 35, "cm[H2O]", "cm[H2O]", 35),
    ("mcv", 102, "fL", "fL", 102),
]


def _quantity_keys() -> dict[str, str]:
    """Finding key -> canonical unit, for every quantity the value sets define."""
    return {
        k: i.unit for k, i in terminology.load(VALUESET_DIR).keys.items() if i.kind == "quantity" and i.unit
    }


class TestUnits:
    @pytest.mark.parametrize(("key", "value", "unit", "canonical", "expected"), CONVERSIONS)
    def test_converts_to_the_canonical_unit_of_15_1(self, key, value, unit, canonical, expected):
        assert units.normalise(key, value, unit, canonical) == pytest.approx(expected, rel=1e-4)

    @pytest.mark.parametrize(("key", "value", "unit", "canonical", "expected"), CONVERSIONS)
    def test_converts_back_from_the_canonical_unit(self, key, value, unit, canonical, expected):
        assert units.convert(key, expected, canonical, unit) == pytest.approx(value, rel=1e-4)

    def test_the_table_covers_every_quantity_key_and_every_analyte_conversion(self):
        canonical = _quantity_keys()
        rows = {(key, unit) for key, _, unit, _, _ in CONVERSIONS}
        assert {(key, target) for key, _, _, target, _ in CONVERSIONS} <= set(canonical.items())
        assert {key for key, _ in rows} >= set(canonical)
        bridged = {(key, src) for key, bridges in units.ANALYTE.items() for src, _, _ in bridges}
        assert bridged <= rows
        assert all(unit in units.UNITS for unit in canonical.values())
        used = {unit for _, _, unit, _, _ in CONVERSIONS} | set(canonical.values())
        assert set(units.UNITS) - used == {
            "1",
            "{score}",
            "{ratio}",
            "{index}",
            "{Index_val}",
        }  # unitless, below

    @pytest.mark.parametrize(
        ("key", "value", "unit", "target", "stated"),
        [
            ("b12_total", 1, "pg/mL", "pmol/L", "0.738"),  # pg/mL -> pmol/L: x 0.738
            ("b12_total", 180, "pg/mL", "pmol/L", "133"),  # cut-offs: 180 pg/mL ~ 133 pmol/L
            ("b12_total", 200, "pg/mL", "pmol/L", "148"),  # 200 pg/mL ~ 148 pmol/L
            ("b12_total", 350, "pg/mL", "pmol/L", "258"),  # 350 pg/mL ~ 258 pmol/L
            ("b12_total", 150, "pmol/L", "pg/mL", "203"),  # 150 pmol/L = 203 pg/mL
            ("calcium_total", 1, "mmol/L", "mg/dL", "4.008"),  # mmol/L x 4.008 -> mg/dL
            ("calcium_ionized", 1, "mmol/L", "mg/dL", "4.008"),
        ],
    )
    def test_the_reference_reverse_factors_and_cut_offs(self, key, value, unit, target, stated):
        """Equal to the reference's figure at the precision it is stated with."""
        decimals = len(stated.partition(".")[2])
        assert round(units.convert(key, value, unit, target), decimals) == float(stated)

    @pytest.mark.parametrize(("calcium_mg_dl", "albumin_g_dl"), [(8.0, 2.5), (9.0, 4.0), (7.2, 3.1)])
    def test_corrected_calcium_of_15_2_agrees_in_both_unit_systems(self, calcium_mg_dl, albumin_g_dl):
        conventional = calcium_mg_dl + 0.8 * (4.0 - albumin_g_dl)  # mg/dL
        calcium = units.normalise("calcium_total", calcium_mg_dl, "mg/dL", "mmol/L")
        albumin = units.normalise("albumin", albumin_g_dl, "g/dL", "g/L")
        si = calcium + 0.02 * (40 - albumin)  # mmol/L
        assert units.convert("calcium_total", conventional, "mg/dL", "mmol/L") == pytest.approx(si, abs=0.005)

    def test_ddu_d_dimer_is_never_read_as_feu(self):
        assert units.normalise("d_dimer", 250, "ng/mL{DDU}", "mg/L") is None
        assert units.normalise("d_dimer", 0.25, "mg/L{DDU}", "mg/L") is None
        assert units.normalise("d_dimer", 0.5, "mg/L{FEU}", "mg/L") == 0.5

    def test_percent_is_not_a_fraction_of_one(self):
        assert units.normalise("spo2", 0.97, "1", "%") is None

    @pytest.mark.parametrize("key", ["potassium", "calcium_total", "albumin"])
    def test_iu_is_units_only_for_enzymes(self, key):
        assert units.convert(key, 1, "[IU]/L", "U/L") is None

    def test_calcium_in_meq_is_not_guessed(self):
        assert units.normalise("calcium_total", 5, "meq/L", "mmol/L") is None  # not in 15.1

    def test_factors_are_exact_for_decimal_prefixes(self):
        assert units.normalise("fvc", 0.35, "L", "mL") == 350.0
        assert units.factor("ck", "ukat/L", "U/L") == 60.0

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

    @pytest.mark.parametrize("unit", ["{ratio}", "1", "{index}", "{Index_val}"])
    def test_unitless_annotations_are_read_for_scores(self, unit):
        # an annotation alone means 1: an ABI sent as 0.8 {ratio} is 0.8, an antibody index too
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
        [
            ("mEq/L", "meq/L"), ("lbs", "[lb_av]"), ("ML", "mL"), ("mg/dl", "mg/dL"), ("bpm", "/min"),
            ("µmol/L", "umol/L"), ("μkat/l", "ukat/L"), ("IU/L", "[IU]/L"), ("mg/L FEU", "mg/L{FEU}"),
            ("cells/uL", "/uL"), ("10^6/L", "10*6/L"), ("cmH2O", "cm[H2O]"), (" mL ", "mL"),
        ],
    )  # fmt: skip
    def test_ucum_code_maps_common_unit_strings(self, unit, code):
        assert units.ucum_code({"value": 1, "unit": unit}) == code

    def test_lower_case_folding_is_unambiguous(self):
        assert len({code.lower() for code in units.UNITS}) == len(units.UNITS)

    def test_a_ucum_code_with_a_lower_case_litre_is_read(self):
        assert units.ucum_code({"value": 1, "system": UCUM, "code": "mmol/l"}) == "mmol/L"

    def test_an_unknown_unit_string_is_kept_for_the_issue(self):
        assert units.ucum_code({"value": 1, "unit": "furlongs"}) == "furlongs"

    def test_ucum_code_without_code_or_unit_is_none(self):
        assert units.ucum_code({"value": 1}) is None


#: Bare annotations: a UCUM library reads them as text, not as a unit.
NOT_UCUM_CHECKED = {"{score}", "{ratio}", "{index}", "{Index_val}"}  # bare annotations = 1
#: g/mol, for the analyte bridges of 15.1 (phosphate is reported as phosphorus).
MOLAR_MASS = {
    "b12_total": 1355.37,
    "calcium_total": 40.078,
    "calcium_ionized": 40.078,
    "magnesium": 24.305,
    "phosphate": 30.974,
    "creatinine": 113.12,
    "glucose": 180.156,
}
VALENCE = {"potassium": 1, "magnesium": 2}


@pytest.fixture(scope="module")
def ucum():
    from ucumvert import PintUcumRegistry

    return PintUcumRegistry()


class TestAgainstUcum:
    """The table's sizes are UCUM's (ucumvert on pint); where it departs from UCUM, on purpose."""

    @pytest.mark.parametrize("code", sorted(set(units.UNITS) - NOT_UCUM_CHECKED))
    def test_every_unit_size_is_ucums(self, ucum, code):
        dimension, size = units.UNITS[code]
        first = next(c for c, (d, _) in units.UNITS.items() if d == dimension)
        expected = (1 * ucum.from_ucum(code)).to(ucum.from_ucum(first)).magnitude
        assert float(size / units.UNITS[first][1]) == pytest.approx(expected, rel=1e-12)

    def test_different_dimensions_are_incommensurable_in_ucum(self, ucum):
        import pint

        firsts: dict[str, str] = {}
        for code, (dimension, _) in units.UNITS.items():
            if code not in NOT_UCUM_CHECKED:
                firsts.setdefault(dimension, code)
        merged_by_ucum = {
            frozenset({"eq/L", "substance/volume"}),
            frozenset({"%", "1"}),
            frozenset({"mass/volume", "mass/volume{DDU}"}),  # UCUM ignores the {DDU} annotation
            frozenset({"[IU]/L", "number/volume"}),  # ucumvert counts [IU] as a number; UCUM: arbitrary
        }
        for a, code_a in firsts.items():
            for b, code_b in firsts.items():
                if a < b and frozenset({a, b}) not in merged_by_ucum:
                    with pytest.raises(pint.DimensionalityError):
                        (1 * ucum.from_ucum(code_a)).to(ucum.from_ucum(code_b))

    def test_where_the_table_departs_from_ucum(self, ucum):
        import pint

        def to(a: str, b: str) -> float:
            return (1 * ucum.from_ucum(a)).to(ucum.from_ucum(b)).magnitude

        assert to("meq/L", "mmol/L") == pytest.approx(1)  # UCUM: eq = mol; Mg2+ needs the valence
        assert to("%", "1") == pytest.approx(0.01)  # kept apart: SpO2 0.97 "1" is not read as 97 %
        with pytest.raises(pint.DimensionalityError):  # IU is arbitrary: U/L only for enzymes
            to("[IU]/L", "U/L")

    @pytest.mark.parametrize("key", sorted(MOLAR_MASS))
    def test_analyte_factors_are_the_molar_mass_conversion(self, ucum, key):
        molar_mass = MOLAR_MASS[key] * ucum.from_ucum("g/mol")
        for src, dst, ratio in units.ANALYTE[key]:
            amount = 1 * ucum.from_ucum(src)
            if units.UNITS[src][0] == "eq/L":
                continue
            moved = amount / molar_mass if units.UNITS[src][0] == "mass/volume" else amount * molar_mass
            assert float(ratio) == pytest.approx(moved.to(ucum.from_ucum(dst)).magnitude, rel=1e-3)

    @pytest.mark.parametrize(("key", "valence"), sorted(VALENCE.items()))
    def test_equivalents_follow_the_valence(self, key, valence):
        assert units.convert(key, 1, "meq/L", "mmol/L") == pytest.approx(1 / valence)


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
