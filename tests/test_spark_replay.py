"""``redflags.spark`` and ``replay --executor spark``: a Bulk Data export evaluated on Spark
(local[2]: two executor threads, each with its Python worker processes) prints exactly what the
local replay prints. If Spark cannot start here (no Java, no PySpark) the tests are SKIPPED with
the reason, never passed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from bench.synthetic import generate
from fhir_adapters.times import parse_now
from redflags.replay.per_file import expand

from .bulk_helpers import NOW, run, split_by_type
from .conftest import FIXTURES, ROOT
from .spark_helpers import spark

__all__ = ["spark"]  # the module's SparkSession fixture

SITE = ROOT / "examples" / "site"
SITE_CONFIG = SITE / "redflags.toml"
GBS_FVC = FIXTURES / "guillain_barre_syndrome" / "tierA-fvc-per-kg-below-20.json"  # FVC 17.6 mL/kg
LOCAL_SADDLE = SITE / "bundles" / "ces-local-saddle.json"  # SADDLE-01: the site's ValueSet folder
LOCAL_LEG_WEAKNESS = SITE / "bundles" / "ces-local-leg-weakness.json"  # LWK-01: the site's ConceptMap
V01 = FIXTURES / "vignettes" / "V01-ces-positive.json"
SPARK = ("--executor", "spark", "--spark-master", "local[2]")


@pytest.fixture(scope="module")
def export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """300 synthetic patients split by type over 3 files per type (half gzip), as an export."""
    single = tmp_path_factory.mktemp("single")
    generate(single, 300, parse_now(NOW), per_file=300)
    folder = tmp_path_factory.mktemp("export")
    split_by_type(sorted(single.glob("*.json")), folder)
    return folder


@pytest.fixture(scope="module")
def fixtures_split(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("fixtures-split")
    split_by_type(list(expand([FIXTURES / "vignettes"])), folder, per_type=2)
    return folder


def local(*paths: Path, extra: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    return run("replay", *paths, "--now", NOW, "--format", "json", *extra)


def on_spark(spark: object, *paths: Path, partitions: int | None = None, **options: object) -> list[str]:
    """The API: evaluate_export's lines in seq order (the replay's order)."""
    from redflags.spark import evaluate_export

    df = evaluate_export(spark, paths, now=parse_now(NOW), partitions=partitions, **options)  # type: ignore[arg-type]
    return [row.line for row in sorted(df.collect(), key=lambda row: row.seq)]


def lines_on_spark(spark: object, *paths: Path, partitions: int | None = None) -> tuple[list[str], list[str]]:
    """The command line's path (merge on the driver): lines and reported lines."""
    from redflags.spark import EngineSpec, SparkStats, replay_lines

    reported: list[str] = []
    lines = replay_lines(
        spark,  # type: ignore[arg-type]
        paths,
        EngineSpec(),
        parse_now(NOW),
        reported.append,
        SparkStats(),
        partitions=partitions,
    )
    return [line.decode() for line in lines], reported


def test_generated_export_on_spark_equals_the_local_replay_line_for_line(spark: object, export: Path) -> None:
    expected = local(export)
    assert expected.returncode == 0, expected.stderr
    want = expected.stdout.splitlines()
    assert len(want) == 300 and any(orjson.loads(line)["alerts"] for line in want)
    assert any(p.name.endswith(".ndjson.gz") for p in export.iterdir())
    assert on_spark(spark, export, partitions=7) == want  # DataFrame API, more partitions than workers


def test_fixtures_split_by_type_on_spark_equal_the_local_replay(spark: object, fixtures_split: Path) -> None:
    expected = local(fixtures_split)
    want = expected.stdout.splitlines()
    assert want and any(orjson.loads(line)["alerts"] for line in want)
    lines, reported = lines_on_spark(spark, fixtures_split, partitions=3)  # the command line's merge
    assert lines == want
    assert all(line in expected.stderr for line in reported)


def test_a_damaged_input_is_reported_and_marked_as_locally(spark: object, tmp_path: Path) -> None:
    folder = tmp_path / "export"
    split_by_type(list(expand([FIXTURES / "vignettes"])), folder, per_type=2, gzipped=False)
    victim = sorted(folder.glob("Observation.*.ndjson"))[0]
    victim.write_bytes(victim.read_bytes() + b"{not json\n")
    expected = local(folder)
    assert expected.returncode == 1
    want = expected.stdout.splitlines()
    assert any("inputs_with_errors" in line for line in want)
    lines, reported = lines_on_spark(spark, folder)
    assert lines == want
    number = len(victim.read_bytes().splitlines())
    assert len(reported) == 1 and reported[0].startswith(f"{victim}: line {number}: invalid JSON")
    assert reported[0] in expected.stderr.splitlines()


def tiers(lines: list[str]) -> dict[str, list[tuple[str, str]]]:
    return {
        (doc := orjson.loads(line))["patient"]: [(a["rule"], a["severity"]) for a in doc["alerts"]]
        for line in lines
    }


SITE_INPUTS = (GBS_FVC, LOCAL_SADDLE, LOCAL_LEG_WEAKNESS)


