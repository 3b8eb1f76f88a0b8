"""Derived facts the rules cannot tell apart are asserted once; their evidence is kept here.

durable-rules matches every combination of the facts a rule's conditions accept (its joins have
no constraint: cross-fact tests run in Python, see ``engine.expr``), and a derived fact joins
again: n records of one finding gave n derived facts, n * m candidate alerts, and so on down a
chain (a patient with 100 dated records of a few findings took 20 s and 470 MB). A derived fact
equal, in every property a rule reads of its key, to one already asserted can match nothing the
first one does not: it is not asserted, and its derivation is recorded instead, so an alert
still cites every record behind it and dates its episode from the earliest one (``Lineage``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from engine.expr import Node

Fact = dict[str, object]

#: Properties of a derived fact always compared: they decide tiers (``prelim``), the alert's
#: "suspected", score items (``label``, ``v``) and laterality (``side``).
ALWAYS = frozenset({"t", "key", "pid", "label", "prelim", "suspected", "v", "side"})
#: Properties a derived fact takes from its sources (engine.session ``_derive``): read of the
#: derived fact, they are read of its sources too.
PROPAGATED = frozenset({"age", "first_onset_age", "onset", "ts"})
#: Wordings of equal derived facts an alert's rationale may quote besides the asserted one's.
MAX_ALTERNATES = 8
#: Never compared: identity, evidence and wording (no rule reads them).
UNREAD = frozenset({"id", "sid", "ref", "refs", "text"})


class _Spec(Protocol):  # engine.dsl.Spec (read-only: a frozen dataclass)
    @property
    def does(self) -> str: ...
    @property
    def key(self) -> str: ...
    @property
    def conds(self) -> tuple[Any, ...]: ...  # engine.dsl.Cond (dsl imports this module)
    @property
    def value(self) -> object: ...
    @property
    def side(self) -> object: ...


class _Recording(dict[str, object]):
    """A fact that notes every property read of it (all of them hold the number 1)."""

    def __init__(self, seen: set[str]) -> None:
        super().__init__()
        self.seen = seen

    def __getitem__(self, name: str) -> object:
        self.seen.add(name)
        return 1

    def get(self, name: str, default: object = None) -> object:
        self.seen.add(name)
        return 1


def _function_reads(spec: _Spec) -> dict[int, set[str]] | None:
    """What the value and side functions of a derivation read of each source (None: unknown)."""
    seen: list[set[str]] = [set() for _ in spec.conds]
    facts = [_Recording(s) for s in seen]
    try:
        for function in (spec.value, spec.side):
            if callable(function):
                function(facts)
    except Exception:  # a function that needs real facts: compare its sources on everything
        return None
    return dict(enumerate(seen))


def derived_reads(specs: Sequence[_Spec]) -> dict[str, frozenset[str] | None]:
    """Per derived key, the properties some rule reads of its facts (None: any of them).

    A value or side function is run once on recording facts to learn what it reads; one that
    fails on them is taken to read every property of the derived facts it consumes.
    """
    reads: dict[str, set[str] | None] = {}
    for spec in specs:
        aliases = [f"f{i}" for i in range(len(spec.conds))]
        read: dict[int, set[str]] = {i: set() for i in range(len(spec.conds))}
        for i, cond in enumerate(spec.conds):
            for test in cond.tests:
                node = test(aliases[:i])
                if not isinstance(node, Node):
                    continue  # not an engine.expr test: Cond.compile refuses it with its reason
                for index, name in node.attrs():
                    read[i if index is None else index].add(name)
        functions = _function_reads(spec) if spec.does == "derive" else {}
        for i, extra in (functions or {}).items():
            read[i] |= extra
        for i, cond in enumerate(spec.conds):
            if cond.kind != "derived" or cond.key is None:
                continue
            known = reads.setdefault(cond.key, set())
            if functions is None:
                reads[cond.key] = None
            elif known is not None:
                known |= read[i]
    changed = True
    while changed:  # what is read of a derived key is read of the derived facts it comes from
        changed = False
        for spec in specs:
            if spec.does != "derive":
                continue
            produced = reads.get(spec.key, set())
            needed = PROPAGATED if produced is None else produced & PROPAGATED
            for cond in spec.conds:
                known = reads.get(cond.key or "") if cond.kind == "derived" else None
                if known is not None and not needed <= known:
                    known |= needed
                    changed = True
    return {key: None if value is None else frozenset(value) for key, value in reads.items()}


def signature(fact: Mapping[str, object], read: frozenset[str] | None) -> bytes:
    """What the rules can tell of ``fact``: the properties read (all but UNREAD when None)."""
    kept = (
        {k: v for k, v in fact.items() if k not in UNREAD}
        if read is None
        else {k: v for k, v in fact.items() if k in ALWAYS or k in read}
    )
    return orjson.dumps(kept, option=orjson.OPT_SORT_KEYS)


def _refs(fact: Mapping[str, object]) -> list[str]:
    return str(fact.get("refs") or fact.get("ref") or "").split()


def _int(value: object) -> int | None:
    return value if isinstance(value, int) else None


@dataclass(slots=True)
class Lineage:
    """Facts asserted in one evaluation by id, and every derivation of each derived fact.

    ``refs`` and ``earliest`` answer, over all derivations (including those not asserted), what
    the alert would have cited and dated had every combination been asserted.
    """

    facts: dict[int, Fact] = field(default_factory=dict)
    derivations: dict[int, list[tuple[int, ...]]] = field(default_factory=dict)
    #: derived facts not asserted, by the id of the equal one that was (their wording differs)
    alternates: dict[int, list[Fact]] = field(default_factory=dict)
    _refs_memo: dict[int, dict[str, None]] = field(default_factory=dict)
    _span_memo: dict[int, tuple[int | None, int | None]] = field(default_factory=dict)

    def add(self, facts: Iterable[Fact]) -> None:
        for fact in facts:
            self.facts[int(fact["id"])] = fact  # type: ignore[call-overload]  # ids are ints (prepare)

    def derived(self, kept: int, sources: tuple[int, ...], alternate: Fact | None = None) -> None:
        """One derivation of ``kept``; ``alternate``: the fact it made, equal but not asserted."""
        self.derivations.setdefault(kept, []).append(sources)
        if self._refs_memo or self._span_memo:  # asked before this derivation (score totals)
            self._refs_memo.clear()
            self._span_memo.clear()
        if alternate is not None:
            found = self.alternates.setdefault(kept, [])
            if len(found) < MAX_ALTERNATES and all(a.get("text") != alternate.get("text") for a in found):
                found.append(alternate)

    def refs(self, fid: int) -> dict[str, None]:
        """Every reference behind fact ``fid``, in order of derivation."""
        memo = self._refs_memo.get(fid)
        if memo is not None:
            return memo
        out: dict[str, None] = dict.fromkeys(_refs(self.facts.get(fid, {})))
        for sources in self.derivations.get(fid, ()):
            for source in sources:
                out.update(self.refs(source))
        self._refs_memo[fid] = out
        return out

    def span(self, fid: int) -> tuple[int | None, int | None]:
        """The lowest ``onset`` and ``ts`` fact ``fid`` takes over all its derivations.

        A derived fact's onset is the earliest of its sources' and its ts the newest (session
        ``_derive``); sources vary independently, so the lowest ts is the max of their lowest.
        """
        memo = self._span_memo.get(fid)
        if memo is not None:
            return memo
        fact = self.facts.get(fid, {})
        if fid not in self.derivations:
            span = (_int(fact.get("onset")), _int(fact.get("ts")))
        else:
            onsets: list[int] = []
            stamps: list[int] = []
            for sources in self.derivations[fid]:
                spans = [self.span(s) for s in sources]
                onsets.extend(o for o, _ in spans if o is not None)
                newest = [t for _, t in spans if t is not None]
                if newest:
                    stamps.append(max(newest))
            span = (min(onsets, default=None), min(stamps, default=None))
        self._span_memo[fid] = span
        return span

    def times(self, fact: Mapping[str, object]) -> list[int]:
        """The times that date an alert's episode from ``fact``, over all its derivations."""
        own = [int(fact[n]) for n in ("onset", "ts") if isinstance(fact.get(n), int)]  # type: ignore[call-overload]  # narrowed by the isinstance
        fid = fact.get("id")
        if not isinstance(fid, int) or fid not in self.derivations:
            return own
        return own + [t for t in self.span(fid) if t is not None]
