"""A CDS call renders each Flag and CarePlan once (issue 13 item 6), and the card shows what a
fresh render would (behaviour unchanged).

With a state store an alert that is raised or updated has its Flag and CarePlan rendered for
the ledger and the outbox; the card re-keys that pair (``fhir_adapters.card_resources``) instead
of rendering it again. Counted in a real engine process of its own: ``engine_host.start_here``
makes the calling process an engine process, once.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from fhir_adapters.card_resources import resources_for
from fhir_adapters.output import alert_resources
from tests.cds_helpers import PATIENT_VIEW, vignette_request
from tests.output_helpers import CES, DVT, NOW, make_alert

ROOT = Path(__file__).resolve().parent.parent

#: Renders counted by wrapping the two functions every Flag and CarePlan is made by.
_COUNTING_CALLS = f"""
import json, sys
from fhir_adapters import card_resources, output
from fhir_adapters.times import parse_now

renders = {{"Flag": 0, "CarePlan": 0}}

def counted(kind, render):
    def wrapper(*args, **kwargs):
        renders[kind] += 1
        return render(*args, **kwargs)
    return wrapper

output.flag_for = card_resources.flag_for = counted("Flag", output.flag_for)
output.careplan_for = card_resources.careplan_for = counted("CarePlan", output.careplan_for)

from redflags.service.cds.answer import CdsWork, answer, decode, pack
from redflags.service.cds.prefetch import read_prefetch
from redflags.service.cds.services import SERVICES
from redflags.service.auth.tenants import cds_tenant
from redflags.service.engine_host import start_here

state, body = sys.argv[1], sys.argv[2].encode()
pipeline = start_here(None, state or None)
service = SERVICES["{PATIENT_VIEW}"]
cds = decode(service.id, body)
given = read_prefetch(service.prefetch, cds)
assert given.complete
now = parse_now("2025-03-10T12:00:00Z")
tenant = cds_tenant("static:ehr", cds.fhir_server)
work = CdsWork(cds.hook_instance, cds.patient_id, pack(given.found), False, tenant, now, False)
calls = []
for _ in range(2):  # the chart opened, then opened again unchanged
    renders.update(Flag=0, CarePlan=0)
    done = answer(pipeline, work)
    calls.append({{"renders": dict(renders), "payload": json.loads(done.payload)}})
print(json.dumps(calls))
"""


def _calls(state: str, body: str) -> list[dict[str, object]]:
    run = subprocess.run(
        [sys.executable, "-c", _COUNTING_CALLS, state, body],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    calls: list[dict[str, object]] = json.loads(run.stdout.splitlines()[-1])
    return calls


def test_a_cds_call_renders_each_flag_and_careplan_once(tmp_path: Path) -> None:
    body = json.dumps(vignette_request("V01-ces-positive"))  # one hookInstance: the same card ids
    with_store = _calls(str(tmp_path / "state.sqlite"), body)
    without = _calls("", body)
    # raised (the ledger's render is the card's), then unchanged (nothing for the ledger)
    assert [c["renders"] for c in with_store] == [{"Flag": 1, "CarePlan": 1}] * 2
    assert [c["renders"] for c in without] == [{"Flag": 1, "CarePlan": 1}] * 2
    cards: list[dict[str, object]] = [c["payload"] for c in [*with_store, *without]]  # type: ignore[misc]
    assert cards[0]["cards"] and all(c == cards[0] for c in cards)  # the same card either way


@pytest.mark.parametrize("scope", ["", "tenant-a"])
@pytest.mark.parametrize("updated", [False, True])
@pytest.mark.parametrize("system_actions", [False, True])
@pytest.mark.parametrize(
    ("meta", "changes"),
    [(CES, {}), (CES, {"tier": "B", "suspected": True, "preliminary": True}), (DVT, {"rule": DVT.id})],
)
def test_a_rekeyed_pair_is_byte_for_byte_a_fresh_card_render(
    meta: object, changes: dict[str, object], scope: str, updated: bool, system_actions: bool
) -> None:
    alert = make_alert(**changes)
    active = None
    if updated:  # a pair raised a day earlier, in another episode: its identity is kept
        earlier = make_alert(**{**changes, "now": NOW - 86_400, "episode": "2025-03-08"})
        active = alert_resources(earlier, meta, scope="elsewhere")  # type: ignore[arg-type]
    ledger = alert_resources(alert, meta, active=active, scope=scope)  # type: ignore[arg-type]
    fresh = resources_for(alert, meta, flag_elsewhere=system_actions)  # type: ignore[arg-type]
    rekeyed = resources_for(alert, meta, flag_elsewhere=system_actions, rendered=ledger)  # type: ignore[arg-type]
    assert orjson.dumps(rekeyed) == orjson.dumps(fresh)
    assert ledger[0]["author"] != fresh[0]["author"]  # the ledger's own pair is left as it was
