"""The plain rule language ruleset modules are written in, compiled to durable-rules.

A rule module reads like its page in docs/rules/::

    r.derive("ces_sphincter_or_saddle", new("saddle_anesthesia", within=p["window"]))
    r.fire("A", fact("ces_sphincter_or_saddle"), fact("ces_back_or_radicular"))
    r.block("A", procedure("spinal_decompression_done"), reason="decompression already done")
    r.fire("B", present("dvt_dx", window), unless(medication("anticoagulant_active")))
    r.derive("resp_fvc_fall", result("fvc").named("earlier"),
             latest("fvc").where(m.ts > ref("earlier").ts, "taken after it"))

- A condition matches one flat fact (``present``, ``new``, ``absent``, ``ever``, ``latest``,
  ``result``, ``fact``, ``procedure``, ``medication``, ``patient``); ``.where(test, phrase)``
  adds a test, written once as an expression over ``m`` (this fact) and ``ref("name")`` (the
  fact of an earlier condition, named with ``.named`` or called by its key; the patient's is
  ``ref("patient")``), with the phrase the rationale and ``rules --explain`` read beside it (or
  spelled out from the test). ``.on("left", ...)`` is the side test; ``cond >= 3`` compares
  ``v``. Arithmetic is written as read (``m.v - m.high``); presence is ``m.x.exists()``,
  ``m.x.missing()``, ``has_number(m.v)``; ``m.x.one_of(a, b)`` is an "or" of equalities.
- ``derive`` asserts an intermediate fact other rules read (forward chaining); ``fire`` records
  a candidate alert at a tier; ``block`` removes a tier; ``note`` adds a card line;
  ``score_item``/``score`` sum an additive score.
- ``unless(a, b, text=...)`` holds when no fact matches ``a`` or ``b``: decided after the
  session's first fixed point (stratified, see ``Unless``), because durable-rules' ``none()``
  depends on the order in which facts arrive.
- Checked when the engine is built (``check_program``): a ``fact("k")`` no rule derives, a
  reference to no earlier condition, a score or ``unless`` reading a score total.

Compiled shape (what the engine, and a plain evaluator of the rules, read): a ``Spec`` per rule
with ``conds``; each ``Cond`` has ``kind``, ``key`` (None: any key) and ``tests``, each a
``Test`` whose ``node`` is an ``engine.expr.Node`` tree over ``Attr(index, name)`` (index None:
this fact; else the position of an earlier condition), ``Const``, ``Binary`` (comparisons,
``& | + - * /``), ``Exists``/``Number``. ``Cond.compile`` splits a condition into the durable
expression of its single-fact tests (``m.t == kind & m.key == key & ...``, "or" groups last)
and the nodes checked in Python (those reading another condition, or that durable cannot
express, e.g. arithmetic left of a comparison). An ``unless`` is ordinary specs: per
alternative a ``derive`` of ``<rule>.unless.<n>_item`` (``label == UNLESS``), a ``score`` of
``<rule>.unless.<n>`` (its ``text`` how the absence reads) and, in the rule, the condition
``fact("<rule>.unless.<n>")`` with the test ``m.v < 1``.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from engine.errors import RuleDefinitionError
from engine.expr import AMBIGUOUS, Node, RuleReferenceError, has_number, m, ref
from engine.vocabulary import Code

HOUR = 3600
DAY = 24 * HOUR
WEEK = 7 * DAY

Expr = Any  # a durable-rules expression object

__all__ = [
    "DAY",
    "HOUR",
    "WEEK",
    "Cond",
    "Node",
    "Rules",
    "Spec",
    "Test",
    "Unless",
    "has_number",
    "m",
    "ref",
    "unless",
]
Prior = Sequence[str]  # aliases of the conditions before this one, in order


def _fmt_window(seconds: float) -> str:
    if seconds % WEEK == 0 and seconds >= 2 * WEEK:
        return f"{int(seconds // WEEK)} weeks"
    if seconds % DAY == 0:
        days = int(seconds // DAY)
        return f"{days} day" if days == 1 else f"{days} days"
    hours = seconds / HOUR
    return f"{hours:g} h"


@dataclass(frozen=True, slots=True)
class Test:
    """One test of a condition as compiled: called with the aliases of the conditions before it
    (the shape the engine reads), it returns its expression, whose references are positions."""

    node: Node

    def __call__(self, _prior: Prior) -> Node:
        return self.node


@dataclass(frozen=True, slots=True)
class Cond:
    """One pattern: a fact kind and key plus constraints; ``phrase`` documents it (``rules --explain``)."""

    kind: str
    key: str | None
    #: each test as compiled (``Test``)
    tests: tuple[Test, ...]
    phrase: str
    #: matches only the newest result of its key (``latest``): older results need not be asserted
    latest_only: bool = False
    #: how far back (seconds) a record can still match, when the condition has a window
    window: float | None = None
    #: what a later condition of the rule calls this one's fact (``ref(name)``); default its key
    name: str | None = None

    def __post_init__(self) -> None:
        for test in self.tests:
            if not isinstance(test, Test):
                raise TypeError(f"{self.phrase}: write tests as Test(expression) or with .where()")

    def where(self, test: Node, phrase: str | None = None) -> Cond:
        """Add a test on this fact, or against an earlier condition's (``ref("name").x``).

        ``phrase`` says it in words for the rationale and ``rules --explain``; without one the
        test is spelled out (``side = left``)."""
        if not isinstance(test, Node):
            raise TypeError(
                f"{self.phrase}: write tests with m and ref from engine.dsl, not {type(test).__name__}"
            )
        return replace(self, tests=(*self.tests, Test(test)), phrase=f"{self.phrase} {phrase or test.text()}")

    def named(self, name: str) -> Cond:
        """Call this condition's fact ``name`` in the tests of later conditions (``ref(name)``)."""
        return replace(self, name=name)

    def on(self, *sides: str) -> Cond:
        """Recorded on one of ``sides`` (``left``, ``right``, ``bilateral``, ``unknown``)."""
        test = m.side.one_of(*sides)
        words = "on both sides" if sides == ("bilateral",) else f"on the {' or '.join(sides)}"
        return self.where(test, words)

    def resolved(self, names: dict[str, int], here: int) -> Cond:
        """This condition with its named references made positions (at rule definition)."""
        tests = tuple(Test(test([]).resolve(names, here)) for test in self.tests)
        return replace(self, tests=tests)

    def compile(self, prior: Prior) -> tuple[Expr, tuple[Node, ...]]:
        """The durable expression of the single-fact tests, and the cross-fact tests to check
        in Python (durable-rules crashes on failing cross-fact joins, see ``engine.expr``)."""
        result = (m.t == self.kind) if self.key is None else (m.t == self.kind) & (m.key == self.key)
        checks: list[Node] = []
        local: list[Node] = []
        for test in self.tests:
            node = test(prior)
            if not isinstance(node, Node):
                raise TypeError(f"{self.phrase}: write tests with m and ref from engine.dsl")
            for part in node.conjuncts():
                (checks if part.refs() or not part.compiles() else local).append(part)
        # durable-rules stops evaluating a condition's tests at the end of an "or" group, so
        # such groups go last (measured with valgrind on a debug build; see engine.expr).
        for node in sorted(local, key=lambda n: n.is_or()):
            result = result & node
        return result.durable(), tuple(checks)

    def begun(self, above: float | None = None, up_to: float | None = None, *, on_side: bool = False) -> Cond:
        """Earliest onset of the finding more than ``above`` and at most ``up_to`` seconds ago.

        ``on_side``: the earliest onset of the finding on this record's side (engine.prepare
        ``side_onset_age``), so a deficit on one side is new beside an old one on the other."""
        field = m.side_onset_age if on_side else m.first_onset_age
        where = " on that side" if on_side else ""
        cond = self
        if above is not None:
            cond = cond.where(field > above, f"begun{where} more than {_fmt_window(above)} ago")
        if up_to is not None and up_to != float("inf"):
            cond = cond.where(field <= up_to, f"begun{where} within {_fmt_window(up_to)}")
        return cond

    def first_since(self, start_age: Node, phrase: str) -> Cond:
        """The first result of its series taken at or after a point ``start_age`` seconds ago.

        ``start_age`` usually reads an earlier condition (``ref("gbs_dx").first_onset_age`` = the
        episode began with that finding): taken since then, and the previous result of its series
        (engine.prepare ``prev_age``) before then. A positive test, no negation.
        """
        return self.where((m.age <= start_age) & (m.prev_age > start_age), phrase)

    def _compare(self, op: Callable[[Any, Any], Any], symbol: str, threshold: float) -> Cond:
        return self.where(op(m.v, threshold), f"{symbol} {threshold:g}")

    def __lt__(self, threshold: float) -> Cond:
        return self._compare(operator.lt, "<", threshold)

    def __le__(self, threshold: float) -> Cond:
        return self._compare(operator.le, "≤", threshold)

    def __gt__(self, threshold: float) -> Cond:
        return self._compare(operator.gt, ">", threshold)

    def __ge__(self, threshold: float) -> Cond:
        return self._compare(operator.ge, "≥", threshold)


