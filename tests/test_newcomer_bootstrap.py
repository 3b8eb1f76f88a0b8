"""`./scripts/bootstrap` on a fresh copy says nothing but real problems (issue 12, item 9g).

It printed pyenv's "command not found" (its probe ran a pyenv shim for a Python version that
is not selected) and setuptools' deprecation of the ``license = { text = ... }`` table.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from .conftest import ROOT

#: What a pyenv shim prints for a version that is installed but not selected (exit 127).
PYENV_SHIM = """#!/bin/sh
echo "pyenv: $(basename "$0"): command not found" >&2
echo "" >&2
echo "The \\`$(basename "$0")' command exists in these Python versions:" >&2
exit 127
"""


def fresh_copy(target: Path) -> Path:
    """The tracked files (a fresh clone) when this is a git checkout, else the tree minus caches."""
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, timeout=60)
    if listed.returncode == 0:
        for name in filter(None, listed.stdout.decode().split("\0")):
            source = ROOT / name
            if source.is_file():
                (target / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, target / name)
    else:
        shutil.copytree(
            ROOT, target, dirs_exist_ok=True, ignore=shutil.ignore_patterns(".venv", ".git", "*.egg-info")
        )
    return target


def test_bootstrap_is_quiet_on_a_fresh_copy_with_a_pyenv_shim_first(tmp_path: Path) -> None:
    repo = fresh_copy(tmp_path / "repo")
    shims = tmp_path / "shims"
    shims.mkdir()
    shim = shims / "python3.12"
    shim.write_text(PYENV_SHIM)
    shim.chmod(0o755)
    python_dir = str(Path(sys.executable).resolve().parent)  # a 3.11/3.12 the probe can take
    env = {**os.environ, "PATH": os.pathsep.join([str(shims), python_dir, os.environ.get("PATH", "")])}
    env.pop("VIRTUAL_ENV", None)
    done = subprocess.run(
        [str(repo / "scripts" / "bootstrap")], cwd=repo, env=env, capture_output=True, text=True, timeout=900
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert (repo / ".venv" / "bin" / "redflags").exists()
    licence = "import importlib.metadata as m; print(m.metadata('redflags').get_all('License-File'))"
    listed = subprocess.run(
        [str(repo / ".venv" / "bin" / "python"), "-c", licence], capture_output=True, text=True, timeout=60
    )
    assert listed.stdout.strip() == "['LICENSE']", listed.stdout + listed.stderr  # the licence ships
    for noise in ("command not found", "pyenv:", "project.license", "SPDX", "License classifiers"):
        assert noise not in output, output
