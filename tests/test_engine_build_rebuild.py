"""The build step (scripts/build_engine.py) rebuilds exactly when the patch set changes.

In a temporary copy of the build inputs (script, pins, patches) with the verified upstream
sdist already in its cache, so no download happens: build once; a second run reuses the wheel;
an edited patch gives a new wheel in a new cache folder; a patch that no longer fits fails with
its name. Each build compiles the C engine (seconds), hence ``slow``.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from engine.engine_build import BUILD_VERSION, UPSTREAM_VERSION

from .conftest import ROOT
from .engine_build_helpers import CACHE

pytestmark = pytest.mark.slow
SDIST = CACHE / f"durable_rules-{UPSTREAM_VERSION}.tar.gz"


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    if not SDIST.is_file():
        pytest.skip("no cached upstream sdist: run scripts/bootstrap first")
    for part in ("scripts/build_engine.py", "engine/engine_build.py"):
        (tmp_path / part).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / part, tmp_path / part)
    shutil.copytree(ROOT / "engine" / "durable_patches", tmp_path / "engine" / "durable_patches")
    (tmp_path / "build" / "durable-rules").mkdir(parents=True)
    shutil.copy2(SDIST, tmp_path / "build" / "durable-rules" / SDIST.name)
    return tmp_path


def build(checkout: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(checkout / "scripts" / "build_engine.py")],
        capture_output=True, text=True, timeout=300, cwd=checkout,
    )  # fmt: skip


def test_a_changed_patch_rebuilds_and_an_unchanged_set_reuses(checkout: Path) -> None:
    first = build(checkout)
    assert first.returncode == 0, first.stderr
    assert f"building durable-rules {BUILD_VERSION}" in first.stderr
    wheel = Path(first.stdout.strip())
    assert wheel.name.startswith(f"durable_rules-{BUILD_VERSION}-") and wheel.is_relative_to(checkout)
    with zipfile.ZipFile(wheel) as built:
        assert "durable/_redflags_build.py" in built.namelist()

    again = build(checkout)
    assert (again.returncode, again.stdout, again.stderr) == (0, first.stdout, "")

    patch = sorted((checkout / "engine" / "durable_patches").glob("0001-*.patch"))[0]
    patch.write_text("One more line of rationale.\n" + patch.read_text())
    changed = build(checkout)
    assert changed.returncode == 0, changed.stderr
    assert "building" in changed.stderr
    assert Path(changed.stdout.strip()).parent != wheel.parent and wheel.is_file()


def test_a_patch_that_does_not_fit_fails_naming_it(checkout: Path) -> None:
    broken = checkout / "engine" / "durable_patches" / "0003-does-not-fit.patch"
    broken.write_text(
        "A patch whose context is not in the source.\n\n--- a/setup.py\n+++ b/setup.py\n"
        "@@ -1,1 +1,1 @@\n-no such line\n+replacement\n"
    )
    done = build(checkout)
    assert done.returncode != 0
    assert "build_engine: applying 0003-does-not-fit.patch failed" in done.stderr
    assert list((checkout / "build" / "durable-rules").glob("*/*.whl")) == []