def _within(seconds: float | None) -> tuple[Test, ...]:
    return () if seconds is None else (Test(m.age <= seconds),)


def present(key: str, within: float | None = None) -> Cond:
    """present(K, Δ): a current, qualifying record saying the finding is there, in the window."""
    tests = (Test(m.state == "present"), Test(m.cur == 1), *_within(within))
    span = f" within {_fmt_window(within)}" if within is not None else ""
    return Cond("finding", key, tests, f"{key.replace('_', ' ')} present{span}", window=within)


def new(key: str, within: float, *, on_side: bool = False) -> Cond:
    """new(K, Δ): present in the window and the earliest onset of K also in the window.

    ``on_side``: the earliest onset of K on this record's side (``side_onset_age``): a deficit
    on a side with no earlier record is new beside an old one on the other side (3.3)."""
    base = present(key, within)
    field = m.side_onset_age if on_side else m.first_onset_age
    where = " on that side" if on_side else ""
    return replace(
        base,
        tests=(*base.tests, Test(field <= within)),
        phrase=f"new {key.replace('_', ' ')} (first onset{where} within {_fmt_window(within)})",
    )


def absent(key: str, within: float | None = None) -> Cond:
    """explicitly_absent(K, Δ): a record in the window says it was looked for and not found."""
    span = f" within {_fmt_window(within)}" if within is not None else ""
    tests = (Test(m.state == "absent"), *_within(within))
    return Cond("finding", key, tests, f"{key} explicitly absent{span}", window=within)


