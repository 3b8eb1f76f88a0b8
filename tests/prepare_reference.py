"""``engine.prepare`` as it was written before the cold-call work (c39266c): field by field, a
pass per step. The oracle of tests/test_cold2_equivalence.py: the single-pass version must give
what this one gives, fact for fact."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime

Fact = dict[str, object]

#: Records dated more than this after ``now`` are ignored (docs/clinical-policy.md#future-records).
FUTURE_TOLERANCE = 300


@dataclass(frozen=True, slots=True)
class Prepared:
    facts: list[Fact]
    future: list[Fact]  # ignored because dated after now + tolerance
    censored: list[Fact] = field(default_factory=list)  # results taken after a treatment began


def _years(birth: str, now: int) -> int:
    born = date.fromisoformat(birth)
    today = datetime.fromtimestamp(now, UTC).date()
    return today.year - born.year - ((today.month, today.day) < (born.month, born.day))


def _num(fact: Fact, name: str) -> int | None:
    value = fact.get(name)
    return value if isinstance(value, int) else None


def prepare(facts: Iterable[Fact], now: int, censor: Mapping[str, str] | None = None) -> Prepared:
    """``censor`` maps a value key to the medication key whose start ends its valid results."""
    kept: list[Fact] = []
    future: list[Fact] = []
    for original in facts:
        fact = dict(original)
        ts, onset = _num(fact, "ts"), _num(fact, "onset")
        if (ts is not None and ts > now + FUTURE_TOLERANCE) or (
            onset is not None and onset > now + FUTURE_TOLERANCE
        ):
            future.append(fact)
            continue
        if ts is not None:
            fact["age"] = max(0, now - ts)
        if onset is not None:
            fact["onset_age"] = max(0, now - onset)
        if fact["t"] == "value":
            fact["has_high"] = 1 if isinstance(fact.get("high"), int | float) else 0
        if fact["t"] == "patient" and isinstance(fact.get("birth"), str):
            fact["years"] = _years(str(fact["birth"]), now)
        kept.append(fact)
    kept, censored = _censor(kept, censor or {})
    _findings(kept, now)
    _latest(kept, now)
    return Prepared(kept, future, censored)


def _censor(facts: list[Fact], censor: Mapping[str, str]) -> tuple[list[Fact], list[Fact]]:
    """Drop results of a censored key taken after the earliest start of its medication."""
    if not censor:
        return facts, []
    began: dict[str, int] = {}
    for f in facts:
        ts = _num(f, "ts")
        if f["t"] == "medication" and ts is not None:
            began[str(f["key"])] = min(began.get(str(f["key"]), ts), ts)
    kept: list[Fact] = []
    dropped: list[Fact] = []
    for f in facts:
        start = began.get(censor.get(str(f.get("key")), "")) if f["t"] == "value" else None
        ts = _num(f, "ts")
        (dropped if start is not None and ts is not None and ts > start else kept).append(f)
    return kept, dropped


def _findings(facts: Sequence[Fact], now: int) -> None:
    findings = [f for f in facts if f["t"] == "finding"]
    newest_absent: dict[tuple[object, object], int] = {}
    first_onset: dict[object, int] = {}
    side_onset: dict[tuple[object, object], int] = {}
    for f in findings:
        ts = _num(f, "ts")
        if f["state"] == "absent" and ts is not None:
            for side in _sides(f):
                k = (f["key"], side)
                newest_absent[k] = max(newest_absent.get(k, ts), ts)
        onset_age = _num(f, "onset_age")
        if f["state"] == "present" and onset_age is not None:
            first_onset[f["key"]] = max(first_onset.get(f["key"], onset_age), onset_age)
            k = (f["key"], f.get("side", "unknown"))
            side_onset[k] = max(side_onset.get(k, onset_age), onset_age)
    for f in findings:
        if f["state"] == "present" and f["key"] in first_onset:
            f["first_onset_age"] = first_onset[f["key"]]
            on_side = side_onset.get((f["key"], f.get("side", "unknown")))
            if on_side is not None:  # an undated record on a side no dated record has
                f["side_onset_age"] = on_side
        if f.get("span") == "state":  # holds until it ends, not only at its time
            abated = _num(f, "abated")
            current = f.get("active") == 1 and (abated is None or abated > now)
            f["cur"] = 1 if current else 0
            if current:
                f["age"] = 0  # a current state is present now, whenever it was recorded
            elif abated is not None:
                f["age"] = max(0, now - abated)
            continue
        ts = _num(f, "ts") or 0
        superseded = f["state"] == "present" and any(
            newest_absent.get((f["key"], side), -1) > ts for side in _sides(f)
        )
        f["cur"] = 0 if superseded else 1


def _sides(fact: Fact) -> tuple[object, ...]:
    """A bilateral negation covers each side; an unknown side only matches unknown."""
    side = fact.get("side", "unknown")
    return ("left", "right", "bilateral", "unknown") if side == "bilateral" else (side,)


def _latest(facts: Sequence[Fact], now: int) -> None:
    """latest / prev_age of every result within its series (key, side, site).

    The latest result is the one with the newest time; of results with the same time, the one
    issued later (docs/clinical-policy.md#observation-status). Results that nothing orders (same time, and the
    same or no ``issued``) are all latest: the outcome never depends on the order the sender listed them in.
    ``prev_age`` reads the newest result taken strictly before, so results taken at the same
    time are each "the first since" any earlier point.
    """
    series: dict[tuple[object, object, object], list[Fact]] = {}
    for f in facts:
        if f["t"] == "value":
            series.setdefault((f["key"], f.get("side", "unknown"), f.get("site")), []).append(f)
    for results in series.values():
        times = sorted({_num(f, "ts") or 0 for f in results})
        newest = [f for f in results if (_num(f, "ts") or 0) == times[-1]]
        issued = [i for f in newest if (i := _num(f, "issued")) is not None]
        last_issued = max(issued, default=None)
        tied = {id(f) for f in newest}
        before = dict(zip(times[1:], times, strict=False))  # each time -> the time before it
        for f in results:
            ts = _num(f, "ts") or 0
            mine = _num(f, "issued")
            f["latest"] = 1 if id(f) in tied and (mine is None or mine == last_issued) else 0
            # The first result has no previous one: as if it were at the epoch (age = now), so
            # "prev_age > T" alone says "first since T". Always present: durable-rules fails a
            # join on a missing property (error 311) and ignores an OR that joins.
            f["prev_age"] = max(0, now - before[ts]) if ts in before else now
