"""The cold-call shortcuts give what the long way gave (issue 15 item 6, a first CDS call).

``engine.prepare`` reads each field once (against ``prepare_reference``, the version before);
dates are read without ``datetime.timestamp`` (against the parse before); a value sent in the
unit the rules read is taken as sent (what ``units.convert`` gives); a mapping works out the keys
of a coding once, never for a coding whose keys depend on the record (a body site, a text).
"""

from __future__ import annotations

import itertools
import random
from datetime import UTC, datetime

import orjson
import pytest

from engine import session
from engine.prepare import prepare
from fhir_adapters import terminology, times, units
from fhir_adapters.errors import shown
from fhir_adapters.facts import patient_facts
from fhir_adapters.facts_cache import FactsCache
from fhir_adapters.intake import group
from fhir_adapters.terminology import Terminology
from rulesets import VALUESET_DIR

from . import prepare_reference

NOW = 1_741_608_000
SNOMED = "http://snomed.info/sct"


@pytest.fixture(scope="module")
def term() -> Terminology:
    return terminology.load(VALUESET_DIR)


def _random_fact(rng: random.Random) -> dict[str, object]:
    """A fact of any kind with odd field values too (bool, float, missing, equal times)."""
    moments = [None, True, False, 1.5, "x", 0, NOW - 86400, NOW - 3600, NOW, NOW + 200, NOW + 900]
    fact: dict[str, object] = {
        "t": rng.choice(["value", "finding", "patient", "medication", "procedure"]),
        "pid": "Patient/p",
        "ref": f"Observation/{rng.randrange(1000)}",
        "key": rng.choice(["k1", "k2", "m1", "", "b12"]),
    }
    for name in ("ts", "onset", "issued", "abated"):
        when = rng.choice(moments)
        if when is not None:
            fact[name] = when
    if rng.random() < 0.5:
        fact["side"] = rng.choice(["left", "right", "bilateral", "unknown"])
    if rng.random() < 0.3:
        fact["site"] = rng.choice(["s1", "s2"])
    if rng.random() < 0.5:
        fact["high"] = rng.choice([1, 2.5, None, "7"])
    if fact["t"] == "finding":
        fact["state"] = rng.choice(["present", "absent"])
        fact["span"] = rng.choice(["state", "event"])
        fact["active"] = rng.choice([0, 1])
    if fact["t"] == "patient" and rng.random() < 0.7:
        fact["birth"] = rng.choice(["1950-02-28", "2000-03-10", "1984-12-31"])
    return fact


@pytest.mark.parametrize("seed", range(300))
def test_prepare_gives_what_the_field_by_field_version_gave(seed: int) -> None:
    rng = random.Random(seed)
    facts = [_random_fact(rng) for _ in range(rng.randrange(0, 30))]
    censor = rng.choice([None, {}, {"k1": "m1"}, {"k1": "m1", "k2": "", "b12": "m1"}, {"k2": "absent"}])
    now = prepare_reference.prepare(facts, NOW, censor)
    got = prepare(facts, NOW, censor)
    assert (got.facts, got.future, got.censored) == (now.facts, now.future, now.censored)
    for mine, theirs in zip(got.facts, now.facts, strict=True):
        assert list(mine) == list(theirs)  # the fields in the same order too


def _epoch_before(text: str) -> int | str:
    """``times._epoch`` before: through ``datetime(...).timestamp()``."""
    match = times._DATETIME.fullmatch(text)
    if not match:
        return f"not a FHIR date/dateTime: {shown(text)}"
    parts = match.groupdict()
    if parts["h"] is not None and parts["tz"] is None:
        return f"dateTime with a time but no time zone: {shown(text)}"
    try:
        moment = datetime(
            int(parts["y"]),
            int(parts["mo"] or 1),
            int(parts["d"] or 1),
            int(parts["h"] or 0),
            int(parts["mi"] or 0),
            int(parts["s"] or 0),
            tzinfo=UTC,
        )
    except ValueError as exc:
        return f"impossible date {shown(text)}: {exc}"
    seconds = int(moment.timestamp())
    tz = parts["tz"]
    if tz and tz != "Z":
        sign = 1 if tz[0] == "+" else -1
        seconds -= sign * (int(tz[1:3]) * 3600 + int(tz[4:6]) * 60)
    if not times.EARLIEST <= seconds <= times.LATEST:
        return f"date out of range (years 0101 to 9899): {shown(text)}"
    return seconds


