"""docs/rules/ is generated from the engine (scripts/rule-docs): the committed pages must be what
the engine runs today, so a rule change without regenerating its page fails here."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from .engine_helpers import ROOT
from .reference_rules import REFERENCE_RULES

DOCS_RULES = ROOT / "docs" / "rules"

#: The twelve rules' public ids, each with its page.
RULE_IDS = REFERENCE_RULES


def _generate(out: Path) -> dict[str, str]:
    """Run the committed script in its own interpreter (durable-rules: one ruleset per process)."""
    env = {**os.environ, "PYTHON": sys.executable}
    env.pop("REDFLAGS_CONFIG", None)  # the pages show the defaults, never a site's configuration
    done = subprocess.run(
        [ROOT / "scripts" / "rule-docs", "--out", out], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return {p.name: p.read_text(encoding="utf-8") for p in sorted(out.iterdir())}


def test_committed_rule_pages_are_what_the_engine_runs(tmp_path: Path) -> None:
    fresh = _generate(tmp_path / "rules")
    committed = {p.name: p.read_text(encoding="utf-8") for p in sorted(DOCS_RULES.iterdir())}
    assert sorted(committed) == sorted(fresh), "docs/rules/ has missing or extra pages: run scripts/rule-docs"
    stale = [name for name in fresh if committed[name] != fresh[name]]
    assert not stale, f"stale pages (run scripts/rule-docs): {stale}"


def test_every_rule_has_a_page_with_its_criteria_and_actions() -> None:
    index = (DOCS_RULES / "README.md").read_text(encoding="utf-8")
    for rule_id in RULE_IDS:
        page = (DOCS_RULES / f"{rule_id}.md").read_text(encoding="utf-8")
        assert f"`{rule_id}`" in page.splitlines()[2]  # the title line names the public id
        for heading in ("## Tiers", "## Parameters", "## Criteria", "## Value sets", "## CarePlan actions"):
            assert heading in page, (rule_id, heading)
        assert f"]({rule_id}.md)" in index
