"""FHIR date, dateTime and instant strings to epoch seconds (UTC)."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime

from fhir_adapters.errors import IntakeError

_DATETIME = re.compile(
    r"^(?P<y>\d{4})(-(?P<mo>\d{2})(-(?P<d>\d{2})"
    r"(T(?P<h>\d{2}):(?P<mi>\d{2})(:(?P<s>\d{2})(?P<frac>\.\d+)?)?"
    r"(?P<tz>Z|[+-]\d{2}:\d{2})?)?)?)?$"
)


def to_epoch(text: object, path: str) -> int:
    """Parse a FHIR date/dateTime/instant; partial dates mean their first instant.

    A time without a zone is refused: FHIR requires one, and guessing the zone would move
    the record in or out of a rule's window.
    """
    if not isinstance(text, str):
        raise IntakeError(path, f"expected a date/time string, got {type(text).__name__}")
    match = _DATETIME.match(text)
    if not match:
        raise IntakeError(path, f"not a FHIR date/dateTime: {text!r}")
    parts = match.groupdict()
    if parts["h"] is not None and parts["tz"] is None:
        raise IntakeError(path, f"dateTime with a time but no time zone: {text!r}")
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
        raise IntakeError(path, f"impossible date {text!r}: {exc}") from None
    seconds = int(moment.timestamp())
    tz = parts["tz"]
    if tz and tz != "Z":
        sign = 1 if tz[0] == "+" else -1
        seconds -= sign * (int(tz[1:3]) * 3600 + int(tz[4:6]) * 60)
    return seconds


def parse_now(text: str) -> int:
    """The evaluation instant given on a command line or in a request (full dateTime)."""
    return to_epoch(text, "now")


def iso(epoch: int) -> str:
    """Epoch seconds as a FHIR instant in UTC."""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def birth_date(text: object, path: str) -> date:
    if not isinstance(text, str) or not re.match(r"^\d{4}(-\d{2}(-\d{2})?)?$", text):
        raise IntakeError(path, f"not a FHIR date: {text!r}")
    y, mo, d = ([*text.split("-"), "01", "01"])[:3]
    try:
        return date(int(y), int(mo), int(d))
    except ValueError as exc:
        raise IntakeError(path, f"impossible date {text!r}: {exc}") from None