def test_default_configuration_on_spark(spark: object) -> None:
    default = on_spark(spark, *SITE_INPUTS)
    assert default == local(*SITE_INPUTS).stdout.splitlines()
    assert tiers(default)["Patient/gbs-a-fvc"] == [("guillain_barre_syndrome", "critical")]  # 17.6 < 20
    assert tiers(default)["Patient/ces-a-saddle"] == []


def test_a_worker_asked_for_other_parameters_builds_them_too(spark: object) -> None:
    from redflags.spark import EngineSpec, _pipeline

    other = EngineSpec(params={"guillain_barre_syndrome": {"fvc_per_kg_min": 15}})
    sc = spark.sparkContext  # type: ignore[attr-defined]

    def both(_: int) -> tuple[float, ...]:
        pipelines = (_pipeline(EngineSpec()), _pipeline(other), _pipeline(EngineSpec()))
        return tuple(p.engine.params["guillain_barre_syndrome"]["fvc_per_kg_min"] for p in pipelines)

    assert sc.parallelize([0], 1).map(both).collect() == [(20, 15, 20)]


def test_each_worker_process_builds_one_engine(spark: object) -> None:
    from redflags.spark import EngineSpec, _pipeline

    spec = EngineSpec()
    sc = spark.sparkContext  # type: ignore[attr-defined]
    seen = (
        sc.parallelize(range(16), 16).map(lambda _: (os.getpid(), id(_pipeline(spec)))).distinct().collect()
    )
    pids = [pid for pid, _ in seen]
    assert len(pids) == len(set(pids))  # one engine per process, reused by every later task
    assert os.getpid() not in pids  # built in the workers, not in the driver


def invalid_status(folder: Path) -> tuple[Path, str]:
    """V01 with an Observation whose status is not a FHIR code: an invalid element (exit 1)."""
    bundle = orjson.loads(V01.read_bytes())
    index = next(i for i, e in enumerate(bundle["entry"]) if e["resource"]["resourceType"] == "Observation")
    bundle["entry"][index]["resource"]["status"] = "done"
    path = folder / "bad-status.json"
    path.write_bytes(orjson.dumps(bundle))
    return path, f"Bundle.entry[{index}].resource.status"


def test_invalid_elements_are_reported_by_the_driver_as_locally(spark: object, tmp_path: Path) -> None:
    """A patient's invalid-element lines come back with its partition, not in an executor's log."""
    bad, where = invalid_status(tmp_path)
    expected = local(bad, GBS_FVC)
    assert expected.returncode == 1
    printed = [line for line in expected.stderr.splitlines() if where in line]
    assert len(printed) == 1 and printed[0].startswith(f"{bad}: ")
    lines, reported = lines_on_spark(spark, bad, GBS_FVC, partitions=3)
    assert lines == expected.stdout.splitlines()
    assert reported == printed


def test_command_line_on_spark_prints_what_the_local_replay_prints(spark: object, tmp_path: Path) -> None:
    """The one real command line on Spark (its own JVM): --format json, --config, an invalid element.

    The site configuration travels to the executors (its parameters and ValueSet/ConceptMap
    files); stdout and the invalid-element stderr line equal the local replay's; the local
    session's scratch lived under --tmp-dir (removed) and never in $SPARK_LOCAL_DIRS.
    """
    bad, where = invalid_status(tmp_path)
    scratch, theirs = tmp_path / "tmp", tmp_path / "spark-local-dirs"
    scratch.mkdir(), theirs.mkdir()
    args = ("replay", *SITE_INPUTS, bad, "--now", NOW, "--format", "json", "--config", SITE_CONFIG)
    want = run(*args)
    env = {**os.environ, "SPARK_LOCAL_DIRS": str(theirs)}
    exe = Path(sys.executable).with_name("redflags")
    cmd = [str(exe) if exe.exists() else sys.executable, *([] if exe.exists() else ["-m", "redflags.cli"])]
    cmd += [*map(str, args), *SPARK, "--tmp-dir", str(scratch)]
    got = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)
    assert got.returncode == want.returncode == 1, got.stderr[-2000:]
    assert got.stdout == want.stdout
    printed = [line for line in want.stderr.splitlines() if where in line]
    assert printed and [line for line in got.stderr.splitlines() if where in line] == printed
    lines = got.stdout.splitlines()
    assert tiers(lines)["Patient/gbs-a-fvc"] == [("guillain_barre_syndrome", "urgent")]  # site threshold 15
    critical = [("cauda_equina_syndrome", "critical")]  # local codes: ValueSet folder and ConceptMap
    assert tiers(lines)["Patient/ces-a-saddle"] == critical
    assert tiers(lines)["Patient/ces-a-faecal"] == critical
    assert list(scratch.iterdir()) == [] and list(theirs.iterdir()) == []


def test_table_format_on_spark(spark: object, export: Path) -> None:
    """--format table: the command line in this process (it uses the module's active session)."""
    from click.testing import CliRunner

    from redflags.cli import main

    args = ["replay", str(export), "--now", NOW]
    want = CliRunner().invoke(main, args)
    got = CliRunner().invoke(main, [*args, *SPARK])
    assert got.exit_code == want.exit_code == 0, got.output[-2000:]
    assert got.stdout == want.stdout and "cauda_equina_syndrome" in got.stdout


