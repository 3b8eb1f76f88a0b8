"""The engine runs on redflags' own durable-rules build (issue 15 item 1), and says so.

The installed durable-rules is ``2.0.28+redflags.N`` built from the repository's current patch
set; importing ``engine`` on any other build stops with one line; ``redflags --version``'s text
and the engine Device written with every Flag name both redflags and the engine build.
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
import warnings
from datetime import datetime
from importlib.metadata import version
from pathlib import Path

import durable.engine as durable_engine
import durable_rules_engine
import pytest
from packaging.requirements import Requirement

from engine import engine_build
from engine.engine_build import BUILD_VERSION, PATCH_SET, patch_files, patch_set_digest
from fhir_adapters.output import ENGINE_DEVICE
from redflags.version import version_text

from .conftest import ROOT
from .engine_build_helpers import build_script

PATCHES = ROOT / "engine" / "durable_patches"


def test_the_installed_engine_is_the_patched_build() -> None:
    assert version("durable-rules") == BUILD_VERSION
    assert BUILD_VERSION == f"2.0.28+redflags.{PATCH_SET}"


def test_the_patch_set_number_names_one_patch_set() -> None:
    """Changing a patch without recording its digest (and bumping PATCH_SET) fails here."""
    assert patch_set_digest(PATCHES) == engine_build.PATCH_SET_DIGEST, (
        f"the patches changed: set PATCH_SET_DIGEST = {patch_set_digest(PATCHES)!r} and bump PATCH_SET"
    )


def test_the_installed_engine_was_built_from_the_current_patches() -> None:
    """A patch edited since the last bootstrap shows here (bootstrap then rebuilds and reinstalls)."""
    assert build_script().installed_digest() == patch_set_digest(PATCHES)


def test_the_extension_module_no_longer_calls_the_api_python_313_removed() -> None:
    """0001: without it the module does not import on 3.13 (undefined symbol PyEval_CallObject)."""
    binary = Path(durable_rules_engine.__file__).read_bytes()
    assert b"PyEval_CallObject" not in binary and b"PyObject_CallObject" in binary


def test_the_engine_clock_warns_of_nothing_deprecated() -> None:
    """0003: durable's per-evaluation clock called ``utcfromtimestamp`` (deprecated in 3.12): a
    warning per evaluation, a million recorded by the suite on 3.13, growing its memory."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        now = durable_engine._unix_now()
    assert caught == []
    assert now == pytest.approx((datetime.now() - datetime(1970, 1, 1)).total_seconds(), abs=60)


def test_every_patch_is_numbered_and_says_why_before_its_diff() -> None:
    patches = patch_files(PATCHES)
    assert [p.name[:4] for p in patches] == [f"{i:04d}" for i in range(1, len(patches) + 1)]
    assert sorted(PATCHES.iterdir()) == patches  # nothing else in the folder (it would not apply)
    for patch in patches:
        rationale = patch.read_text().split("\n--- a/", 1)[0]
        assert len(rationale.split()) >= 10, f"{patch.name}: say why before the diff"


def test_pyproject_requires_exactly_this_build_which_the_index_cannot_supply() -> None:
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    (pin,) = [Requirement(d) for d in dependencies if Requirement(d).name == "durable-rules"]
    assert str(pin.specifier) == f"=={BUILD_VERSION}"
    assert not pin.specifier.contains("2.0.28")  # upstream's own release never satisfies it


def test_importing_the_engine_on_another_build_stops_with_one_line(tmp_path: Path) -> None:
    """An unpatched durable-rules (its metadata found first on the path) is refused at import."""
    info = tmp_path / "durable_rules-2.0.28.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: durable-rules\nVersion: 2.0.28\n")
    done = subprocess.run(
        [sys.executable, "-c", "import engine.session"],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
        env={"PYTHONPATH": f"{tmp_path}:{ROOT}", "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert done.returncode == 1
    assert done.stderr == (
        f"durable-rules 2.0.28 is not the redflags build ({BUILD_VERSION}); run scripts/bootstrap\n"
    )


def test_a_missing_engine_is_named_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine_build, "installed_engine_version", lambda: None)
    with pytest.raises(SystemExit, match=r"durable-rules is not installed \(2\.0\.28\+redflags\.\d+\); run"):
        engine_build.require_patched_engine.__wrapped__()


def test_version_text_names_redflags_and_the_engine_build() -> None:
    assert version_text() == f"redflags {version('redflags')} (engine durable-rules {BUILD_VERSION})"


def test_the_engine_device_of_every_flag_names_both_builds() -> None:
    assert ENGINE_DEVICE["version"] == [
        {"type": {"text": "redflags"}, "value": version("redflags")},
        {"type": {"text": "durable-rules"}, "value": BUILD_VERSION},
    ]


def test_redflags_version_prints_both_builds_and_exits_zero() -> None:
    """The command a bug report starts with: one line, redflags' version and the engine build."""
    done = subprocess.run(
        [sys.executable, "-m", "redflags.cli", "--version"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"redflags {version('redflags')} (engine durable-rules {BUILD_VERSION})\n"
