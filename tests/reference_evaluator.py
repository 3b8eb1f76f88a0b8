"""A plain-Python evaluation of the compiled rules: what the engine is fuzzed against.

It reads the rules as the engine compiles them, not as the engine runs them: every condition's
single-fact tests as durable-rules' JSON pattern (``Cond.compile(...)[0].define()``, the very
JSON registered with durable), its cross-fact tests as the ``engine.expr`` nodes the engine
checks in Python, and each rule's kind (derive, score item, score, fire, block). Then:

1. the time algebra of ``engine.prepare`` (shared on purpose: the differential is about the
   session and what follows it, not about the preparation of facts);
2. forward chaining, naively: every combination of facts (one per condition) that passes the
   pattern and the cross tests derives one fact, until nothing new is derived; no merging of
   equal facts, no latest-only pruning, no lineage (each derivation is its own fact);
3. second stratum: each score's total over its items (each label counted once), then chaining
   again to the fixed point;
4. fire, block: every combination again; a tier counts when some combination not using a
   preliminary result (or any, at a severity preliminary results may support) holds; the most
   urgent tier not blocked is chosen, then suppression between rules;
5. an alert's evidence: the references of every fact of every counted combination of its tier
   (a derived fact carries its sources' references), the patient's own reference excepted.

The outcome is a set of (rule, tier, evidence) per patient, evidence a frozenset: the order in
which the engine happens to cite records is presentation, not behaviour.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from engine.dsl import Rules, Spec
from engine.expr import Node
from engine.prepare import prepare
from engine.vocabulary import RuleMeta

Fact = dict[str, Any]
Outcome = frozenset[tuple[str, str, frozenset[str]]]

_MISSING = object()
_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "$lt": operator.lt,
    "$lte": operator.le,
    "$gt": operator.gt,
    "$gte": operator.ge,
    "$eq": operator.eq,
    "$neq": operator.ne,
}
_ARITHMETIC: dict[str, Callable[[Any, Any], Any]] = {
    "$add": operator.add,
    "$sub": operator.sub,
    "$mul": operator.mul,
    "$div": operator.truediv,
}


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _operand(operand: object, fact: Mapping[str, Any]) -> Any:
    """A right-hand side: a constant, ``{"$m": name}`` (this fact's property) or arithmetic."""
    if not isinstance(operand, dict):
        return operand
    ((op, arg),) = operand.items()
    if op == "$m":
        return fact.get(arg, _MISSING)
    left, right = _operand(arg["$l"], fact), _operand(arg["$r"], fact)
    if not (_number(left) and _number(right)) or (op == "$div" and right == 0):
        return _MISSING
    return _ARITHMETIC[op](left, right)


def _compare(op: str, left: object, right: object) -> bool:
    """A missing side never satisfies a comparison; a number and a string differ."""
    if left is _MISSING or right is _MISSING:
        return False
    if isinstance(left, str) != isinstance(right, str):
        return op == "$neq"
    return bool(_COMPARE[op](left, right))


def matches(pattern: Mapping[str, Any], fact: Mapping[str, Any]) -> bool:
    """Whether one fact satisfies a durable-rules JSON pattern (every entry is a conjunct)."""
    for key, arg in pattern.items():
        if key == "$and":
            ok = all(matches(p, fact) for p in arg)
        elif key == "$or":
            ok = any(matches(p, fact) for p in arg)
        elif key in ("$ex", "$nex"):
            ok = all((name in fact) is (key == "$ex") for name in arg)
        elif key in _COMPARE:
            ok = all(_compare(key, fact.get(n, _MISSING), _operand(v, fact)) for n, v in arg.items())
        elif key.startswith("$"):
            raise ValueError(f"the reference evaluator does not know {key!r}")
        else:
            ok = _compare("$eq", fact.get(key, _MISSING), _operand(arg, fact))
        if not ok:
            return False
    return True


@dataclass(frozen=True, slots=True)
class Condition:
    kind: str
    key: str | None
    pattern: dict[str, Any]  # durable JSON of the single-fact tests (kind and key included)
    cross: tuple[Node, ...]  # tests against the facts of earlier conditions


@dataclass(frozen=True, slots=True)
class Rule:
    spec: Spec
    conds: tuple[Condition, ...]


def _rule(spec: Spec) -> Rule:
    aliases = [f"f{i}" for i in range(len(spec.conds))]
    conds = []
    for i, cond in enumerate(spec.conds):
        expr, cross = cond.compile(aliases[:i])
        conds.append(Condition(cond.kind, cond.key, expr.define(), tuple(cross)))
    return Rule(spec, tuple(conds))


@dataclass(frozen=True, slots=True)
class Compiled:
    """One configuration of the rules as the reference reads it."""

    rules: tuple[Rule, ...]
    scores: tuple[Spec, ...]
    metas: dict[str, RuleMeta]
    censors: dict[str, str]
    preliminary_supports: frozenset[str] | None


def compile_rules(
    modules: Sequence[ModuleType], params: Mapping[str, Mapping[str, float]] | None = None
) -> Compiled:
    """Each module's specs, as ``define`` writes them, with their compiled conditions."""
    rules: list[Rule] = []
    scores: list[Spec] = []
    metas: dict[str, RuleMeta] = {}
    censors: dict[str, str] = {}
    supports = {frozenset(s) for m in modules if (s := getattr(m, "PRELIMINARY_SUPPORTS", None)) is not None}
    for module in modules:
        meta: RuleMeta | None = getattr(module, "META", None)
        rule_id = meta.id if meta else module.__name__.rsplit(".", 1)[-1]
        p = {**getattr(module, "PARAMS", {}), **(params or {}).get(rule_id, {})}
        collected = Rules(rule_id, tuple(t.name for t in meta.tiers) if meta else ())
        module.define(collected, p)
        if meta:
            metas[rule_id] = meta
        for spec in collected.specs:
            if spec.does == "score":
                scores.append(spec)
            elif spec.does == "censor":
                censors[spec.key] = spec.after
            elif spec.does != "note":  # notes add card lines, never alerts
                rules.append(_rule(spec))
    return Compiled(tuple(rules), tuple(scores), metas, censors, next(iter(supports), None))


def _refs(fact: Mapping[str, Any]) -> frozenset[str]:
    return frozenset(str(fact.get("refs") or fact.get("ref") or "").split())


def _ints(facts: Iterable[Mapping[str, Any]], name: str) -> list[int]:
    return [f[name] for f in facts if isinstance(f.get(name), int)]


def derived_fact(spec: Spec, facts: list[Fact], pid: str) -> Fact:
    """What a derivation asserts (docs/engine.md and ``Rules.derive``): flags and the age from
    the most recent/most severe source, onset the earliest, time the newest, the side of the
    first source that is not the patient (or the rule's own function), the rule's value."""
    sources = [f for f in facts if f["t"] != "patient"]
    out: Fact = {
        "t": "derived",
        "key": spec.key,
        "pid": pid,
        "refs": " ".join(sorted(frozenset().union(*(_refs(f) for f in facts)))),
        "age": max((int(f.get("age", 0)) for f in facts), default=0),
        "prelim": max((int(f.get("prelim", 0)) for f in facts), default=0),
        "suspected": max((int(f.get("suspected", 0)) for f in facts), default=0),
    }
    firsts = [int(f.get("first_onset_age", f.get("onset_age", -1))) for f in sources]
    if firsts and max(firsts) >= 0:
        out["first_onset_age"] = max(firsts)
    for name, pick in (("onset", min), ("ts", max)):
        if found := _ints(facts, name):
            out[name] = pick(found)
    if spec.label:
        out["label"] = spec.label
    out["side"] = (
        spec.side(facts) if spec.side else str(sources[0].get("side", "unknown")) if sources else "unknown"
    )
    if spec.value:
        out["v"] = round(float(spec.value(facts)), 4)
    return out


class _Facts:
    """The facts of one evaluation, indexed by (kind, key) and (kind, None)."""

    def __init__(self) -> None:
        self.all: list[Fact] = []
        self.index: dict[tuple[str, str | None], list[Fact]] = {}

    def add(self, fact: Fact) -> None:
        fact["id"] = len(self.all) + 1
        self.all.append(fact)
        self.index.setdefault((fact["t"], fact.get("key")), []).append(fact)
        if fact.get("key") is not None:
            self.index.setdefault((fact["t"], None), []).append(fact)


def combinations(rule: Rule, facts: _Facts) -> Iterable[list[Fact]]:
    """Every choice of one fact per condition that passes its pattern and its cross tests."""
    candidates = [
        [f for f in facts.index.get((c.kind, c.key), ()) if matches(c.pattern, f)] for c in rule.conds
    ]
    if not all(candidates):
        return

    def extend(chosen: list[Fact]) -> Iterable[list[Fact]]:
        i = len(chosen)
        if i == len(candidates):
            yield list(chosen)
            return
        for fact in candidates[i]:
            chosen.append(fact)
            if all(node.holds(chosen, i) for node in rule.conds[i].cross):
                yield from extend(chosen)
            chosen.pop()

    yield from extend([])


class Reference:
    """Evaluate one patient's facts at ``now`` the plain way; see the module docstring."""

    #: a case whose chaining derives more facts than this is refused (a generator to tune)
    MAX_FACTS = 5000

    def __init__(self, compiled: Compiled) -> None:
        self.c = compiled
        self.derivations = [r for r in compiled.rules if r.spec.does == "derive"]
        self.checked = [r for r in compiled.rules if r.spec.does in ("fire", "block")]

    def _chain(self, facts: _Facts, done: set[tuple[str, tuple[int, ...]]], pid: str) -> None:
        changed = True
        while changed:
            changed = False
            for rule in self.derivations:
                for combo in list(combinations(rule, facts)):
                    said = (rule.spec.name, tuple(f["id"] for f in combo))
                    if said in done:
                        continue
                    done.add(said)
                    facts.add(derived_fact(rule.spec, combo, pid))
                    changed = True
                    if len(facts.all) > self.MAX_FACTS:
                        raise OverflowError("the reference derived too many facts for this case")

    def _totals(self, facts: _Facts, pid: str) -> list[Fact]:
        out = []
        for spec in self.c.scores:
            items = facts.index.get(("derived", f"{spec.key}_item"), [])
            points = {str(i["label"]): float(i["v"]) for i in items}
            refs = frozenset().union(*(_refs(i) for i in items))
            out.append(
                {
                    "t": "derived",
                    "key": spec.key,
                    "v": round(sum(points.values()), 4),
                    "pid": pid,
                    "age": 0,
                    "side": "unknown",
                    "refs": " ".join(sorted(refs)),
                }
            )
        return out

    def evaluate(self, pid: str, facts: Sequence[Fact], now: int) -> Outcome:
        prepared = prepare(facts, now, self.c.censors).facts
        known = _Facts()
        for fact in prepared:
            known.add(fact)
        done: set[tuple[str, tuple[int, ...]]] = set()
        self._chain(known, done, pid)
        for total in self._totals(known, pid):  # second stratum
            known.add(total)
        self._chain(known, done, pid)
        return self._collect(pid, known)

    def _counts(self, combo: list[Fact], severity: str) -> bool:
        supports = self.c.preliminary_supports
        return supports is None or severity in supports or not any(f.get("prelim") == 1 for f in combo)

    def _collect(self, pid: str, facts: _Facts) -> Outcome:
        fired: dict[str, dict[str, set[str]]] = {}  # rule -> tier -> evidence
        blocked: dict[str, set[str]] = {}
        for rule in self.checked:
            spec = rule.spec
            meta = self.c.metas.get(spec.rule)
            if meta is None:
                continue
            for combo in combinations(rule, facts):
                if spec.does == "block":
                    blocked.setdefault(spec.rule, set()).update(spec.tiers)
                    break
                tier = spec.tiers[0]
                if self._counts(combo, meta.tier(tier).severity):
                    evidence = fired.setdefault(spec.rule, {}).setdefault(tier, set())
                    for fact in combo:
                        evidence.update(_refs(fact) - {pid})
        chosen: dict[str, str] = {}
        for rule_id, tiers in fired.items():
            for tier in self.c.metas[rule_id].tiers:  # most urgent first
                if tier.name in tiers and tier.name not in blocked.get(rule_id, set()):
                    chosen[rule_id] = tier.name
                    break
        return frozenset(
            (rule_id, tier, frozenset(fired[rule_id][tier]))
            for rule_id, tier in chosen.items()
            if not any(
                chosen.get(other) == theirs and tier == ours
                for other, theirs, ours in self.c.metas[rule_id].suppressed_by
            )
        )


def engine_outcome(alerts: Iterable[Any]) -> Outcome:
    """The engine's alerts in the reference's terms (``engine.alert.Alert``)."""
    return frozenset((a.rule, a.tier, frozenset(a.evidence)) for a in alerts)


__all__ = ["Compiled", "Outcome", "Reference", "compile_rules", "engine_outcome"]
