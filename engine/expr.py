"""Rule expressions that durable-rules evaluates on one fact, and Python evaluates across facts.

A rule module writes a test once, as an expression: ``m`` is the fact of this condition,
``ref("name")`` the fact matched by an earlier condition of the same rule (named with
``Cond.named``, or called by its key), resolved to its position when the rule is defined
(``Node.resolve``). A test that mentions no other fact compiles to a durable expression (indexed
in the rete network); a test that does is checked in Python over the facts durable paired
(``Node.holds``): durable-rules evaluated failing cross-fact joins unsafely before redflags'
build fixed it (docs/engine.md#cross-fact-joins), and the Python check is also what a plain
evaluator of the compiled rules reads.

Arithmetic is written as read (``m.v - m.high``, ``ref("k").ts + gap``). A missing property
never satisfies a comparison (as in durable). Presence is one test: ``m.x.exists()``,
``m.x.missing()``, and ``has_number(m.v)`` for "carries a number" (facts are flat and typed, so a
present ``v`` is a number); unary ``-``/``+`` are refused (``-m.years`` read as "minus years").
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from durable.lang import m as durable_m

_MISSING = object()


class Node:
    """An expression tree node; operators build bigger trees, as with durable's ``m``."""

    def refs(self) -> set[int]:
        """Indexes of the other conditions' facts this expression reads."""
        raise NotImplementedError

    def durable(self) -> Any:
        raise NotImplementedError

    def attrs(self) -> set[tuple[int | None, str]]:
        """(condition index or None for this fact, property) of every property the test reads."""
        raise NotImplementedError

    def value(self, facts: Sequence[dict[str, Any]], own: int) -> Any:
        raise NotImplementedError

    def holds(self, facts: Sequence[dict[str, Any]], own: int) -> bool:
        return self.value(facts, own) is True

    def conjuncts(self) -> list[Node]:
        """The operands of a nested ``a & (b & c)``, in order (itself if not an "and")."""
        return [self]

    def is_or(self) -> bool:
        return False

    # comparisons and arithmetic build nodes (like durable's m); == builds a node too
    def __eq__(self, other: object) -> Node:  # type: ignore[override]  # the DSL: == builds a test
        return Binary("==", self, _node(other))

    def __ne__(self, other: object) -> Node:  # type: ignore[override]  # the DSL: != builds a test
        return Binary("!=", self, _node(other))

    def __lt__(self, other: object) -> Node:
        return Binary("<", self, _node(other))

    def __le__(self, other: object) -> Node:
        return Binary("<=", self, _node(other))

    def __gt__(self, other: object) -> Node:
        return Binary(">", self, _node(other))

    def __ge__(self, other: object) -> Node:
        return Binary(">=", self, _node(other))

    def __add__(self, other: object) -> Node:
        return Binary("+", self, _node(other))

    def __radd__(self, other: object) -> Node:
        return Binary("+", _node(other), self)

    def __sub__(self, other: object) -> Node:
        return Binary("-", self, _node(other))

    def __rsub__(self, other: object) -> Node:
        return Binary("-", _node(other), self)

    def __mul__(self, other: object) -> Node:
        return Binary("*", self, _node(other))

    def __rmul__(self, other: object) -> Node:
        return Binary("*", _node(other), self)

    def __truediv__(self, other: object) -> Node:
        return Binary("/", self, _node(other))

    def __and__(self, other: object) -> Node:
        return Binary("&", self, _node(other))

    def __or__(self, other: object) -> Node:
        return Binary("|", self, _node(other))

    def __neg__(self) -> Node:
        raise TypeError("unary minus on a rule expression: write 0 - x, or x.missing() for absence")

    def __pos__(self) -> Node:
        raise TypeError("unary plus on a rule expression: write x.exists() for presence")

    def resolve(self, names: Mapping[str, int], here: int) -> Node:
        """This test with named references (``ref("name")``) replaced by condition positions;
        ``here`` is the position of the condition the test belongs to (a reference must be earlier)."""
        return self

    def text(self) -> str:
        """The test in words, for a phrase not written beside it."""
        raise NotImplementedError

    def compiles(self) -> bool:
        """durable-rules can evaluate this single-fact test (it compares a property with a value
        or with arithmetic; ``m.v - m.high > 10`` it cannot, so that one is checked in Python)."""
        return True

    __hash__ = None  # type: ignore[assignment]  # == is the DSL's: unhashable on purpose


def _node(value: object) -> Node:
    return value if isinstance(value, Node) else Const(value)


