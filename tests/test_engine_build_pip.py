"""Plain ``pip install .`` never installs the unpatched engine (issue 15 item 1).

redflags requires ``durable-rules==2.0.28+redflags.N``, a version only scripts/build_engine.py
makes. In a throwaway venv whose package source offers upstream's own 2.0.28 (the verified sdist
from the build cache; no network: ``--no-index``), pip stops at resolution naming the required
build; in the bootstrapped venv the same requirement is met by the patched build (``pip check``).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import setuptools

from engine.engine_build import BUILD_VERSION, UPSTREAM_VERSION

from .engine_build_helpers import CACHE
from .repo_copy import fresh_copy

SDIST = CACHE / f"durable_rules-{UPSTREAM_VERSION}.tar.gz"


def _venv_with_only_setuptools(tmp_path: Path) -> Path:
    """A new venv without pip whose only package is this venv's setuptools (the build backend)."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp_path / "venv")], check=True)
    python = tmp_path / "venv" / "bin" / "python"
    purelib = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    shim = tmp_path / "shim"
    shim.mkdir()
    top = Path(setuptools.__file__).parent.parent
    info = [p.name for p in top.glob("setuptools-*.dist-info")]
    for name in ("setuptools", "pkg_resources", "_distutils_hack", *info):
        if (top / name).exists():
            (shim / name).symlink_to(top / name)
    (Path(purelib) / "shim.pth").write_text(f"{shim}\n")
    return python


@pytest.mark.skipif(not SDIST.is_file(), reason="no cached upstream sdist: run scripts/bootstrap first")
def test_pip_install_dot_with_only_upstream_available_stops_naming_the_build(tmp_path: Path) -> None:
    python = _venv_with_only_setuptools(tmp_path)
    links = tmp_path / "links"
    links.mkdir()
    (links / SDIST.name).symlink_to(SDIST)
    source = fresh_copy(tmp_path / "src")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    done = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "--isolated", "install", "--no-index",
         "--find-links", str(links), "--no-build-isolation", str(source)],
        capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert done.returncode != 0
    assert f"No matching distribution found for durable-rules=={BUILD_VERSION}" in done.stderr
    assert f"(from versions: {UPSTREAM_VERSION})" in done.stderr  # upstream was there, and refused
    listed = subprocess.run([python, "-c", "import durable"], capture_output=True, timeout=60)
    assert listed.returncode != 0  # nothing of the engine was installed


def test_the_bootstrapped_venv_meets_the_requirement_with_the_patched_build() -> None:
    done = subprocess.run([sys.executable, "-m", "pip", "check"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout
