"""Replay benchmark: throughput, peak memory and cost relative to plain orjson parsing.

Two layouts of the same synthetic patients (``bench.synthetic``: ~20 resources each, 10 %
positive):

* ``split`` (default): a Bulk Data export, one NDJSON per resource type (TYPE.N.ndjson, written
  by ``bench.bulk_memory.write_export``), replayed end-to-end by ``redflags replay FOLDER
  --jobs J`` in a child process (peak RSS from ``wait4``: the replay and the workers it waited
  for); the output is streamed, alerts counted and checked against what the generator planted.
  The floor is measured in the same run over the same bytes: read each file, ``orjson.loads``
  each line. The headline ratio is end-to-end / floor.
* ``bundles``: a folder of collection Bundles replayed in-process by ``redflags.replay.per_file`` (the
  per-file path), as before: end-to-end over the files vs read_bytes + orjson.loads of each.

``--memory`` runs the split layout at 1,000 / 100,000 / 1,000,000 patients (patients are
generated one at a time, written straight to disk, never held; each size's files are deleted
before the next; ~10 GB of NDJSON at a million) and reports peak RSS and its ratio 1M / 1k.

    python -m bench.replay --quick                 # split, N = 1,000 and 10,000, --jobs 1
    python -m bench.replay --n 5000 --jobs 1,2     # split, both --jobs values
    python -m bench.replay --memory --tmp-dir /var/tmp   # 1k / 100k / 1M
    python -m bench.replay --layout bundles --quick
    python -m bench.replay --layout bundles --n 1000 --profile /tmp/replay.prof
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RSS_TARGET = 1.20  # RSS(largest N) / RSS(smallest N)
RATIO_TARGET = 20.0  # bundles layout: end-to-end / orjson parse of the same bytes
SPLIT_RATIO_TARGET = 5.0  # split layout, --jobs 1: end-to-end / (read + orjson parse)
MEMORY_RSS_TARGET = 1.5  # --memory: peak RSS at 1,000,000 / at 1,000
MEMORY_SIZES = (1000, 100_000, 1_000_000)
#: start-up: ``redflags replay`` of one small fixture, CPU seconds (user+sys, the child's), median
STARTUP_FILE = ROOT / "fixtures" / "hypokalemic_or_electrolyte_weakness" / "tierB-potassium-6.2-weakness.json"
#: the same measured at 30fb331 (the commit issue 15 was filed against; PyPI durable-rules 2.0.28)
#: on the 2-core VM, bytecode cached, trees interleaved in one run; issue 15 asks for 3x less
STARTUP_BASELINE_CPU_S = 0.50
STARTUP_SPEEDUP_TARGET = 3.0
#: and at a235a22 (engine build 2, before issue 15 item 6's lazy imports): a second ratio, no target
STARTUP_A235A22_CPU_S = 0.31


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
    from redflags.replay.per_file import expand, replay

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
        issues += sum(i.severity == "error" for i in result.issues)  # warnings: read anyway
        for patient in result.patients:
            patients += 1
            issues += sum(i.severity == "error" for i in patient.issues)
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


# --------------------------------------------------------------------------- split layout


def expected(n: int, seed: int) -> dict:
    """What a correct replay of ``write_export(n, seed)`` finds (the same archetype draw)."""
    from bench.synthetic import EXPECTED_RULE, archetypes

    by_rule: Counter[str] = Counter(
        EXPECTED_RULE[k] for k in archetypes(n, random.Random(seed)) if EXPECTED_RULE[k]
    )
    return {"patients": n, "positives": sum(by_rule.values()), "by_rule": dict(by_rule)}


def replay_split(folder: Path, jobs: int, now_text: str, tmp: Path) -> dict:
    """``redflags replay FOLDER`` in a child process: seconds, peak RSS, what it printed."""
    exe = Path(sys.executable).with_name("redflags")
    cmd = [str(exe), "replay", str(folder), "--now", now_text, "--format", "json"]
    cmd += ["--jobs", str(jobs), "--tmp-dir", str(tmp)]
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    assert proc.stdout is not None and proc.stderr is not None
    patients = positives = 0
    by_rule: Counter[str] = Counter()
    for line in proc.stdout:  # streamed: nothing of the output is kept
        alerts = json.loads(line)["alerts"]
        patients += 1
        positives += bool(alerts)
        by_rule.update(a["rule"] for a in alerts)
    err = proc.stderr.read().decode(errors="replace")
    _pid, status, usage = os.wait4(proc.pid, 0)
    return {
        "e2e_s": time.perf_counter() - started,
        "status": os.waitstatus_to_exitcode(status),
        "peak_rss_mib": usage.ru_maxrss / 1024,
        "cpu_s": usage.ru_utime + usage.ru_stime,  # the replay and its workers: robust to load
        "patients": patients,
        "positives": positives,
        "by_rule": dict(by_rule),
        "stderr": err[-2000:],
    }


def _start_once(env: dict[str, str]) -> tuple[float, float]:
    """(CPU s, wall s) of one ``redflags replay STARTUP_FILE`` in a child process."""
    exe = Path(sys.executable).with_name("redflags")
    started = time.perf_counter()
    proc = subprocess.Popen(
        [str(exe), "replay", str(STARTUP_FILE), "--now", "2025-03-10T12:00:00Z", "--format", "json"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=ROOT,
        env=env,
    )
    _pid, _status, usage = os.wait4(proc.pid, 0)
    return usage.ru_utime + usage.ru_stime, time.perf_counter() - started


def _startup_env(pythonpath: Path | None = None) -> dict[str, str]:
    """Bytecode written and read as on a user's machine (PYTHONDONTWRITEBYTECODE left out): with
    it set, every start compiles ~75 modules again (+0.13 s CPU here)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    if pythonpath is not None:  # the child's ``redflags`` script imports this tree's packages first
        env["PYTHONPATH"] = str(pythonpath)
    return env


