"""Replay benchmark: throughput, peak memory and cost relative to plain orjson parsing.

For each N, synthetic patients (``bench.synthetic``: ~20 resources each, 10 % positive) are
written as a folder of collection Bundles, then a fresh child process (so peak RSS is per N)
builds one Pipeline and measures, over the same files:

* end-to-end: ``redflags.replay.replay`` over the folder, every result consumed (alerts counted
  and checked against what the generator planted);
* baseline: per file, ``path.read_bytes()`` then ``orjson.loads``; read and parse are timed
  separately. The headline ratio is end-to-end / (read + parse), since replay reads the files
  too; end-to-end / parse alone is printed beside it.

The replay runs first, so the RSS read right after it is the replay's own peak.

    python -m bench.replay                 # N = 1,000 and 100,000
    python -m bench.replay --quick         # N = 1,000 and 10,000
    python -m bench.replay --n 1000 --profile /tmp/replay.prof
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RSS_TARGET = 1.20  # RSS(largest N) / RSS(smallest N)
RATIO_TARGET = 20.0  # end-to-end / orjson parse of the same bytes


def _rss_mib() -> float:
    """Peak resident set size of this process so far (ru_maxrss is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --------------------------------------------------------------------------- child


def child(folder: Path, now_text: str, expect: dict, profile: Path | None) -> int:
    """Measure one corpus in this (fresh) process; print one JSON line; 1 if the alerts are wrong."""
    rss_start = _rss_mib()
    import orjson

    from fhir_adapters.times import parse_now
    from redflags import logs
    from redflags.pipeline import Pipeline
    from redflags.replay import expand, replay

    logs.configure("warning")
    rss_import = _rss_mib()
    t = time.perf_counter()
    pipeline = Pipeline()
    setup_s = time.perf_counter() - t
    rss_pipeline = _rss_mib()
    now = parse_now(now_text)
    files = list(expand([folder]))

    patients = positives = errors = issues = 0
    by_rule: Counter[str] = Counter()
    severities: Counter[str] = Counter()
    profiler = None
    if profile is not None:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    t = time.perf_counter()
    for result in replay(files, pipeline, now):
        if result.error:
            errors += 1
            print(f"{result.source}: {result.error}", file=sys.stderr)
        issues += len(result.issues)
        for patient in result.patients:
            patients += 1
            issues += len(patient.issues)
            if patient.alerts:
                positives += 1
            for alert in patient.alerts:
                by_rule[alert.rule] += 1
                severities[alert.severity] += 1
    e2e_s = time.perf_counter() - t
    if profiler is not None:
        profiler.disable()
        profiler.dump_stats(profile)
    rss_replay = _rss_mib()

    read_s = parse_s = 0.0
    size = 0
    for path in files:
        t0 = time.perf_counter()
        data = path.read_bytes()
        t1 = time.perf_counter()
        doc = orjson.loads(data)
        t2 = time.perf_counter()
        read_s += t1 - t0
        parse_s += t2 - t1
        size += len(data)
        del doc, data
    rss_end = _rss_mib()

    problems = []
    if patients != expect["patients"]:
        problems.append(f"patients {patients} != {expect['patients']}")
    if positives != expect["positives"]:
        problems.append(f"positive patients {positives} != {expect['positives']}")
    if dict(by_rule) != expect["by_rule"]:
        problems.append(f"alerts per rule {dict(by_rule)} != {expect['by_rule']}")
    if errors or issues:
        problems.append(f"{errors} unreadable files, {issues} input issues")
    print(
        json.dumps(
            {
                "files": len(files),
                "bytes": size,
                "patients": patients,
                "positives": positives,
                "by_rule": dict(by_rule),
                "severities": dict(severities),
                "setup_s": setup_s,
                "e2e_s": e2e_s,
                "read_s": read_s,
                "parse_s": parse_s,
                "rss_start": rss_start,
                "rss_import": rss_import,
                "rss_pipeline": rss_pipeline,
                "rss_replay": rss_replay,
                "rss_end": rss_end,
                "problems": problems,
            }
        )
    )
    return 1 if problems else 0


# --------------------------------------------------------------------------- parent


def run_one(n: int, per_file: int, now_text: str, seed: int, profile: Path | None) -> dict:
    """Generate n patients into a temporary folder and measure them in a fresh process."""
    from bench.synthetic import generate
    from fhir_adapters.times import parse_now

    with tempfile.TemporaryDirectory(prefix=f"redflags-bench-{n}-") as tmp:
        t = time.perf_counter()
        corpus = generate(Path(tmp), n, parse_now(now_text), per_file=per_file, seed=seed)
        gen_s = time.perf_counter() - t
        expect = {"patients": corpus.patients, "positives": corpus.positives, "by_rule": corpus.by_rule}
        cmd = [sys.executable, "-m", "bench.replay", "--child", tmp, "--now", now_text]
        cmd += ["--expect", json.dumps(expect)]
        if profile is not None:
            cmd += ["--profile", str(profile)]
        t = time.perf_counter()
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
        child_s = time.perf_counter() - t
    sys.stderr.write(proc.stderr)
    lines = proc.stdout.strip().splitlines()
    if not lines:
        raise SystemExit(f"N={n}: the child process failed (exit {proc.returncode})")
    out = json.loads(lines[-1])
    out.update(
        n=n,
        gen_s=gen_s,
        child_s=child_s,
        resources=corpus.resources,
        expected_positives=corpus.positives,
        returncode=proc.returncode,
    )
    return out


def _row(r: dict) -> str:
    ratio = r["e2e_s"] / (r["read_s"] + r["parse_s"])
    return (
        f"{r['patients']:>9,} {r['files']:>6,} {r['resources']:>10,} {r['bytes'] / 1e6:>9.1f} "
        f"{r['e2e_s']:>8.2f} {r['patients'] / r['e2e_s']:>9,.0f} {r['read_s'] + r['parse_s']:>8.3f} "
        f"{r['parse_s']:>8.3f} {ratio:>7.1f} {r['e2e_s'] / r['parse_s']:>7.1f} "
        f"{r['rss_pipeline']:>9.1f} {r['rss_replay']:>9.1f} {r['rss_end']:>8.1f}"
    )


HEADER = (
    f"{'patients':>9} {'files':>6} {'resources':>10} {'MB':>9} {'e2e s':>8} {'pat/s':>9} "
    f"{'orjson s':>8} {'parse s':>8} {'ratio':>7} {'ratio/p':>7} "
    f"{'RSS0 MiB':>9} {'RSS MiB':>9} {'RSSend':>8}"
)
LEGEND = """\
  orjson s = read_bytes + orjson.loads of every file; parse s = orjson.loads alone
  ratio = e2e / orjson s (read+parse, the headline); ratio/p = e2e / parse alone
  RSS0 = peak RSS after imports + Pipeline(); RSS = peak after the replay; RSSend = after the parse pass"""


def report(results: list[dict]) -> bool:
    """Print the table and the targets; return True when every replay found the planted alerts."""
    print(HEADER)
    for r in results:
        print(_row(r))
    print(LEGEND)
    ok = True
    for r in results:
        print(
            f"N={r['n']:,}: generate {r['gen_s']:.1f} s, child process {r['child_s']:.1f} s "
            f"(Pipeline() {r['setup_s']:.2f} s; RSS at start {r['rss_start']:.1f}, after imports "
            f"{r['rss_import']:.1f}, after Pipeline() {r['rss_pipeline']:.1f} MiB); "
            f"alerts {r['by_rule']} severities {r['severities']}; "
            f"positive patients {r['positives']:,} / expected {r['expected_positives']:,}"
        )
        if r["problems"]:
            ok = False
            print(f"  WRONG RESULTS at N={r['n']:,}: {'; '.join(r['problems'])}")
    for r in results:
        ratio = r["e2e_s"] / (r["read_s"] + r["parse_s"])
        verdict = "PASS" if ratio <= RATIO_TARGET else "MISS"
        print(f"target end-to-end <= {RATIO_TARGET:g}x orjson at N={r['n']:,}: {ratio:.1f}x {verdict}")
    if len(results) > 1:
        small, large = min(results, key=lambda r: r["n"]), max(results, key=lambda r: r["n"])
        mem = large["rss_replay"] / small["rss_replay"]
        verdict = "PASS" if mem <= RSS_TARGET else "MISS"
        growth = (large["rss_replay"] - large["rss_pipeline"], small["rss_replay"] - small["rss_pipeline"])
        print(
            f"target RSS(N={large['n']:,}) <= {RSS_TARGET:.2f} x RSS(N={small['n']:,}): "
            f"{large['rss_replay']:.1f} / {small['rss_replay']:.1f} MiB = {mem:.3f} {verdict} "
            f"(growth over RSS0: {growth[0]:.1f} vs {growth[1]:.1f} MiB)"
        )
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.replay", description=__doc__.splitlines()[0])
    parser.add_argument("--n", default="1000,100000", help="comma-separated patient counts")
    parser.add_argument("--quick", action="store_true", help="N = 1000,10000")
    parser.add_argument("--per-file", type=int, default=100, help="patients per Bundle file")
    parser.add_argument("--now", default="2025-03-10T12:00:00Z", help="evaluation time (ISO-8601)")
    parser.add_argument("--seed", type=int, default=20250310)
    parser.add_argument("--profile", type=Path, help="cProfile the replay loop into this file (last N)")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--expect", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(args.child, args.now, json.loads(args.expect), args.profile)
    sizes = [1000, 10000] if args.quick else [int(x.replace("_", "")) for x in args.n.split(",")]
    results = []
    for i, n in enumerate(sizes):
        profile = args.profile if i == len(sizes) - 1 else None
        results.append(run_one(n, args.per_file, args.now, args.seed, profile))
        print(f"N={n:,} done", file=sys.stderr, flush=True)
    ok = report(results)
    if args.profile:
        import pstats

        print(f"\ncProfile of the replay loop at N={sizes[-1]:,} ({args.profile}), by cumulative time:")
        pstats.Stats(str(args.profile)).sort_stats("cumulative").print_stats(25)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
