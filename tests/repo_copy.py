"""A fresh copy of the repository for tests that run its scripts as a newcomer would."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from .conftest import ROOT


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
