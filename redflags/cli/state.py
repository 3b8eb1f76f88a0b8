"""``redflags outbox`` and ``redflags history``, and the state options ``replay`` shares with them.

The state store (``--state FILE`` or ``$REDFLAGS_STATE``) holds the patient history, the alert
ledger and the outbox; ``--fhir-server URL`` is where the outbox delivers, with the bearer
token of ``--fhir-token-file``, ``$REDFLAGS_FHIR_TOKEN`` or ``--fhir-token`` (the first two keep it
out of the process list).

A store may be shared with the service, which keeps each client's patients apart as tenants
(``redflags.service.auth.tenants``): ``--tenant`` names the one a command acts on. ``replay`` and
``history forget`` act on ``default`` unless told otherwise; ``outbox`` shows and sends every
tenant's items unless given one; ``history tenants`` lists them.

Only ``replay`` and ``serve`` create a store (and say so): every command here reads or
changes an existing one, and a path that does not exist is one line and exit 2, never a new
empty store that looks like success. ``outbox list`` and ``outbox retry`` let an operator see
why items were not delivered and put failed ones back in the queue (recorded in the outbox's
audit trail); a delivery round prints one line per item not delivered and counts by reason.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import orjson

from redflags.cli.fhir_token_option import fhir_token_callback, fhir_token_file_option
from redflags.delivery.sender import Round, drain
from redflags.state.model import DEFAULT_TENANT, Delivery, NoStateStore, OutboxEvent, StateStore, Status
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


class MissingStore(click.ClickException):
    """A command given a store that does not exist: exit 2, like a usage error."""

    exit_code = 2


def open_state(path: Path, *, create: bool = False) -> StateStore:
    """Open an existing store; ``create`` (replay, serve): make it, saying so on stderr."""
    new = create and not path.exists()
    try:
        store = open_store(path, create=create)
    except NoStateStore as exc:
        raise MissingStore(str(exc)) from None
    except StateStoreError as exc:
        raise click.ClickException(" ".join(str(exc).split())) from None
    if new:
        click.echo(f"created state store at {path}", err=True)
    return store


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
    """Drain the outbox to ``target``; on stderr, one line per item not delivered with its
    reason, and a configuration error (wrong URL or credentials) as one line."""
    with target.client() as client:
        done = drain(store, client, patience_s=target.wait_s)
    for problem in sorted(done.problems.values(), key=lambda p: p.item):
        state = {"retry": "pending", "config": "pending", "failed": "failed"}[problem.outcome]
        click.echo(
            f"outbox item {problem.item} ({problem.rule} {problem.change}) {state}: {problem.message}",
            err=True,
        )
    if done.config_error:
        click.echo(f"configuration error: {done.config_error}", err=True)
    return done


def outbox_line(store: StateStore, done: Round | None = None) -> str:
    counts = store.counts()
    sent = f"this run: delivered {done.delivered}, failed {done.failed}; " if done else ""
    left = f"pending {counts['pending']}, failed {counts['failed']}, delivered {counts['delivered']}"
    reasons = done.by_reason() if done else {}
    why = "; not delivered: " + ", ".join(f"{r} {n}" for r, n in reasons.items()) if reasons else ""
    return f"outbox: {sent}{left}{why}"


@click.group("outbox")
def outbox_group() -> None:
    """Alerts waiting to be written to the FHIR server."""


@outbox_group.command("status")
@state_option(required=True)
@tenant_option(None, "counted")
@click.option(
    "--show-patient",
    is_flag=True,
    help="Leave patient references in the failed items' reasons (blanked by default).",
)
def status_command(state_path: Path, tenant: str | None, show_patient: bool) -> None:
    """Counts of outbox items: pending, failed, delivered (exit 1 when any failed)."""
    store = narrowed(open_state(state_path), tenant)
    try:
        counts = store.counts()
        for status in ("pending", "failed", "delivered"):
            click.echo(f"{status} {counts[status]}")
        for item in store.deliveries("failed"):
            reason = _reason(item.last_error, item.patient, show_patient)
            click.echo(f"failed item {item.id}: {item.rule} {item.change}: {reason}", err=True)
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
    raise SystemExit(1 if counts["pending"] or done.failed or done.config_error else 0)


#: ``outbox list`` filters: option -> the status it shows (None: pending and failed).
_LISTED: dict[str, tuple[Status, ...]] = {
    "failed": ("failed",),
    "pending": ("pending",),
    "open": ("pending", "failed"),
}


def _listed(item: Delivery, show_patient: bool) -> dict[str, Any]:
    row: dict[str, Any] = {
        "item": item.id,
        "tenant": item.tenant,
        "rule": item.rule,
        "change": item.change,
        "status": item.status,
        "attempts": item.attempts,
        "last_status": item.last_status or "-",
        "reason": _reason(item.last_error, item.patient, show_patient),
    }
    if show_patient:
        row["patient"] = item.patient
    return row


def _reason(text: str | None, patient: str, show_patient: bool) -> str:
    """A stored reason on one line; a server's diagnostics may quote the patient reference,
    which is blanked unless the operator asked for it."""
    reason = " ".join((text or "").split())
    return reason if show_patient else reason.replace(patient, "Patient/…")


def _event_row(event: OutboxEvent, show_patient: bool) -> dict[str, Any]:
    row: dict[str, Any] = {
        "item": event.item,
        "at": datetime.fromtimestamp(event.at, UTC).isoformat(timespec="seconds"),
        "from": event.before,
        "to": event.after,
        "actor": event.actor,
        "reason": _reason(event.reason, event.patient, show_patient),
    }
    if show_patient:
        row["patient"] = event.patient
    return row


@outbox_group.command("list")
@state_option(required=True)
@tenant_option(None, "listed")
@click.option("--failed", "which", flag_value="failed", help="Only failed items.")
@click.option("--pending", "which", flag_value="pending", help="Only pending items.")
@click.option(
    "--show-patient",
    is_flag=True,
    help="Show each item's patient reference (left out by default: the output may be shared).",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON array instead of tab-separated lines.")
@click.option(
    "--events",
    "events_of",
    type=click.IntRange(min=1),
    metavar="ITEM",
    help="The audit trail of one item instead: every status change (delivered ones too), by whom and why.",
)
def list_command(
    state_path: Path,
    tenant: str | None,
    which: str | None,
    show_patient: bool,
    as_json: bool,
    events_of: int | None = None,
) -> None:
    """Items not delivered (pending and failed, or one of them): id, rule, change, status,
    attempts, last status and reason. Delivered items are left out (see --events ITEM)."""
    store = narrowed(open_state(state_path), tenant)
    try:
        if events_of is not None:
            rows = [_event_row(e, show_patient) for e in store.outbox_events(events_of)]
            columns = ["item", "at", *(["patient"] if show_patient else []), "from", "to", "actor", "reason"]
        else:
            rows = [
                _listed(item, show_patient)
                for status in _LISTED[which or "open"]
                for item in store.deliveries(status)
            ]
            rows.sort(key=lambda row: row["item"])
            columns = ["item", *(["patient"] if show_patient else []), "rule", "change", "status", "attempts"]
            columns += ["last_status", "reason"]
    finally:
        store.close()
    if as_json:
        sys.stdout.buffer.write(orjson.dumps(rows, option=orjson.OPT_INDENT_2) + b"\n")
        sys.stdout.flush()
        return
    click.echo("\t".join(columns))
    for row in rows:
        click.echo("\t".join(str(row[c]) for c in columns))


@outbox_group.command("retry")
@click.argument("items", nargs=-1, type=click.IntRange(min=1), metavar="ITEM...")
@click.option("--all-failed", is_flag=True, help="Every failed item (of --tenant, if given).")
@state_option(required=True)
@tenant_option(None, "retried")
def retry_command(items: tuple[int, ...], all_failed: bool, state_path: Path, tenant: str | None) -> None:
    """Put failed items back in the queue (due at once; `outbox flush` or the service sends
    them). Each move is recorded in the outbox's audit trail: failed -> pending, by the
    operator. An item followed by a later change of the same alert stays failed (it would
    overwrite the newer one). Exit 1 when a given item is not retried."""
    if bool(items) == all_failed:
        raise click.UsageError("give the ITEM ids to retry, or --all-failed")
    store = narrowed(open_state(state_path), tenant)
    try:
        moved = store.retry_failed(None if all_failed else list(items), int(time.time()), "operator")
        missed = {i: store.delivery(i) for i in items if i not in moved}
    finally:
        store.close()
    for item_id in moved:
        click.echo(f"item {item_id}: failed -> pending (retry by operator)")
    for item_id, item in missed.items():
        if item is None or (tenant and item.tenant != tenant):
            found = "no such item"
        elif item.status == "failed":
            found = "a later change of the same alert was queued after it (retry that one)"
        else:
            found = f"it is {item.status}"
        click.echo(f"item {item_id} not retried: {found}", err=True)
    if all_failed and not moved:
        click.echo("no failed items", err=True)
    raise SystemExit(1 if missed else 0)


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
