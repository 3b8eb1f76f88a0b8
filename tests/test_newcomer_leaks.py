"""The log-leak check of test_cli cannot flake, yet catches a leaked birth date, name or id.

It used to assert ``"1981" not in stderr``: a hex token or timestamp holding "1981" failed
it at random, and the fixture's birth date (1980-08-21) would have passed it.
"""

from __future__ import annotations

import orjson

from .cli_helpers import V01
from .leak_helpers import identifying_values, leaked

PATIENT = identifying_values(orjson.loads(V01.read_bytes()))


def test_the_values_are_taken_from_the_patient_resource() -> None:
    assert {"v01", "MRN-V01", "Marsh", "Helen", "1980-08-21"} <= PATIENT


def test_digits_inside_tokens_and_timestamps_are_not_a_leak() -> None:
    line = orjson.dumps(
        {
            "event": "alert",
            "patient": "a1980c1981ef",
            "replay_id": "19800821d1e0",
            "timestamp": "2025-03-10T11:55:19.801981Z",
            "source": "/tmp/pytest-7/test_logs0/v01x.json",
        }
    ).decode()
    assert leaked(line, PATIENT) == []


def test_a_leaked_birth_date_name_or_identifier_is_found() -> None:
    for value in ("1980-08-21", "Marsh", "helen", "MRN-V01", "Patient/v01"):
        line = orjson.dumps({"event": "alert", "detail": f"for {value} today"}).decode()
        assert leaked(line, PATIENT), value
    assert leaked('{"birthDate":"1980-08-21"}', PATIENT) == ["1980-08-21"]
