"""The body of ``POST /fhir/$evaluate``: its media type checked here, its FHIR JSON read by
``fhir_adapters.evaluate_input`` (formats described there) within the service's limits."""

from __future__ import annotations

from fhir_adapters.evaluate_input import INPUT_PARAMETERS, BadInput, EvaluationInput
from fhir_adapters.evaluate_input import read_body as read_fhir_body
from redflags.service.http.body import media_type_problem
from redflags.service.http.limits import call_limits

__all__ = ["INPUT_PARAMETERS", "BadInput", "EvaluationInput", "check_media_type", "read_body"]


def check_media_type(header: str | None, encoding: str | None = None) -> None:
    """415 unless uncompressed JSON (FHIR or plain) in UTF-8; a missing Content-Type is refused too."""
    problem = media_type_problem(header, default=None, encoding=encoding)
    if problem:
        raise BadInput(problem, status=415)


def read_body(
    body: bytes, query_now: str | None, default_now: int, max_resources: int | None = None
) -> EvaluationInput:
    """``fhir_adapters.evaluate_input.read_body``; ``max_resources`` None: the service's
    ``call_limits``."""
    limit = max_resources if max_resources is not None else call_limits().max_resources
    return read_fhir_body(body, query_now, default_now, limit)
