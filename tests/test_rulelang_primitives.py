"""The rule language's primitives: a test written once as an expression, named references,
arithmetic as written, numeric presence as one test, and the words a test reads as."""

from __future__ import annotations

import json

import pytest

from engine.dsl import Rules, fact, has_number, latest, m, patient, present, ref, result
from engine.errors import RuleDefinitionError
from engine.expr import Attr


def _spec(*conds):
    r = Rules("t")
    r.derive("k", *conds)
    return r.specs[-1]


def _nodes(cond):
    return [test([]) for test in cond.tests]


class TestWhere:
    def test_a_test_is_an_expression_written_once_with_its_phrase_beside_it(self) -> None:
        cond = present("calf_pain").where(m.side == "left", "on the left")
        assert cond.phrase == "calf pain present on the left"
        assert _nodes(cond)[-1].holds([{"side": "left"}], 0)

    def test_without_a_phrase_the_test_is_spelled_out(self) -> None:
        cond = latest("ck").where((m.v >= m.high * 5) & (m.side == "left"))
        assert cond.phrase == "latest ck v ≥ high * 5 and side = left"

    @pytest.mark.parametrize("test", [lambda _p: m.v > 1, True, "m.v > 1"], ids=["lambda", "bool", "str"])
    def test_anything_but_an_expression_is_refused(self, test: object) -> None:
        with pytest.raises(TypeError, match=r"write tests with m and ref from engine\.dsl"):
            present("fever").where(test)  # type: ignore[arg-type]  # the point of the test

    def test_on_sides_is_one_test(self) -> None:
        cond = present("leg_swelling").on("right", "bilateral")
        assert cond.phrase == "leg swelling present on the right or bilateral"
        node = _nodes(cond)[-1]
        assert node.holds([{"side": "bilateral"}], 0) and not node.holds([{"side": "left"}], 0)


class TestNamedReferences:
    def test_a_reference_by_key_or_name_resolves_to_the_earlier_condition(self) -> None:
        spec = _spec(
            result("fvc").named("first"),
            present("dysphagia"),
            latest("fvc").where(m.ts > ref("first").ts, "after it").where(m.onset > ref("dysphagia").onset),
        )
        by_key, by_name = _nodes(spec.conds[2])[-2:]
        assert by_key.refs() == {0} and by_name.refs() == {1}
        facts = [{"ts": 1}, {"onset": 5}, {"ts": 2, "onset": 6}]
        assert by_key.holds(facts, 2) and by_name.holds(facts, 2)

    def test_the_patient_is_called_patient(self) -> None:
        spec = _spec(patient(), latest("d_dimer").where(m.v > ref("patient").years * 0.01, "over age x 0.01"))
        assert _nodes(spec.conds[1])[-1].holds([{"years": 70}, {"v": 0.8}], 1)

    def test_a_reference_to_no_earlier_condition_names_the_rule(self) -> None:
        with pytest.raises(
            RuleDefinitionError, match=r"t: latest fvc after it: ref\('fvc'\) names no earlier"
        ):
            _spec(latest("fvc").where(m.ts > ref("fvc").ts, "after it"), result("fvc"))

    def test_two_unnamed_conditions_of_one_key_must_be_named(self) -> None:
        with pytest.raises(RuleDefinitionError, match="ambiguous"):
            _spec(result("fvc"), result("fvc"), latest("fvc").where(m.ts > ref("fvc").ts, "after"))

    def test_a_position_must_be_earlier(self) -> None:
        with pytest.raises(RuleDefinitionError, match="condition 1 is not before this one"):
            _spec(present("fever").where(m.onset > ref(1).onset, "x"), present("back_pain"))


class TestArithmeticAndPresence:
    def test_minus_is_written_as_minus(self) -> None:
        # durable compiles arithmetic on the right of a comparison; on the left it cannot, and
        # such a test is checked in Python over the fact durable matched
        on_right = latest("ck").where(m.v > m.high - -10)
        compiled, checks = on_right.compile([])
        assert checks == () and '"$sub"' in json.dumps(compiled.define())
        on_left = latest("ck").where(m.v - m.high > 10, "more than 10 above the limit")
        compiled, checks = on_left.compile([])
        assert len(checks) == 1 and '"$sub"' not in json.dumps(compiled.define())
        for node in (_nodes(on_right)[-1], checks[0]):
            assert node.holds([{"v": 25, "high": 10}], 0) and not node.holds([{"v": 15, "high": 10}], 0)

    def test_a_cross_fact_difference(self) -> None:
        spec = _spec(
            latest("creatinine").named("now"), result("creatinine").where(m.v <= ref("now").v - 26.5)
        )
        node = _nodes(spec.conds[1])[-1]
        assert node.holds([{"v": 100}, {"v": 73.5}], 1) and not node.holds([{"v": 100}, {"v": 74}], 1)

    def test_unary_minus_and_plus_are_refused(self) -> None:
        with pytest.raises(TypeError, match="missing"):
            _ = -m.years
        with pytest.raises(TypeError, match="exists"):
            _ = +m.years

    def test_has_number_is_one_test(self) -> None:
        node = has_number(m.v)
        assert node.holds([{"v": 0}], 0) and node.holds([{"v": -30.5}], 0)
        assert not node.holds([{"interp": "H"}], 0) and not node.holds([{"v": "9"}], 0)
        assert json.dumps(node.durable().define()) == json.dumps((+Attr(None, "v").durable()).define())

    def test_missing_and_exists(self) -> None:
        assert m.years.missing().holds([{}], 0) and not m.years.missing().holds([{"years": 3}], 0)
        assert m.years.exists().holds([{"years": 0}], 0)

    def test_one_of(self) -> None:
        node = m.interp.one_of("H", "HH")
        assert node.holds([{"interp": "HH"}], 0) and not node.holds([{"interp": "L"}], 0)
        assert not node.holds([{}], 0)


def test_derived_keys_read_by_a_fact_condition_carry_their_phrase() -> None:
    assert fact("wells", 3600).where(m.v >= 2).phrase == "[wells] within 1 h v ≥ 2"
