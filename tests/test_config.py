"""A site's configuration file: strict checking, and its effect through the real command line.

durable-rules hosts one rules configuration per process, and this test process already runs the
defaults, so every run with other parameters is a ``redflags`` subprocess.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from redflags import config
from redflags.config import ConfigError

from .conftest import FIXTURES, ROOT

NOW = "2025-03-10T12:00:00Z"
SITE = ROOT / "examples" / "site"
SITE_CONFIG = SITE / "redflags.toml"
LOCAL_LEG_WEAKNESS = SITE / "bundles" / "ces-local-leg-weakness.json"  # LWK-01, via the ConceptMap
LOCAL_SADDLE = SITE / "bundles" / "ces-local-saddle.json"  # SADDLE-01, via the site ValueSet folder
GBS_FVC = FIXTURES / "guillain_barre_syndrome" / "tierA-fvc-per-kg-below-20.json"  # 17.6 mL/kg


def run(*args: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("redflags")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "redflags.cli"]
    return subprocess.run(
        [*cmd, *map(str, args)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


def alerts(done: subprocess.CompletedProcess[str]) -> dict[str, list[tuple[str, str]]]:
    assert done.returncode == 0, done.stderr
    lines = [orjson.loads(line) for line in done.stdout.splitlines()]
    return {x["patient"]: [(a["rule"], a["severity"]) for a in x["alerts"]] for x in lines}


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "site.toml"
    path.write_text(text)
    return path


class TestLoad:
    def test_no_file_means_every_default(self) -> None:
        assert config.load(None) == config.SiteConfig()

    def test_example_site_configuration(self) -> None:
        site = config.load(SITE_CONFIG)
        assert site.params == {"guillain_barre_syndrome": {"fvc_per_kg_min": 15}}
        assert site.valueset_dirs == (SITE / "valuesets",)
        assert site.conceptmaps == (SITE / "local-codes.conceptmap.json",)

    def test_paths_are_relative_to_the_file_not_the_working_directory(self, tmp_path: Path) -> None:
        (tmp_path / "vs").mkdir()
        path = write(tmp_path, '[terminology]\nvalueset_dirs = ["vs"]\n')
        assert config.load(path).valueset_dirs == (tmp_path / "vs",)

    def test_every_module_parameter_can_be_set(self, tmp_path: Path) -> None:
        lines = [
            f"[params.{rule}]\n" + "".join(f"{name} = {value}\n" for name, value in params.items())
            for rule, params in config.defaults().items()
        ]
        assert config.load(write(tmp_path, "\n".join(lines))).params == config.defaults()

    def test_floats_and_integers_are_numbers(self, tmp_path: Path) -> None:
        path = write(tmp_path, "[params.guillain_barre_syndrome]\nfvc_drop_fraction = 0.25\nmep_min = 35\n")
        assert config.load(path).params == {
            "guillain_barre_syndrome": {"fvc_drop_fraction": 0.25, "mep_min": 35}
        }

    @pytest.mark.parametrize(
        ("text", "message"),
        [
            ("[site]\nx = 1\n", "unknown section 'site' (allowed: params, terminology)"),
            ("[params.gbs]\nx = 1\n", "unknown rule id 'gbs' in [params]"),
            (
                "[params.guillain_barre_syndrome]\nfvc_per_kg_mn = 15\n",
                "unknown parameter 'fvc_per_kg_mn' in [params.guillain_barre_syndrome]",
            ),
            ('[params.cauda_equina_syndrome]\npvr_ml = "200"\n', "pvr_ml must be a finite number, got '200'"),
            ("[params.cauda_equina_syndrome]\npvr_ml = true\n", "pvr_ml must be a finite number, got True"),
            ("[params.cauda_equina_syndrome]\npvr_ml = nan\n", "pvr_ml must be a finite number, got nan"),
            ("[params.cauda_equina_syndrome]\npvr_ml = [200]\n", "must be a finite number"),
            ("params = 3\n", "[params] must be a table"),
            ("[params]\ncauda_equina_syndrome = 3\n", "[params.cauda_equina_syndrome] must be a table"),
            ("[terminology]\nvalue_set_dirs = []\n", "unknown key 'value_set_dirs' in [terminology]"),
            ('[terminology]\nvalueset_dirs = "vs"\n', "valueset_dirs must be a list of paths"),
            ('[terminology]\nvalueset_dirs = ["nope"]\n', "valueset_dirs: no such folder"),
            ('[terminology]\nconceptmaps = ["nope.json"]\n', "conceptmaps: no such file"),
            ("[params\n", "not valid TOML"),
        ],
    )
    def test_mistakes_are_one_line_naming_the_file(self, tmp_path: Path, text: str, message: str) -> None:
        path = write(tmp_path, text)
        with pytest.raises(ConfigError) as error:
            config.load(path)
        assert str(error.value).startswith(f"{path}: ") and message in str(error.value)
        assert "\n" not in str(error.value)

    def test_missing_file(self, tmp_path: Path) -> None:
        with pytest.raises(ConfigError, match="cannot read the configuration file"):
            config.load(tmp_path / "nope.toml")

    def test_option_wins_over_the_environment(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv(config.ENV_VAR, "from-env.toml")
        assert config.resolve(Path("option.toml")) == Path("option.toml")
        assert config.resolve(None) == Path("from-env.toml")
        monkeypatch.setenv(config.ENV_VAR, "")
        assert config.resolve(None) is None


class TestThroughTheCommandLine:
    def test_local_codes_raise_no_alert_without_the_site_configuration(self) -> None:
        done = run("replay", LOCAL_LEG_WEAKNESS, LOCAL_SADDLE, "--now", NOW, "--format", "json")
        assert alerts(done) == {"Patient/ces-a-faecal": [], "Patient/ces-a-saddle": []}

    def test_local_codes_raise_the_alert_with_it(self) -> None:
        done = run(
            "replay", LOCAL_LEG_WEAKNESS, LOCAL_SADDLE, "--now", NOW, "--format", "json",
            "--config", SITE_CONFIG,
        )  # fmt: skip
        critical = [("cauda_equina_syndrome", "critical")]
        assert alerts(done) == {"Patient/ces-a-faecal": critical, "Patient/ces-a-saddle": critical}
        rationale = orjson.loads(done.stdout.splitlines()[0])["alerts"][0]["rationale"]
        assert "Leg weakness (bilateral) since 2025-03-08" in rationale

    def test_a_parameter_override_changes_the_tier(self) -> None:
        assert alerts(run("replay", GBS_FVC, "--now", NOW, "--format", "json")) == {
            "Patient/gbs-a-fvc": [("guillain_barre_syndrome", "critical")]
        }  # FVC 17.6 mL/kg < 20
        env = {config.ENV_VAR: str(SITE_CONFIG)}  # the environment variable instead of --config
        site = run("replay", GBS_FVC, "--now", NOW, "--format", "json", env=env)
        assert alerts(site) == {"Patient/gbs-a-fvc": [("guillain_barre_syndrome", "urgent")]}  # not < 15

    def test_explain_shows_the_site_values_and_codes(self) -> None:
        done = run("rules", "--explain", "guillain_barre_syndrome", "--config", SITE_CONFIG)
        assert done.returncode == 0, done.stderr
        assert "fvc_per_kg_min = 15 (site; default 20)" in done.stdout
        assert "derives [gbs_respiratory] when: [fvc_per_kg] < 15" in done.stdout
        assert "mep_min = 40\n" in done.stdout  # untouched parameters carry no mark
        assert "common.fvc_within_h = 24" in done.stdout
        assert "codes LWK-01" in done.stdout and "WK-00" not in done.stdout
        ces = run("rules", "--explain", "cauda_equina_syndrome", env={config.ENV_VAR: str(SITE_CONFIG)})
        assert "codes SADDLE-01" in ces.stdout

    @pytest.mark.parametrize("command", ["replay", "rules"])
    def test_a_bad_configuration_is_one_line_and_a_failure(self, tmp_path: Path, command: str) -> None:
        path = write(tmp_path, "[params.guillain_barre_syndrome]\nfvc_per_kg = 15\n")
        args = ("replay", GBS_FVC, "--now", NOW) if command == "replay" else ("rules",)
        done = run(*args, "--config", path)
        assert done.returncode == 1 and done.stdout == ""
        assert done.stderr.splitlines() == [
            f"Error: {path}: unknown parameter 'fvc_per_kg' in [params.guillain_barre_syndrome] "
            f"(allowed: {', '.join(sorted(config.defaults()['guillain_barre_syndrome']))})"
        ]

    def test_a_bad_concept_map_is_one_line_and_a_failure(self, tmp_path: Path) -> None:
        doc = orjson.loads((SITE / "local-codes.conceptmap.json").read_bytes())
        doc["group"][0]["element"][0]["target"][0]["code"] = "leg_weaknes"
        (tmp_path / "map.json").write_bytes(orjson.dumps(doc))
        path = write(tmp_path, '[terminology]\nconceptmaps = ["map.json"]\n')
        done = run("replay", LOCAL_LEG_WEAKNESS, "--now", NOW, "--config", path)
        assert done.returncode == 1
        assert done.stderr.splitlines() == [
            f"Error: {tmp_path / 'map.json'}: LWK-01 maps to unknown finding 'leg_weaknes'"
        ]
