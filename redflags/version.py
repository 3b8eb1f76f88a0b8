"""What ``redflags --version`` prints: redflags' version and the engine build it runs on."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from engine.engine_build import installed_engine_version


def version_text() -> str:
    """``redflags 0.5.0.dev0 (engine durable-rules 2.0.28+redflags.1)``: both, for bug reports."""
    try:
        own = version("redflags")
    except PackageNotFoundError:  # a source tree that was never installed
        own = "unknown"
    return f"redflags {own} (engine durable-rules {installed_engine_version() or 'not installed'})"
