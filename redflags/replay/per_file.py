"""Per-file replay: each file through the pipeline on its own (``--expect``, the corpus).

``--expect`` compares every file with its own NAME.expected.json, so it keeps this path; a
plain ``redflags replay`` groups all inputs by patient instead (``redflags.replay.partition``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from engine.errors import EngineError
from fhir_adapters.errors import InputError
from fhir_adapters.intake import Issue, read_path
from redflags.pipeline import PatientResult, Pipeline

SUFFIXES = (".json", ".ndjson")
#: Files beside fixtures that hold expectations, not FHIR.
SKIPPED_SUFFIX = ".expected.json"
#: Folders of JSON that is not FHIR input (CDS Hooks requests and responses kept with the fixtures):
#: walking a folder skips them; a file named directly is still read.
SKIPPED_DIRS = frozenset({"cds-hooks"})


@dataclass(frozen=True, slots=True)
class InputResult:
    source: str
    patients: list[PatientResult]
    issues: list[Issue]  # input-level: entries skipped before any patient was known
    error: str | None = None  # the whole input could not be read
    changes: list[PatientResult] = field(default_factory=list)  # with a state store: those with transitions


def is_expectation(path: Path) -> bool:
    """``NAME.expected.json`` is a fixture's expectation, never FHIR input, however it was named."""
    return path.name.endswith(SKIPPED_SUFFIX)


def without_expectations(paths: Iterable[Path]) -> tuple[list[Path], list[Path]]:
    """(inputs, expectation files) of the paths given: a shell glob such as ``V01*.json`` names
    both a fixture and its expected file, and the second is not an input."""
    named = list(paths)
    skipped = [p for p in named if not p.is_dir() and is_expectation(p)]
    return [p for p in named if p not in skipped], skipped


def expand(paths: Iterable[Path]) -> Iterator[Path]:
    """Files named directly, and every .json/.ndjson file under folders, in sorted order."""
    for path in paths:
        if path.is_dir():
            for child in sorted(path.rglob("*")):
                if (
                    child.is_file()
                    and child.name.endswith(SUFFIXES)
                    and not child.name.endswith(SKIPPED_SUFFIX)
                    and SKIPPED_DIRS.isdisjoint(child.relative_to(path).parts[:-1])
                ):
                    yield child
        else:
            yield path


def replay(files: Iterable[Path], pipeline: Pipeline, now: int) -> Iterator[InputResult]:
    """Each file through the pipeline (with its state store, if any: history, ledger, outbox)."""
    for path in files:
        try:
            intake = read_path(path)
        except InputError as exc:
            yield InputResult(str(path), [], [], str(exc))
            continue
        try:
            results = pipeline.evaluate(intake, now)
        except EngineError as exc:  # a broken rule fails this input loudly, not the whole replay
            yield InputResult(str(path), [], intake.issues, f"evaluation failed: {exc}")
            continue
        yield InputResult(str(path), results, intake.issues, changes=[r for r in results if r.transitions])