def ever(key: str) -> Cond:
    """Any qualifying record, current or not (for history such as cancer or previous DVT)."""
    return Cond("finding", key, (Test(m.state == "present"),), f"{key.replace('_', ' ')} ever recorded")


def latest(key: str, within: float | None = None) -> Cond:
    """latest(K, Δ): the newest qualifying numeric result, if it lies in the window."""
    span = f" within {_fmt_window(within)}" if within is not None else ""
    return Cond(
        "value",
        key,
        (Test(m.latest == 1), *_within(within)),
        f"latest {key.replace('_', ' ')}{span}",
        latest_only=True,
        window=within,
    )


def result(key: str, within: float | None = None) -> Cond:
    """Any qualifying numeric result in the window (for trends such as progression)."""
    span = f" within {_fmt_window(within)}" if within is not None else ""
    return Cond("value", key, _within(within), f"any {key.replace('_', ' ')} result{span}", window=within)


def fact(key: str, within: float | None = None) -> Cond:
    """An intermediate fact asserted by another rule (forward chaining)."""
    span = f" within {_fmt_window(within)}" if within is not None else ""
    return Cond("derived", key, _within(within), f"[{key}]{span}", window=within)


def procedure(key: str) -> Cond:
    return Cond("procedure", key, (), f"{key.replace('_', ' ')} performed")


def medication(key: str) -> Cond:
    return Cond("medication", key, (Test(m.active == 1),), f"{key.replace('_', ' ')} active")


def patient() -> Cond:
    return Cond("patient", None, (), "patient", name="patient")


@dataclass(frozen=True, slots=True, eq=False)
class Unless:
    """``unless(a, b)``: no fact matches ``a`` or ``b`` once every positive fact is derived.

    Stratified like the scores: the matches of the conditions are counted as items of a hidden
    score, summed after the session's first fixed point, and the rule reads "that count is 0"
    (a derived fact whose text is ``text``), so the outcome never depends on the order facts
    arrive (durable's own ``none()`` does). A condition may read no other condition of the rule,
    and no score or ``unless`` total (checked when the engine is built, ``check_program``)."""

    #: each alternative: one condition, or conditions matched together (a joined pattern)
    conds: tuple[Cond | tuple[Cond, ...], ...]
    text: str

    @property
    def phrase(self) -> str:
        words = (
            "(" + " with ".join(c.phrase for c in alt) + ")" if isinstance(alt, tuple) else alt.phrase
            for alt in self.conds
        )
        return f"no {' or '.join(words)}"


