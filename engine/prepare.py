"""Time algebra of docs/clinical-policy.md#building-blocks, once per evaluation, before the rules run.

durable-rules' ``none()`` is order-dependent (a negating fact asserted after a match does not
undo it), so "latest result", "earliest onset" and "superseded by a newer negative record" are
computed here, deterministically, and handed to the rules as plain numbers and flags:

  age              seconds from the record's time to ``now`` (0 for a current state)
  onset_age        seconds from the record's onset to ``now``
  first_onset_age  for findings: onset_age of the earliest qualifying record of the same key
  side_onset_age   for findings: the same over the records of the same key and side (a deficit
                   already recorded on that side is "stable", docs/rules/acute_stroke_or_tia.md);
                   absent when no record of that side is dated (its onset is unknown, as
                   first_onset_age is absent when no record of the key is dated)
  cur              findings: 1 unless a newer "absent" record for the key and side exists, or
                   the state (``span`` "state") is not current (inactive, abated before ``now``)
  latest           values: 1 on the newest result per key, side and site (a "series"); of two
                   taken at the same time, the one issued later (14.2); untied ones both
  prev_age         values: seconds from the previous result of the same series to ``now``
                   (``now`` itself on the first: no earlier result, as if at the epoch), so
                   "the first result since T" is the positive test ``prev_age > T``
  has_high         values: 1 when the laboratory sent a reference-range upper limit (``high``)
  years            patient: whole years between birth date and ``now``

A rule may declare that results of a value key taken after a medication began are ignored
(``Rules.ignore_results_after``, e.g. B12 measured after replacement started): those results are
dropped here, before "latest" is computed, so the newest result taken before the treatment
began becomes the latest (docs/rules/b12_deficiency_neuropathy.md). Only a dated medication censors.
"""

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
    """``censor`` maps a value key to the medication key whose start ends its valid results.

    Runs on every evaluation (a ~200-resource call: ~700 field reads): the reads of ``_num``
    are written out inline in the loops below.
    """
    kept: list[Fact] = []
    future: list[Fact] = []
    findings: list[Fact] = []
    series: Series = {}  # the results by series, for ``_latest``, grouped on the way
    horizon = now + FUTURE_TOLERANCE
    for original in facts:
        fact = dict(original)
        ts, onset = fact.get("ts"), fact.get("onset")
        ts = ts if isinstance(ts, int) else None
        onset = onset if isinstance(onset, int) else None
        if (ts is not None and ts > horizon) or (onset is not None and onset > horizon):
            future.append(fact)
            continue
        if ts is not None:  # max(0, now - ts), without the call
            fact["age"] = now - ts if ts < now else 0
        if onset is not None:
            fact["onset_age"] = now - onset if onset < now else 0
        kind = fact["t"]
        if kind == "value":
            fact["has_high"] = 1 if isinstance(fact.get("high"), int | float) else 0
            key = (fact["key"], fact.get("side", "unknown"), fact.get("site"))
            series.setdefault(key, []).append((ts or 0, fact))
        elif kind == "finding":
            findings.append(fact)
        elif kind == "patient" and isinstance(fact.get("birth"), str):
            fact["years"] = _years(str(fact["birth"]), now)
        kept.append(fact)
    kept, censored = _censor(kept, censor or {})
    if censored:  # results left out: the series without them
        series = _series(kept)
    _findings(findings, now)
    _latest(series, now)
    return Prepared(kept, future, censored)


def _censor(facts: list[Fact], censor: Mapping[str, str]) -> tuple[list[Fact], list[Fact]]:
    """Drop results of a censored key taken after the earliest start of its medication."""
    if not censor:
        return facts, []
    began: dict[str, int] = {}
    for f in facts:
        if f["t"] == "medication":
            ts = f.get("ts")
            if isinstance(ts, int):
                began[str(f["key"])] = min(began.get(str(f["key"]), ts), ts)
    if not began:  # no dated medication: nothing is censored
        return facts, []
    # per value key, the start that ends its results (a key not censored looks up "")
    starts = {key: began.get(med) for key, med in censor.items()}
    default = began.get("")
    kept: list[Fact] = []
    dropped: list[Fact] = []
    for f in facts:
        start = starts.get(str(f.get("key")), default) if f["t"] == "value" else None
        if start is not None and isinstance(ts := f.get("ts"), int) and ts > start:
            dropped.append(f)
        else:
            kept.append(f)
    return kept, dropped


def _findings(findings: Sequence[Fact], now: int) -> None:
    """first_onset_age, side_onset_age, cur (and a state's age) of each finding."""
    if not findings:
        return
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


#: the results of each series (key, side, site), each with its time (``_num(f, "ts") or 0``)
Series = dict[tuple[object, object, object], list[tuple[int, Fact]]]


def _series(facts: Sequence[Fact]) -> Series:
    series: Series = {}
    for f in facts:
        if f["t"] == "value":
            ts = f.get("ts")
            key = (f["key"], f.get("side", "unknown"), f.get("site"))
            series.setdefault(key, []).append(((ts or 0) if isinstance(ts, int) else 0, f))
    return series


def _latest(series: Series, now: int) -> None:
    """latest / prev_age of every result within its series (key, side, site).

    The latest result is the one with the newest time; of results with the same time, the one
    issued later (docs/clinical-policy.md#observation-status). Results that nothing orders (same time, and the
    same or no ``issued``) are all latest: the outcome never depends on the order the sender listed them in.
    ``prev_age`` reads the newest result taken strictly before, so results taken at the same
    time are each "the first since" any earlier point.
    """
    for results in series.values():
        if len(results) == 1:  # most series: the one result is latest, with none before it
            results[0][1]["latest"] = 1
            results[0][1]["prev_age"] = now
            continue
        times = sorted({ts for ts, _f in results})
        newest = times[-1]
        issued = [i for ts, f in results if ts == newest and (i := _num(f, "issued")) is not None]
        last_issued = max(issued, default=None)
        before = dict(zip(times[1:], times, strict=False))  # each time -> the time before it
        for ts, f in results:
            if ts == newest:  # tied on the newest time: latest unless another was issued later
                mine = f.get("issued")
                f["latest"] = 1 if not isinstance(mine, int) or mine == last_issued else 0
            else:
                f["latest"] = 0
            # The first result has no previous one: as if it were at the epoch (age = now), so
            # "prev_age > T" alone says "first since T". Always present: durable-rules fails a
            # join on a missing property (error 311) and ignores an OR that joins.
            f["prev_age"] = max(0, now - before[ts]) if ts in before else now
