"""Corpus report: a folder of fixtures replayed and compared with their ``NAME.expected.json``.

This is how a ruleset change is checked: every (file, patient, rule) lands in exactly one cell,
so a change shows up as a count that moved and a line naming the file and patient behind it.

- TP: expected and produced with the same severity.
- FP: produced, not expected.       FN: expected, not produced.
- wrong tier: expected and produced, with different severities (never a TP).
- TN: neither expected nor produced, for every rule in the report (cheap: the rest of the patients).

Each fixture is evaluated at its expected file's ``now``; a fixture without an expected file is
listed as "no expectation" with its alert count; an unreadable input or expected file, or an
invalid element, is an error. ``Report.ok`` is False on any difference or error, and when no
input had an expected file at all (nothing was compared: "all expectations met" would be a lie).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from fhir_adapters.errors import IntakeError
from fhir_adapters.times import parse_now
from redflags.pipeline import Pipeline
from redflags.replay.per_file import SKIPPED_SUFFIX, InputResult, replay

#: Counter columns, in table and JSON order.
COUNTS = ("tp", "fp", "fn", "wrong_tier", "tn")


class ExpectationError(Exception):
    """An expected file that cannot be used: the fixture is not compared, and the report fails."""


@dataclass(frozen=True, slots=True)
class Expectation:
    now: int
    description: str
    patients: dict[str, dict[str, str]]  # pid -> rule -> severity


@dataclass(frozen=True, slots=True)
class Miss:
    kind: str  # "FN", "FP" or "TIER"
    rule: str
    severity: str  # the expected one for FN, the produced one for FP and TIER
    file: str
    patient: str
    expected: str | None = None  # TIER: the severity that was expected

    def line(self) -> str:
        note = f" (expected {self.expected})" if self.expected else ""
        return f"{self.kind} {self.rule} {self.severity} {self.file} {self.patient}{note}"


@dataclass(slots=True)
class Counts:
    tp: int = 0
    fp: int = 0
    fn: int = 0
    wrong_tier: int = 0
    tn: int = 0


def expected_path(path: Path) -> Path:
    """``NAME.json`` / ``NAME.ndjson`` -> ``NAME.expected.json`` (fixtures/CONVENTIONS.md)."""
    return path.with_name(f"{path.name.rsplit('.', 1)[0]}{SKIPPED_SUFFIX}")


def load_expectation(path: Path) -> Expectation | None:
    """The expectation beside a fixture, None when it has none; ExpectationError when unusable."""
    where = expected_path(path)
    if not where.is_file():
        return None
    try:
        doc = orjson.loads(where.read_bytes())
    except orjson.JSONDecodeError as exc:
        raise ExpectationError(f"invalid JSON: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("patients"), dict):
        raise ExpectationError("no 'patients' object")
    try:
        now = parse_now(doc.get("now"))
    except IntakeError as exc:
        raise ExpectationError(str(exc)) from None
    patients: dict[str, dict[str, str]] = {}
    for pid, alerts in doc["patients"].items():
        if not isinstance(alerts, list):
            raise ExpectationError(f"{pid}: expected a list of alerts")
        rules: dict[str, str] = {}
        for alert in alerts:
            if not (isinstance(alert, dict) and {"rule", "severity"} <= alert.keys()):
                raise ExpectationError(f"{pid}: each alert needs 'rule' and 'severity'")
            if alert["rule"] in rules:
                raise ExpectationError(f"{pid}: {alert['rule']} listed twice")
            rules[alert["rule"]] = alert["severity"]
        patients[pid] = rules
    return Expectation(now, str(doc.get("description", "")), patients)


@dataclass(frozen=True, slots=True)
class Checked:
    """One fixture replayed at its own ``now``; an unusable expected file is an error of that file."""

    result: InputResult
    expectation: Expectation | None


def replay_expected(files: Iterable[Path], pipeline: Pipeline, default_now: int) -> Iterator[Checked]:
    """``replay`` one file at a time, each at its expected file's ``now`` (else ``default_now``)."""
    for path in files:
        try:
            expectation = load_expectation(path)
        except ExpectationError as exc:
            yield Checked(InputResult(str(expected_path(path)), [], [], str(exc)), None)
            continue
        now = expectation.now if expectation else default_now
        for result in replay([path], pipeline, now):
            yield Checked(result, expectation)


