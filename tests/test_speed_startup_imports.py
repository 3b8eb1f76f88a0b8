"""``redflags replay`` of one file imports only what a replay uses: no HTTP stack (requests,
urllib3: delivery to a FHIR server), no FHIR model library (--strict), no rich progress bars or
tables (a terminal, --format table), no structlog (with rich and asyncio, ~90 ms) until something
logs. Start-up time is mostly imports (issue 15 item 6)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import orjson

from engine.engine_build import BUILD_VERSION

ROOT = Path(__file__).resolve().parents[1]
ONE_FILE = ROOT / "fixtures" / "hypokalemic_or_electrolyte_weakness" / "tierB-potassium-6.2-weakness.json"
UNUSED = (
    *("requests", "urllib3", "fhir.resources", "jwt", "rich", "redflags.delivery.sender"),
    *("structlog", "asyncio", "importlib.metadata", "multiprocessing", "platformdirs"),
)
#: the one module that imports structlog for the others (engine/logger.py)
LAZY_LOGGER = Path("engine") / "logger.py"

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


def test_a_replay_that_logs_loads_structlog_and_logs_json_with_its_replay_id_on_stderr() -> None:
    args = (
        "--log-level",
        "info",
        "replay",
        str(ONE_FILE),
        "--format",
        "json",
        "--now",
        "2025-03-10T12:00:00Z",
    )
    run = subprocess.run(
        [sys.executable, "-m", "redflags.cli", *args], capture_output=True, cwd=ROOT, check=False
    )
    assert run.returncode == 0 and b'"hypokalemic_or_electrolyte_weakness"' in run.stdout
    assert b"replay_started" not in run.stdout
    started = [orjson.loads(x) for x in run.stderr.splitlines() if b"replay_started" in x]
    assert len(started) == 1 and started[0]["level"] == "info" and len(started[0]["replay_id"]) == 12
    assert {"timestamp", "inputs", "now"} <= started[0].keys()


def _fresh(code: str) -> tuple[list[str], str]:
    """``code`` in a new interpreter (structlog not loaded yet): its stdout lines, its stderr."""
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    return run.stdout.splitlines(), run.stderr


def test_a_logger_made_before_the_configuration_logs_as_configured_once_something_logs() -> None:
    out, err = _fresh(
        "import sys\n"
        "from engine.logger import bind_contextvars, get_logger\n"
        "log = get_logger('redflags.early')\n"
        "from redflags import logs\n"
        "logs.configure('info')\n"
        "bind_contextvars(replay_id='r1')\n"
        "print('structlog' in sys.modules)\n"
        "log.debug('below_the_level', n=0)\n"
        "print('structlog' in sys.modules)\n"
        "log.info('first_line', n=1)\n"
        "print('structlog' in sys.modules)\n"
    )
    assert out == ["False", "False", "True"]
    (line,) = [orjson.loads(x) for x in err.splitlines()]
    assert line["event"] == "first_line" and line["level"] == "info" and line["n"] == 1
    assert line["replay_id"] == "r1" and line["timestamp"].endswith("Z")


def test_ids_bound_before_structlog_loads_can_be_read_unbound_and_cleared() -> None:
    out, err = _fresh(
        "from engine.logger import *\n"
        "from redflags import logs\n"
        "logs.configure('info')\n"
        "bind_contextvars(request_id='q1', engine=7)\n"
        "print(sorted(get_contextvars().items()))\n"
        "unbind_contextvars('engine')\n"
        "get_logger('x').warning('one')\n"
        "bind_contextvars(site='a')\n"
        "print(sorted(get_contextvars().items()))\n"
        "clear_contextvars()\n"
        "get_logger('x').warning('two')\n"
    )
    assert out == ["[('engine', 7), ('request_id', 'q1')]", "[('request_id', 'q1'), ('site', 'a')]"]
    one, two = (orjson.loads(x) for x in err.splitlines())
    assert one["request_id"] == "q1" and "engine" not in one
    assert two["event"] == "two" and not {"request_id", "site", "engine"} & two.keys()


def _imports_structlog_at_load(tree: ast.Module) -> list[int]:
    """Lines importing structlog outside functions and ``if TYPE_CHECKING:`` blocks."""
    found: list[int] = []

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
                continue
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                visit_else = ast.Module(body=child.orelse, type_ignores=[])
                visit(visit_else)
                continue
            names = (
                [a.name for a in child.names]
                if isinstance(child, ast.Import)
                else [child.module or ""]
                if isinstance(child, ast.ImportFrom)
                else []
            )
            if any(n == "structlog" or n.startswith("structlog.") for n in names):
                found.append(child.lineno)
            visit(child)

    visit(tree)
    return found


def test_every_module_takes_its_logger_from_the_lazy_helper() -> None:
    """A module importing structlog itself would load it on every start, and could log with
    structlog's defaults (stdout) before ``redflags.logs.configure`` reached it."""
    found = []
    for package in ("engine", "rulesets", "fhir_adapters", "redflags"):
        for path in sorted((ROOT / package).rglob("*.py")):
            relative = path.relative_to(ROOT)
            if relative == LAZY_LOGGER:
                continue
            tree = ast.parse(path.read_text(), str(path))
            found += [f"{relative}:{n} imports structlog" for n in _imports_structlog_at_load(tree)]
            found += [
                f"{relative}:{node.lineno} structlog.get_logger"
                for node in ast.walk(tree)
                if isinstance(node, ast.Attribute)
                and node.attr == "get_logger"
                and ast.unparse(node.value) == "structlog"
            ]
    assert found == []


def test_the_engine_build_is_read_as_importlib_metadata_reads_it_without_importing_it() -> None:
    out, _err = _fresh(
        "import sys\n"
        "from engine.engine_build import installed_engine_version\n"
        "found = installed_engine_version()\n"
        "print('importlib.metadata' in sys.modules)\n"
        "from importlib.metadata import version\n"
        "print(found == version('durable-rules'))\n"
    )
    assert out == ["False", "True"]


def test_the_engine_device_is_built_when_first_rendered_and_is_one_dict() -> None:
    out, _err = _fresh(
        "import sys\n"
        "import fhir_adapters.output as output\n"
        "print('importlib.metadata' in sys.modules)\n"
        "from fhir_adapters.output import ENGINE_DEVICE\n"
        "print(ENGINE_DEVICE is output.engine_device(), ENGINE_DEVICE['version'][1]['value'])\n"
    )
    assert out == ["False", f"True {BUILD_VERSION}"]
