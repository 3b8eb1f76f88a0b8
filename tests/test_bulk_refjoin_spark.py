"""On Spark, a Medication on its own line of an export is joined as in the local replay: the
driver gathers the resources naming no patient (small: an export's Medications) into one SQLite
index broadcast to the executors, whose evaluation joins them like ``--jobs`` workers do.
Skipped with the reason when Spark cannot start here (``test_spark_replay.spark``)."""

from __future__ import annotations

from pathlib import Path

import orjson

from fhir_adapters.times import parse_now

from .bulk_helpers import run
from .refjoin_helpers import ACETAMINOPHEN, LEVOFLOXACIN, NOW, as_export, medication, mg_record
from .spark_helpers import spark  # noqa: F401  (the module's SparkSession fixture)

SPARK = ("--executor", "spark", "--spark-master", "local[2]")


def _export(tmp_path: Path) -> Path:
    resources = [
        *mg_record("mg-1"),
        *mg_record("mg-2", drug="Medication/apap"),
        *mg_record("mg-3"),
        medication("levo", LEVOFLOXACIN),
        medication("apap", ACETAMINOPHEN),
        medication("unused", ACETAMINOPHEN),
    ]
    return as_export(tmp_path / "export", resources, ".ndjson.gz", 2)


def test_a_medication_alone_is_joined_on_spark_as_locally(spark: object, tmp_path: Path) -> None:  # noqa: F811
    from redflags.spark import EngineSpec, SparkStats, replay_lines

    folder = _export(tmp_path)
    local = run("replay", folder, "--now", NOW, "--format", "json")
    assert local.returncode == 0, local.stderr
    assert "resources naming no patient (not evaluated): 1 Medication" in local.stderr
    want = local.stdout.splitlines()
    joined = {orjson.loads(line)["patient"]: orjson.loads(line).get("sources", []) for line in want}
    assert all(any("Medication." in s for s in sources) for sources in joined.values()), joined
    stats, reported = SparkStats(), []
    lines = [
        line.decode()
        for line in replay_lines(
            spark,  # type: ignore[arg-type]
            [folder],
            EngineSpec(),
            parse_now(NOW),
            reported.append,
            stats,
            partitions=3,
        )
    ]
    assert lines == want and reported == []
    assert stats.without_patient == {"Medication": 1}


def test_the_command_line_on_spark_prints_the_local_lines_and_count(spark: object, tmp_path: Path) -> None:  # noqa: F811
    folder = _export(tmp_path)
    local = run("replay", folder, "--now", NOW, "--format", "json")
    done = run("replay", folder, "--now", NOW, "--format", "json", *SPARK)
    assert done.returncode == 0, done.stderr
    assert done.stdout == local.stdout
    assert "resources naming no patient (not evaluated): 1 Medication" in done.stderr
