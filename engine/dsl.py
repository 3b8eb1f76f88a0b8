"""The small language ruleset modules are written in, compiled to durable-rules.

A rule module reads like its section of the clinical reference::

    r.derive("ces_sphincter_or_saddle", new("saddle_anesthesia", within=p["window"]))
    r.fire("A", fact("ces_sphincter_or_saddle"), fact("ces_back_or_radicular"))
    r.block("A", procedure("spinal_decompression_done"), reason="decompression already done")

Every condition is a positive pattern over one flat fact; ``derive`` asserts an intermediate
fact that other rules join on (forward chaining); ``fire`` records a candidate alert at a tier;
``block`` records a reason that removes a tier. Negation is applied after the session has
reached its fixed point (stratified), because durable-rules' ``none()`` depends on the order
in which facts arrive.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from durable.lang import c, m

HOUR = 3600
DAY = 24 * HOUR
WEEK = 7 * DAY

Expr = Any  # a durable-rules expression object
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
class Cond:
    """One pattern: a fact kind and key plus constraints; ``phrase`` documents it (``rules --explain``)."""

    kind: str
    key: str | None
    tests: tuple[Callable[[Prior], Expr], ...]
    phrase: str

    def where(self, test: Callable[[Prior], Expr], phrase: str) -> Cond:
        """Add a constraint, possibly a join on an earlier condition's fact (``ref(prior, i)``)."""
        return replace(self, tests=(*self.tests, test), phrase=f"{self.phrase} {phrase}")

    def expr(self, prior: Prior) -> Expr:
        result = (m.t == self.kind) if self.key is None else (m.t == self.kind) & (m.key == self.key)
        for test in self.tests:
            result = result & test(prior)
        return result

    def _compare(self, op: Callable[[Any, Any], Any], symbol: str, threshold: float) -> Cond:
        return self.where(lambda _p: op(m.v, threshold), f"{symbol} {threshold:g}")

    def __lt__(self, threshold: float) -> Cond:  # type: ignore[override]
        return self._compare(operator.lt, "<", threshold)

    def __le__(self, threshold: float) -> Cond:  # type: ignore[override]
        return self._compare(operator.le, "≤", threshold)

    def __gt__(self, threshold: float) -> Cond:  # type: ignore[override]
        return self._compare(operator.gt, ">", threshold)

    def __ge__(self, threshold: float) -> Cond:  # type: ignore[override]
        return self._compare(operator.ge, "≥", threshold)


def ref(prior: Prior, index: int) -> Any:
    """The fact matched by an earlier condition of the same rule, for join constraints."""
    return getattr(c, prior[index])


def _within(seconds: float | None) -> tuple[Callable[[Prior], Expr], ...]:
    return () if seconds is None else (lambda _p: m.age <= seconds,)


def present(key: str, within: float | None = None) -> Cond:
    """present(K, Δ): a current, qualifying record saying the finding is there, in the window."""
    tests = (lambda _p: m.state == "present", lambda _p: m.cur == 1, *_within(within))
    span = f" within {_fmt_window(within)}" if within is not None else ""
    return Cond("finding", key, tests, f"{key.replace('_', ' ')} present{span}")


def new(key: str, within: float) -> Cond:
    """new(K, Δ): present in the window and the earliest onset of K also in the window."""
    base = present(key, within)
    return replace(
        base,
        tests=(*base.tests, lambda _p: m.first_onset_age <= within),
        phrase=f"new {key.replace('_', ' ')} (first onset within {_fmt_window(within)})",
    )


def absent(key: str, within: float | None = None) -> Cond:
    """explicitly_absent(K, Δ): a record in the window says it was looked for and not found."""
    span = f" within {_fmt_window(within)}" if within is not None else ""
    return Cond(
        "finding", key, (lambda _p: m.state == "absent", *_within(within)), f"{key} explicitly absent{span}"
    )


def ever(key: str) -> Cond:
    """Any qualifying record, current or not (for history such as cancer or previous DVT)."""
    return Cond("finding", key, (lambda _p: m.state == "present",), f"{key.replace('_', ' ')} ever recorded")


def latest(key: str, within: float | None = None) -> Cond:
    """latest(K, Δ): the newest qualifying numeric result, if it lies in the window."""
    span = f" within {_fmt_window(within)}" if within is not None else ""
    return Cond(
        "value", key, (lambda _p: m.latest == 1, *_within(within)), f"latest {key.replace('_', ' ')}{span}"
    )


def result(key: str, within: float | None = None) -> Cond:
    """Any qualifying numeric result in the window (for trends such as progression)."""
    span = f" within {_fmt_window(within)}" if within is not None else ""
    return Cond("value", key, _within(within), f"any {key.replace('_', ' ')} result{span}")


def fact(key: str, within: float | None = None) -> Cond:
    """An intermediate fact asserted by another rule (forward chaining)."""
    span = f" within {_fmt_window(within)}" if within is not None else ""
    return Cond("derived", key, _within(within), f"[{key}]{span}")


def procedure(key: str) -> Cond:
    return Cond("procedure", key, (), f"{key.replace('_', ' ')} performed")


def medication(key: str) -> Cond:
    return Cond("medication", key, (lambda _p: m.active == 1,), f"{key.replace('_', ' ')} active")


def patient() -> Cond:
    return Cond("patient", None, (), "patient")


@dataclass(frozen=True, slots=True)
class Spec:
    """One compiled rule: conditions plus what it does when they all match."""

    rule: str  # owning ruleset id (or "common")
    name: str  # stable identity, e.g. "cauda_equina_syndrome.fire.A.0"
    does: str  # "derive" | "fire" | "block"
    conds: tuple[Cond, ...]
    key: str = ""  # derive: derived key
    tiers: tuple[str, ...] = ()  # fire/block: tiers concerned
    reason: str = ""  # block
    value: Callable[[list[dict]], float] | None = None  # derive: computed value
    side: Callable[[list[dict]], str] | None = None  # derive: computed side
    text: str = ""  # derive: how the derived fact reads in a rationale ("" = its sources)


@dataclass(slots=True)
class Rules:
    """Collects one module's specs; the engine compiles all modules into one durable ruleset."""

    rule: str
    tiers: tuple[str, ...] = ()
    specs: list[Spec] = field(default_factory=list)

    def _name(self, does: str, label: str) -> str:
        n = sum(1 for s in self.specs if s.does == does and (s.key == label or label in s.tiers))
        return f"{self.rule}.{does}.{label}.{n}"

    def derive(
        self,
        key: str,
        *conds: Cond,
        value: Callable[[list[dict]], float] | None = None,
        side: Callable[[list[dict]], str] | None = None,
        text: str = "",
    ) -> None:
        self.specs.append(
            Spec(
                self.rule,
                self._name("derive", key),
                "derive",
                conds,
                key=key,
                value=value,
                side=side,
                text=text,
            )
        )

    def fire(self, tier: str, *conds: Cond) -> None:
        if self.tiers and tier not in self.tiers:
            raise ValueError(f"{self.rule}: unknown tier {tier!r}")
        self.specs.append(Spec(self.rule, self._name("fire", tier), "fire", conds, tiers=(tier,)))

    def block(self, tiers: str | Sequence[str], *conds: Cond, reason: str) -> None:
        names = (tiers,) if isinstance(tiers, str) else tuple(tiers)
        for tier in names:
            if self.tiers and tier not in self.tiers:
                raise ValueError(f"{self.rule}: unknown tier {tier!r}")
        self.specs.append(
            Spec(self.rule, self._name("block", names[0]), "block", conds, tiers=names, reason=reason)
        )
