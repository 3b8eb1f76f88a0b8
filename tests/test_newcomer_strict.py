"""``replay --strict`` error lines name the file once (issue 12, item 9).

They read ``f.json: Bundle.entry[4].resource: f.json: Bundle.entry[4].resource.id: ...``: the
validator's expression already starts with the entry's path, and the pipeline prefixed it again.
"""

from __future__ import annotations

from pathlib import Path

import orjson

from .cli_helpers import NOW, V01, run


def test_a_strict_error_line_names_the_file_and_the_element_once(tmp_path: Path) -> None:
    bundle = orjson.loads(V01.read_bytes())
    index = next(i for i, e in enumerate(bundle["entry"]) if e["resource"]["resourceType"] == "Observation")
    bundle["entry"][index]["resource"]["id"] = "bad_id"
    path = tmp_path / "f.json"
    path.write_bytes(orjson.dumps(bundle))
    done = run("replay", path, "--now", NOW, "--format", "json", "--strict")
    assert done.returncode == 1
    lines = [line for line in done.stderr.splitlines() if "bad_id" in line]
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"{path}: Bundle.entry[{index}].resource.id: ")
    assert lines[0].count(str(path)) == 1 and lines[0].count(f"entry[{index}]") == 1
