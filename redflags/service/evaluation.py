"""Evaluate off the event loop: FHIR mapping on a worker thread, rules on the engine thread."""

from __future__ import annotations

from anyio import to_thread

from fhir_adapters.intake import Intake
from redflags.pipeline import PatientResult, Pipeline


async def evaluate(pipeline: Pipeline, intake: Intake, now: int) -> list[PatientResult]:
    return await to_thread.run_sync(pipeline.evaluate, intake, now)