@dataclass(slots=True)
class Report:
    """Per-rule counts over a corpus; ``rules`` seeds rows (e.g. the loaded rules) so none is hidden."""

    rules: Iterable[str] = ()
    counts: dict[str, Counts] = field(default_factory=dict)
    misses: list[Miss] = field(default_factory=list)
    #: (file, patient, "missing from input" | "not listed in the expected file")
    patient_differences: list[tuple[str, str, str]] = field(default_factory=list)
    no_expectation: list[tuple[str, int, int]] = field(default_factory=list)  # file, patients, alerts
    errors: list[tuple[str, str]] = field(default_factory=list)  # file, message
    files: int = 0
    compared_patients: int = 0
    expected_files: int = 0  # inputs that had a usable expected file (compared)

    def __post_init__(self) -> None:
        for rule in self.rules:
            self.counts.setdefault(rule, Counts())

    def add(self, checked: Checked) -> None:
        result, expectation = checked.result, checked.expectation
        self.files += 1
        if result.error:
            self.errors.append((result.source, result.error))
            return
        for issue in result.issues + [i for p in result.patients for i in p.issues]:
            if issue.severity == "error":
                self.errors.append((result.source, f"{issue.path}: {issue.message}"))
        if expectation is None:
            alerts = sum(len(p.alerts) for p in result.patients)
            self.no_expectation.append((result.source, len(result.patients), alerts))
            return
        self.expected_files += 1
        produced = {p.pid: {a.rule: a.severity for a in p.alerts} for p in result.patients}
        for pid in sorted(expectation.patients.keys() | produced.keys()):
            if pid not in produced:
                self.patient_differences.append((result.source, pid, "missing from input"))
            elif pid not in expectation.patients:
                self.patient_differences.append((result.source, pid, "not listed in the expected file"))
            self._compare(result.source, pid, expectation.patients.get(pid, {}), produced.get(pid, {}))

    def _compare(self, source: str, pid: str, want: dict[str, str], got: dict[str, str]) -> None:
        self.compared_patients += 1
        for rule in want.keys() | got.keys():
            counts = self.counts.setdefault(rule, Counts())
            if rule not in got:
                counts.fn += 1
                self.misses.append(Miss("FN", rule, want[rule], source, pid))
            elif rule not in want:
                counts.fp += 1
                self.misses.append(Miss("FP", rule, got[rule], source, pid))
            elif want[rule] != got[rule]:
                counts.wrong_tier += 1
                self.misses.append(Miss("TIER", rule, got[rule], source, pid, want[rule]))
            else:
                counts.tp += 1

    def rows(self) -> list[tuple[str, Counts]]:
        """One row per rule, sorted; TN is every compared patient the rule did not touch."""
        rows = []
        for rule in sorted(self.counts):
            c = self.counts[rule]
            tn = self.compared_patients - c.tp - c.fp - c.fn - c.wrong_tier
            rows.append((rule, Counts(c.tp, c.fp, c.fn, c.wrong_tier, tn)))
        return rows

    def totals(self) -> Counts:
        total = Counts()
        for _, c in self.rows():
            for name in COUNTS:
                setattr(total, name, getattr(total, name) + getattr(c, name))
        return total

    def sorted_misses(self) -> list[Miss]:
        """Grouped like the table: by rule, then kind, file and patient."""
        return sorted(self.misses, key=lambda m: (m.rule, m.kind, m.file, m.patient))

    @property
    def nothing_expected(self) -> bool:
        """No input had an expected file: nothing was compared, so nothing was checked."""
        return self.expected_files == 0 and not self.errors

    @property
    def ok(self) -> bool:
        """Nothing differs, nothing failed to read and something was compared; files without
        expectation beside files with one do not fail it."""
        return not (self.misses or self.patient_differences or self.errors or self.nothing_expected)

    def nothing_expected_line(self) -> str:
        """The summary when nothing was compared: which inputs lacked their expected file."""
        sources = [source for source, _, _ in self.no_expectation]
        if len(sources) == 1:
            beside = expected_path(Path(sources[0])).name
            return f"no expectations found for {sources[0]} (no {beside} beside it)"
        if sources:
            return f"no expectations found for {len(sources)} files (no NAME.expected.json beside any)"
        return "no expectations found: no input files"

    def lines(self) -> list[str]:
        """Every difference and error, one line each (the CLI's miss list, a test's failure message)."""
        return (
            [m.line() for m in self.sorted_misses()]
            + [f"PATIENT {f} {p} ({why})" for f, p, why in self.patient_differences]
            + [f"ERROR {f}: {message}" for f, message in self.errors]
        )

    def as_dict(self) -> dict[str, object]:
        """The JSON report; keys in a fixed order, lists sorted, so two runs diff cleanly."""
        return {
            "ok": self.ok,
            "files": self.files,
            "patients_compared": self.compared_patients,
            "rules": [{"rule": rule, **_counts(c)} for rule, c in self.rows()],
            "totals": _counts(self.totals()),
            "misses": [
                {
                    "kind": m.kind,
                    "rule": m.rule,
                    "severity": m.severity,
                    "expected_severity": m.expected,
                    "file": m.file,
                    "patient": m.patient,
                }
                for m in self.sorted_misses()
            ],
            "patient_differences": [
                {"file": f, "patient": p, "difference": why} for f, p, why in self.patient_differences
            ],
            "no_expectation": [{"file": f, "patients": n, "alerts": a} for f, n, a in self.no_expectation],
            "errors": [{"file": f, "error": message} for f, message in self.errors],
        }


def _counts(c: Counts) -> dict[str, int]:
    return {name: getattr(c, name) for name in COUNTS}