def test_without_pyspark_executor_spark_is_one_line_and_exit_2(tmp_path: Path) -> None:
    blocker = tmp_path / "pyspark"
    blocker.mkdir()
    (blocker / "__init__.py").write_text('raise ImportError("pyspark hidden by the test")\n')
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    cmd = [sys.executable, "-m", "redflags.cli", "replay", str(GBS_FVC), "--now", NOW, *SPARK]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "replay: --executor spark needs PySpark: pip install 'redflags[spark]'"
    ]
    assert done.stdout == ""


def test_executor_spark_with_state_is_a_usage_error(tmp_path: Path) -> None:
    done = run("replay", GBS_FVC, "--now", NOW, *SPARK, "--state", tmp_path / "s.db")
    assert done.returncode == 2
    assert "--executor spark cannot be used with --state, --expect or --out" in done.stderr
    assert not (tmp_path / "s.db").exists()


def test_default_executor_is_local() -> None:
    done = run("replay", "--help")
    assert "--executor [local|spark]" in done.stdout and "[default: local]" in done.stdout


class FakeBuilder:
    """Records what ``session`` asks of Spark (no JVM): configs, and the environment at start."""

    def __init__(self) -> None:
        self.conf: dict[str, str] = {}
        self.env_at_start: str | None = None
        self.stopped = False

    def master(self, _url: str) -> FakeBuilder:
        return self

    def appName(self, _name: str) -> FakeBuilder:
        return self

    def config(self, key: str, value: str) -> FakeBuilder:
        self.conf[key] = value
        return self

    def getOrCreate(self) -> FakeBuilder:
        self.env_at_start = os.environ.get("SPARK_LOCAL_DIRS")
        return self

    def stop(self) -> None:
        self.stopped = True


def test_a_local_session_keeps_its_scratch_in_the_given_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Spark's scratch (and the tasks' folders, which follow SPARK_LOCAL_DIRS) under the replay's
    private folder, whatever the user's $SPARK_LOCAL_DIRS; the variable restored afterwards."""
    pyspark_sql = pytest.importorskip("pyspark.sql", reason="PySpark is not installed")
    from redflags.cli.spark import session

    fake = FakeBuilder()
    monkeypatch.setattr(pyspark_sql.SparkSession, "builder", fake)
    monkeypatch.setattr(pyspark_sql.SparkSession, "getActiveSession", staticmethod(lambda: None))
    monkeypatch.setenv("SPARK_LOCAL_DIRS", "/users/own")
    with session("local[2]", local_dir=tmp_path) as started:
        assert started is fake
    assert fake.conf["spark.local.dir"] == str(tmp_path) and fake.env_at_start == str(tmp_path)
    assert fake.stopped and os.environ["SPARK_LOCAL_DIRS"] == "/users/own"


def test_an_active_session_is_used_and_left_running(monkeypatch: pytest.MonkeyPatch) -> None:
    pyspark_sql = pytest.importorskip("pyspark.sql", reason="PySpark is not installed")
    from redflags.cli.spark import session

    active = FakeBuilder()
    monkeypatch.setattr(pyspark_sql.SparkSession, "getActiveSession", staticmethod(lambda: active))
    with session("local[2]") as started:
        assert started is active
    assert not active.stopped


def spark_scratch(folder: Path) -> list[Path]:
    """The tasks' scratch folders anywhere under ``folder`` (Spark nests them in its own dirs)."""
    try:
        return list(folder.rglob("redflags-spark-*"))
    except OSError:  # a folder removed while walked
        return []


@pytest.mark.slow  # a second Spark JVM (~1 min): the default run pays for one command-line JVM
def test_ctrl_c_on_spark_leaves_no_scratch(tmp_path_factory: pytest.TempPathFactory) -> None:
    """SIGINT while executors' tasks run: --tmp-dir is empty afterwards, $SPARK_LOCAL_DIRS untouched.

    Slow (its own JVM): deselected by default, run with ``pytest -m slow``."""
    big = tmp_path_factory.mktemp("spark-big")
    generate(big, 3000, parse_now(NOW), per_file=500)
    scratch, theirs = tmp_path_factory.mktemp("spark-tmp"), tmp_path_factory.mktemp("spark-theirs")
    exe = Path(sys.executable).with_name("redflags")
    cmd = [str(exe), "replay", str(big), "--now", NOW, "--format", "json", *SPARK, "--tmp-dir", str(scratch)]
    env = {**os.environ, "SPARK_LOCAL_DIRS": str(theirs)}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 240
        while not spark_scratch(scratch):  # a task is running, with its scratch in the private folder
            assert proc.poll() is None, "the replay ended before it could be interrupted"
            assert time.monotonic() < deadline, "no task scratch folder appeared under --tmp-dir"
            time.sleep(0.01)
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0
    assert list(scratch.iterdir()) == [] and list(theirs.iterdir()) == []
