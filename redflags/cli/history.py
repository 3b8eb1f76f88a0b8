"""``redflags history``: the tenants of a state store, and forgetting one patient of one tenant."""

from __future__ import annotations

from pathlib import Path

import click

from redflags.cli.state_options import open_state, state_option, tenant_option


@click.group("history")
def history_group() -> None:
    """What earlier deliveries said about patients."""


@history_group.command("forget")
@click.argument("patient", metavar="Patient/<id>")
@state_option(required=True)
@tenant_option(what="forgotten")
def forget_command(patient: str, state_path: Path, tenant: str) -> None:
    """Erase one patient of one tenant: history, alert ledger and outbox items.

    The same id in another tenant is another person and is kept.
    """
    if not patient.startswith("Patient/") or len(patient) <= len("Patient/") or "/" in patient[8:]:
        raise click.BadParameter("give the patient as Patient/<id>", param_hint="PATIENT")
    store = open_state(state_path)
    try:
        removed = store.forget(patient, tenant=tenant)
        elsewhere = [] if removed else sorted(store.tenants(patient))
    finally:
        store.close()
    click.echo(f"forgot {patient} in tenant {tenant}: {removed} records removed")
    if elsewhere:
        click.echo(f"tenants holding that id (give one with --tenant): {', '.join(elsewhere)}", err=True)


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
