"""Evaluation work grows linearly with a patient's records, and is bounded per patient.

Work is counted, never timed: ``Evaluation.actions`` (rule actions durable-rules ran, one per
combination of facts it matched), ``Evaluation.facts`` and ``Evaluation.derived`` (facts
asserted). Timings and RSS against N are in ``python -m bench.limits``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from bench.limits import inflate
from engine.session import Evaluation
from fhir_adapters.intake import group, resources_of
from fhir_adapters.times import parse_now
from redflags.pipeline import Pipeline, bounded
from redflags.state.stores import open_state as open_store
from redflags.stateful import Memory

from .conftest import FIXTURES, ROOT

GBS = FIXTURES / "guillain_barre_syndrome" / "tierA-egris-6.json"
CES = FIXTURES / "cauda_equina_syndrome" / "tierA-new-urinary-retention-bilateral-sciatica.json"


def _now(path: Path) -> int:
    return parse_now(json.loads(path.with_name(path.stem + ".expected.json").read_text())["now"])


def _evaluate(pipeline: Pipeline, doc: dict[str, Any], now: int) -> Evaluation:
    (mapped,) = list(pipeline.facts(group("test", resources_of(doc, "Bundle"))))
    return pipeline.engine.evaluate(mapped.pid, mapped.facts, now)


def _alerts(evaluation: Evaluation) -> list[tuple[str, str]]:
    return sorted((a.rule, a.tier) for a in evaluation.alerts)


@pytest.mark.parametrize("path", [GBS, CES], ids=["gbs", "ces"])
def test_records_sent_again_under_new_ids_add_no_work(pipeline: Pipeline, path: Path) -> None:
    """A record copied 40 times is asserted once, cited by its copies; the alert is the same."""
    doc = json.loads(path.read_text())
    once = _evaluate(pipeline, doc, _now(path))
    many = _evaluate(pipeline, inflate(doc, 40), _now(path))
    assert _alerts(many) == _alerts(once) != []
    # equal but for their resource: asserted once (a copy of a result taken at the same time as
    # the newest is not itself the newest, so a result series may count twice)
    assert many.facts < 2 * once.facts  # before: every copy asserted (40 more facts)
    assert many.actions < 2 * once.actions  # before: copies joined with copies, k**2 and more
    cited = {ref for alert in many.alerts for ref in alert.evidence}
    assert any(ref.startswith(("Condition/copy-", "Observation/copy-")) for ref in cited)


def test_dated_records_cost_linear_work_along_derivation_chains(pipeline: Pipeline) -> None:
    """GBS chains derived facts (bilateral -> weakness -> core -> alert): n records of each
    finding made n**2, n**3... combinations; now the actions per record stay flat."""
    doc = json.loads(GBS.read_text())
    small = _evaluate(pipeline, inflate(doc, 20, dated=True), _now(GBS))
    large = _evaluate(pipeline, inflate(doc, 80, dated=True), _now(GBS))
    assert _alerts(small) == _alerts(large) == [("guillain_barre_syndrome", "A")]
    per_record = [small.actions / 20, large.actions / 80]
    assert per_record[1] <= 1.5 * per_record[0], per_record  # before: x4 (quadratic) and more
    assert large.derived <= 2 * large.facts


def test_an_alert_cites_every_record_behind_derivations_asserted_once(pipeline: Pipeline) -> None:
    doc = json.loads(GBS.read_text())
    evaluation = _evaluate(pipeline, inflate(doc, 27, dated=True, step=60), _now(GBS))
    (alert,) = evaluation.alerts
    copies = {ref for ref in alert.evidence if "/copy-" in ref}
    assert len(copies) >= 9  # every round of copies of the findings behind the alert


def test_facts_per_patient_are_bounded_to_the_most_recent() -> None:
    facts: list[dict[str, object]] = [{"t": "patient", "pid": "Patient/p", "ref": "Patient/p"}]
    facts += [
        {"t": "finding", "pid": "Patient/p", "key": "k", "ts": i, "ref": f"Observation/{i}"}
        for i in range(100)
    ]
    kept, issues = bounded("Patient/p", facts, 10)
    assert len(kept) == 10 and kept[0]["t"] == "patient"
    assert sorted(int(f["ts"]) for f in kept[1:]) == list(range(91, 100))  # type: ignore[call-overload]
    (issue,) = issues
    assert "limit of 10 facts per patient" in issue.message and issue.code == "too-costly"
    assert bounded("Patient/p", facts, None) == (facts, [])


def test_history_beyond_the_fact_cap_never_reaches_the_engine(
    pipeline: Pipeline, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A patient whose stored history exceeds the cap: the engine is handed at most the cap."""
    doc = json.loads(GBS.read_text())
    now = _now(GBS)
    store = open_store(str(tmp_path / "state.sqlite"))
    tracker = Pipeline(memory=Memory(store, actor="test", queue=False))
    list(tracker.evaluate(group("history", resources_of(inflate(doc, 300, dated=True), "Bundle")), now))
    handed: list[int] = []
    evaluate = tracker.engine.evaluate

    def spy(pid: str, facts: Any, at: int) -> Evaluation:
        handed.append(len(facts))
        return evaluate(pid, facts, at)

    monkeypatch.setattr(tracker.engine, "evaluate", spy)
    monkeypatch.setattr(tracker, "max_facts", 50)
    (tracked,) = list(tracker.evaluate(group("next", resources_of(doc, "Bundle")), now + 60))
    assert handed == [50]
    assert any("limit of 50 facts per patient" in i.message for i in tracked.issues)
    store.close()


def test_replay_names_a_patient_over_the_fact_cap_and_runs_the_others(tmp_path: Path) -> None:
    big = tmp_path / "big.json"
    big.write_bytes(orjson.dumps(inflate(json.loads(GBS.read_text()), 200, dated=True)))
    other = tmp_path / "other.json"
    other.write_bytes(CES.read_bytes())
    done = subprocess.run(
        [
            *(sys.executable, "-m", "redflags.cli", "replay", str(big), str(other), "--format", "json"),
            *("--now", "2025-03-10T12:00:00Z", "--max-facts-per-patient", "100"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    errors = [line for line in done.stderr.splitlines() if "limit of 100 facts per patient" in line]
    assert len(errors) == 1 and errors[0].startswith(str(big)), done.stderr
    assert done.returncode == 1
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    by_source = {line["source"]: line for line in lines}
    assert by_source[str(other)]["alerts"][0]["rule"] == "cauda_equina_syndrome"
    assert str(big) in by_source  # evaluated on its most recent 100 facts
