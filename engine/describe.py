"""How a matched fact reads in an alert's rationale: finding, value, unit and date."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime

_SIDES = {"left": "left", "right": "right", "bilateral": "bilateral"}
#: A finding as ``describe`` writes it carries its date.
_DATED = re.compile(r"\d{4}-\d{2}-\d{2}")


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
        if fact.get("span") == "state":
            return f"{title}{where}{suspected} since {day(fact.get('onset'))}"
        return f"{title}{where} on {moment(fact.get('ts'))}"
    return f"{title} on {day(fact.get('ts'))}"


#: how a character changes the depth of parentheses (``_split``)
_DEPTH = {"(": 1, ")": -1}


def _split(text: str) -> list[str]:
    """``text`` cut at each "; " outside parentheses (the criteria a phrase joins)."""
    if "; " not in text:  # one criterion: no need to walk it (most texts, each alert rendered)
        return [text.strip()] if text.strip() else []
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        depth += _DEPTH.get(ch, 0)
        if depth <= 0 and text.startswith("; ", i):
            parts.append(text[start:i])
            start = i + 2
    parts.append(text[start:])
    return [p.strip() for p in parts if p.strip()]


def _shown(text: str, seen: set[str], top: bool) -> str:
    """``text`` without the criteria already in ``seen`` (which it extends, in reading order).

    At the top level any repeated criterion goes; inside parentheses only a dated finding does
    (a side such as "(left)" or a threshold repeats legitimately)."""
    kept = []
    for part in _split(text):
        if part in seen and (top or _DATED.search(part)):
            continue
        seen.add(part)
        kept.append(_inner(part, seen))
    return "; ".join(kept)


def _groups(text: str) -> Iterator[tuple[int, int]]:
    """(start, end) of each outermost parenthesised group of ``text``: ``text[start] == "("``."""
    depth, start = 0, 0
    for i, ch in enumerate(text):
        if ch == "(":
            depth += 1
            if depth == 1:
                start = i
        elif ch == ")" and depth > 0:
            depth -= 1
            if depth == 0:
                yield start, i


def _inner(part: str, seen: set[str]) -> str:
    """``part`` with each outermost parenthesised group reduced by ``_shown`` (dropped if empty)."""
    out, last = [], 0
    for start, end in _groups(part):
        inner = _shown(part[start + 1 : end], seen, top=False)
        head = part[last:start]
        out.append(f"{head}({inner})" if inner else head.rstrip())
        last = end + 1
    out.append(part[last:])
    return "".join(out)


def findings_once(phrases: Iterable[str]) -> list[str]:
    """The criteria of a rationale with each finding shown once.

    A derived criterion reads "its sources joined by '; '" (``bilateral sciatica`` = "Sciatica
    (left) since ...; Sciatica (right) since ..."), so a rule that also matches one of those
    findings on its own would name it twice. Phrases are cut at their top-level "; "; a part
    already shown is left out, and so is a dated finding inside parentheses shown before. A
    finding that another criterion cites in parentheses is shown there, in its context (a Wells
    item, a bilateral pair), whatever order the engine matched them in.
    """
    phrases = list(phrases)
    cited: set[str] = set()
    for phrase in phrases:
        _collect_inner(phrase, cited)
    seen: set[str] = set()
    uncited = ("; ".join(p for p in _split(phrase) if p not in cited) for phrase in phrases)
    shown = (_shown(phrase, seen, top=True) for phrase in uncited)
    return [part for text in shown for part in _split(text)]


def _collect_inner(text: str, into: set[str]) -> None:
    """Every dated finding ``text`` cites inside parentheses, at any depth."""
    for start, end in _groups(text):
        for part in _split(text[start + 1 : end]):
            if _DATED.search(part):
                into.add(part)
            _collect_inner(part, into)
