"""Rule expressions that durable-rules evaluates on one fact, and Python evaluates across facts.

durable-rules 2.0.28 crashes the process (SIGSEGV) when a join whose test compares two facts
(``m.onset >= c.f0.onset``) fails for a pair of facts: measured in ``tests/test_engine.py``.
Single-fact tests are safe. So a rule module writes its tests with ``m`` (this fact) and
``ref(prior, i)`` (the fact matched by an earlier condition) from this module, in durable's own
syntax; a test that mentions no other fact compiles to a durable expression (indexed in the
rete network), and a test that does is checked in Python in the rule's action, over the facts
durable matched. Unconstrained joins are safe in durable, and a patient's facts are few.

A missing property never satisfies a comparison (as in durable); ``-m.x`` means "x is missing"
and ``+m.x`` "x is present".
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
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
        return Exists(self, present=False)

    def __pos__(self) -> Node:
        return Exists(self, present=True)

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
    def __init__(self, index: int) -> None:
        self._index = index

    def __getattr__(self, name: str) -> Attr:
        if name.startswith("__"):
            raise AttributeError(name)
        return Attr(self._index, name)


m = _This()


def ref(prior: Sequence[str], index: int) -> Any:
    """The fact matched by an earlier condition of the same rule (a cross-fact test)."""
    if not 0 <= index < len(prior):
        raise IndexError(f"condition {index} is not before this one")
    return _Other(index)
