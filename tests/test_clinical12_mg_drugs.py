"""Issue 12 item 7: drugs that can worsen myasthenia gravis are recognised by verified codes.

RxNorm by the listed ingredient and clinical-drug codes, ATC by class prefix (a ValueSet
``concept is-a`` filter on the ATC system), magnesium sulfate only given intravenously. The codes
are those of docs/mg-trigger-drugs.md (copied from the clinical informatics list).
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fhir_adapters import terminology
from fhir_adapters.identifiers import ATC
from fhir_adapters.terminology import TerminologyError
from rulesets import VALUESET_DIR
from rulesets.meta import RXNORM, SNOMED
from rulesets.myasthenic_crisis_risk import TRIGGER_DRUG_CLASSES

from .cds_helpers import MG, NOTE, NOW, ORDER_SIGN, call, check_response, prefetch_for, request, resources_of
from .conftest import ROOT
from .service_harness import Service, running_service

VALUESETS = ROOT / "rulesets" / "valuesets"
IV = {"coding": [{"system": SNOMED, "code": "47625008", "display": "Intravenous route (qualifier value)"}]}
ORAL = {"coding": [{"system": SNOMED, "code": "26643006", "display": "Oral route"}]}

#: (label, coding system, code, route or None, class title on the card or None = no note)
ORDERS = [
    ("levofloxacin RxNorm IN", RXNORM, "82122", None, "Fluoroquinolone antibiotic"),
    ("levofloxacin 500 mg tablet RxNorm SCD", RXNORM, "199885", None, "Fluoroquinolone antibiotic"),
    ("azithromycin RxNorm IN", RXNORM, "18631", None, "Macrolide antibiotic"),
    ("azithromycin 250 mg tablet RxNorm SCD", RXNORM, "308460", None, "Macrolide antibiotic"),
    ("IV magnesium sulfate RxNorm IN", RXNORM, "6585", IV, "Intravenous magnesium"),
    ("pembrolizumab ATC", ATC, "L01FF02", None, "Immune checkpoint inhibitor"),
    ("levofloxacin ATC", ATC, "J01MA12", None, "Fluoroquinolone antibiotic"),
    ("ipilimumab ATC exact", ATC, "L01FX04", None, "Immune checkpoint inhibitor"),
    ("magnesium sulfate i.v. additive ATC", ATC, "B05XA05", None, "Intravenous magnesium"),
    ("bisoprolol+amlodipine ATC", ATC, "C07FB07", None, "Beta-blocker"),
    ("gentamicin RxNorm (as before)", RXNORM, "1596450", None, "Aminoglycoside antibiotic"),
    ("hydroxychloroquine RxNorm", RXNORM, "5521", None, "Other drug that can worsen myasthenia gravis"),
    ("oral magnesium sulfate RxNorm", RXNORM, "6585", ORAL, None),
    ("magnesium sulfate without a route", RXNORM, "6585", None, None),
    ("magnesium sulfate laxative ATC", ATC, "A06AD04", None, None),
    ("a lincosamide ATC code (J01FF, not J01FA)", ATC, "J01FF01", None, None),
    ("brentuximab ATC (L01FX but not listed)", ATC, "L01FX05", None, None),
    ("timolol eye drops ATC (optional, not default)", ATC, "S01ED01", None, None),
    ("acetaminophen RxNorm", RXNORM, "161", None, None),
]


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    tmp = tmp_path_factory.mktemp("mg-drugs")
    with running_service(tmp, "--allow-unauthenticated", "--no-state", "--now", NOW) as svc:
        yield svc


def _order_sign(service: Service, system: str, code: str, route: dict | None) -> list[dict[str, Any]]:
    """An MG patient's record (no trigger drug in it) with one draft MedicationRequest."""
    resources = resources_of(MG)
    (template,) = [r for r in resources if r.get("id") == "mg-b-exac-gentamicin"]
    record = [r for r in resources if r is not template]
    draft = {k: v for k, v in copy.deepcopy(template).items() if k != "authoredOn"} | {"status": "draft"}
    draft["medicationCodeableConcept"] = {"coding": [{"system": system, "code": code}]}
    if route is not None:
        draft["dosageInstruction"] = [{"route": route}]
    body = request("order-sign", "mg-b-exac", prefetch_for(record))
    body["context"]["draftOrders"] = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"resource": draft}],
    }
    return check_response(call(service, ORDER_SIGN, body))["cards"]


@pytest.mark.parametrize(("label", "system", "code", "route", "title"), ORDERS, ids=[o[0] for o in ORDERS])
def test_order_sign_shows_the_myasthenia_trigger_note(
    service: Service, label: str, system: str, code: str, route: dict | None, title: str | None
) -> None:
    (card,) = _order_sign(service, system, code, route)  # the MG card (tier B) is there either way
    if title is None:
        assert "new drug" not in card["detail"], label
    else:
        assert NOTE.format(title) in card["detail"], label


@pytest.fixture(scope="module")
def term() -> terminology.Terminology:
    return terminology.load(VALUESET_DIR)


