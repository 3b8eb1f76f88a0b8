"""Several rules configurations in one process (docs/engine.md#several-configurations-in-one-process).

Each configuration compiles its own durable ruleset; engines of one configuration share it.
Every test runs in its own interpreter: a memory error takes the process down.
"""

from __future__ import annotations

import json

import pytest

from .durable_fix_helpers import engine_reports, has_valgrind, run_durable
from .engine_helpers import ROOT, isolated


def test_two_configurations_interleaved_each_keep_their_threshold() -> None:
    out = isolated("""
        site = {"cauda_equina_syndrome": {"pvr_ml": 400}}
        default, strict = Engine(MODULES), Engine(MODULES, params=site)
        again = Engine(MODULES, params=site)
        answers = set()
        for k in range(200):
            pid = f"Patient/{k}"
            facts = [*ces_back(pid), value(pid, "pvr_volume", 350, f"Observation/pvr{k}")]
            engine = (default, strict, again)[k % 3]
            answers.add((k % 3, len(engine.evaluate(pid, facts, NOW).alerts)))
        print(sorted(answers))
        print(default._shared.name, strict._shared.name, again._shared is strict._shared)
    """)
    assert out.splitlines() == ["[(0, 1), (1, 0), (2, 0)]", "redflags redflags_1 True"]


#: Every fixture's alerts under the default configuration, one line of JSON; with ``OTHER`` set,
#: each file is also evaluated under a second configuration just before (same process).
CORPUS = """
import json
from pathlib import Path
from redflags.pipeline import Pipeline
from redflags.replay.corpus import replay_expected
from redflags.replay.per_file import expand
default = Pipeline()
other = Pipeline(params=OTHER) if OTHER else None
seen = {}
for path in expand([Path("fixtures")]):
    if other is not None:
        list(replay_expected([path], other, NOW))
    for checked in replay_expected([path], default, NOW):
        seen[str(path)] = sorted(
            (p.pid, a.rule, a.severity, a.tier) for p in checked.result.patients for a in p.alerts
        )
print(json.dumps(seen, sort_keys=True))
"""

#: A second configuration that changes thresholds in several rules (derived facts and scores too).
OTHER = {
    "cauda_equina_syndrome": {"pvr_ml": 450},
    "guillain_barre_syndrome": {"fvc_per_kg_min": 15},
}


def test_the_fixture_corpus_is_unchanged_by_a_second_configuration_in_the_process() -> None:
    alone = json.loads(isolated("OTHER = None\n" + CORPUS).splitlines()[-1])
    shared = json.loads(isolated(f"OTHER = {OTHER!r}\n" + CORPUS).splitlines()[-1])
    assert len(alone) > 100 and sum(map(len, alone.values())) > 50
    assert shared == alone


#: Two configurations interleaved: sessions that derive, that match, and that match nothing.
UNDER_VALGRIND = f"""
import sys
sys.path.insert(0, {str(ROOT / "tests")!r})
from engine.session import Engine
from rulesets import MODULES
from engine_helpers import NOW, ces_back, ces_saddle, value
default = Engine(MODULES)
strict = Engine(MODULES, params={{"cauda_equina_syndrome": {{"pvr_ml": 400}}}})
seen = set()
for k in range(40):
    pid = f"Patient/{{k}}"
    facts = [*ces_back(pid), value(pid, "pvr_volume", 350, f"Observation/pvr{{k}}")]
    if k % 4 == 0:
        facts = [{{"t": "patient", "pid": pid, "ref": pid}}]
    elif k % 4 == 1:
        facts += ces_saddle(pid)
    seen.add((k % 4, len((default, strict)[k % 2].evaluate(pid, facts, NOW).alerts)))
print(sorted(seen))
"""


@pytest.mark.slow
@pytest.mark.skipif(not has_valgrind(), reason="valgrind is not installed")
def test_valgrind_finds_no_memory_error_with_two_configurations() -> None:
    """About 50 s: the rules compiled twice under valgrind."""
    run = run_durable(UNDER_VALGRIND, timeout=900, valgrind=True)
    assert engine_reports(run.err) == []
    # saddle + back pain alerts under both; PVR 350 mL only under the default 200 mL
    assert (run.code, run.lines) == (0, ["[(0, 0), (1, 1), (2, 1), (3, 0)]"]), run.err[-2000:]
