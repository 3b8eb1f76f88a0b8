"""On demand: show that each durable fix's regression tests fail without that fix.

For each fix patch (engine/durable_patches/0004 and later) this builds durable-rules from the
released source with every patch but that one into a scratch folder, runs the fix's test files
against it (tests/durable_fix_helpers.py reads ``REDFLAGS_DURABLE_PATH``) and reports how many
tests failed; ``--without none`` builds the upstream engine with only the build patches
(0001-0003) and runs every fix test. Exit status 1 when a build passes a test it should fail.

    .venv/bin/python scripts/durable_fix_check.py            # every fix, one at a time
    .venv/bin/python scripts/durable_fix_check.py --without 0008

Slow (a build and a test run per fix, ~20 s each); not part of the suite.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent
PATCH_DIR = ROOT / "engine" / "durable_patches"
#: the tests each fix must fail without (test files, or file::test ids)
TESTS = {
    "0004": [
        "tests/test_engine_durable_fix_sessions.py::test_two_session_ids_with_one_hash_are_two_sessions",
        "tests/test_engine_durable_fix_sessions.py::test_two_fact_ids_with_one_hash_are_two_facts",
    ],
    "0005": [
        "tests/test_engine_durable_fix_sessions.py::test_deleting_a_session_where_no_rule_ran_does_not_abort",
        "tests/test_engine_durable_fix_rulesets.py",
    ],
    "0006": [
        "tests/test_engine_durable_fix_sessions.py::"
        "test_the_session_cap_refuses_one_session_and_does_not_poison_the_ruleset"
    ],
    "0007": [
        "tests/test_engine_durable_fix_sessions.py::"
        "test_deleting_an_older_session_leaves_no_stale_entry_for_the_dispatcher",
        "tests/test_engine_durable_fix_timers.py::test_durable_own_threads_run_while_older_sessions_are_deleted",
    ],
    "0008": ["tests/test_engine_durable_fix_joins.py"],
    "0009": [
        "tests/test_engine_durable_fix_errors.py::test_an_exception_in_a_rule_action_is_raised_to_the_caller",
        "tests/test_engine_durable_fix_errors.py::test_a_chained_assert_no_rule_handles_is_raised_to_the_caller",
        "tests/test_engine_durable_fix_errors.py::test_a_batch_with_a_fact_no_rule_reads_runs_every_other_action",
        "tests/test_engine_durable_fix_errors.py::test_a_batch_with_a_repeated_fact_runs_the_others_then_raises",
    ],
    "0011": ["tests/test_engine_durable_fix_strings.py"],
    "0010": [
        "tests/test_engine_durable_fix_timers.py::"
        "test_an_action_held_across_its_sessions_deletion_is_refused_not_read_after_free"
    ],
}


#: patches that change no behaviour (speed) and are written on top of every fix: left out with
#: any fix (they do not apply without the code the fixes changed)
OPTIMISATIONS = {"0012"}


def _load(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build_without(skip: set[str], scratch: Path) -> Path:
    """durable built from the sdist with every patch but those numbered in ``skip``: its folder."""
    builder = _load(ROOT / "scripts" / "build_engine.py", "_build_engine")
    pins = builder._pins()
    sdist = builder.source_distribution(pins, ROOT / "build" / "durable-rules")
    with tarfile.open(sdist) as archive:
        archive.extractall(scratch, filter="data")
    tree = scratch / f"durable_rules-{pins.UPSTREAM_VERSION}"
    for patch in pins.patch_files(PATCH_DIR):
        if patch.name[:4] not in skip:
            apply = ["patch", "-p1", "--batch", "--fuzz=0", "--no-backup-if-mismatch", "-i", str(patch)]
            builder._run(apply, f"applying {patch.name}", cwd=tree)
    (tree / "REDFLAGS_VERSION").write_text(pins.UPSTREAM_VERSION + "\n")
    target = scratch / "site"
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation"]
    builder._run([*pip, "--target", str(target), str(tree)], "building durable-rules")
    return target


def failed_tests(target: Path, tests: list[str]) -> tuple[int, int]:
    """(failed, passed) of the tests run against the build in ``target``."""
    env = {**os.environ, "REDFLAGS_DURABLE_PATH": str(target)}
    args = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests]
    done = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True)
    summary = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
    count = {k: int(n) for n, k in re.findall(r"(\d+) (failed|passed)", summary)}
    return count.get("failed", 0), count.get("passed", 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--without", action="append", help="a fix number (0008), or none")
    args = parser.parse_args()
    chosen = args.without or sorted(TESTS)
    ok = True
    for number in chosen:
        skip = (set(TESTS) if number == "none" else {number}) | OPTIMISATIONS
        tests = sorted({t for ts in TESTS.values() for t in ts}) if number == "none" else TESTS[number]
        with tempfile.TemporaryDirectory() as scratch:
            target = build_without(skip, Path(scratch))
            failed, passed = failed_tests(target, tests)
        what = "upstream (build patches only)" if number == "none" else f"without {number}"
        print(f"{what}: {failed} failed, {passed} passed")
        ok = ok and passed == 0 and failed > 0
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()