def startup(rounds: int = 5) -> tuple[float, float]:
    """(CPU s, wall s), medians of ``redflags replay STARTUP_FILE`` in a child process."""
    env = _startup_env()
    runs = [_start_once(env) for _ in range(rounds)]
    return statistics.median(c for c, _ in runs), statistics.median(w for _, w in runs)


def startup_vs(other: Path, rounds: int) -> tuple[float, float]:
    """(this tree's CPU s, ``other``'s CPU s), medians, the two trees' runs alternating.

    ``other`` is a checkout of another commit (``git worktree add``): the same load falls on
    both, so the ratio holds on a busy machine where either figure alone would not.
    """
    here, there = _startup_env(ROOT), _startup_env(other.resolve())
    _start_once(here), _start_once(there)  # bytecode written, files cached
    ours: list[float] = []
    theirs: list[float] = []
    for _ in range(rounds):
        ours.append(_start_once(here)[0])
        theirs.append(_start_once(there)[0])
    return statistics.median(ours), statistics.median(theirs)


def report_startup(cpu_s: float, wall_s: float) -> bool:
    speedup = STARTUP_BASELINE_CPU_S / cpu_s
    verdict = "PASS" if speedup >= STARTUP_SPEEDUP_TARGET else "MISS"
    print(
        f"start-up (redflags replay of one small file): {cpu_s:.3f} s CPU, {wall_s:.3f} s wall; "
        f"{speedup:.2f}x faster than {STARTUP_BASELINE_CPU_S:g} s CPU at 30fb331 "
        f"(target >= {STARTUP_SPEEDUP_TARGET:g}x) {verdict}; "
        f"{STARTUP_A235A22_CPU_S / cpu_s:.2f}x vs {STARTUP_A235A22_CPU_S:g} s at a235a22"
    )
    return verdict == "PASS"


def floor(folder: Path) -> tuple[float, float, int, float]:
    """(read s, orjson parse s, bytes, CPU s): every file read whole, then every line parsed.

    The CPU seconds (user+sys of this process) are what ``cpu/fl`` divides by: the replay's CPU
    over the floor's wall time would flatter the replay on a loaded machine.
    """
    import orjson

    read_s = parse_s = 0.0
    size = 0
    cpu = time.process_time()
    for path in sorted(folder.iterdir()):
        t0 = time.perf_counter()
        data = path.read_bytes()
        t1 = time.perf_counter()
        for line in data.splitlines():
            orjson.loads(line)
        read_s += t1 - t0
        parse_s += time.perf_counter() - t1
        size += len(data)
        del data
    return read_s, parse_s, size, time.process_time() - cpu


