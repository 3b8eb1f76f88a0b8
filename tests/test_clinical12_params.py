"""Issue 12 item 6: a site parameter outside its plausible range stops the run; a non-default one is logged.

Every parameter of every ruleset declares a unit and an inclusive range next to its default
(``PARAM_RANGES``). Runs with other parameters are ``redflags`` subprocesses (durable-rules hosts
one rules configuration per process).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from redflags import config
from redflags.config import ConfigError, ParamOutOfRange
from rulesets import MODULES
from rulesets.meta import ParamRange

from .conftest import FIXTURES, ROOT
from .service_harness import free_port, running_service

NOW = "2025-03-10T12:00:00Z"
CES = FIXTURES / "cauda_equina_syndrome"
GBS_FVC = FIXTURES / "guillain_barre_syndrome" / "tierA-fvc-per-kg-below-20.json"  # 17.6 mL/kg
OUT_OF_RANGE = [
    ("cauda_equina_syndrome", "window_days", "0", "1-28 d", "14"),
    ("deep_vein_thrombosis", "window_days", "0", "1-28 d", "14"),
    ("guillain_barre_syndrome", "fvc_per_kg_min", "-5", "10-30 mL/kg", "20"),
    ("guillain_barre_syndrome", "fvc_per_kg_min", "1e9", "10-30 mL/kg", "20"),
    ("myasthenic_crisis_risk", "fvc_per_kg_min", "-5", "10-30 mL/kg", "20"),
]
IDS = [f"{rule}.{name}={value}" for rule, name, value, _r, _d in OUT_OF_RANGE]


def redflags(*args: str | Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("redflags")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "redflags.cli"]
    return subprocess.run(
        [*cmd, *map(str, args)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=timeout,
        env={k: v for k, v in os.environ.items() if k != config.ENV_VAR},
    )


def site(tmp_path: Path, rule: str, name: str, value: str) -> Path:
    path = tmp_path / "site.toml"
    path.write_text(f"[params.{rule}]\n{name} = {value}\n")
    return path


def expected_line(path: Path, rule: str, name: str, value: str, limits: str, default: str) -> str:
    return f"{path}: [params.{rule}] {name} = {float(value) if 'e' in value else int(value)!r} " + (
        f"is outside its plausible range {limits} (default {default}; "
    )


class TestDeclared:
    def test_every_parameter_of_every_ruleset_has_a_unit_and_a_range_holding_its_default(self) -> None:
        for module in MODULES:
            params, ranges = getattr(module, "PARAMS", {}), getattr(module, "PARAM_RANGES", None)
            assert ranges is not None, f"{module.__name__} declares no PARAM_RANGES"
            assert set(ranges) == set(params), module.__name__
            for name, limit in ranges.items():
                assert isinstance(limit, ParamRange), (module.__name__, name)
                assert limit.unit.strip() and limit.source.strip(), (module.__name__, name)
                assert limit.low < limit.high, (module.__name__, name)
                assert limit.low <= params[name] <= limit.high, (module.__name__, name, params[name])

    def test_the_range_table_of_config_covers_every_default(self) -> None:
        limits = config.ranges()
        assert {r: set(p) for r, p in limits.items()} == {r: set(p) for r, p in config.defaults().items()}

    def test_a_window_of_zero_days_would_silence_cauda_equina(self) -> None:
        """Why the range exists: the lower bound keeps every window open."""
        ces = config.ranges()["cauda_equina_syndrome"]["window_days"]
        assert ces.low >= 1 and ces.unit == "d"


class TestLoad:
    @pytest.mark.parametrize(("rule", "name", "value", "limits", "default"), OUT_OF_RANGE, ids=IDS)
    def test_out_of_range_is_one_line_naming_parameter_range_unit_and_file(
        self, tmp_path: Path, rule: str, name: str, value: str, limits: str, default: str
    ) -> None:
        path = site(tmp_path, rule, name, value)
        with pytest.raises(ParamOutOfRange) as error:
            config.load(path)
        message = str(error.value)
        assert message.startswith(expected_line(path, rule, name, value, limits, default))
        assert "\n" not in message and isinstance(error.value, ConfigError)
        assert error.value.exit_code == 2

    @pytest.mark.parametrize("value", ["1", "28", "7"])
    def test_bounds_are_inclusive(self, tmp_path: Path, value: str) -> None:
        path = site(tmp_path, "cauda_equina_syndrome", "window_days", value)
        assert config.load(path).params == {"cauda_equina_syndrome": {"window_days": int(value)}}

    def test_overrides_list_only_values_that_differ_from_the_default(self, tmp_path: Path) -> None:
        path = tmp_path / "site.toml"
        path.write_text("[params.guillain_barre_syndrome]\nfvc_per_kg_min = 15\nmep_min = 40\n")
        assert config.overrides(config.load(path)) == [
            {
                "rule": "guillain_barre_syndrome",
                "param": "fvc_per_kg_min",
                "value": 15,
                "default": 20,
                "unit": "mL/kg",
            }
        ]


class TestCommandLine:
    @pytest.mark.parametrize(("rule", "name", "value", "limits", "default"), OUT_OF_RANGE, ids=IDS)
    @pytest.mark.parametrize("command", ["replay", "explain"])
    def test_replay_and_explain_refuse_with_one_line_and_exit_2(
        self, tmp_path: Path, command: str, rule: str, name: str, value: str, limits: str, default: str
    ) -> None:
        path = site(tmp_path, rule, name, value)
        args = ("replay", CES, "--now", NOW) if command == "replay" else ("rules", "--explain", rule)
        done = redflags(*args, "--config", path)
        assert done.returncode == 2 and done.stdout == ""
        (line,) = done.stderr.splitlines()
        assert line.startswith("Error: " + expected_line(path, rule, name, value, limits, default))

    def test_a_non_default_value_in_range_is_logged_once_at_start(self, tmp_path: Path) -> None:
        path = site(tmp_path, "guillain_barre_syndrome", "fvc_per_kg_min", "15")
        done = redflags("--log-level", "info", "replay", GBS_FVC, CES, "--now", NOW, "--config", path)
        assert done.returncode in (0, 1), done.stderr
        events = [orjson.loads(x) for x in done.stderr.splitlines() if x.startswith("{")]
        logged = [e for e in events if e.get("event") == "site_parameters"]
        assert len(logged) == 1
        assert logged[0]["non_default"] == [
            {
                "rule": "guillain_barre_syndrome",
                "param": "fvc_per_kg_min",
                "value": 15,
                "default": 20,
                "unit": "mL/kg",
            }
        ]
        assert logged[0]["config"] == str(path)
        assert "Patient/" not in orjson.dumps(logged[0]).decode()  # no patient data in the event

    def test_defaults_log_nothing(self, tmp_path: Path) -> None:
        path = site(tmp_path, "guillain_barre_syndrome", "fvc_per_kg_min", "20")
        done = redflags("--log-level", "info", "replay", GBS_FVC, "--now", NOW, "--config", path)
        assert "site_parameters" not in done.stderr

    def test_explain_still_lists_the_site_value(self, tmp_path: Path) -> None:
        path = site(tmp_path, "guillain_barre_syndrome", "fvc_per_kg_min", "15")
        done = redflags("rules", "--explain", "guillain_barre_syndrome", "--config", path)
        assert done.returncode == 0, done.stderr
        assert "fvc_per_kg_min = 15 (site; default 20)" in done.stdout


class TestService:
    @pytest.mark.parametrize("value", ["-5", "1e9"])
    def test_serve_refuses_to_start(self, tmp_path: Path, value: str) -> None:
        path = site(tmp_path, "guillain_barre_syndrome", "fvc_per_kg_min", value)
        done = redflags(
            "serve", "--port", str(free_port()), "--allow-unauthenticated", "--no-state",
            "--feedback-db", tmp_path / "feedback.sqlite", "--config", path, timeout=60,
        )  # fmt: skip
        assert done.returncode == 2
        errors = [x for x in done.stderr.splitlines() if not x.startswith("{")]
        assert errors == [
            "Error: "
            + expected_line(path, "guillain_barre_syndrome", "fvc_per_kg_min", value, "10-30 mL/kg", "20")
            + errors[0].split("(default 20; ", 1)[1]
        ]
        assert "ready" not in done.stderr and "listening" not in done.stderr

    def test_serve_logs_a_non_default_value_once(self, tmp_path: Path) -> None:
        path = site(tmp_path, "guillain_barre_syndrome", "fvc_per_kg_min", "15")
        args = ("--allow-unauthenticated", "--no-state", "--workers", "2", "--config", str(path))
        with running_service(tmp_path, *args) as service:
            events = [orjson.loads(x) for x in service.log().splitlines() if x.startswith("{")]
        logged = [e for e in events if e.get("event") == "site_parameters"]
        assert len(logged) == 1 and logged[0]["non_default"][0]["param"] == "fvc_per_kg_min"


def test_the_parameter_table_in_the_docs_matches_the_code() -> None:
    """docs/site-parameters.md lists every parameter with its default and range, as declared."""
    doc = (ROOT / "docs" / "site-parameters.md").read_text()
    for rule, params in config.defaults().items():
        for name, value in params.items():
            limit = config.ranges()[rule][name]
            assert f"| {rule} | {name} | {value:g} | {limit.text()} | {limit.source} |" in doc, (rule, name)
