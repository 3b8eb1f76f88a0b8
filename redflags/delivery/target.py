"""Where the CLI delivers the outbox (the ``--fhir-*`` options) and one delivery round told on stderr."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import click

from redflags.delivery.sender import Round, drain
from redflags.state.model import StateStore

if TYPE_CHECKING:  # requests and jwt are imported when a server is named, not by every replay
    from fhir_adapters.fhir_client import FhirClient


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