def run_split(n: int, jobs_list: list[int], per_file: int, now_text: str, seed: int, tmp: Path) -> list[dict]:
    """Write n patients split by type, replay them with each --jobs, measure the floor; delete."""
    from bench.bulk_memory import write_export

    folder = tmp / f"export-{n}"
    folder.mkdir()
    try:
        t = time.perf_counter()
        size, resources = write_export(folder, n, per_file, seed)
        gen_s = time.perf_counter() - t
        want = expected(n, seed)
        rows = []
        for jobs in jobs_list:
            row = replay_split(folder, jobs, now_text, tmp)
            read_s, parse_s, _bytes, floor_cpu_s = floor(folder)  # beside each replay (same load)
            problems = [
                f"{k} {row[k]} != {want[k]}"
                for k in ("patients", "positives", "by_rule")
                if row[k] != want[k]
            ]
            if row["status"] != 0:
                problems.append(f"exit {row['status']}: {row['stderr'].strip()[-300:]}")
            row.update(
                n=n,
                jobs=jobs,
                bytes=size,
                resources=resources,
                gen_s=gen_s,
                read_s=read_s,
                parse_s=parse_s,
                floor_cpu_s=floor_cpu_s,
                problems=problems,
                load=os.getloadavg()[0],
            )
            rows.append(row)
            print(  # each size as it ends: a long --memory run that is stopped keeps what it measured
                f"N={n:,} --jobs {jobs} done: {row['e2e_s']:.1f} s, cpu {row['cpu_s']:.1f} s, "
                f"peak RSS {row['peak_rss_mib']:.1f} MiB, floor {read_s + parse_s:.2f} s, "
                f"{size / 2**20:.0f} MiB, exit {row['status']}, problems {row['problems'] or 'none'}",
                file=sys.stderr,
                flush=True,
            )
        return rows
    finally:
        shutil.rmtree(folder, ignore_errors=True)


SPLIT_HEADER = (
    f"{'patients':>9} {'jobs':>4} {'resources':>10} {'MiB':>8} {'e2e s':>8} {'pat/s':>7} "
    f"{'floor s':>8} {'parse s':>8} {'ratio':>6} {'cpu s':>8} {'cpu/fl':>6} {'peak RSS':>9} {'load':>5}"
)


