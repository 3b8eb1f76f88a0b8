"""The ``redflags`` command: each subcommand lives in its own module, imported when named."""

from __future__ import annotations

import importlib

import click

from redflags import logs
from redflags.cli.startup_gc import collection_paused

_LAZY_COMMANDS: dict[str, tuple[str, str]] = {
    "replay": ("redflags.cli.replay", "replay_command"),
    "rules": ("redflags.cli.rules", "rules_command"),
    "serve": ("redflags.cli.serve", "serve_command"),
    "feedback": ("redflags.cli.feedback", "feedback_group"),
    "outbox": ("redflags.cli.outbox", "outbox_group"),
    "history": ("redflags.cli.history", "history_group"),
    "token": ("redflags.cli.token", "token_command"),
}


class _LazyGroup(click.Group):
    """Subcommands are imported only when named (or listed in --help): serve pulls in fastapi,
    uvicorn and the service; a replay and each of its --jobs workers paid ~0.7 s of CPU
    importing them."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *_LAZY_COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in _LAZY_COMMANDS and cmd_name not in self.commands:
            module, attribute = _LAZY_COMMANDS[cmd_name]
            with collection_paused():  # importing makes no garbage: see startup_gc
                self.add_command(getattr(importlib.import_module(module), attribute), cmd_name)
        return super().get_command(ctx, cmd_name)


def _print_version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    """Eager: the version without loading any command (bug reports name both builds)."""
    if value and not ctx.resilient_parsing:
        from redflags.version import version_text

        click.echo(version_text())
        ctx.exit()


@click.group(cls=_LazyGroup)
@click.option(
    "--version",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_print_version,
    help="Print redflags' version and the engine build, then exit.",
)
@click.option(
    "--log-level",
    default=None,
    type=click.Choice(["debug", "info", "warning", "error"]),
    help="structlog JSON on stderr [default: warning; info for serve].",
)
@click.option(
    "--log-format",
    default="auto",
    envvar=logs.FORMAT_ENV,
    show_envvar=True,
    show_default=True,
    type=click.Choice(list(logs.FORMATS)),
    help="Log lines: json, console (readable) or auto (console on a terminal, JSON otherwise).",
)
def main(log_level: str | None, log_format: str = "auto") -> None:
    """redflags: alerts for the dangerous causes of leg weakness, from FHIR data."""
    logs.choose_format(log_format)
    logs.configure(log_level or "warning")


def root_log_level(default: str = "warning") -> str:
    """The ``--log-level`` given to ``redflags`` itself, else ``default``: a subcommand that
    configures its logs again (the events it tells in words, its own default) keeps the user's."""
    return click.get_current_context().find_root().params.get("log_level") or default
