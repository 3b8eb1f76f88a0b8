"""Issue 12 item 6, second round: ordered parameter pairs and on/off switches.

Each parameter alone may be in range while a pair is not (a critical potassium cut-off less
extreme than the urgent one makes the critical tier unreachable); a switch given 0.5 is neither
on nor off. Both stop the run with one line naming the file, exit 2.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from redflags import config
from redflags.config import ParamOutOfRange
from rulesets.meta import SWITCH

from .conftest import ROOT

HYPO = "hypokalemic_or_electrolyte_weakness"
#: (rule, {param: value}, lower, upper): each value inside its range, the pair out of order.
BROKEN_PAIRS = [
    (HYPO, {"k_critical_low": 3.0, "k_urgent_low": 2.8}, "k_critical_low", "k_urgent_low"),
    (HYPO, {"k_urgent_low": 3.2, "k_routine_low": 3.2}, "k_urgent_low", "k_routine_low"),
    (HYPO, {"k_critical_high": 6.0, "k_urgent_high": 6.2}, "k_urgent_high", "k_critical_high"),
    (HYPO, {"ca_critical_high": 3.2, "ca_urgent_high": 3.3}, "ca_urgent_high", "ca_critical_high"),
    (HYPO, {"ca_critical_low": 2.05, "ca_routine_low": 2.0}, "ca_critical_low", "ca_routine_low"),
    ("deep_vein_thrombosis", {"window_days": 28, "chronic_days": 28}, "window_days", "chronic_days"),
    ("b12_deficiency_neuropathy", {"b12_deficient_pg_ml": 250, "b12_indeterminate_max_pg_ml": 250},
     "b12_deficient_pg_ml", "b12_indeterminate_max_pg_ml"),
]  # fmt: skip
SWITCHES = [
    ("deep_vein_thrombosis", "ddimer_age_adjust"),
    (HYPO, "hemolysed_note"),
    ("peripheral_artery_disease", "pad_dx_waives_age"),
    ("rhabdomyolysis", "cardiac_exclusion"),
]


def write(tmp_path: Path, rule: str, values: dict[str, object]) -> Path:
    path = tmp_path / "site.toml"
    body = "\n".join(f"{k} = {str(v).lower() if isinstance(v, bool) else v}" for k, v in values.items())
    path.write_text(f"[params.{rule}]\n{body}\n")
    return path


@pytest.mark.parametrize(("rule", "values", "lower", "upper"), BROKEN_PAIRS)
def test_a_pair_out_of_order_is_one_line_naming_both_values_and_the_file(
    tmp_path: Path, rule: str, values: dict[str, float], lower: str, upper: str
) -> None:
    path = write(tmp_path, rule, values)
    merged = {**config.defaults()[rule], **values}
    with pytest.raises(ParamOutOfRange) as caught:
        config.load(path)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: [params.{rule}] ")
    assert f"{lower} = {merged[lower]:g} must be below {upper} = {merged[upper]:g}" in message


def test_the_pair_is_checked_against_the_default_of_the_other_parameter(tmp_path: Path) -> None:
    """Only one value set: the default of its partner is what the rule would use."""
    path = write(tmp_path, HYPO, {"k_critical_low": 3.0})  # urgent default 3.0: not below
    with pytest.raises(ParamOutOfRange, match="k_critical_low = 3 must be below k_urgent_low = 3 "):
        config.load(path)


def test_pairs_in_order_are_accepted(tmp_path: Path) -> None:
    values = {"k_critical_low": 2.2, "k_urgent_low": 2.8, "k_routine_low": 3.4}
    assert config.load(write(tmp_path, HYPO, values)).params == {HYPO: values}


def test_every_declared_pair_names_parameters_of_its_rule_and_holds_for_the_defaults() -> None:
    known = config.defaults()
    pairs = config.orders()
    assert sum(len(p) for p in pairs.values()) >= 10
    for rule, declared in pairs.items():
        for pair in declared:
            assert known[rule][pair.lower] < known[rule][pair.upper], (rule, pair)


@pytest.mark.parametrize(("rule", "name"), SWITCHES)
@pytest.mark.parametrize("value", ["0.5", "2", "-1", '"yes"'])
def test_a_switch_refuses_anything_but_on_or_off(tmp_path: Path, rule: str, name: str, value: str) -> None:
    path = tmp_path / "site.toml"
    path.write_text(f"[params.{rule}]\n{name} = {value}\n")
    with pytest.raises(ParamOutOfRange) as caught:
        config.load(path)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: [params.{rule}] {name} is an on/off switch: true or false")


@pytest.mark.parametrize(("rule", "name"), SWITCHES)
@pytest.mark.parametrize(("value", "stored"), [("true", 1), ("false", 0), ("1", 1), ("0", 0)])
def test_a_switch_takes_true_false_or_1_0(
    tmp_path: Path, rule: str, name: str, value: str, stored: int
) -> None:
    path = tmp_path / "site.toml"
    path.write_text(f"[params.{rule}]\n{name} = {value}\n")
    assert config.load(path).params == {rule: {name: stored}}


def test_the_switches_are_declared_as_switches() -> None:
    declared = {
        (rule, name) for rule, r in config.ranges().items() for name, lim in r.items() if lim.unit == SWITCH
    }
    assert declared == set(SWITCHES)


def test_explain_refuses_a_broken_pair_with_one_line_and_exit_2(tmp_path: Path) -> None:
    path = write(tmp_path, HYPO, {"k_critical_low": 3.0, "k_urgent_low": 2.8})
    exe = Path(sys.executable).with_name("redflags")
    proc = subprocess.run(
        [str(exe), "rules", "--explain", HYPO, "--config", str(path)],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
        env={k: v for k, v in os.environ.items() if k != config.ENV_VAR},
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and proc.stdout == ""
    assert "k_critical_low = 3 must be below k_urgent_low = 2.8" in lines[0] and str(path) in lines[0]
