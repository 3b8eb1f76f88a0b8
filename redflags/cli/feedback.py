"""``redflags feedback report``: per rule, how many cards were shown, accepted and overridden, and why.

The start of alert-fatigue measurement: a rule whose cards are mostly overridden (or ignored)
is a rule clinicians have learnt to click away.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click
import orjson
from rich.console import Console
from rich.table import Table

from redflags.cli.state_options import STATE_ENV, LocationRefused, StorePath
from redflags.state.feedback import FeedbackReport, FeedbackStoreError, ReasonCount
from redflags.state.location import FEEDBACK_FILE, StorePaths, UnsupportedLocation, redact
from redflags.state.stores import open_feedback


@click.group("feedback")
def feedback_group() -> None:
    """CDS Hooks feedback stored by `redflags serve` (what clinicians did with the cards)."""


@feedback_group.command("report")
@click.option(
    "--db",
    "db_path",
    type=StorePath(),
    help="The feedback database (`redflags serve --feedback-db`). Default: serve's, the "
    f"{FEEDBACK_FILE} beside ${STATE_ENV} or in the user's state directory.",
)
@click.option(
    "--state",
    "state",
    type=StorePath(),
    help="Read the feedback kept with this state store: the file beside it, or (a postgresql:// URL) "
    "that database, where every replica records its cards and feedback.",
)
@click.option(
    "--site",
    "site",
    metavar="NAME",
    help="Only this site's rows (`serve --site NAME=FILE`); `--site ''` the unprefixed, default site's.",
)
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
def report_command(db_path: Path | str | None, state: Path | str | None, site: str | None, fmt: str) -> None:
    """Per rule: cards shown, accepted, overridden, with no feedback, and the override reasons.

    Card counts are distinct cards (a card may be reported more than once, and both accepted and
    overridden); "items" counts every feedback item. Feedback on card uuids the service never
    recorded is counted apart, as unknown cards. The database is only read.

    With several sites (`serve --site`), each site has its own rows: a card counts only for the
    site that showed it, and feedback sent to another site is an unknown card of that site.
    """
    if db_path is None and state is not None:
        try:
            db_path = StorePaths.resolve(state).feedback
        except UnsupportedLocation as exc:
            raise LocationRefused(str(exc)) from None
    db_path = db_path or _default_db()
    if isinstance(db_path, Path) and not db_path.is_file():  # a typo must not read as "no feedback yet"
        missing = click.ClickException(f"no feedback database at {db_path} (serve creates one)")
        missing.exit_code = 2
        raise missing
    try:
        store = open_feedback(db_path, create=False)
        try:
            report = store.report()
        finally:
            store.close()
    except UnsupportedLocation as exc:  # a login the database refused: fix the URL (exit 2)
        raise LocationRefused(redact(" ".join(str(exc).split()))) from None
    except FeedbackStoreError as exc:
        raise click.ClickException(redact(" ".join(str(exc).split()))) from None
    if site is not None:
        report = _one_site(report, site)
    if fmt == "json":
        sys.stdout.buffer.write(orjson.dumps(report.as_dict(), option=orjson.OPT_INDENT_2) + b"\n")
        sys.stdout.flush()
        return
    _print_table(report, db_path if isinstance(db_path, Path) else where_of(db_path))


def _one_site(report: FeedbackReport, site: str) -> FeedbackReport:
    """``--site``: a name that cannot be a site is an error; a site with no rows says so on stderr
    (a typo must not read as "no feedback yet")."""
    from redflags.service.sites import SITE_NAME  # the service's rule for names; its imports only here

    if site and not SITE_NAME.fullmatch(site):
        bad = click.BadParameter("a site name is 1-64 letters, digits, '-' or '_' ('' the default site)")
        bad.param_hint = "'--site'"
        raise bad
    if site not in report.sites:
        known = ", ".join(name or "''" for name in report.sites) or "none"
        click.echo(f"no feedback recorded for site {site!r} (sites with feedback: {known})", err=True)
    return report.for_site(site)


def _reason(reason: ReasonCount) -> str:
    label = f"{reason.display} [{reason.code}]" if reason.display else f"{reason.system}|{reason.code}"
    return f"{label}: {reason.cards}"


def where_of(url: str) -> str:
    """``host:port/dbname`` of a database URL (never its user or password), for the table's title."""
    from redflags.state.postgres_db import where

    return where(url)


def _default_db() -> Path | str:
    """Where ``redflags serve`` keeps feedback by default; the working directory's file, where
    the release before kept it, while it is the only one (deprecated, said on stderr)."""
    state = os.environ.get(STATE_ENV) or None
    try:
        path = StorePaths.resolve(state).feedback
    except UnsupportedLocation as exc:
        raise LocationRefused(str(exc)) from None
    legacy = Path(FEEDBACK_FILE)
    if isinstance(path, Path) and not path.is_file() and legacy.is_file():
        click.echo(
            f"reading ./{FEEDBACK_FILE} (deprecated default: pass --db, or move it to {path})", err=True
        )
        return legacy
    return path


def _print_table(report: FeedbackReport, db_path: Path | str) -> None:
    table = Table(title=f"redflags feedback ({db_path})", show_footer=True)
    rules = report.rules
    totals = {
        name: sum(getattr(r, name) for r in rules)
        for name in ("shown", "accepted", "overridden", "no_feedback", "feedback_items")
    }
    sited = any(r.site for r in rules)  # a site column only once a non-default site has rows
    if sited:
        table.add_column("site")
    table.add_column("rule", footer="total")
    for name, header in (
        ("shown", "shown"),
        ("accepted", "accepted"),
        ("overridden", "overridden"),
        ("no_feedback", "no feedback"),
        ("feedback_items", "items"),
    ):
        table.add_column(header, justify="right", footer=str(totals[name]))
    table.add_column("override rate", justify="right", footer=_rate(totals["overridden"], totals["shown"]))
    table.add_column("override reasons (cards)", overflow="fold")
    for rule in rules:
        reasons = [_reason(r) for r in rule.override_reasons]
        if rule.overridden_without_reason:
            reasons.append(f"no coded reason: {rule.overridden_without_reason}")
        table.add_row(
            *((rule.site or "(default)",) if sited else ()),
            rule.rule,
            str(rule.shown),
            str(rule.accepted),
            str(rule.overridden),
            str(rule.no_feedback),
            str(rule.feedback_items),
            _rate(rule.overridden, rule.shown),
            "\n".join(reasons) or "-",
        )
    console = Console()
    (console if console.is_terminal else Console(width=200)).print(table)
    unknown = report.unknown_cards
    click.echo(
        f"unknown cards: {unknown.feedback_items} feedback items on {unknown.cards} cards "
        f"({unknown.accepted} accepted, {unknown.overridden} overridden)"
    )
    if any(site for site, _ in report.unknown_by_site):
        for site, cards in report.unknown_by_site:
            click.echo(
                f"  at site {site or '(default)'}: {cards.feedback_items} items on {cards.cards} cards"
            )


def _rate(part: int, whole: int) -> str:
    return f"{100 * part / whole:.0f}%" if whole else "-"
