"""``redflags replay --compare OTHER.toml``: one input under two site configurations, the
differences per patient instead of the alerts."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import click
import orjson

from redflags.cli.options import site_pipeline


def compare_option() -> Callable[[Callable[..., None]], Callable[..., None]]:
    return click.option(
        "--compare",
        "compare_path",
        type=click.Path(dir_okay=False, path_type=Path),
        help="Another site configuration (TOML): evaluate each file under --config and under this "
        "one, in one process, and print per patient the rules whose alert differs (tab-separated "
        "input, patient, rule, --config's alert -> this one's; json: one object a line), not the alerts.",
    )


def replay_compare(
    files: Sequence[Path],
    config_path: Path | None,
    other_path: Path,
    now: int,
    fmt: str,
    *,
    strict: bool,
    valueset_dirs: Sequence[Path],
    max_facts: int,
) -> bool:
    """Print the differences, then a count on stderr; True when an input could not be read."""
    from redflags.compare import Tally, compare  # only --compare needs it: not every replay's start-up

    options = {"strict": strict, "valueset_dirs": valueset_dirs, "max_facts": max_facts}
    baseline = site_pipeline(config_path, **options)
    other = site_pipeline(other_path, **options)
    tally = Tally()
    for difference in compare(files, baseline, other, now, tally):
        if fmt == "json":
            sys.stdout.buffer.write(orjson.dumps(difference.as_dict()) + b"\n")
        else:
            sys.stdout.write(difference.line() + "\n")
    sys.stdout.flush()
    for error in tally.errors:
        click.echo(error, err=True)
    click.echo(
        f"compare: {tally.inputs} inputs, {tally.patients} patients, {tally.differing} differ", err=True
    )
    return bool(tally.errors)
