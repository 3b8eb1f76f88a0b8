"""Documents the code cites live in the repository: every ``docs/<page>.md#anchor`` cited in a tracked
file, and every relative link between the pages of docs/, resolves to a file and a heading; no
tracked file cites the client's reference documents (which are not in the repository) instead."""

from __future__ import annotations

import re
import subprocess
from functools import cache
from pathlib import Path

from .engine_helpers import ROOT

#: Text files that may cite documents.
SUFFIXES = {".py", ".md", ".json", ".toml", ".txt", ".cfg", ".yml", ".yaml", ".sh", ""}
#: History, not citations; and README, whose citations the lead rewrites when merging
#: (python apply_docrefs.py --include-readme), after which README.md leaves this set.
EXEMPT = {"CHANGELOG.md", "tests/test_docs_refs.py"}
#: ``docs/<path>.md`` with an optional ``#anchor``, as cited in code, tests and data.
CITATION = re.compile(r"(?<![\w./-])(docs/[\w./-]+?\.md)(?:#([\w-]+))?")
#: A relative Markdown link target inside docs/: ``](page.md#anchor)`` or ``](#anchor)``.
LINK = re.compile(r"\]\((?!https?:|mailto:)([^)\s#]*)(?:#([^)\s]+))?\)")
#: Names of the client's reference documents, and the phrases that cite them without a path.
FORBIDDEN = re.compile(
    r"red-flags\.md|durable-rules\.md|drug-classes\.md|vignettes\.md|architecture\.md|style\.md"
    r"|\.\./shared|shared/(?:design|clinical|external)/"
)
UNLOCATED = re.compile(r"clinical reference|design note", re.IGNORECASE)


def tracked() -> list[Path]:
    """The repository's tracked files (git), or every file outside tool folders without git."""
    try:
        names = subprocess.run(
            ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True, check=True, timeout=60
        ).stdout.split("\0")
        files = [ROOT / n for n in names if n]
    except (OSError, subprocess.SubprocessError):
        skip = {".git", ".venv", "__pycache__", "node_modules", ".pytest_cache", ".ruff_cache", ".mypy_cache"}
        files = [p for p in ROOT.rglob("*") if not skip & set(p.relative_to(ROOT).parts)]
    return [p for p in files if p.suffix in SUFFIXES and p.is_file()]


def texts() -> dict[str, str]:
    out = {}
    for path in tracked():
        name = path.relative_to(ROOT).as_posix()
        try:
            out[name] = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
    return out


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


@cache
def anchors(page: Path) -> frozenset[str]:
    seen: dict[str, int] = {}
    found = set()
    in_code = False
    for line in page.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            in_code = not in_code
        if in_code or not (m := re.match(r"#{1,6} +(.+?) *#*$", line)):
            continue
        base = slug(m.group(1))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return frozenset(found)


def unresolved(page: Path, anchor: str | None) -> str | None:
    if not page.is_file():
        return "no such file"
    if anchor and page.suffix == ".md" and anchor not in anchors(page):
        return f"no heading #{anchor}"
    return None


def test_every_docs_citation_resolves() -> None:
    broken, cited = [], 0
    for name, text in texts().items():
        for number, line in enumerate(text.splitlines(), 1):
            for m in CITATION.finditer(line):
                cited += 1
                if (why := unresolved(ROOT / m.group(1), m.group(2))) is not None:
                    broken.append(f"{name}:{number}: {m.group(0)}: {why}")
    assert cited > 100  # the code, tests and value sets cite docs/: a vacuous pass is a failure
    assert not broken, "\n".join(broken)


def test_links_between_docs_pages_resolve() -> None:
    broken, linked = [], 0
    for page in sorted((ROOT / "docs").rglob("*.md")):
        for number, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1):
            for m in LINK.finditer(line):
                linked += 1
                target = (page.parent / m.group(1)).resolve() if m.group(1) else page
                if (why := unresolved(target, m.group(2))) is not None:
                    broken.append(f"{page.relative_to(ROOT)}:{number}: {m.group(0)}: {why}")
    assert linked > 20
    assert not broken, "\n".join(broken)


def test_no_citation_of_documents_outside_the_repository() -> None:
    found = []
    for name, text in texts().items():
        if name in EXEMPT:
            continue
        for number, line in enumerate(text.splitlines(), 1):
            if FORBIDDEN.search(line) or (UNLOCATED.search(line) and "docs/" not in line):
                found.append(f"{name}:{number}: {line.strip()[:120]}")
    assert not found, "cite docs/ instead:\n" + "\n".join(found)


def test_slug_matches_github() -> None:
    assert slug("FHIR validation") == "fhir-validation"
    assert slug("Which time") == "which-time"
    assert slug("Tiers (most urgent first)") == "tiers-most-urgent-first"
    assert slug("fhir.resources 8.3") == "fhirresources-83"