class Const(Node):
    def __init__(self, constant: object) -> None:
        self.constant = constant

    def refs(self) -> set[int]:
        return set()

    def attrs(self) -> set[tuple[int | None, str]]:
        return set()

    def durable(self) -> Any:
        return self.constant

    def value(self, facts: Sequence[dict[str, Any]], own: int) -> Any:
        return self.constant

    def text(self) -> str:
        return f"{self.constant:g}" if isinstance(self.constant, float) else str(self.constant)


class Attr(Node):
    """A property of this condition's fact (``index`` None) or of an earlier condition's fact."""

    def __init__(self, index: int | None, name: str) -> None:
        self.index, self.name = index, name

    def refs(self) -> set[int]:
        return set() if self.index is None else {self.index}

    def attrs(self) -> set[tuple[int | None, str]]:
        return {(self.index, self.name)}

    def durable(self) -> Any:
        if self.index is not None:  # cannot happen: tests with refs are checked in Python
            raise TypeError("a cross-fact test cannot compile to durable-rules")
        return getattr(durable_m, self.name)

    def value(self, facts: Sequence[dict[str, Any]], own: int) -> Any:
        return facts[own if self.index is None else self.index].get(self.name, _MISSING)

    def resolve(self, names: Mapping[str, int], here: int) -> Node:
        if self.index is not None and not 0 <= self.index < here:
            raise RuleReferenceError(f"condition {self.index} is not before this one")
        return self

    def text(self) -> str:
        return self.name if self.index is None else f"[{self.index}].{self.name}"

    def one_of(self, *values: object) -> Node:
        """Equal to one of ``values`` (an "or" of equalities)."""
        test: Node = self == values[0]
        for value in values[1:]:
            test = test | (self == value)
        return test

    def exists(self) -> Node:
        """The property is present (any value)."""
        return Exists(self, present=True)

    def missing(self) -> Node:
        """The property is absent."""
        return Exists(self, present=False)


class Named(Node):
    """A property of the fact of an earlier condition called by name; ``resolve`` makes it an
    ``Attr`` (a named reference is never compiled or evaluated as such)."""

    def __init__(self, target: str, name: str) -> None:
        self.target, self.name = target, name

    def refs(self) -> set[int]:
        raise RuleReferenceError(f"ref({self.target!r}) was not resolved: define the test in a rule")

    def attrs(self) -> set[tuple[int | None, str]]:
        return self.refs()  # type: ignore[return-value]  # raises

    def durable(self) -> Any:
        return self.refs()

    def value(self, facts: Sequence[dict[str, Any]], own: int) -> Any:
        return self.refs()

    def resolve(self, names: Mapping[str, int], here: int) -> Node:
        if self.target not in names:
            known = ", ".join(sorted(names)) or "none"
            raise RuleReferenceError(f"ref({self.target!r}) names no earlier condition (earlier: {known})")
        if names[self.target] == AMBIGUOUS:
            raise RuleReferenceError(f"ref({self.target!r}) is ambiguous: name the condition (.named)")
        return Attr(names[self.target], self.name)

    def text(self) -> str:
        return f"{self.target}.{self.name}"


#: a name two earlier unnamed conditions share (their key): ``ref`` of it must use ``named``
AMBIGUOUS = -1


class RuleReferenceError(ValueError):
    """A test refers to a condition that is not an earlier one of its rule."""


class Exists(Node):
    def __init__(self, attr: Node, present: bool) -> None:
        self.attr, self.present = attr, present

    def refs(self) -> set[int]:
        return self.attr.refs()

    def attrs(self) -> set[tuple[int | None, str]]:
        return self.attr.attrs()

    def durable(self) -> Any:
        compiled = self.attr.durable()
        return +compiled if self.present else -compiled

    def value(self, facts: Sequence[dict[str, Any]], own: int) -> Any:
        return (self.attr.value(facts, own) is not _MISSING) is self.present

    def resolve(self, names: Mapping[str, int], here: int) -> Node:
        return type(self)(self.attr.resolve(names, here), self.present)

    def text(self) -> str:
        return f"{self.attr.text()} {'present' if self.present else 'missing'}"


class Number(Exists):
    """The property holds a number. Facts are flat and typed (a ``v`` is a number or absent),
    so durable's presence test is exact; Python checks the type as well."""

    def __init__(self, attr: Node, present: bool = True) -> None:
        super().__init__(attr, present=True)

    def value(self, facts: Sequence[dict[str, Any]], own: int) -> Any:
        got = self.attr.value(facts, own)
        return isinstance(got, int | float) and not isinstance(got, bool)

    def text(self) -> str:
        return f"{self.attr.text()} is a number"


