"""``redflags rules``: the loaded rules, one rule's criteria (--explain), or the alert ConceptMap."""

from __future__ import annotations

import sys
from pathlib import Path

import click
import orjson
from rich.table import Table

from fhir_adapters.output import alert_concept_map
from redflags.cli.options import config_option, site_pipeline, wide_console
from redflags.explain import explain


@click.command("rules")
@click.option(
    "--explain",
    "explain_id",
    metavar="ID",
    help="Print one rule's criteria, parameters, value sets and actions.",
)
@click.option(
    "--concept-map",
    is_flag=True,
    help="Print the FHIR ConceptMap alert id -> disorder codes (to publish beside the Flags).",
)
@config_option()
def rules_command(explain_id: str | None, concept_map: bool, config_path: Path | None) -> None:
    """List the loaded rules: id, version, urgency per tier, title (as a site configured them)."""
    if concept_map and explain_id is not None:  # each prints a whole document: one would be dropped
        click.echo("Error: --concept-map and --explain print different documents: give one of them", err=True)
        sys.exit(2)
    pipeline = site_pipeline(config_path)
    if explain_id is not None:
        if explain_id not in pipeline.engine.metas:
            known = ", ".join(pipeline.engine.metas)
            raise click.BadParameter(f"unknown rule {explain_id!r} (known: {known})", param_hint="--explain")
        click.echo(explain(explain_id, pipeline.engine, pipeline.term))
        return
    if concept_map:
        engine = pipeline.engine
        document = alert_concept_map(engine.metas, engine.branch_disorders())
        click.echo(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode())
        return
    table = Table(title="redflags rules")
    for column in ("id", "version", "urgency", "title"):
        table.add_column(column)
    for meta in pipeline.engine.metas.values():
        urgency = ", ".join(f"{t.name}: {t.severity}" for t in meta.tiers)
        table.add_row(meta.id, meta.version, urgency, meta.title)
    wide_console().print(table)
