"""Evaluation cost against the number of records of one patient: time, RSS, rule actions.

One fixture patient is inflated with N extra Conditions/Observations, copies of its own
(``inflate``): ``copies`` keeps their dates (a record sent N times under new ids), ``dated``
moves each round of copies ``--step`` seconds earlier (a long, dense history). Each (mode, N)
runs in a fresh child process, so RSS is that of one evaluation; the engine call alone is timed.
The ratio printed is the per-fact cost at the largest N over that at the smallest: 1.0 is
linear, N_max/N_min is quadratic.

    python -m bench.limits                     # N = 1k, 2k, 5k, 10k, 20k, both modes
    python -m bench.limits --n 1000 --n 5000 --mode dated
"""

from __future__ import annotations

import argparse
import copy
import json
import resource
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "fixtures"
#: Fixtures whose rules chain derived facts (GBS) or pair findings by side (CES).
DEFAULT_FIXTURES = (
    "guillain_barre_syndrome/tierA-egris-6.json",
    "cauda_equina_syndrome/tierA-new-urinary-retention-bilateral-sciatica.json",
)
CLINICAL = ("Condition", "Observation")


def _shift(value: object, seconds: int) -> object:
    """Every FHIR dateTime with a time inside ``value`` moved ``seconds`` earlier."""
    if isinstance(value, dict):
        return {k: _shift(v, seconds) for k, v in value.items()}
    if isinstance(value, list):
        return [_shift(v, seconds) for v in value]
    if isinstance(value, str) and len(value) >= 16 and value[4] == "-" and value[10] == "T":
        try:
            when = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return value
        return (when - timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return value


def inflate(bundle: dict, n: int, *, dated: bool = False, step: int = 600) -> dict:
    """``bundle`` plus ``n`` copies of its Conditions/Observations under new ids."""
    entries = bundle["entry"]
    clinical = [e for e in entries if e["resource"]["resourceType"] in CLINICAL]
    extra = []
    for i in range(n):
        resource = copy.deepcopy(clinical[i % len(clinical)]["resource"])
        if dated:
            resource = _shift(resource, (i // len(clinical) + 1) * step)
        resource["id"] = f"copy-{i}"
        extra.append({"fullUrl": f"urn:uuid:copy-{i}", "resource": resource})
    return {**bundle, "entry": [*entries, *extra]}


def child(fixture: Path, n: int, dated: bool, step: int) -> None:
    """Measure one (fixture, mode, N) in this fresh process; print one JSON line."""
    import time

    from fhir_adapters.intake import group, resources_of
    from fhir_adapters.times import parse_now
    from redflags import logs
    from redflags.pipeline import Pipeline

    logs.configure("error")
    now = parse_now(json.loads(fixture.with_name(fixture.stem + ".expected.json").read_text())["now"])
    try:
        pipeline = Pipeline(max_facts=None)
    except TypeError:  # a version without the facts-per-patient limit (before/after runs)
        pipeline = Pipeline()
    doc = inflate(json.loads(fixture.read_text()), n, dated=dated, step=step)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    (mapped,) = list(pipeline.facts(group("bench", resources_of(doc, "Bundle"))))
    t = time.perf_counter()
    evaluation = pipeline.engine.evaluate(mapped.pid, mapped.facts, now)
    seconds = time.perf_counter() - t
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps(
            {
                "facts": len(mapped.facts),
                "asserted": evaluation.facts,
                "derived": getattr(evaluation, "derived", -1),  # -1: not counted by this version
                "actions": getattr(evaluation, "actions", -1),
                "seconds": round(seconds, 4),
                "rss_mib": round(rss - rss0, 1),
                "alerts": sorted(f"{a.rule}:{a.tier}" for a in evaluation.alerts),
            }
        )
    )


def main(argv: list[str] | None = None) -> int:
    raw = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=raw)
    parser.add_argument("--n", type=int, action="append", help="records added (repeatable)")
    parser.add_argument("--mode", choices=("copies", "dated"), action="append")
    parser.add_argument("--fixture", action="append", help="fixture path under fixtures/ (repeatable)")
    parser.add_argument("--step", type=int, default=600, help="seconds between rounds of dated copies")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per child")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        fixture, n, mode, step = args.child
        child(Path(fixture), int(n), mode == "dated", int(step))
        return 0
    sizes = args.n or [1_000, 2_000, 5_000, 10_000, 20_000]
    failed = False
    for name in args.fixture or DEFAULT_FIXTURES:
        for mode in args.mode or ["copies", "dated"]:
            rows = []
            print(f"\n{name} ({mode})")
            head = ("N", "facts", "asserted", "derived", "actions", "s", "RSS MiB")
            print(" ".join(f"{h:>8}" for h in head))
            for n in sizes:
                cmd = [sys.executable, "-m", "bench.limits", "--child", str(FIXTURES / name), str(n), mode]
                try:
                    done = subprocess.run(
                        [*cmd, str(args.step)], capture_output=True, text=True, timeout=args.timeout, cwd=ROOT
                    )
                except subprocess.TimeoutExpired:
                    print(f"{n:>7} timed out after {args.timeout:g} s")
                    failed = True
                    break
                if done.returncode != 0:
                    print(f"{n:>7} failed: {done.stderr.strip().splitlines()[-1:]}")
                    failed = True
                    break
                row = json.loads(done.stdout.splitlines()[-1])
                rows.append((n, row))
                print(
                    f"{n:>7} {row['facts']:>7} {row['asserted']:>8} {row['derived']:>7} {row['actions']:>8} "
                    f"{row['seconds']:>8.3f} {row['rss_mib']:>8.1f}  {' '.join(row['alerts'])}"
                )
            if len(rows) >= 2:
                (n0, first), (n1, last) = rows[0], rows[-1]
                per = [r["seconds"] / max(1, r["facts"]) for r in (first, last)]
                acts = [max(1, r["actions"]) / max(1, r["facts"]) for r in (first, last)]
                print(
                    f"per-fact cost at N={n1} / at N={n0}: time x{per[1] / per[0]:.2f}, "
                    f"actions x{acts[1] / acts[0]:.2f} (linear = 1, quadratic = {n1 / n0:g})"
                )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
