"""One version everywhere (issue 13 item 9): pyproject is the single source.

The engine Device on every Flag and CarePlan, the ConceptMap and the service's health answer
read the installed package metadata; this test keeps them and the CHANGELOG in step.
"""

from __future__ import annotations

import re
import tomllib
from importlib.metadata import version
from pathlib import Path

from packaging.version import Version

from fhir_adapters.output import ENGINE_DEVICE, alert_concept_map

ROOT = Path(__file__).resolve().parent.parent


def _pyproject_version() -> str:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


def test_installed_metadata_is_the_pyproject_version() -> None:
    assert version("redflags") == _pyproject_version()


def test_engine_device_carries_the_package_version() -> None:
    assert ENGINE_DEVICE["version"][0] == {"type": {"text": "redflags"}, "value": version("redflags")}
    assert alert_concept_map([])["version"] == version("redflags")


def test_pyproject_version_matches_the_changelog_head() -> None:
    """The CHANGELOG's newest heading ("0.5.0-dev") is the version pyproject ships."""
    head = re.search(r"^## (\S+)", (ROOT / "CHANGELOG.md").read_text(), re.MULTILINE)
    assert head is not None
    assert Version(head.group(1)) == Version(_pyproject_version())