def _date_texts() -> list[str]:
    years = ["0000", "0001", "0100", "0101", "1900", "1970", "2000", "2023", "2024", "9899", "9999"]
    months = ["00", "01", "02", "04", "12", "13"]
    days = ["00", "01", "28", "29", "30", "31", "32"]
    clocks = ["", "T00:00", "T00:00:00", "T23:59:59", "T24:00:00", "T12:60:00", "T12:00:60", "T99:99:99"]
    zones = ["", "Z", "+01:00", "-05:30", "+14:00", "-14:00", "+13:59"]
    texts = [*years, *(f"{y}-{m}" for y in years for m in months)]
    texts += [f"{y}-{m}-{d}" for y in years for m in months for d in days]
    rng = random.Random(15)
    texts += [
        f"{rng.choice(years)}-{rng.choice(months)}-{rng.choice(days)}{clock}{zone}{frac}"
        for clock, zone, frac in itertools.product(clocks, zones, ["", ".5"])
        for _ in range(40)
    ]
    return texts


def test_a_date_is_read_as_before() -> None:
    texts = _date_texts()
    assert len(texts) > 4000
    for text in texts:
        assert times._epoch.__wrapped__(text) == _epoch_before(text), text


def test_a_value_in_the_unit_the_rules_read_is_taken_as_sent() -> None:
    for unit in [*units.UNITS, "", "mg/dl ", "furlong"]:
        for value in (0.0, -0.0, 0.1, 4.7, 60.0, 1e308, -3.0):
            for key in ("glucose", "potassium", "heart_rate"):
                expected = None if unit == "" else units.convert(key, value, unit, unit)
                assert units.normalise(key, value, unit, unit) == expected, (unit, value)


def _observation(n: int, code: tuple[str, str], **more: object) -> dict[str, object]:
    return {
        "resourceType": "Observation",
        "id": f"o{n}",
        "status": "final",
        "subject": {"reference": "Patient/p1"},
        "effectiveDateTime": f"2025-03-0{1 + n % 9}T10:00:00Z",
        "code": {"coding": [{"system": code[0], "code": code[1]}]},
        **more,
    }


LOWER_LIMB = {"coding": [{"system": SNOMED, "code": "61685007"}]}
WEAKNESS = (SNOMED, "26544005")  # leg weakness at a lower-limb site, else generalised weakness
REFLEX = ("http://hl7.org/fhir/sid/icd-10-cm", "R29.2")  # counts only when its text says absent
POTASSIUM = ("http://loinc.org", "2823-3")


def test_a_coding_whose_keys_depend_on_the_record_is_worked_out_for_each_record(term: Terminology) -> None:
    resources = [
        {"resourceType": "Patient", "id": "p1", "gender": "female"},
        _observation(1, WEAKNESS, bodySite=LOWER_LIMB),
        _observation(2, WEAKNESS),
        _observation(3, WEAKNESS, bodySite=LOWER_LIMB),
        _observation(4, REFLEX, valueString="ankle reflexes absent"),
        _observation(5, REFLEX, valueString="normal"),
        _observation(6, REFLEX, valueString="areflexia"),
        *(
            _observation(7 + i, POTASSIUM, valueQuantity={"value": 4.0 + i, "unit": "mmol/L"})
            for i in range(3)
        ),
    ]
    found = [(f"Bundle.entry[{i}].resource", r, None) for i, r in enumerate(resources)]
    (pid,) = group("t", found).patients

    def alone(i: int) -> list[dict[str, object]]:  # each record in a mapping of its own
        mapped = patient_facts(group("t", [found[0], found[i]]).patients[pid], term)
        return [f for f in mapped.facts if f["t"] != "patient"]

    expected = [f for i in range(1, len(found)) for f in alone(i)]
    assert [f["key"] for f in expected] == [
        "leg_weakness",
        "muscle_weakness_generalized",
        "leg_weakness",
        "reflexes_absent",
        "reflexes_absent",
        "potassium",
        "potassium",
        "potassium",
    ]
    for cache in (None, FactsCache()):
        together = patient_facts(group("t", found).patients[pid], term, cache)
        assert [f for f in together.facts if f["t"] != "patient"] == expected


@pytest.mark.parametrize("seed", range(50))
def test_a_facts_signature_leaves_out_only_its_source_fields(seed: int) -> None:
    rng = random.Random(seed)
    fact = _random_fact(rng)
    fact.update({name: rng.choice(["x", 3]) for name in ("id", "sid", "refs") if rng.random() < 0.7})
    before = dict(fact)
    read = {k: v for k, v in fact.items() if k not in session.SOURCE_FIELDS}  # as it was worked out
    assert session._signature(fact) == orjson.dumps(read, option=orjson.OPT_SORT_KEYS)
    assert fact == before  # the fact itself left as it was