def report_split(rows: list[dict], memory: bool) -> bool:
    """The split-layout table and its targets; True when every replay found the planted alerts."""
    print(SPLIT_HEADER)
    for r in rows:
        fl = r["read_s"] + r["parse_s"]
        print(
            f"{r['n']:>9,} {r['jobs']:>4} {r['resources']:>10,} {r['bytes'] / 2**20:>8.1f} "
            f"{r['e2e_s']:>8.2f} "
            f"{r['n'] / r['e2e_s']:>7,.0f} {fl:>8.3f} {r['parse_s']:>8.3f} {r['e2e_s'] / fl:>6.1f} "
            f"{r['cpu_s']:>8.2f} {r['cpu_s'] / r['floor_cpu_s']:>6.1f} "
            f"{r['peak_rss_mib']:>8.1f}M {r['load']:>5.2f}"
        )
    print(
        "  floor = read each file + orjson.loads of each line (same bytes, same run); ratio = e2e / floor\n"
        "  cpu s = user+sys CPU of the replay (and workers); cpu/fl = cpu s / floor CPU s (load-robust)\n"
        "  e2e = `redflags replay FOLDER --jobs J` wall time (child process, includes start-up);\n"
        "  peak RSS = largest of the replay and its workers (wait4); load = 1-min load average after"
    )
    ok = True
    for r in rows:
        if r["problems"]:
            ok = False
            print(f"  WRONG RESULTS at N={r['n']:,} --jobs {r['jobs']}: {'; '.join(r['problems'])}")
    for r in rows:
        if r["jobs"] == 1:
            fl = r["read_s"] + r["parse_s"]
            for what, ratio in (("wall", r["e2e_s"] / fl), ("CPU", r["cpu_s"] / r["floor_cpu_s"])):
                verdict = "PASS" if ratio <= SPLIT_RATIO_TARGET else "MISS"
                print(
                    f"target end-to-end <= {SPLIT_RATIO_TARGET:g}x floor at N={r['n']:,} --jobs 1 "
                    f"({what}): {ratio:.1f}x {verdict}"
                )
    by_jobs: dict[int, list[dict]] = {}
    for r in rows:
        by_jobs.setdefault(r["jobs"], []).append(r)
    for jobs, group in by_jobs.items():
        if len(group) > 1:
            small, large = min(group, key=lambda r: r["n"]), max(group, key=lambda r: r["n"])
            mem = large["peak_rss_mib"] / small["peak_rss_mib"]
            line = (
                f"peak RSS N={large['n']:,} / N={small['n']:,} (--jobs {jobs}): "
                f"{large['peak_rss_mib']:.1f} / {small['peak_rss_mib']:.1f} MiB = {mem:.2f}x"
            )
            if memory:
                line += f" {'PASS' if mem <= MEMORY_RSS_TARGET else 'MISS'} (target <= {MEMORY_RSS_TARGET}x)"
            print(line)
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.replay", description=__doc__.splitlines()[0])
    parser.add_argument("--layout", choices=("split", "bundles"), default="split")
    parser.add_argument("--n", default=None, help="comma-separated patient counts (default 1000,100000)")
    parser.add_argument("--quick", action="store_true", help="N = 1000,10000")
    parser.add_argument("--memory", action="store_true", help="split layout at N = 1000,100000,1000000")
    parser.add_argument("--jobs", default="1", help="split layout: comma-separated --jobs values")
    parser.add_argument("--per-file", type=int, default=None, help="patients per Bundle / lines per NDJSON")
    parser.add_argument("--tmp-dir", type=Path, default=None, help="split layout: where data and spill go")
    parser.add_argument("--now", default="2025-03-10T12:00:00Z", help="evaluation time (ISO-8601)")
    parser.add_argument("--seed", type=int, default=20250310)
    parser.add_argument(
        "--profile", type=Path, help="bundles: cProfile the replay loop into this file (last N)"
    )
    parser.add_argument(
        "--startup", type=int, metavar="ROUNDS", help="only the start-up figure, median of ROUNDS runs"
    )
    parser.add_argument(
        "--startup-vs",
        type=Path,
        metavar="CHECKOUT",
        help="with --startup: also start a checkout of another commit, alternating, and print the ratio",
    )
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--expect", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(args.child, args.now, json.loads(args.expect), args.profile)
    if args.startup_vs and not (args.startup_vs / "redflags" / "__init__.py").is_file():
        parser.error(f"--startup-vs {args.startup_vs}: not a redflags checkout")  # one line, exit 2
    if args.startup:
        print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}", file=sys.stderr)
        if args.startup_vs:
            ours, theirs = startup_vs(args.startup_vs, args.startup)
            print(
                f"start-up, runs alternating: this tree {ours:.3f} s CPU, {args.startup_vs} {theirs:.3f} s "
                f"CPU: {theirs / ours:.2f}x faster (load average {os.getloadavg()[0]:.2f} at the end)"
            )
        return 0 if report_startup(*startup(args.startup)) else 1
    if args.memory:
        sizes = list(MEMORY_SIZES)
    elif args.quick:
        sizes = [1000, 10000]
    else:
        sizes = [int(x.replace("_", "")) for x in (args.n or "1000,100000").split(",")]
    if args.layout == "split" or args.memory:
        if args.tmp_dir is not None and not args.tmp_dir.is_dir():
            parser.error(f"--tmp-dir {args.tmp_dir}: no such folder")  # one line, exit 2
        jobs_list = [int(j) for j in args.jobs.split(",")]
        print(
            f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} at start",
            file=sys.stderr,
        )
        started = startup()
        rows: list[dict] = []
        with tempfile.TemporaryDirectory(prefix="bench-replay-", dir=args.tmp_dir) as tmp:
            for n in sizes:
                rows += run_split(n, jobs_list, args.per_file or 50_000, args.now, args.seed, Path(tmp))
        ok = report_split(rows, args.memory)
        report_startup(*started)
        return 0 if ok else 1
    results = []
    for i, n in enumerate(sizes):
        profile = args.profile if i == len(sizes) - 1 else None
        results.append(run_one(n, args.per_file or 100, args.now, args.seed, profile))
        print(f"N={n:,} done", file=sys.stderr, flush=True)
    ok = report(results)
    if args.profile:
        import pstats

        print(f"\ncProfile of the replay loop at N={sizes[-1]:,} ({args.profile}), by cumulative time:")
        pstats.Stats(str(args.profile)).sort_stats("cumulative").print_stats(25)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
