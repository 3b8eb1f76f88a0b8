"""``redflags outbox`` and ``redflags history``, and the state options ``replay`` shares with them.

The state store (``--state FILE`` or ``$REDFLAGS_STATE``) holds the patient history, the alert
ledger and the outbox; ``--fhir-server URL`` is where the outbox delivers, with the bearer
token of ``--fhir-token-file``, ``$REDFLAGS_FHIR_TOKEN`` or ``--fhir-token`` (the first two keep it
out of the process list).

A store may be shared with the service, which keeps each client's patients apart as tenants
(``redflags.service.tenants``): ``--tenant`` names the one a command acts on. ``replay`` and
``history forget`` act on ``default`` unless told otherwise; ``outbox`` shows and sends every
tenant's items unless given one; ``history tenants`` lists them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from redflags.delivery import Round, drain
from redflags.fhir_token_option import fhir_token_callback, fhir_token_file_option
from redflags.state.model import DEFAULT_TENANT, StateStore
from redflags.state.sqlite_store import StateStoreError, open_store
from redflags.state.tenant_view import TenantView

if TYPE_CHECKING:  # requests and jwt are imported when a server is named, not by every replay
    from fhir_adapters.fhir_client import FhirClient

STATE_ENV = "REDFLAGS_STATE"
TOKEN_ENV = "REDFLAGS_FHIR_TOKEN"

Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]


def state_option(required: bool = False) -> Decorator:
    return click.option(
        "--state",
        "state_path",
        envvar=STATE_ENV,
        required=required,
        type=click.Path(dir_okay=False, path_type=Path),
        help=f"State file: patient history, alert ledger, outbox (SQLite). Default: ${STATE_ENV}.",
    )


def tenant_option(default: str | None = DEFAULT_TENANT, what: str = "acted on") -> Decorator:
    shown = f"Default: {default}." if default else "Default: every tenant."
    return click.option(
        "--tenant",
        default=default,
        metavar="NAME",
        help=f"Tenant whose patients are {what} (`redflags history tenants` lists them). {shown}",
    )


def narrowed(store: StateStore, tenant: str | None) -> StateStore:
    """The store, or only ``tenant``'s outbox of it."""
    return TenantView(store, tenant) if tenant else store  # type: ignore[return-value]


def fhir_options(func: Callable[..., Any]) -> Callable[..., Any]:
    func = click.option(
        "--delivery-wait",
        default=30.0,
        show_default=True,
        type=click.FloatRange(0, 3600),
        help="Seconds to keep retrying deliveries before leaving the rest pending.",
    )(func)
    func = click.option(
        "--fhir-timeout",
        default=10.0,
        show_default=True,
        type=click.FloatRange(0.1, 300),
        help="Seconds allowed for each request to --fhir-server.",
    )(func)
    func = click.option(
        "--fhir-smart",
        envvar="REDFLAGS_FHIR_SMART",
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        help="SMART Backend Services for --fhir-server: JSON with token_url, client_id, "
        "private_key (PEM file), kid, alg (RS384|ES384), scope.",
    )(func)
    func = fhir_token_file_option(func)
    func = click.option(
        "--fhir-token",
        envvar=TOKEN_ENV,
        callback=fhir_token_callback,
        help=f"Bearer token for --fhir-server (visible in ps: better ${TOKEN_ENV} or --fhir-token-file).",
    )(func)
    return click.option("--fhir-server", metavar="URL", help="FHIR base URL the outbox delivers to.")(func)


def open_state(path: Path) -> StateStore:
    try:
        return open_store(path)
    except StateStoreError as exc:
        raise click.ClickException(" ".join(str(exc).split())) from None


@dataclass(frozen=True, slots=True)
class FhirTarget:
    """Where and how the outbox delivers (the --fhir-* options)."""

    url: str
    token: str | None = field(default=None, repr=False)
    smart: Path | None = None
    timeout_s: float = 10.0
    wait_s: float = 30.0

    def client(self) -> FhirClient:
        from fhir_adapters.fhir_client import FhirClient
        from fhir_adapters.smart_auth import server_auth

        if not self.url.startswith(("http://", "https://")):
            raise click.BadParameter(f"not an http(s) URL: {self.url!r}", param_hint="--fhir-server")
        try:
            auth = server_auth(self.token, self.smart)
        except ValueError as exc:
            raise click.UsageError(f"--fhir-token/--fhir-smart: {exc}") from None
        return FhirClient(self.url.rstrip("/"), auth=auth, timeout_s=self.timeout_s)


def deliver(store: StateStore, target: FhirTarget) -> Round:
    with target.client() as client:
        return drain(store, client, patience_s=target.wait_s)


def outbox_line(store: StateStore, done: Round | None = None) -> str:
    counts = store.counts()
    sent = f"this run: delivered {done.delivered}, failed {done.failed}; " if done else ""
    left = f"pending {counts['pending']}, failed {counts['failed']}, delivered {counts['delivered']}"
    return f"outbox: {sent}{left}"


@click.group("outbox")
def outbox_group() -> None:
    """Alerts waiting to be written to the FHIR server."""


@outbox_group.command("status")
@state_option(required=True)
@tenant_option(None, "counted")
def status_command(state_path: Path, tenant: str | None) -> None:
    """Counts of outbox items: pending, failed, delivered (exit 1 when any failed)."""
    store = narrowed(open_state(state_path), tenant)
    try:
        counts = store.counts()
        for status in ("pending", "failed", "delivered"):
            click.echo(f"{status} {counts[status]}")
        for item in store.deliveries("failed"):
            click.echo(f"failed item {item.id}: {item.rule} {item.change}: {item.last_error}", err=True)
    finally:
        store.close()
    raise SystemExit(1 if counts["failed"] else 0)


@outbox_group.command("flush")
@state_option(required=True)
@tenant_option(None, "sent")
@fhir_options
def flush_command(
    state_path: Path,
    tenant: str | None,
    fhir_server: str | None,
    fhir_token: str | None,
    fhir_smart: Path | None,
    fhir_timeout: float,
    delivery_wait: float,
) -> None:
    """Send every pending item now (waiting retries included); exit 1 if any is left or failed."""
    if not fhir_server:
        raise click.UsageError("--fhir-server is required to deliver")
    store = narrowed(open_state(state_path), tenant)
    try:
        store.retry_now(int(time.time()))
        done = deliver(store, FhirTarget(fhir_server, fhir_token, fhir_smart, fhir_timeout, delivery_wait))
        click.echo(outbox_line(store, done))
        counts = store.counts()
    finally:
        store.close()
    raise SystemExit(1 if counts["pending"] or done.failed else 0)


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
