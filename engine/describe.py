"""How a matched fact reads in an alert's rationale: finding, value, unit and date."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime

_SIDES = {"left": "left", "right": "right", "bilateral": "bilateral"}


def day(epoch: object) -> str:
    return datetime.fromtimestamp(int(epoch), UTC).strftime("%Y-%m-%d") if isinstance(epoch, int) else "?"


def moment(epoch: object) -> str:
    if not isinstance(epoch, int):
        return "?"
    text = datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M")
    return text[:-6] if text.endswith(" 00:00") else text


def describe(fact: Mapping[str, object], titles: Mapping[str, str]) -> str:
    kind = fact.get("t")
    key = str(fact.get("key", ""))
    title = titles.get(key, key.replace("_", " "))
    side = _SIDES.get(str(fact.get("side")), "")
    where = f" ({side})" if side else ""
    if kind == "derived":
        return str(fact.get("text") or title)
    if kind == "patient":
        years = fact.get("years")
        return f"age {years}" if years is not None else "patient"
    if kind == "value":
        if fact.get("unit") == "s":
            return f"{title} {moment(fact.get('v'))}"
        value = fact.get("v")
        shown = f"{value:g}" if isinstance(value, int | float) else str(fact.get("interp", "?"))
        unit = fact.get("unit")
        unit_text = "" if unit in (None, "1", "{score}") else f" {unit}"
        prelim = " (preliminary)" if fact.get("prelim") == 1 else ""
        return f"{title}{where} {shown}{unit_text}{prelim} on {moment(fact.get('ts'))}"
    if kind == "finding":
        if fact.get("state") == "absent":
            return f"no {title}{where} on {moment(fact.get('ts'))}"
        suspected = " (suspected)" if fact.get("suspected") == 1 else ""
        if fact.get("src") == "Condition":
            return f"{title}{where}{suspected} since {day(fact.get('onset'))}"
        return f"{title}{where} on {moment(fact.get('ts'))}"
    return f"{title} on {day(fact.get('ts'))}"
