"""``redflags outbox``: what waits to be written to the FHIR server, sent, listed and retried.

``outbox`` shows and sends every tenant's items unless given ``--tenant``. ``outbox list`` and
``outbox retry`` let an operator see why items were not delivered and put failed ones back in
the queue (recorded in the outbox's audit trail); a delivery round prints one line per item not
delivered and counts by reason.
"""

from __future__ import annotations

import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
import orjson

from redflags.cli.state_options import (
    fhir_options,
    narrowed,
    open_state,
    outbox_line,
    state_option,
    tenant_option,
)
from redflags.delivery.target import FhirTarget, deliver
from redflags.state.model import Delivery, OutboxEvent, Status


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
