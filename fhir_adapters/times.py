"""FHIR date, dateTime and instant strings to epoch seconds (UTC)."""

from __future__ import annotations

import functools
import re
from datetime import UTC, date, datetime

from fhir_adapters.errors import IntakeError, shown

#: ASCII digits only (``\d`` also matches other scripts' digits) and, with ``fullmatch``, no
#: trailing newline. Zone offsets are FHIR's: -14:00 to +14:00.
_DATETIME = re.compile(
    r"(?P<y>[0-9]{4})(-(?P<mo>[0-9]{2})(-(?P<d>[0-9]{2})"
    r"(T(?P<h>[0-9]{2}):(?P<mi>[0-9]{2})(:(?P<s>[0-9]{2})(?P<frac>\.[0-9]+)?)?"
    r"(?P<tz>Z|[+-](0[0-9]|1[0-3]):[0-5][0-9]|[+-]14:00)?)?)?)?"
)
_DATE = re.compile(r"[0-9]{4}(-[0-9]{2}(-[0-9]{2})?)?")
#: Instants a record may carry: a century inside what ``datetime`` holds (years 1-9999) at each
#: end, so that the rules' windows (days to years) added or taken away stay representable.
EARLIEST = int(datetime(101, 1, 1, tzinfo=UTC).timestamp())
LATEST = int(datetime(9899, 12, 31, 23, 59, 59, tzinfo=UTC).timestamp())
_EPOCH_DAY = date(1970, 1, 1).toordinal()


def to_epoch(text: object, path: str) -> int:
    """Parse a FHIR date/dateTime/instant; partial dates mean their first instant.

    A time without a zone is refused: FHIR requires one, and guessing the zone would move
    the record in or out of a rule's window.
    """
    if not isinstance(text, str):
        raise IntakeError(path, f"expected a date/time string, got {type(text).__name__}")
    seconds = _epoch(text)
    if isinstance(seconds, str):
        raise IntakeError(path, seconds)
    return seconds


def forget() -> None:
    """Drop the strings parsed before (a benchmark's first call of a patient)."""
    _epoch.cache_clear()


@functools.lru_cache(maxsize=8192)
def _epoch(text: str) -> int | str:
    """``to_epoch`` of a string, or why it is none (without the path): kept, because a record's
    resources share their times (a week's vitals and labs), and a call's are parsed once."""
    match = _DATETIME.fullmatch(text)
    if not match:
        return f"not a FHIR date/dateTime: {shown(text)}"
    y, mo, d, h, mi, s, tz = match.group("y", "mo", "d", "h", "mi", "s", "tz")
    if h is not None and tz is None:
        return f"dateTime with a time but no time zone: {shown(text)}"
    year, month, day = int(y), int(mo or 1), int(d or 1)
    hour, minute, second = int(h or 0), int(mi or 0), int(s or 0)
    try:
        if hour > 23 or minute > 59 or second > 59:  # datetime says what is wrong, as it would
            datetime(year, month, day, hour, minute, second, tzinfo=UTC)
        # the day's number and the time of day: what ``datetime(...).timestamp()`` gives, exactly
        # (``date`` checks the date as ``datetime`` does, with the same messages)
        days = date(year, month, day).toordinal() - _EPOCH_DAY
    except ValueError as exc:
        return f"impossible date {shown(text)}: {exc}"
    seconds = days * 86400 + hour * 3600 + minute * 60 + second
    if tz and tz != "Z":
        sign = 1 if tz[0] == "+" else -1
        seconds -= sign * (int(tz[1:3]) * 3600 + int(tz[4:6]) * 60)
    if not EARLIEST <= seconds <= LATEST:
        return f"date out of range (years 0101 to 9899): {shown(text)}"
    return seconds


def parse_now(text: str) -> int:
    """The evaluation instant given on a command line or in a request (full dateTime)."""
    return to_epoch(text, "now")


def iso(epoch: int) -> str:
    """Epoch seconds as a FHIR instant in UTC."""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def birth_date(text: object, path: str) -> date:
    if not isinstance(text, str) or not _DATE.fullmatch(text):
        raise IntakeError(path, f"not a FHIR date: {shown(text)}")
    y, mo, d = ([*text.split("-"), "01", "01"])[:3]
    try:
        return date(int(y), int(mo), int(d))
    except ValueError as exc:
        raise IntakeError(path, f"impossible date {shown(text)}: {exc}") from None
