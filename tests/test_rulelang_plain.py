"""The rulesets are written in the plain rule language: no lambda in a condition, arithmetic as
written, presence as one test, negation as ``unless`` (a grep over the source, by its syntax tree)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from .conftest import ROOT

RULESETS = sorted((ROOT / "rulesets").glob("*.py"))
#: keyword arguments that compute a derived fact's value or side (not conditions)
COMPUTED = {"value", "side"}


def _lambdas_outside_computations(tree: ast.AST) -> list[int]:
    allowed = {
        id(kw.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        for kw in node.keywords
        if kw.arg in COMPUTED
    }
    return [n.lineno for n in ast.walk(tree) if isinstance(n, ast.Lambda) and id(n) not in allowed]


@pytest.mark.parametrize("path", RULESETS, ids=lambda p: p.stem)
def test_no_lambda_in_a_condition(path: Path) -> None:
    assert _lambdas_outside_computations(ast.parse(path.read_text())) == []


@pytest.mark.parametrize("path", RULESETS, ids=lambda p: p.stem)
def test_no_workaround_spellings(path: Path) -> None:
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        # "x + (-y)" for "x - y", and -m.x / +m.x for presence
        assert not (
            isinstance(node, ast.BinOp)
            and isinstance(node.op, ast.Add)
            and isinstance(node.right, ast.UnaryOp)
        ), node.lineno
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
            assert not isinstance(node.operand, ast.Attribute), node.lineno
    text = path.read_text()
    assert "(m.v < 0) | (m.v >= 0)" not in text
    assert "ref(p_" not in text and "Prior" not in text


def test_the_checker_sees_a_lambda_in_a_condition() -> None:
    bad = ast.parse(
        'r.fire("A", present("x").where(lambda _p: m.v > 1, "v"))\nr.derive("k", c, value=lambda f: 1)'
    )
    assert _lambdas_outside_computations(bad) == [1]
