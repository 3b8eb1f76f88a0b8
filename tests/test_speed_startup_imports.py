"""``redflags replay`` of one file imports only what a replay uses: no HTTP stack (requests,
urllib3: delivery to a FHIR server), no FHIR model library (--strict), no rich progress bars or
tables (a terminal, --format table). Start-up time is mostly imports (issue 15 item 6)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ONE_FILE = ROOT / "fixtures" / "hypokalemic_or_electrolyte_weakness" / "tierB-potassium-6.2-weakness.json"
UNUSED = ("requests", "urllib3", "fhir.resources", "jwt", "rich.progress", "redflags.delivery.sender")

#: runs the CLI in this process, then names the unused modules it loaded on stderr
_PROBE = """
import sys
sys.argv = ["redflags", *sys.argv[1:]]
from redflags.cli import main
try:
    main()
except SystemExit as exit:
    code = exit.code
print("LOADED", *sorted(m for m in {unused!r} if m in sys.modules), file=sys.stderr)
sys.exit(code)
"""


def _loaded(*args: str) -> tuple[int, list[str], bytes]:
    probe = _PROBE.format(unused=UNUSED)
    run = subprocess.run([sys.executable, "-c", probe, *args], capture_output=True, cwd=ROOT, check=False)
    line = next(x for x in run.stderr.decode().splitlines() if x.startswith("LOADED"))
    return run.returncode, line.split()[1:], run.stdout


def test_importing_the_replay_command_loads_no_http_stack_fhir_models_or_progress_bars() -> None:
    code = f"import sys, redflags.cli.replay; print(*sorted(m for m in {UNUSED!r} if m in sys.modules))"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert run.stdout.split() == []


def test_a_replay_of_one_file_runs_without_them() -> None:
    code, loaded, out = _loaded("replay", str(ONE_FILE), "--format", "json", "--now", "2025-03-10T12:00:00Z")
    assert code == 0 and b'"hypokalemic_or_electrolyte_weakness"' in out
    assert loaded == []


def test_the_table_format_still_draws_its_table() -> None:
    code, _loaded_modules, out = _loaded("replay", str(ONE_FILE), "--now", "2025-03-10T12:00:00Z")
    assert code == 0 and b"redflags replay at" in out and b"lyte-b-k62" in out
