"""scripts/build_engine.py loaded as a module, and the repository's build cache, for the build tests."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

from .conftest import ROOT

CACHE = ROOT / "build" / "durable-rules"


def build_script(root: Path = ROOT) -> ModuleType:
    """The build step of a checkout (its ROOT decides which patches and cache it uses)."""
    script = root / "scripts" / "build_engine.py"
    spec = importlib.util.spec_from_file_location("_build_engine_under_test", script)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
