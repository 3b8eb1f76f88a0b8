"""Evaluate one patient: prepare facts, run one short-lived durable session, collect alerts."""

from __future__ import annotations

import itertools
import math
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import durable.lang as durable_lang
import durable_rules_engine as dre
import orjson

from engine.alert import Alert
from engine.collect import Match, collect
from engine.describe import describe
from engine.drive import Action, actions_of, run_actions
from engine.dsl import Rules, Spec, check_program
from engine.errors import CrossTalkError, FactRejectedError, RuleActionError, RuleDefinitionError
from engine.expr import Node
from engine.host import engine_thread, host
from engine.lineage import Lineage, derived_reads, signature
from engine.logger import get_logger
from engine.prepare import prepare
from engine.vocabulary import Code, RuleMeta

log = get_logger("redflags.engine")
Fact = dict[str, object]

#: Kind of the fact that opens every session (see ``_register``).
SESSION = "session"


@dataclass(slots=True)
class _Context:
    """What the actions of one evaluation record; lives exactly as long as its session."""

    pid: str
    sid: str
    next_id: Callable[[], int]
    titles: Mapping[str, str]
    matches: list[Match] = field(default_factory=list)
    errors: list[tuple[str, BaseException]] = field(default_factory=list)
    #: score items derived so far, by score item key (second stratum input)
    items: dict[str, list[Fact]] = field(default_factory=dict)
    #: id of the derived fact asserted for each signature (engine.lineage)
    derived: dict[bytes, int] = field(default_factory=dict)
    lineage: Lineage = field(default_factory=Lineage)
    actions: int = 0
    #: derivations whose value or side function raised (``Engine.evaluate(isolate=...)``)
    failed: list[tuple[Spec, Exception]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Evaluation:
    patient: str
    alerts: list[Alert]
    facts: int  # facts asserted (after preparation)
    future: int  # records ignored because dated in the future
    derived: int = 0  # derived facts asserted (equal ones once, engine.lineage)
    actions: int = 0  # rule actions run: the combinations of facts durable-rules matched
    #: rules left out because a calculation they depend on raised (``isolate=True`` only)
    failed: tuple[str, ...] = ()


def _finite(value: float) -> float:
    """A derived value as stored: a number durable can compare (NaN and infinity cannot)."""
    number = round(float(value), 4)
    if not math.isfinite(number):
        raise ValueError(f"the value is {number}, not a finite number")
    return number


def dependents(specs: Sequence[Spec]) -> dict[str, frozenset[str]]:
    """Per derived key, the rules that read it, directly or through other derived keys (a
    score's total reads its items): the rules a failed derivation of that key leaves unsure."""
    readers: dict[str, set[str]] = {}
    feeds: dict[str, set[str]] = {}
    for spec in specs:
        reads = {str(c.key) for c in spec.conds if c.kind == "derived"}
        if spec.does == "score":
            reads.add(f"{spec.key}_item")
        for key in reads:
            readers.setdefault(key, set()).add(spec.rule)
            if spec.does in ("derive", "score"):
                feeds.setdefault(key, set()).add(spec.key)
    out: dict[str, frozenset[str]] = {}
    for key in {s.key for s in specs if s.does in ("derive", "score")}:
        rules: set[str] = set()
        seen, todo = {key}, [key]
        while todo:
            current = todo.pop()
            rules |= readers.get(current, set())
            for nxt in feeds.get(current, ()):
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        out[key] = frozenset(rules)
    return out


#: Fact fields that name where a fact came from; no rule reads them.
SOURCE_FIELDS = frozenset({"id", "sid", "ref", "refs"})
#: A fact merged from many identical records keeps this many references as its evidence.
MAX_REFS = 20


def _signature(fact: Mapping[str, object]) -> bytes:
    """What the rules can read of a fact: everything but its identity and evidence."""
    read = dict(fact)  # then the few source fields out: cheaper than a comprehension over all
    for name in SOURCE_FIELDS:
        read.pop(name, None)
    return orjson.dumps(read, option=orjson.OPT_SORT_KEYS)


def distinct(facts: Iterable[Fact]) -> list[Fact]:
    """One fact per group of facts the rules cannot tell apart, carrying the group's references.

    durable-rules matches every combination of the facts a rule's conditions accept (its joins
    have no constraint: cross-fact tests run in Python, see ``engine.expr``), and derived facts
    join again, so k copies of one record cost k**2, k**3... matches. Equal facts match alike:
    merged, the cost is linear in the records and every rule decides as before.
    """
    merged: dict[bytes, Fact] = {}
    for fact in facts:
        signature = _signature(fact)
        kept = merged.get(signature)
        if kept is None:
            merged[signature] = fact
            continue
        refs = str(kept.get("refs") or kept.get("ref") or "").split()
        extra = str(fact.get("refs") or fact.get("ref") or "").split()
        if len(refs) < MAX_REFS:
            refs.extend(r for r in extra if r not in refs)
            merged[signature] = {**kept, "refs": " ".join(refs[:MAX_REFS])}
    return list(merged.values())


def _refs(facts: Sequence[dict[str, Any]]) -> str:
    seen: dict[str, None] = {}
    for f in facts:
        for ref in str(f.get("refs") or f.get("ref") or "").split():
            seen.setdefault(ref, None)
    return " ".join(seen)


#: Lines a card note with several conditions may produce (one per combination of its facts).
MAX_NOTE_COMBINATIONS = 16
#: Matches kept per rule whose conditions compare facts: enough to cite the evidence of an
#: alert; whether the rule holds is decided by the first.
MAX_MATCHES = 256


@dataclass(frozen=True, slots=True)
class _Checked:
    """A fire, block or note, checked in Python over the facts of the finished session.

    durable-rules matches every combination of a rule's facts and runs an action for each (n * m
    for two conditions, n * m * k for three, each kept as a match): the cost of a patient with
    many records grew as a power of their number. These rules derive nothing, so they are
    checked once the session reached its fixed point: condition by condition when no two of
    their facts are compared (the rule holds when each condition has a fact; the combinations
    would add only their evidence and earliest time, the union and minimum over each
    condition's facts: work n + m), else by enumerating combinations, pruned at each condition.
    """

    spec: Spec
    #: per condition: kind, key, its single-fact tests, its tests against earlier facts
    conds: tuple[tuple[str, str | None, tuple[Node, ...], tuple[Node, ...]], ...]

    @property
    def independent(self) -> bool:
        return not any(cross for *_, cross in self.conds)

    def matches(self, facts: Mapping[tuple[object, object], list[Fact]]) -> list[Match]:
        # most rules lack a fact for some condition: stop at the first such condition (the
        # result is [] whichever it is) instead of filtering every condition's facts first
        found: list[list[Fact]] = []
        for kind, key, tests, _cross in self.conds:
            candidates = facts.get((kind, key))
            if not candidates:
                return []
            kept = (
                [f for f in candidates if all(node.holds([f], 0) for node in tests)] if tests else candidates
            )
            if not kept:
                return []
            found.append(kept)
        if self.independent:
            return _combine(self.spec, found)
        if self.spec.does != "fire":
            return self._enumerate(found)
        # a preliminary result supports only a critical tier (collect): final results first, so
        # the cap on matches never hides a combination that counts for every tier
        final = [[f for f in facts if f.get("prelim") != 1] for facts in found]
        return self._enumerate(final) + self._enumerate(found)

    def _enumerate(self, found: list[list[Fact]]) -> list[Match]:
        """Combinations of one fact per condition that pass the cross tests (at most MAX_MATCHES)."""
        out: list[Match] = []
        chosen: list[Fact] = []

        def extend(i: int) -> None:
            if len(out) >= MAX_MATCHES:
                return
            if i == len(found):
                out.append(Match(self.spec, list(chosen)))
                return
            for fact in found[i]:
                chosen.append(fact)
                if all(node.holds(chosen, i) for node in self.conds[i][3]):
                    extend(i + 1)
                chosen.pop()

        if all(found):
            extend(0)
        return out


def _checked(spec: Spec) -> _Checked | None:
    """The rule checked in Python (``_Checked``), or None for a derivation (run by durable)."""
    if spec.does not in ("fire", "block", "note"):
        return None
    aliases = [f"f{i}" for i in range(len(spec.conds))]
    conds = []
    for i, cond in enumerate(spec.conds):
        local: list[Node] = []
        cross: list[Node] = []
        for test in cond.tests:
            node = test(aliases[:i])
            if not isinstance(node, Node):
                raise TypeError(f"{cond.phrase}: write tests with m and ref from engine.dsl")
            for part in node.conjuncts():
                (cross if part.refs() else local).append(part)
        conds.append((cond.kind, cond.key, tuple(local), tuple(cross)))
    return _Checked(spec, tuple(conds))


def _combine(spec: Spec, found: list[list[Fact]]) -> list[Match]:
    """The matches of a rule checked condition by condition, from each condition's facts."""
    if spec.does == "note":
        combinations = itertools.islice(itertools.product(*found), MAX_NOTE_COMBINATIONS)
        return [Match(spec, list(c)) for c in combinations]
    matches = [Match(spec, [f for facts in found for f in facts])]
    final = [[f for f in facts if f.get("prelim") != 1] for facts in found]
    if spec.does == "fire" and all(final) and final != found:  # counts for every tier (collect)
        matches.append(Match(spec, [f for facts in final for f in facts]))
    return matches


@dataclass(slots=True)
class _Compiled:
    """One configuration's durable ruleset and the evaluation its actions report to."""

    fingerprint: str
    name: str  # the durable ruleset's name, unique in the process
    ruleset: Any = None  # a durable.engine.Ruleset (durable ships no types)
    actions: dict[str, Action] = field(default_factory=dict)  # by durable rule name (engine.drive)
    context: _Context | None = None


#: The process's durable rulesets, one per configuration (modules + parameters), in the order
#: compiled: every Engine of a configuration shares its ruleset. Upstream durable-rules aborted
#: once a second ruleset was registered; the build's patch 0005 fixed the cause, so several
#: sites' configurations live in one process (docs/engine.md#several-configurations-in-one-process).
_compiled: dict[str, _Compiled] = {}
_compile_lock = threading.Lock()


class Engine:
    """All rulesets compiled into one durable ruleset; evaluations run on the engine thread.

    Each configuration (modules + parameters) compiles its own durable ruleset once per process;
    engines of the same configuration share it. The engine thread runs one evaluation at a time,
    so whatever the number of rulesets there is never more than one live session.
    """

    def __init__(
        self,
        modules: Sequence[ModuleType],
        titles: Mapping[str, str] | None = None,
        params: Mapping[str, Mapping[str, float]] | None = None,
    ) -> None:
        self.titles: Mapping[str, str] = titles or {}
        self.metas: dict[str, RuleMeta] = {}
        self.params: dict[str, dict[str, float]] = {}
        self.defaults: dict[str, dict[str, float]] = {}  # the modules' own, before overrides
        self.specs: list[Spec] = []
        self.scores: list[Spec] = []
        self.censor_specs: list[Spec] = []
        #: value key -> medication key: results taken after the medication began are ignored
        self.censors: dict[str, str] = {}
        overrides = params or {}
        #: the severities a preliminary result may support (None: every one), declared by a
        #: module as ``PRELIMINARY_SUPPORTS``: policy is the rules', the engine applies it
        declared = {
            frozenset(s) for m in modules if (s := getattr(m, "PRELIMINARY_SUPPORTS", None)) is not None
        }
        if len(declared) > 1:
            raise RuleDefinitionError("the modules declare different PRELIMINARY_SUPPORTS")
        self.preliminary_supports: frozenset[str] | None = next(iter(declared), None)
        for module in modules:
            meta: RuleMeta | None = getattr(module, "META", None)
            rule_id = meta.id if meta else module.__name__.rsplit(".", 1)[-1]
            p = dict(getattr(module, "PARAMS", {}))
            self.defaults[rule_id] = dict(p)
            for name, value in overrides.get(rule_id, {}).items():
                if name not in p:
                    raise RuleDefinitionError(f"{rule_id}: unknown parameter {name!r}")
                p[name] = value
            rules = Rules(rule_id, tuple(t.name for t in meta.tiers) if meta else ())
            module.define(rules, p)
            if meta:
                self.metas[rule_id] = meta
            self.params[rule_id] = p
            self.specs.extend(s for s in rules.specs if s.does not in ("score", "censor"))
            self.scores.extend(s for s in rules.specs if s.does == "score")
            for spec in rules.specs:
                if spec.does == "censor":
                    if self.censors.get(spec.key, spec.after) != spec.after:
                        raise RuleDefinitionError(
                            f"{rule_id}: {spec.key} is already censored by another medication"
                        )
                    self.censors[spec.key] = spec.after
                    self.censor_specs.append(spec)
        check_program([*self.specs, *self.scores])  # a fact no rule derives, an unstratified score
        self._item_keys = {f"{s.key}_item" for s in self.scores}
        self._no_item_texts: dict[str, str] = {}  # a score's text -> its total's text without items
        #: value keys some condition reads beyond the newest result (trends, earlier values);
        #: older results of every other key can match nothing and are not asserted
        self._history_keys = frozenset(
            c.key for s in self.specs for c in s.conds if c.kind == "value" and not c.latest_only
        )
        #: per derived key, what rules read of it: equal derived facts are asserted once
        self._reads = derived_reads(self.specs)
        #: per derived key, the rules a failed derivation of it leaves unsure (``isolate``)
        self._dependents = dependents([*self.specs, *self.scores])
        #: fire/block/note rules, checked after the session (``_Checked``)
        self._checked = [c for s in self.specs if (c := _checked(s)) is not None]
        #: (kind, key) of each checked rule's first condition -> the rules' indexes in _checked
        #: (None: a rule without conditions, a candidate always)
        self._checked_by_first: dict[tuple[object, object] | None, list[int]] = {}
        for i, c in enumerate(self._checked):
            first = (c.conds[0][0], c.conds[0][1]) if c.conds else None
            self._checked_by_first.setdefault(first, []).append(i)
        #: what durable-rules' own rules (derivations) read, as (kind, key), key None: any key of
        #: that kind. Only those facts go to durable: the rest (4 in 10 of a replay's facts, the
        #: score totals always) matched nothing there and cost its matching and state; every fact
        #: still reaches the checked rules and the lineage.
        reads = {(c.kind, c.key) for s in self.specs if s.does == "derive" for c in s.conds}
        self._durable_kinds = frozenset({SESSION, *(kind for kind, key in reads if key is None)})
        self._durable_reads = frozenset(reads)
        self._thread = engine_thread()
        fingerprint = repr(
            (
                sorted((k, sorted(v.items())) for k, v in self.params.items()),
                [s.name for s in (*self.specs, *self.scores)],
                sorted(self.censors.items()),
            )
        )
        with _compile_lock:
            shared = _compiled.get(fingerprint)
            if shared is None:
                # the first keeps durable's old name; each further configuration its own
                shared = _Compiled(fingerprint, f"redflags_{len(_compiled)}" if _compiled else "redflags")
                self._shared = shared
                self._thread.run(self._register)
                _compiled[fingerprint] = shared  # only once registered: a failure leaves no entry
            self._shared = shared
        self._ruleset = self._shared.ruleset

    @property
    def longest_window(self) -> float:
        """The longest look-back (seconds) of any windowed condition: what history must keep."""
        return max((c.window for s in (*self.specs, *self.scores) for c in s.conds if c.window), default=0.0)

    def branch_disorders(self) -> dict[str, list[Code]]:
        """Per rule, the disorders its branches suggest besides the rule's own."""
        out: dict[str, list[Code]] = {}
        for spec in self.specs:
            if spec.disorder and spec.disorder != self.metas[spec.rule].disorder:
                found = out.setdefault(spec.rule, [])
                if spec.disorder not in found:
                    found.append(spec.disorder)
        return out

    @property
    def _context(self) -> _Context | None:
        return self._shared.context

    @_context.setter
    def _context(self, value: _Context | None) -> None:
        self._shared.context = value

    # -- compilation ---------------------------------------------------------------------------
    def _register(self) -> None:
        name = self._shared.name
        with durable_lang.ruleset(name):
            for spec in self.specs:
                if spec.does != "derive":
                    continue  # checked after the session (``_Checked``)
                aliases = [f"f{i}" for i in range(len(spec.conds))]
                exprs: list[Any] = []  # durable-rules expressions (untyped)
                checks: list[tuple[int, Node]] = []
                for i, (alias, cond) in enumerate(zip(aliases, spec.conds, strict=True)):
                    expr, cross = cond.compile(aliases[:i])
                    exprs.append(getattr(durable_lang.c, alias) << expr)
                    checks.extend((i, node) for node in cross)
                durable_lang.when_all(*exprs)(self._action(spec, aliases, tuple(checks)))
            # Every session opens with a fact this rule handles: durable-rules aborts the process
            # (free(): invalid pointer) when the first session of a process is deleted after no
            # rule matched any of its facts, e.g. a replay whose first patient has nothing relevant.
            durable_lang.when_all(durable_lang.m.t == SESSION)(lambda _facts: None)
        definition = durable_lang._rulesets.pop(name)  # keep durable's global registry empty
        name, body = definition.define()
        host().register_rulesets({name: body})
        self._shared.ruleset = host().get_ruleset(name)
        self._shared.actions = actions_of(self._shared.ruleset)

    def _action(self, spec: Spec, aliases: list[str], checks: tuple[tuple[int, Node], ...]) -> Action:
        def action(matched: dict[str, Any]) -> None:  # alias -> fact (engine.drive)
            ctx = self._context
            if ctx is None:  # cannot happen: actions only run inside evaluate()
                raise RuleActionError(f"{spec.name} fired outside an evaluation")
            ctx.actions += 1
            try:
                facts = [matched[a] for a in aliases]
                for f in facts:
                    if f.get("pid") != ctx.pid:
                        raise CrossTalkError(f"{spec.name} matched a fact of another patient")
                if not all(node.holds(facts, i) for i, node in checks):
                    return  # a cross-fact test failed: no match (checked here, see engine.expr)
                if spec.does == "derive":
                    self._derive(spec, facts, ctx)
                else:
                    ctx.matches.append(Match(spec, facts))
            except BaseException as exc:
                ctx.errors.append((spec.name, exc))

        action.__name__ = spec.name.replace(".", "_")
        return action

    def _derive(self, spec: Spec, facts: list[dict[str, Any]], ctx: _Context) -> None:
        # one pass over the matched facts (an action per match: this runs often)
        age = prelim = suspected = 0  # each the greatest over the facts (none: 0)
        first: int | None = None  # the greatest first_onset_age (else onset_age, else -1)
        onset: int | None = None  # the earliest onset
        ts: int | None = None  # the newest time
        sources: list[dict[str, Any]] = []
        for i, f in enumerate(facts):
            mine = int(f.get("age", 0))
            age = mine if i == 0 or mine > age else age
            mine = int(f.get("prelim", 0))
            prelim = mine if i == 0 or mine > prelim else prelim
            mine = int(f.get("suspected", 0))
            suspected = mine if i == 0 or mine > suspected else suspected
            if f["t"] != "patient":
                sources.append(f)
                mine = int(f.get("first_onset_age", f.get("onset_age", -1)))
                first = mine if first is None else max(first, mine)
            when = f.get("onset")
            if isinstance(when, int):
                onset = int(when) if onset is None else min(onset, int(when))
            when = f.get("ts")
            if isinstance(when, int):
                ts = int(when) if ts is None else max(ts, int(when))
        derived: Fact = {
            "t": "derived",
            "key": spec.key,
            "id": ctx.next_id(),
            "sid": ctx.sid,
            "refs": _refs(facts),
            "pid": ctx.pid,
            "age": age,
            "prelim": prelim,
            "suspected": suspected,
        }
        if first is not None and first >= 0:
            derived["first_onset_age"] = first
        if onset is not None:
            derived["onset"] = onset
        if ts is not None:
            derived["ts"] = ts  # the newest evidence (progression "after" comparisons)
        if spec.label:
            derived["label"] = spec.label
        try:  # the rule's own calculations: their failure is that rule's, not the patient's
            side = (
                spec.side(facts)
                if spec.side
                else str(sources[0].get("side", "unknown"))
                if sources
                else "unknown"
            )
            if spec.value:
                derived["v"] = _finite(spec.value(facts))
        except Exception as exc:
            ctx.failed.append((spec, exc))
            return
        derived["side"] = side
        parts = "; ".join(describe(f, ctx.titles) for f in sources)
        if spec.text:
            v = derived.get("v", sources[0].get("v") if sources else None)
            shown = spec.text.format(v=v if v is not None else float("nan"), side=side)
            derived["text"] = f"{shown} ({parts})" if parts else shown
        else:
            derived["text"] = parts
        source_ids = tuple(int(f["id"]) for f in facts)
        said = signature(derived, self._reads.get(spec.key, frozenset()))
        kept = ctx.derived.get(said)
        if kept is not None:  # an equal fact is asserted: it matches whatever this one would
            ctx.lineage.derived(kept, source_ids, derived)
            return
        ctx.derived[said] = int(derived["id"])  # type: ignore[call-overload]  # ids are ints (next_id)
        ctx.lineage.add([derived])
        ctx.lineage.derived(int(derived["id"]), source_ids)  # type: ignore[call-overload]  # as above
        if spec.key in self._item_keys:
            ctx.items.setdefault(spec.key, []).append(derived)
        # code 1: no rule consumes this derived fact (normal); 2: already observed (ids are new)
        code = dre.assert_fact(self._ruleset._handle, orjson.dumps(derived).decode())[0]
        if code == 2:
            raise FactRejectedError(f"durable-rules reported derived fact {derived['id']} as observed")

    # -- evaluation ------------------------------------------------------------------------------
    def evaluate(self, pid: str, facts: Sequence[Fact], now: int, *, isolate: bool = False) -> Evaluation:
        """Evaluate one patient's facts at ``now``; raises EngineError instead of failing silently.

        ``isolate``: a rule's value or side function that raises leaves out only the rules that
        depend on that derivation (``Evaluation.failed`` names them); without it, it fails the
        evaluation (``RuleActionError``), as every other error does."""
        return self._thread.run(lambda: self._evaluate(pid, facts, now, isolate))

    def evaluate_many(
        self, batch: Sequence[tuple[str, Sequence[Fact]]], now: int, *, isolate: bool = False
    ) -> list[Evaluation]:
        """Several patients in one hop to the engine thread (replay throughput)."""
        return self._thread.run(lambda: [self._evaluate(pid, facts, now, isolate) for pid, facts in batch])

    def _run_batch(self, facts: list[Fact], sid: str, ctx: _Context) -> None:
        """Assert facts into the session and run actions to the fixed point, failing loudly.

        Facts no derivation reads are left out (``_durable_reads``); none left: nothing to run.
        """
        kinds, reads = self._durable_kinds, self._durable_reads
        facts = [f for f in facts if f["t"] in kinds or (f["t"], f.get("key")) in reads]
        if not facts:
            return
        code, state = dre.assert_facts(self._ruleset._handle, orjson.dumps(facts).decode())
        if code == 2:
            raise FactRejectedError("durable-rules reported a distinct fact as already observed")
        try:
            run_actions(self._ruleset._handle, state, self._shared.actions)
        except Exception as error:
            raise RuleActionError(f"durable-rules failed running actions: {error}") from error
        swallowed = self._ruleset.get_state(sid).get("exception")
        if swallowed:
            raise RuleActionError(f"a rule action failed inside durable-rules: {swallowed}")
        if ctx.errors:
            name, exc = ctx.errors[0]
            raise RuleActionError(f"rule {name} raised {type(exc).__name__}: {exc}") from exc

    def _no_item_text(self, spec: Spec) -> str:
        """The text of ``spec``'s total when no item was derived (worked out once per score)."""
        text = self._no_item_texts.get(spec.text)
        if text is None:  # the total of no item is the int 0 (``round(sum(()), 4)``)
            text = self._no_item_texts[spec.text] = f"{spec.text.format(v=0)} (no item recorded)"
        return text

    def _totals(self, ctx: _Context, pid: str, sid: str, counter: Iterator[int]) -> list[Fact]:
        """One derived fact per score: each labelled item counted once (its first derivation)."""
        totals: list[Fact] = []
        for spec in self.scores:
            found = ctx.items.get(f"{spec.key}_item")
            if not found:  # most scores of most patients: no item, the same total every time
                totals.append(
                    {
                        "t": "derived",
                        "key": spec.key,
                        "v": 0,
                        "pid": pid,
                        "id": next(counter),
                        "sid": sid,
                        "age": 0,
                        "side": "unknown",
                        "refs": "",
                        "text": self._no_item_text(spec),
                    }
                )
                continue
            items: dict[str, dict[str, Any]] = {}  # derived facts: ``v`` is the float _derive stored
            cited: dict[str, None] = {}  # every record behind every item, equal ones too (lineage)
            for item in found:
                items.setdefault(str(item["label"]), item)
                cited.update(ctx.lineage.refs(int(item["id"])))  # type: ignore[call-overload]  # ids are ints (next_id)
            total = round(sum(float(i["v"]) for i in items.values()), 4)
            parts = "; ".join(str(i["text"]) for i in items.values()) or "no item recorded"
            totals.append(
                {
                    "t": "derived",
                    "key": spec.key,
                    "v": total,
                    "pid": pid,
                    "id": next(counter),
                    "sid": sid,
                    "age": 0,
                    "side": "unknown",
                    "refs": " ".join(cited),
                    "text": f"{spec.text.format(v=total)} ({parts})",
                }
            )
        return totals

    def _evaluate(self, pid: str, facts: Sequence[Fact], now: int, isolate: bool = False) -> Evaluation:
        prepared = prepare(facts, now, self.censors)
        if prepared.censored:
            log.info(
                "results_ignored_after_treatment",
                count=len(prepared.censored),
                kinds=sorted({str(f.get("key")) for f in prepared.censored}),
            )
        if prepared.future:
            log.warning(
                "future_records_ignored",
                count=len(prepared.future),
                kinds=sorted({str(f.get("key")) for f in prepared.future}),
            )
        counter = itertools.count(1)
        sid = f"e{next(_sessions)}"
        asserted: list[Fact] = [{"t": SESSION, "pid": pid, "id": next(counter), "sid": sid}]
        readable: list[Fact] = []
        for fact in prepared.facts:
            if fact["t"] == "value" and fact.get("latest") == 0 and fact["key"] not in self._history_keys:
                continue  # an older result no condition can match (see _history_keys)
            if fact.get("pid") != pid:
                raise CrossTalkError("a fact of another patient was handed to this evaluation")
            readable.append(fact)
        asserted.extend({**fact, "id": next(counter), "sid": sid} for fact in distinct(readable))
        ctx = _Context(pid=pid, sid=sid, next_id=lambda: next(counter), titles=self.titles)
        ctx.lineage.add(asserted)
        self._context = ctx
        try:
            self._run_batch(asserted, sid, ctx)
            if self.scores:  # second stratum: totals over every item derived above
                totals = self._totals(ctx, pid, sid, counter)
                ctx.lineage.add(totals)
                self._run_batch(totals, sid, ctx)
        finally:
            self._context = None
            self._ruleset.delete_state(sid)
        by_kind: dict[tuple[object, object], list[Fact]] = {}
        for fact in ctx.lineage.facts.values():  # every fact of the session, derived ones too
            kind, key = fact.get("t"), fact.get("key")
            by_kind.setdefault((kind, key), []).append(fact)
            if key is not None:  # a condition without a key (patient()) reads any
                by_kind.setdefault((kind, None), []).append(fact)
        # only rules whose first condition has a fact can match; in their order (collect reads it)
        first = self._checked_by_first
        candidates = sorted({i for key in (None, *by_kind) for i in first.get(key, ())})
        for i in candidates:
            ctx.matches.extend(self._checked[i].matches(by_kind))
        alerts = collect(
            pid, now, ctx.matches, self.metas, self.titles, ctx.lineage, self.preliminary_supports
        )
        derived = sum(1 for fid in ctx.lineage.derivations if fid in ctx.lineage.facts)
        failed = self._failed(ctx, isolate)
        if failed:
            alerts = [a for a in alerts if a.rule not in failed]
        failures = tuple(f"{rule}: {why}" for rule, why in sorted(failed.items()))
        return Evaluation(
            pid, alerts, len(asserted) - 1, len(prepared.future), derived, ctx.actions, failures
        )

    def _failed(self, ctx: _Context, isolate: bool) -> dict[str, str]:
        """Rule -> why it is left out: it depends on a derivation whose calculation raised."""
        if ctx.failed and not isolate:
            spec, exc = ctx.failed[0]
            raise RuleActionError(f"rule {spec.name} raised {type(exc).__name__}: {exc}") from exc
        out: dict[str, str] = {}
        for spec, exc in ctx.failed:
            why = f"not evaluated: {spec.name} raised {type(exc).__name__}"
            log.warning("rule_calculation_failed", derivation=spec.name, error=type(exc).__name__)
            rules = {spec.rule, *self._dependents.get(spec.key, ())}
            for rule in sorted(rules & self.metas.keys() or rules):  # not "common" beside its readers
                out.setdefault(rule, why)
        return out


_sessions = itertools.count(1)