def unless(*conds: Cond | tuple[Cond, ...], text: str | None = None) -> Unless:
    """A condition that holds when no fact matches any of ``conds`` (see ``Unless``); a tuple
    of conditions is one alternative matched together, its tests may join (``ref``) inside it.

    ``text`` is how the absence reads in a derived fact or a rationale ("LKW not recorded");
    by default the phrase "no ..." of the conditions."""
    if not conds:
        raise TypeError("unless() needs at least one condition")
    made = Unless(conds, "")
    return Unless(conds, text or made.phrase)


#: ``Spec.label`` of the hidden score behind an ``unless``: its total reads as the absence.
UNLESS = "unless"


@dataclass(frozen=True, slots=True)
class Spec:
    """One compiled rule: conditions plus what it does when they all match."""

    rule: str  # owning ruleset id (or "common")
    name: str  # stable identity, e.g. "cauda_equina_syndrome.fire.A.0"
    does: str  # "derive" | "fire" | "block" | "note" | "score"
    conds: tuple[Cond, ...]
    key: str = ""  # derive: derived key
    tiers: tuple[str, ...] = ()  # fire/block: tiers concerned
    reason: str = ""  # block
    value: Callable[[list[dict[str, Any]]], float] | None = None  # derive: computed value
    side: Callable[[list[dict[str, Any]]], str] | None = None  # derive: computed side
    text: str = ""  # derive/note/score: how the fact or note reads ("" = its sources)
    disorder: Code | None = None  # fire: the disorder this branch suggests (else the rule's)
    label: str = ""  # score item: the item counted once per score
    after: str = ""  # censor: the medication key whose start ends the valid results of ``key``