def has_number(attr: Node) -> Node:
    """``has_number(m.v)``: the fact carries a number (a value fact may hold only a flag)."""
    return Number(attr)


_COMPARE: dict[str, Callable[[Any, Any], Any]] = {
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}
_ARITHMETIC: dict[str, Callable[[Any, Any], Any]] = {
    "+": operator.add,
    "-": operator.sub,
    "*": operator.mul,
    "/": operator.truediv,
}
_DURABLE: dict[str, Callable[[Any, Any], Any]] = {
    **_COMPARE,
    **_ARITHMETIC,
    "&": operator.and_,
    "|": operator.or_,
}


_WORDS = {"==": "=", "<=": "≤", ">=": "≥", "&": "and", "|": "or"}


class Binary(Node):
    def __init__(self, op: str, left: Node, right: Node) -> None:
        self.op, self.left, self.right = op, left, right

    def refs(self) -> set[int]:
        return self.left.refs() | self.right.refs()

    def attrs(self) -> set[tuple[int | None, str]]:
        return self.left.attrs() | self.right.attrs()

    def conjuncts(self) -> list[Node]:
        return [*self.left.conjuncts(), *self.right.conjuncts()] if self.op == "&" else [self]

    def is_or(self) -> bool:
        return self.op == "|"

    def durable(self) -> Any:
        return _DURABLE[self.op](self.left.durable(), self.right.durable())

    def resolve(self, names: Mapping[str, int], here: int) -> Node:
        return Binary(self.op, self.left.resolve(names, here), self.right.resolve(names, here))

    def text(self) -> str:
        group = ("&", "|") if self.op in ("&", "|") else tuple(_ARITHMETIC) if self.op in _ARITHMETIC else ()
        parts = [
            f"({side.text()})"
            if isinstance(side, Binary) and side.op in group and side.op != self.op
            else side.text()
            for side in (self.left, self.right)
        ]
        return f"{parts[0]} {_WORDS.get(self.op, self.op)} {parts[1]}"

    def compiles(self) -> bool:
        if self.op in _COMPARE:  # durable compares a property with a value or an expression
            return isinstance(self.left, Attr) and self.right.compiles()
        return self.left.compiles() and self.right.compiles()

    def value(self, facts: Sequence[dict[str, Any]], own: int) -> Any:
        if self.op == "&":
            return self.left.holds(facts, own) and self.right.holds(facts, own)
        if self.op == "|":
            return self.left.holds(facts, own) or self.right.holds(facts, own)
        left, right = self.left.value(facts, own), self.right.value(facts, own)
        if left is _MISSING or right is _MISSING:
            return False if self.op in _COMPARE else _MISSING
        if self.op in _COMPARE:
            if isinstance(left, str) != isinstance(right, str):
                return self.op == "!="
            return bool(_COMPARE[self.op](left, right))
        if not isinstance(left, int | float) or not isinstance(right, int | float):
            return _MISSING
        if self.op == "/" and right == 0:
            return _MISSING
        return _ARITHMETIC[self.op](left, right)


class _This:
    """``m``: the fact the current condition matches (durable's spelling)."""

    def __getattr__(self, name: str) -> Attr:
        if name.startswith("__"):
            raise AttributeError(name)
        return Attr(None, name)


class _Other:
    def __init__(self, target: int | str) -> None:
        self._target = target

    def __getattr__(self, name: str) -> Node:
        if name.startswith("__"):
            raise AttributeError(name)
        if isinstance(self._target, str):
            return Named(self._target, name)
        return Attr(self._target, name)


m = _This()


def ref(target: str | int | Sequence[str], index: int | None = None) -> Any:
    """The fact matched by an earlier condition of the same rule (a cross-fact test).

    ``ref("name")``: the condition named so (``Cond.named``) or, unnamed, the one whose key is
    ``name``, resolved when the rule is defined; ``ref(i)``: the i-th condition. The older form
    ``ref(prior, i)`` (the aliases before this condition) is kept for engine tests."""
    if index is not None:
        if not 0 <= index < len(target):  # type: ignore[arg-type]  # the aliases before this one
            raise IndexError(f"condition {index} is not before this one")
        return _Other(index)
    if isinstance(target, str | int):
        return _Other(target)
    raise TypeError("ref() takes a condition name or position")
