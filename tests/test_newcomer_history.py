"""The history fixtures are named after the weekday of their delivery (issue 12, item 9f).

The README tells the story "weakness in Monday's bundle, absent reflexes in Wednesday's"; the
files used to be evaluated on a Friday, a Monday and a Tuesday.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

import orjson
import pytest

from .conftest import FIXTURES

HISTORY = FIXTURES / "history"
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
EXPECTED = sorted(HISTORY.glob("*.expected.json"))


def test_every_history_fixture_names_a_weekday() -> None:
    assert len(EXPECTED) == 3
    assert all(set(p.name.split(".")[0].split("-")) & set(WEEKDAYS) for p in EXPECTED)


@pytest.mark.parametrize("expected", EXPECTED, ids=lambda p: p.name)
def test_a_delivery_is_evaluated_and_recorded_on_the_weekday_of_its_name(expected) -> None:
    (day,) = set(expected.name.split(".")[0].split("-")) & set(WEEKDAYS)
    now = orjson.loads(expected.read_bytes())["now"]
    assert WEEKDAYS[datetime.fromisoformat(now).weekday()] == day, now
    data = expected.with_name(expected.name.replace(".expected.json", ".json")).read_text()
    latest = max(datetime.fromisoformat(t) for t in re.findall(r'"(20\d\d-\d\d-\d\dT[^"]+)"', data))
    assert WEEKDAYS[latest.astimezone(UTC).weekday()] == day, latest  # the newest record: that day


def test_wednesday_is_two_days_after_monday() -> None:
    def now(name: str) -> datetime:
        return datetime.fromisoformat(orjson.loads((HISTORY / name).read_bytes())["now"])

    assert (now("gbs-wednesday.expected.json") - now("gbs-monday.expected.json")).days == 2
    assert (now("gbs-thursday-arms.expected.json") - now("gbs-wednesday.expected.json")).days == 1
