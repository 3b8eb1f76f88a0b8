"""Options and helpers the commands share: the site configuration, --now, a console that never cuts ids."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import click

from engine.errors import RuleDefinitionError
from fhir_adapters.errors import IntakeError
from fhir_adapters.terminology import TerminologyError
from fhir_adapters.times import parse_now
from redflags import config
from redflags.pipeline import DEFAULT_MAX_FACTS, Pipeline
from redflags.stateful import Memory

if TYPE_CHECKING:  # rich is imported when a table is printed, not by every replay
    from rich.console import Console


def config_option() -> Callable[[Callable[..., None]], Callable[..., None]]:
    return click.option(
        "--config",
        "config_path",
        type=click.Path(dir_okay=False, path_type=Path),
        help=f"Site configuration (TOML: parameters, local codes). Default: ${config.ENV_VAR}.",
    )


def site_pipeline(
    config_path: Path | None,
    *,
    strict: bool = False,
    valueset_dirs: Sequence[Path] = (),
    max_facts: int | None = DEFAULT_MAX_FACTS,
    memory: Callable[[], Memory] | None = None,
) -> Pipeline:
    """The pipeline a site configured (``memory``: its state store, opened once the rules
    compiled); any configuration mistake ends the run with one line."""
    try:
        site = config.load(config.resolve(config_path))
        pipeline = Pipeline.from_config(
            site, strict=strict, valueset_dirs=valueset_dirs, max_facts=max_facts, memory=memory
        )
    except (config.ConfigError, TerminologyError, RuleDefinitionError) as exc:
        error = click.ClickException(" ".join(str(exc).split()))
        error.exit_code = getattr(exc, "exit_code", 1)  # 2: a parameter outside its plausible range
        raise error from None
    config.log_overrides(site)  # once per run, before any patient is read
    return pipeline


def now_option(value: str | None) -> int:
    if value is None:
        return int(time.time())
    try:
        return parse_now(value)
    except IntakeError as exc:
        raise click.BadParameter(exc.message, param_hint="--now") from None


def wide_console() -> Console:
    """Wide enough off a terminal (pipes, CI logs) that ids are never cut."""
    from rich.console import Console

    console = Console()
    return console if console.is_terminal else Console(width=200)
