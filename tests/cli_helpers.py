"""Run the installed ``redflags`` command as a user would, and the fixtures the CLI tests share."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from .conftest import FIXTURES, ROOT

NOW = "2025-03-10T12:00:00Z"
V01 = FIXTURES / "vignettes" / "V01-ces-positive.json"
C3 = FIXTURES / "vignettes" / "C3-provisional-gbs.json"


def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("redflags")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "redflags.cli"]
    return subprocess.run([*cmd, *map(str, args)], capture_output=True, text=True, cwd=ROOT, timeout=120)