@dataclass(slots=True)
class Rules:
    """Collects one module's specs; the engine compiles all modules into one durable ruleset."""

    rule: str
    tiers: tuple[str, ...] = ()
    specs: list[Spec] = field(default_factory=list)
    #: each ``unless`` used, with the key of its hidden score (one score per Unless object)
    negations: list[tuple[Unless, str]] = field(default_factory=list)

    def _name(self, does: str, label: str) -> str:
        n = sum(1 for s in self.specs if s.does == does and (s.key == label or label in s.tiers))
        return f"{self.rule}.{does}.{label}.{n}"

    def _conds(self, conds: Sequence[Cond | Unless]) -> tuple[Cond, ...]:
        """The rule's conditions as compiled: ``unless`` made a positive test on its hidden
        score, named references (``ref("name")``) made positions; a reference to no earlier
        condition is a ``RuleDefinitionError`` naming the rule."""
        plain = [self._negation(c) if isinstance(c, Unless) else c for c in conds]
        names: dict[str, int] = {}
        out: list[Cond] = []
        for i, cond in enumerate(plain):
            try:
                out.append(cond.resolved(names, i))
            except RuleReferenceError as exc:
                raise RuleDefinitionError(f"{self.rule}: {cond.phrase}: {exc}") from None
            name = cond.name or cond.key
            if name:
                names[name] = AMBIGUOUS if name in names and not cond.name else i
        return tuple(out)

    def _negation(self, negation: Unless) -> Cond:
        key = next((k for u, k in self.negations if u is negation), None)
        if key is None:
            key = f"{self.rule}.unless.{len(self.negations)}"
            self.negations.append((negation, key))
            item = f"{key}_item"
            for alt in negation.conds:
                self.specs.append(
                    Spec(
                        self.rule,
                        self._name("derive", item),
                        "derive",
                        self._conds(alt if isinstance(alt, tuple) else (alt,)),
                        key=item,
                        value=lambda _f: 1,
                        label=UNLESS,
                    )
                )
            self.specs.append(
                Spec(
                    self.rule,
                    f"{self.rule}.score.{key}",
                    "score",
                    (),
                    key=key,
                    text=negation.text,
                    label=UNLESS,
                )
            )
        return Cond("derived", key, (Test(m.v < 1),), negation.phrase)

    def derive(
        self,
        key: str,
        *conds: Cond | Unless,
        value: Callable[[list[dict[str, Any]]], float] | None = None,
        side: Callable[[list[dict[str, Any]]], str] | None = None,
        text: str = "",
    ) -> None:
        self.specs.append(
            Spec(
                self.rule,
                self._name("derive", key),
                "derive",
                self._conds(conds),
                key=key,
                value=value,
                side=side,
                text=text,
            )
        )

    def fire(self, tier: str, *conds: Cond | Unless, disorder: Code | None = None) -> None:
        """Record a candidate alert; ``disorder`` names the suspected disorder of this branch."""
        self._check((tier,))
        compiled = self._conds(conds)
        self.specs.append(
            Spec(self.rule, self._name("fire", tier), "fire", compiled, tiers=(tier,), disorder=disorder)
        )

    def note(self, tiers: str | Sequence[str], *conds: Cond | Unless, text: str) -> None:
        """A line for the card when the rule fires at one of ``tiers``; it never changes the tier.

        ``{facts}`` in ``text`` is replaced by the matched facts as they read in a rationale.
        """
        names = (tiers,) if isinstance(tiers, str) else tuple(tiers)
        self._check(names)
        compiled = self._conds(conds)
        self.specs.append(
            Spec(self.rule, self._name("note", names[0]), "note", compiled, tiers=names, text=text)
        )

    def score_item(self, score: str, points: float, *conds: Cond | Unless, label: str) -> None:
        """One item of an additive score (Wells): counted once, whichever rule derives it."""
        compiled = self._conds(conds)
        self.specs.append(
            Spec(
                self.rule,
                self._name("derive", f"{score}_item"),
                "derive",
                compiled,
                key=f"{score}_item",
                value=lambda _f: points,
                text=f"{label} {points:+g}",
                label=label,
            )
        )

    def ignore_results_after(self, key: str, medication: str, text: str = "") -> None:
        """Results of ``key`` taken after ``medication`` began are no results (dropped before
        "latest" is computed, engine.prepare): a treated value does not show the untreated state.
        """
        self.specs.append(
            Spec(self.rule, f"{self.rule}.censor.{key}", "censor", (), key=key, after=medication, text=text)
        )

    def score(self, score: str, text: str) -> None:
        """Sum the items of ``score`` once every positive fact is derived (missing items count 0).

        Asserted as the derived fact ``score`` (value = the total) in a second stratum, so the
        total never depends on the order in which items were derived. ``text`` may use ``{v}``.
        """
        self.specs.append(Spec(self.rule, f"{self.rule}.score.{score}", "score", (), key=score, text=text))

    def _check(self, tiers: Sequence[str]) -> None:
        for tier in tiers:
            if self.tiers and tier not in self.tiers:
                raise ValueError(f"{self.rule}: unknown tier {tier!r}")

    def block(self, tiers: str | Sequence[str], *conds: Cond | Unless, reason: str) -> None:
        names = (tiers,) if isinstance(tiers, str) else tuple(tiers)
        self._check(names)
        compiled = self._conds(conds)
        self.specs.append(
            Spec(self.rule, self._name("block", names[0]), "block", compiled, tiers=names, reason=reason)
        )


def check_program(specs: Sequence[Spec]) -> None:
    """Refuse, when the engine is built, a program that would silently never fire or depend on
    fact order: a ``fact(k)`` that no rule derives (a misspelt key is a rule that never fires),
    and a score or ``unless`` whose items read a score total (totals are summed once, after the
    first fixed point: an item derived from a total would be missed)."""
    derived = {s.key for s in specs if s.does in ("derive", "score")}
    for spec in specs:
        for cond in spec.conds:
            if cond.kind == "derived" and cond.key not in derived:
                raise RuleDefinitionError(f"{spec.name}: fact({cond.key!r}) is derived by no rule")
    reads: dict[str, set[str]] = {}
    for spec in specs:
        if spec.does == "derive":
            found = reads.setdefault(spec.key, set())
            found.update(str(c.key) for c in spec.conds if c.kind == "derived")
    totals = {s.key for s in specs if s.does == "score"}
    for total in sorted(totals):
        seen: set[str] = set()
        todo = [f"{total}_item"]
        while todo:
            key = todo.pop()
            for read in reads.get(key, ()):
                if read in totals:
                    raise RuleDefinitionError(
                        f"{total}: an item reads the total {read!r}, summed only after the items"
                    )
                if read not in seen:
                    seen.add(read)
                    todo.append(read)
