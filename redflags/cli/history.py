"""``redflags history``: the tenants of a state store, and forgetting one patient of one tenant.

Forgetting (a data-protection request) must not abandon what the FHIR server shows: while the
patient has active alerts (Flags nobody would withdraw any more) or outbox items not yet
delivered (an alert lost without a word), ``forget`` refuses and erases nothing. ``--withdraw``
queues the withdrawal of every active alert, as the ledger does when an alert stops firing
(Flag inactive with period.end, CarePlan revoked); once ``outbox flush`` has delivered them,
``forget`` erases. ``--force`` erases at once, leaving the server as it is.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import click

from engine.logger import bind_contextvars
from redflags import logs
from redflags.cli import root_log_level
from redflags.cli.state_options import open_state, state_option, tenant_option
from redflags.lifecycle import plan
from redflags.state.model import Evaluated, ForgetRefused, StaleRead, StateStore, Unfinished

#: Told on stdout in words; a terminal does not show them twice (JSON logs keep them).
TOLD_BY_FORGET = frozenset({"state.forget", "state.forget_refused"})
#: What a refused ``forget`` tells the operator to do, by whether alerts are still active.
WHAT_TO_DO = {
    True: "--withdraw queues the withdrawal of its Flags, "
    "--force erases anyway (its Flags stay active on the FHIR server)",
    False: "deliver them (`redflags outbox flush`; failed ones: `redflags outbox retry`) "
    "and run forget again, or --force erases anyway",
}


@click.group("history")
def history_group() -> None:
    """What earlier deliveries said about patients."""


def queue_withdrawals(store: StateStore, patient: str, tenant: str, actor: str) -> int:
    """Withdraw every active alert of ``patient`` in the ledger and queue its Flag and CarePlan
    (the lifecycle's own withdrawal: an evaluation where no rule fires); return how many."""
    seen = store.snapshot(patient, tenant=tenant)
    if not seen.active:
        return 0
    now = int(time.time())
    withdrawal = plan(patient, seen.active, [], {}, now, actor, tenant)
    store.commit(
        Evaluated(
            patient,
            now,
            active=withdrawal.active,
            transitions=withdrawal.transitions,
            deliveries=withdrawal.deliveries,
            tenant=tenant,
            seen=seen.seq,
        )
    )
    return len(withdrawal.deliveries)


def _outstanding(left: Unfinished) -> str:
    return f"{left.active} active alerts, {left.pending} pending and {left.failed} failed outbox items"


@history_group.command("forget")
@click.argument("patient", metavar="Patient/<id>")
@state_option(required=True)
@tenant_option(what="forgotten")
@click.option(
    "--withdraw",
    is_flag=True,
    help="Queue the withdrawal of the patient's active alerts (Flag inactive, CarePlan revoked); "
    "forget again once `redflags outbox flush` has delivered them.",
)
@click.option(
    "--force",
    is_flag=True,
    help="Erase even with active alerts or undelivered outbox items: their Flags stay as they are "
    "on the FHIR server and undelivered alerts are lost.",
)
def forget_command(patient: str, state_path: Path, tenant: str, withdraw: bool, force: bool) -> None:
    """Erase one patient of one tenant: history, alert ledger and outbox items.

    Refused (exit 1, nothing erased) while the patient has active alerts or pending or failed
    outbox items. The same id in another tenant is another person and is kept. The log line
    ``state.forget`` records the erasure: its counts and this command's request_id, never the id.
    """
    if not patient.startswith("Patient/") or len(patient) <= len("Patient/") or "/" in patient[8:]:
        raise click.BadParameter("give the patient as Patient/<id>", param_hint="PATIENT")
    if withdraw and force:
        raise click.UsageError("--withdraw and --force exclude each other: erasing drops the withdrawals")
    root_level = root_log_level()
    logs.configure(root_level, told=TOLD_BY_FORGET)
    request = uuid.uuid4().hex[:12]
    bind_contextvars(request_id=request)
    store = open_state(state_path)
    try:
        removed, forced = _forget(
            store, patient, tenant, withdraw=withdraw, force=force, actor=f"forget:{request}"
        )
        elsewhere = [] if removed else sorted(store.tenants(patient))
    finally:
        store.close()
    click.echo(f"forgot {patient} in tenant {tenant}: {removed} records removed (request {request})")
    if forced:
        click.echo(
            f"erased anyway: {_outstanding(forced)}; their Flags stay as they are on the FHIR server",
            err=True,
        )
    if elsewhere:
        click.echo(f"tenants holding that id (give one with --tenant): {', '.join(elsewhere)}", err=True)


def _forget(
    store: StateStore, patient: str, tenant: str, *, withdraw: bool, force: bool, actor: str
) -> tuple[int, Unfinished | None]:
    """Records removed, and what ``--force`` erased that was outstanding (None: nothing was)."""
    try:
        return store.forget(patient, tenant=tenant), None
    except ForgetRefused as refused:
        left = refused.left
    who = f"{patient} in tenant {tenant}"
    if force:
        return store.forget(patient, tenant=tenant, force=True), left
    if withdraw and left.active:
        try:
            queued = queue_withdrawals(store, patient, tenant, actor)
        except StaleRead:
            raise click.ClickException(
                f"{who} changed while its withdrawals were queued; run forget again"
            ) from None
        raise click.ClickException(
            f"queued {queued} withdrawals of {who}'s alerts, nothing forgotten yet: deliver them "
            "(`redflags outbox flush --fhir-server URL`), then run forget again"
        )
    todo = WHAT_TO_DO[bool(left.active)]
    raise click.ClickException(f"{who} has {_outstanding(left)}: nothing forgotten; {todo}")


@history_group.command("tenants")
@state_option(required=True)
def tenants_command(state_path: Path) -> None:
    """Each tenant of the store and how many patients it holds records of."""
    store = open_state(state_path)
    try:
        found = store.tenants()
    finally:
        store.close()
    for tenant, patients in found.items():
        click.echo(f"{tenant}\t{patients} patients")