class TestMatching:
    @pytest.mark.parametrize(
        ("code", "key"),
        [
            ("J01MA", "mg_drug_fluoroquinolone"),
            ("J01MA25", "mg_drug_fluoroquinolone"),
            ("J01FA15", "mg_drug_macrolide"),
            ("J01GB03", "mg_drug_aminoglycoside"),
            ("J01GA01", "mg_drug_aminoglycoside"),
            ("C07AB02", "mg_drug_beta_blocker"),
            ("L01FF16", "mg_drug_checkpoint_inhibitor"),
            ("L01FY02", "mg_drug_checkpoint_inhibitor"),
            ("P01BC01", "mg_worsening_drug"),
        ],
    )
    def test_atc_codes_match_their_class_by_prefix(
        self, term: terminology.Terminology, code: str, key: str
    ) -> None:
        assert [m.key for m in term.matches(ATC, code)] == [key]

    @pytest.mark.parametrize(
        "code", ["J01M", "J01MB02", "J01F", "J01FF01", "L01FX05", "L01FY01", "S01ED01", "j01ma12"]
    )
    def test_a_shorter_parent_or_a_neighbour_class_does_not_match(
        self, term: terminology.Terminology, code: str
    ) -> None:
        assert term.matches(ATC, code) == []

    def test_the_atc_prefix_is_for_atc_codings_only(self, term: terminology.Terminology) -> None:
        assert term.matches(RXNORM, "J01MA12") == []

    def test_magnesium_sulfate_by_rxnorm_requires_an_intravenous_route(
        self, term: terminology.Terminology
    ) -> None:
        (match,) = term.matches(RXNORM, "6585")
        assert match.key == "mg_drug_magnesium_iv" and match.requires_route
        assert term.in_set(match.requires_route, SNOMED, "47625008")

    def test_a_site_value_set_may_use_an_atc_is_a_filter(self, tmp_path: Path) -> None:
        vs = json.loads((VALUESETS / "mg_drug_macrolide.json").read_text())
        vs["url"] = "https://hospital.example/fhir/ValueSet/lincosamides"
        vs["compose"]["include"] = [
            {"system": ATC, "filter": [{"property": "concept", "op": "is-a", "value": "J01FF"}]}
        ]
        (tmp_path / "lincosamides.json").write_text(json.dumps(vs))
        site = terminology.load(VALUESET_DIR, [tmp_path])
        assert [m.key for m in site.matches(ATC, "J01FF01")] == ["mg_drug_macrolide"]

    def test_is_a_on_a_system_without_a_prefix_hierarchy_is_refused(self, tmp_path: Path) -> None:
        vs = json.loads((VALUESETS / "mg_drug_macrolide.json").read_text())
        vs["url"] = "https://hospital.example/fhir/ValueSet/x"
        vs["compose"]["include"] = [
            {"system": RXNORM, "filter": [{"property": "concept", "op": "is-a", "value": "18631"}]}
        ]
        (tmp_path / "x.json").write_text(json.dumps(vs))
        with pytest.raises(TerminologyError, match=re.escape("is-a on http://www.whocc.no/atc")):
            terminology.load(VALUESET_DIR, [tmp_path])


class TestAudit:
    """Every medication value set holds verified codes, not only the project-local finding code."""

    def _medication_sets(self) -> list[dict[str, Any]]:
        docs = [json.loads(p.read_text()) for p in sorted(VALUESETS.glob("*.json"))]
        kind = "https://redflags.dev/fhir/StructureDefinition/finding-kind"
        return [
            d
            for d in docs
            if any(e["url"] == kind and e.get("valueCode") == "medication" for e in d.get("extension", ()))
        ]

    def test_no_medication_value_set_is_placeholder_only(self) -> None:
        sets = self._medication_sets()
        assert {s["url"].rsplit("/", 1)[1] for s in sets} >= set(TRIGGER_DRUG_CLASSES)
        for vs in sets:
            standard = [
                i for i in vs["compose"]["include"] if not i["system"].startswith("https://redflags.dev/")
            ]
            assert standard, f"{vs['url']} holds only project-local codes"

    def test_each_trigger_class_can_be_matched_by_atc(self) -> None:
        for name in TRIGGER_DRUG_CLASSES:
            vs = json.loads((VALUESETS / f"{name}.json").read_text())
            assert any(i["system"] == ATC for i in vs["compose"]["include"]), name

    def test_the_classes_codes_are_documented(self) -> None:
        doc = (ROOT / "docs" / "mg-trigger-drugs.md").read_text()
        for name in TRIGGER_DRUG_CLASSES:
            vs = json.loads((VALUESETS / f"{name}.json").read_text())
            for include in vs["compose"]["include"]:
                for concept in include.get("concept", ()):
                    if include["system"] in (RXNORM, ATC):
                        assert f"`{concept['code']}`" in doc or f"| {concept['code']} |" in doc, (
                            name,
                            concept,
                        )
                for flt in include.get("filter", ()):
                    assert f"`{flt['value']}`" in doc, (name, flt)
