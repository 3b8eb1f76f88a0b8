"""``rules --explain`` shows value-set filters in plain words (ATC ``is-a`` prefixes, ICD regexes).

Before, only enumerated codes were listed: a reader of the explanation could not see that every
ATC code starting with J01MA counts as a fluoroquinolone, nor which ICD-10-CM codes are a cancer.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from fhir_adapters.identifiers import ATC
from redflags import config
from redflags.explain import filter_words
from rulesets.meta import ICD10CM

from .conftest import ROOT


def explain(rule: str, *more: str) -> str:
    exe = Path(sys.executable).with_name("redflags")
    done = subprocess.run(
        [str(exe), "rules", "--explain", rule, *more],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
        env={k: v for k, v in os.environ.items() if k != config.ENV_VAR},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout


def line_of(text: str, key: str) -> str:
    (line,) = [ln for ln in text.splitlines() if ln.startswith(f"  - {key} (")]
    return line


@pytest.mark.parametrize(
    ("rule", "key", "words"),
    [
        ("myasthenic_crisis_risk", "mg_drug_fluoroquinolone", "ATC codes starting with J01MA"),
        ("myasthenic_crisis_risk", "mg_drug_checkpoint_inhibitor", "ATC codes starting with L01FF"),
        ("myasthenic_crisis_risk", "mg_drug_beta_blocker", "ATC codes starting with C07"),
        ("rhabdomyolysis", "myocardial_infarction", "ICD-10-CM codes I21 and the codes under them"),
        ("acute_stroke_or_tia", "nihss", "ICD-10-CM codes R29.700 to R29.749"),
        ("spinal_cord_compression", "cancer_any",
         "ICD-10-CM codes C00 to C89, C90 to C96 and the codes under them"),
    ],
)  # fmt: skip
def test_explain_lists_each_filter_of_a_value_set_in_words(rule: str, key: str, words: str) -> None:
    assert words in line_of(explain(rule), key)


def test_a_site_filter_is_shown_too(tmp_path: Path) -> None:
    sets = tmp_path / "valuesets"
    sets.mkdir()
    (sets / "more-fq.json").write_text(
        '{"resourceType": "ValueSet", "status": "active",'
        ' "url": "https://site.example/fhir/ValueSet/more-fq",'
        ' "extension": [{"url": "https://redflags.dev/fhir/StructureDefinition/finding-key",'
        ' "valueCode": "mg_drug_fluoroquinolone"}],'
        ' "compose": {"include": [{"system": "' + ATC + '", "filter": [{"property": "concept",'
        ' "op": "is-a", "value": "J01MB"}]}]}}'
    )
    site = tmp_path / "site.toml"
    site.write_text('[terminology]\nvalueset_dirs = ["valuesets"]\n')
    assert "ATC codes starting with J01MB" in line_of(
        explain("myasthenic_crisis_risk", "--config", str(site)), "mg_drug_fluoroquinolone"
    )


@pytest.mark.parametrize(
    ("system", "op", "value", "words"),
    [
        (ATC, "is-a", "J01MA", "ATC codes starting with J01MA"),
        (ICD10CM, "regex", r"^I21(\..*)?$", "ICD-10-CM codes I21 and the codes under them"),
        (ICD10CM, "regex", r"^R29\.7[0-4][0-9]$", "ICD-10-CM codes R29.700 to R29.749"),
        (ICD10CM, "regex", r"^X[1-3]+$", r"ICD-10-CM codes matching the regular expression ^X[1-3]+$"),
        (
            ICD10CM,
            "regex",
            r"^A[0-4][2-3]$",
            r"ICD-10-CM codes matching the regular expression ^A[0-4][2-3]$",
        ),
    ],
)
def test_filter_words_never_claim_a_range_the_pattern_does_not_cover(
    system: str, op: str, value: str, words: str
) -> None:
    assert filter_words(system, op, value) == words
