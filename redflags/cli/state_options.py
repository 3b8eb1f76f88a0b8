"""The state options ``replay`` shares with ``outbox`` and ``history``.

The state store (``--state FILE|URL`` or ``$REDFLAGS_STATE``: a SQLite file or a
``postgresql://`` URL) holds the patient history, the alert
ledger and the outbox; ``--fhir-server URL`` is where the outbox delivers, with the bearer
token of ``--fhir-token-file``, ``$REDFLAGS_FHIR_TOKEN`` or ``--fhir-token`` (the first two keep it
out of the process list).

A store may be shared with the service, which keeps each client's patients apart as tenants
(``redflags.service.auth.tenants``): ``--tenant`` names the one a command acts on.

Only ``replay`` and ``serve`` create a store (and say so): every other command reads or
changes an existing one, and a path that does not exist is one line and exit 2, never a new
empty store that looks like success.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from redflags.cli.fhir_token_option import fhir_token_callback, fhir_token_file_option
from redflags.state.location import UnsupportedLocation, check_file, check_location, is_database_url, redact
from redflags.state.model import DEFAULT_TENANT, NoStateStore, StateStore
from redflags.state.tenant_view import TenantView

if TYPE_CHECKING:  # requests and jwt are imported when a server is named, not by every replay
    from redflags.delivery.sender import Round


STATE_ENV = "REDFLAGS_STATE"
TOKEN_ENV = "REDFLAGS_FHIR_TOKEN"

Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]


class LocationRefused(click.ClickException):
    """A store named by a URL this version cannot open: one line, exit 2 like a usage error."""

    exit_code = 2


class StorePath(click.Path):
    """A store's file, or (``database``) a ``postgresql://`` URL, kept as the string it is. Any
    other URL is refused with one line, never taken for a file name (which made a folder called
    ``postgresql:``)."""

    def __init__(self, path_type: type[Any] | None = Path, *, database: bool = True) -> None:
        super().__init__(dir_okay=False, path_type=path_type)
        self.database = database

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, str):  # before Path() folds "://" into ":/"
            what = param.opts[0] if param and param.opts else "store"
            try:
                (check_location if self.database else check_file)(value, what)
            except UnsupportedLocation as exc:
                raise LocationRefused(str(exc)) from None
            if is_database_url(value):
                return value
        return super().convert(value, param, ctx)


def state_option(required: bool = False) -> Decorator:
    return click.option(
        "--state",
        "state_path",
        envvar=STATE_ENV,
        required=required,
        type=StorePath(),
        help="State store: patient history, alert ledger, outbox: a SQLite file, or a postgresql:// URL "
        f"(shared by several hosts). Default: ${STATE_ENV}.",
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


def open_state(path: Path | str, *, create: bool = False) -> StateStore:
    """Open an existing store; ``create`` (replay, serve): make it, saying so on stderr. A
    database URL is always there (its tables are made when missing); its password is never shown."""
    from redflags.state import stores  # SQLite and the store modules: only a run with a store
    from redflags.state.sqlite_store import StateStoreError

    new = create and isinstance(path, Path) and not path.exists()
    try:
        store = stores.open_state(path, create=create)
    except NoStateStore as exc:
        raise MissingStore(str(exc)) from None
    except UnsupportedLocation as exc:  # bad pool_* parameters, a login the database refused
        raise LocationRefused(redact(" ".join(str(exc).split()))) from None
    except StateStoreError as exc:
        raise click.ClickException(redact(" ".join(str(exc).split()))) from None
    if new:
        click.echo(f"created state store at {path}", err=True)
    return store


def outbox_line(store: StateStore, done: Round | None = None) -> str:
    counts = store.counts()
    sent = f"this run: delivered {done.delivered}, failed {done.failed}; " if done else ""
    left = f"pending {counts['pending']}, failed {counts['failed']}, delivered {counts['delivered']}"
    reasons = done.by_reason() if done else {}
    why = "; not delivered: " + ", ".join(f"{r} {n}" for r, n in reasons.items()) if reasons else ""
    return f"outbox: {sent}{left}{why}"
