"""The project's own fixtures pass the checks a newcomer runs first (issue 12, item 8).

``replay fixtures --strict`` validates every resource with fhir.resources; a fixture id with
``_`` or over 64 characters made it fail. The id scan names the offending file at once, so a
new bad fixture fails here before anyone runs the full corpus.
"""

from __future__ import annotations

import gzip
import re
from collections.abc import Iterator
from pathlib import Path

import orjson

from .cli_helpers import run
from .conftest import FIXTURES

#: FHIR R4 ``id`` datatype (http://hl7.org/fhir/R4/datatypes.html#id).
FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
#: A relative literal reference ``Type/id`` (absolute URLs and urn:uuid are not ids).
RELATIVE_REFERENCE = re.compile(r"([A-Z][A-Za-z]+)/([^/]+)")


def _documents(path: Path) -> Iterator[object]:
    raw = path.read_bytes()
    if path.name.endswith(".gz"):
        raw = gzip.decompress(raw)
    if ".ndjson" in path.name:
        yield from (orjson.loads(line) for line in raw.splitlines() if line.strip())
    else:
        yield orjson.loads(raw)


def _ids(node: object) -> Iterator[str]:
    """Every resource id and every id named by a relative reference, at any depth."""
    if isinstance(node, dict):
        if "resourceType" in node and isinstance(node.get("id"), str):
            yield node["id"]
        reference = node.get("reference")
        if isinstance(reference, str) and (match := RELATIVE_REFERENCE.fullmatch(reference)):
            yield match.group(2)
        for value in node.values():
            yield from _ids(value)
    elif isinstance(node, list):
        for value in node:
            yield from _ids(value)


def _fixture_files() -> list[Path]:
    names = (".json", ".ndjson", ".json.gz", ".ndjson.gz")
    files = (p for p in FIXTURES.rglob("*") if p.is_file() and p.name.endswith(names))
    return sorted(p for p in files if ".expected." not in p.name)


def test_every_fixture_id_is_a_valid_fhir_id() -> None:
    files = _fixture_files()
    assert len(files) > 100
    bad = [
        f"{path.relative_to(FIXTURES)}: {value!r}"
        for path in files
        for document in _documents(path)
        for value in _ids(document)
        if not FHIR_ID.fullmatch(value)
    ]
    assert bad == [], "ids that are not FHIR ids ([A-Za-z0-9-.]{1,64}):\n" + "\n".join(bad)


def test_replay_fixtures_strict_exits_0() -> None:
    """The README's strict check over the whole fixtures folder, as a user runs it."""
    done = run("replay", "fixtures", "--strict", "--format", "json")
    assert done.returncode == 0, done.stderr
    assert len(done.stdout.splitlines()) > 100
