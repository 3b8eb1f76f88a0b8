"""Card building and prefetch helpers, without HTTP (the HTTP behaviour is in test_service_cds)."""

from __future__ import annotations

import dataclasses

import pytest

from engine.alert import Alert, Criterion
from fhir_adapters.fhir_client import is_loopback, origin
from fhir_adapters.output import prune_empty
from redflags.service.cds.cards import SUMMARY_MAX, cds_response, detail, summary
from redflags.service.cds.prefetch import fill
from redflags.service.cds.request import CdsRequestError
from rulesets.cauda_equina_syndrome import META as CES
from rulesets.guillain_barre_syndrome import META as GBS


def _alert(**changes: object) -> Alert:
    alert = Alert(
        patient="Patient/p1",
        rule=CES.id,
        version=CES.version,
        tier="A",
        severity="critical",
        title=CES.title,
        rationale="Cauda equina syndrome, tier A: saddle anaesthesia on 2025-03-10 09:00.",
        criteria=(Criterion("Saddle anaesthesia on 2025-03-10 09:00", ("Observation/o1",)),),
        evidence=("Observation/o1",),
        now=1741608000,
        episode="2025-03-10",
    )
    return dataclasses.replace(alert, **changes)


def test_strip_empty_removes_null_and_empty_at_any_depth_and_keeps_zero_and_false() -> None:
    value = {"a": None, "b": "", "c": [], "d": {}, "e": [{"x": None}, "", {"y": [None]}], "f": 0, "g": False}
    assert prune_empty(value) == {"f": 0, "g": False}


def test_summary_names_rule_and_tier_and_stays_under_140_characters() -> None:
    assert summary(_alert(), CES) == f"Cauda equina syndrome, tier A: {CES.tier('A').label}"
    long_tier = dataclasses.replace(CES.tier("A"), label="x" * 300)
    meta = dataclasses.replace(CES, tiers=(long_tier,))
    text = summary(_alert(), meta)
    assert (
        len(text) == SUMMARY_MAX
        and text.endswith("…")
        and text.startswith("Cauda equina syndrome, tier A: xx")
    )
    assert summary(_alert(suspected=True), CES).startswith("Cauda equina syndrome, tier A (suspected): ")


def test_detail_escapes_markdown_and_states_caveats() -> None:
    alert = _alert(
        criteria=(Criterion("MRC *sum* <48> [low]", ()),),
        notes=("note_with_underscores",),
        suspected=True,
        preliminary=True,
    )
    text = detail(alert, CES)
    assert "- MRC \\*sum\\* \\<48\\> \\[low\\]\n" in text
    assert "**Notes**\n\n- note\\_with\\_underscores" in text
    assert (
        "*Caution*: a criterion rests on a suspected (unconfirmed) diagnosis; a result is preliminary."
        in text
    )


def test_response_orders_cards_most_urgent_first_and_keeps_an_empty_cards_array() -> None:
    assert cds_response([], {CES.id: CES}, "0b3c2c7c-6f0e-4b8e-9a53-0d8c0ed2d6a1") == ({"cards": []}, [])
    assert cds_response([], {CES.id: CES}, "x", system_actions=True)[0] == {"cards": []}
    ces_b = _alert(tier="B", severity="urgent")
    gbs_a = _alert(rule=GBS.id, version=GBS.version, title=GBS.title, tier="A", severity="critical")
    payload, issued = cds_response([ces_b, gbs_a], {CES.id: CES, GBS.id: GBS}, "x")
    assert [c["indicator"] for c in payload["cards"]] == ["critical", "warning"]
    assert [(i.rule, i.tier, i.indicator) for i in issued] == [
        (GBS.id, "A", "critical"),
        (CES.id, "B", "warning"),
    ]
    assert len({i.card for i in issued} | {i.suggestion for i in issued}) == 4


def test_fill_encodes_context_values_and_needs_them() -> None:
    assert fill("Observation?patient={{context.patientId}}", {"patientId": "a b&c"}) == (
        "Observation?patient=a%20b%26c"
    )
    assert fill("Patient/{{ context.patientId }}", {"patientId": "p1"}) == "Patient/p1"
    with pytest.raises(CdsRequestError, match=r"context\.encounterId is needed"):
        fill("Encounter/{{context.encounterId}}", {"patientId": "p1"})
    with pytest.raises(ValueError, match="unsupported prefetch token"):
        fill("Practitioner/{{userPractitionerId}}", {})


def test_origin_and_loopback() -> None:
    assert origin("https://EHR.example.org/fhir") == ("https", "ehr.example.org", 443)
    assert origin("http://ehr.example.org:8080/fhir") == ("http", "ehr.example.org", 8080)
    assert origin("https://ehr.example.org:443/a") == origin("https://ehr.example.org/b")
    assert [
        is_loopback(u)
        for u in ("http://127.0.0.1:9", "http://127.1.2.3", "http://[::1]:8", "http://localhost")
    ] == [
        True,
        True,
        True,
        True,
    ]
    assert not is_loopback("http://10.0.0.1") and not is_loopback("http://localhost.example.org")


def test_a_cds_tenant_names_the_fhir_servers_base_not_only_its_host() -> None:
    """Two stores on one host are two records; spellings of one base are one; a base without a
    path keeps the tenant of 0.4 (origin only); ``|`` cannot forge a tenant boundary."""
    from redflags.service.auth.tenants import cds_tenant

    one = cds_tenant("iss", "https://h.example/v1/fhirStores/A/fhir")
    assert one != cds_tenant("iss", "https://h.example/v1/fhirStores/B/fhir")
    assert one == cds_tenant("iss", "https://H.EXAMPLE:443/v1/fhirStores/A/fhir/")
    assert cds_tenant("iss", "https://h.example/Fhir") != cds_tenant("iss", "https://h.example/fhir")
    assert (
        cds_tenant("iss", "https://h.example/")
        == cds_tenant("iss", "https://h.example")
        == "iss|https://h.example"
    )
    assert cds_tenant("iss", None) == "iss|"
    forged = cds_tenant("iss", "https://h.example/a|b")
    assert forged.count("|") == 1 and forged.endswith("/a%7Cb")
