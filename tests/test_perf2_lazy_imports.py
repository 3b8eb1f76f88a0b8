"""A replay (and each of its spawned --jobs workers, which import redflags.cli again) does not
import the service stack or the FHIR model library; every subcommand is still reachable."""

from __future__ import annotations

import subprocess
import sys

import pytest
from click.testing import CliRunner

from redflags.cli import main

HEAVY = ("fastapi", "uvicorn", "fhir.resources", "jwt", "redflags.cli.serve", "redflags.service")


def test_importing_the_cli_leaves_service_and_fhir_models_unimported() -> None:
    code = "import sys, redflags.cli; print(' '.join(sorted(m for m in sys.modules)))"
    loaded = set(
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        ).stdout.split()
    )
    assert [m for m in HEAVY if m in loaded] == []


@pytest.mark.parametrize("name", ["serve", "feedback", "outbox", "history", "replay", "rules"])
def test_every_subcommand_is_listed_and_has_help(name: str) -> None:
    listed = CliRunner().invoke(main, ["--help"])
    assert listed.exit_code == 0 and f"  {name}" in listed.output
    shown = CliRunner().invoke(main, [name, "--help"])
    assert shown.exit_code == 0, shown.output
    assert f"Usage: main {name}" in shown.output


def test_an_unknown_subcommand_is_still_a_usage_error() -> None:
    result = CliRunner().invoke(main, ["nope"])
    assert result.exit_code == 2 and "No such command 'nope'" in result.output


def test_strict_validation_still_loads_the_models_on_demand() -> None:
    from fhir_adapters.validate import resource_issues

    assert resource_issues({"resourceType": "Patient", "gender": 3})
    assert resource_issues({"resourceType": "Patient", "id": "p1"}) == []
    assert resource_issues({"resourceType": "NotAType"})[0].code == "not-supported"
