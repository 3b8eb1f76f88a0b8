"""``POST /cds-services/{id}/feedback``: what clinicians did with our cards (CDS Hooks 2.0).

Each request is validated as a whole, stored in one transaction, and answered 200 with an
empty body only once it is durable (the specification defines no response body and forbids
empty JSON objects). The card producer records every card it returns (``card_writer``, or
``record_shown`` awaited) so that feedback naming a ``card.uuid`` can be attributed to a rule
(see redflags.state.feedback). Both are recorded under the site called (``sites.current``):
feedback sent to one site for a card shown at another is an unknown card, like any other.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Iterable
from datetime import UTC, datetime
from functools import partial
from typing import Annotated, Any, Literal

import orjson
from anyio import to_thread
from fastapi import APIRouter, Depends, Request, Response
from fastapi.routing import APIRoute
from pydantic import AfterValidator, BaseModel, ValidationError, model_validator

from engine.logger import get_logger
from redflags import metrics
from redflags.service import sites
from redflags.service.auth.callers import cds_client
from redflags.service.cds.services import SERVICES
from redflags.service.http.body import media_type_problem
from redflags.service.http.outcome import outcome_response
from redflags.service.settings import ServiceSettings
from redflags.state.feedback import (
    Feedback,
    FeedbackStore,
    FeedbackStoreError,
    Reason,
    ShownCard,
)
from redflags.state.stores import open_feedback

log = get_logger("redflags.service.feedback")


def service_exists(service_id: str) -> bool:
    """Whether ``/cds-services/{service_id}`` is one of the services discovery lists."""
    return service_id in SERVICES


def open_store(settings: ServiceSettings) -> FeedbackStore:
    return open_feedback(settings.feedback_db, keep_s=settings.feedback_keep_days * 86_400)


def feedback_store(request: Request) -> FeedbackStore:
    return request.app.state.feedback_store


async def record_shown(request: Request, service_id: str, cards: Iterable[ShownCard], shown_at: int) -> bool:
    """For the card producer: remember the cards just returned, off the event loop.

    A failure is logged and swallowed (False): the cards matter more than the statistics, and
    feedback on an unrecorded card is still kept, as "unknown card".
    """
    store = feedback_store(request)
    try:
        await to_thread.run_sync(
            partial(store.record_cards, site=sites.current()), service_id, list(cards), shown_at
        )
    except FeedbackStoreError as exc:
        log.error("cards_not_recorded", service=service_id, error=str(exc))
        metrics.store_error("feedback")
        return False
    return True


# --- the request body (CDS Hooks 2.0 "Feedback") ---------------------------------------------

#: Feedback items accepted in one request. A client sends one per card it showed, a handful;
#: more is refused (413, nothing stored) before any item is validated.
MAX_FEEDBACK_ITEMS = 1_000
#: Bytes of one feedback body (1 KiB per item): checked before parsing, because JSON a tenth of
#: the general body limit can still decode to hundreds of megabytes of objects (deep nesting).
MAX_FEEDBACK_BYTES = 1024 * 1024

_RFC3339 = re.compile(  # ASCII digits: \d also matches other scripts' digits
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2})"
)


def _instant(text: str) -> str:
    """RFC 3339 date-time with an offset (spec: outcomeTimestamp), normalised to UTC ``...Z``."""
    if not _RFC3339.fullmatch(text):
        raise ValueError(f"{text!r} is not an RFC 3339 date-time with a zone (e.g. 2021-12-11T10:05:31Z)")
    try:
        moment = datetime.fromisoformat(text.upper())
    except ValueError as exc:
        raise ValueError(f"{text!r} is not a valid date-time: {exc}") from None
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


class _CdsObject(BaseModel):
    """CDS Hooks forbids null and empty values ("", [], {}): an optional field is omitted."""

    @model_validator(mode="before")
    @classmethod
    def _no_null_or_empty(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key, value in data.items():
                if value is None or (isinstance(value, str | list | dict) and not value):
                    shown = "null" if value is None else repr(value).replace("'", '"')
                    raise ValueError(f"{key} is {shown}: CDS Hooks forbids null and empty values (omit it)")
        return data


class Coding(_CdsObject):
    system: str
    code: str
    display: str | None = None


class OverrideReason(_CdsObject):
    reason: Coding | None = None
    userComment: str | None = None

    @model_validator(mode="after")
    def _something(self) -> OverrideReason:
        if self.reason is None and self.userComment is None:
            raise ValueError("overrideReason needs a reason (Coding) or a userComment")
        return self


class AcceptedSuggestion(_CdsObject):
    id: str


class FeedbackItem(_CdsObject):
    """Field names are the specification's (camelCase)."""

    card: str
    outcome: Literal["accepted", "overridden"]
    acceptedSuggestions: list[AcceptedSuggestion] | None = None
    overrideReason: OverrideReason | None = None
    outcomeTimestamp: Annotated[str, AfterValidator(_instant)]

    @model_validator(mode="after")
    def _outcome_fields(self) -> FeedbackItem:
        if self.outcome == "accepted":
            if not self.acceptedSuggestions:
                raise ValueError("acceptedSuggestions is required when outcome is 'accepted'")
            if self.overrideReason is not None:
                raise ValueError("overrideReason goes with outcome 'overridden', not 'accepted'")
        elif self.acceptedSuggestions:
            raise ValueError("acceptedSuggestions goes with outcome 'accepted', not 'overridden'")
        return self

    def to_feedback(self) -> Feedback:
        coding = self.overrideReason.reason if self.overrideReason else None
        return Feedback(
            card=self.card,
            outcome=self.outcome,
            outcome_at=self.outcomeTimestamp,
            accepted_suggestions=tuple(s.id for s in self.acceptedSuggestions or ()),
            reason=Reason(coding.system, coding.code, coding.display) if coding else None,
            comment=self.overrideReason.userComment if self.overrideReason else None,
        )


class FeedbackRequest(_CdsObject):
    feedback: list[FeedbackItem]


# --- errors: 400/404/413/415 with an OperationOutcome -----------------------------------------


class _Rejected(Exception):
    def __init__(self, status: int, message: str, code: str = "invalid") -> None:
        super().__init__(message)
        self.status, self.message, self.code = status, message, code


def _where(loc: Iterable[object]) -> str:
    """``("body", "feedback", 0, "outcome")`` -> ``feedback[0].outcome``."""
    text = ""
    for part in loc:
        if part == "body" and not text:
            continue
        text += f"[{part}]" if isinstance(part, int) else f".{part}" if text else str(part)
    return text or "body"


def _message(errors: Iterable[dict[str, Any]]) -> str:
    lines = []
    for error in errors:
        if error.get("type") == "json_invalid":
            return "the body is not valid JSON"
        message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
        if error.get("type") in ("model_type", "model_attributes_type"):
            message = "expected a JSON object"
        lines.append(f"{_where(error.get('loc', ()))}: {message}")
    shown = "; ".join(lines[:5])
    more = len(lines) - 5
    return f"invalid feedback: {shown}" + (f" (and {more} more)" if more > 0 else "")


class _FeedbackRoute(APIRoute):
    """Answers a ``_Rejected`` raised anywhere in the route (dependencies included) as an outcome."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def checked(request: Request) -> Response:
            try:
                return await handler(request)
            except _Rejected as exc:
                return outcome_response(exc.status, exc.message, exc.code, path=request.url.path)

        return checked


def _known_service(service_id: str) -> str:
    if not service_exists(service_id):
        raise _Rejected(404, f"no CDS service {service_id!r} (see GET /cds-services)", "not-found")
    return service_id


async def _read_body(request: Request) -> bytes:
    """The JSON body, refused unread when its type is not JSON (415); its size is limited by
    ``limits.BodySizeLimit`` (413) like every other body."""
    problem = media_type_problem(
        request.headers.get("content-type"), encoding=request.headers.get("content-encoding")
    )
    if problem:
        raise _Rejected(415, problem, "not-supported")
    return await request.body()


def _parse(raw: bytes) -> FeedbackRequest:
    """The request, checked; its size and item count first, so an oversized list is never validated."""
    if len(raw) > MAX_FEEDBACK_BYTES:
        message = (
            f"feedback body of {len(raw)} bytes: at most {MAX_FEEDBACK_BYTES} bytes "
            f"(and {MAX_FEEDBACK_ITEMS} items) per request; nothing was stored"
        )
        raise _Rejected(413, message, "too-costly")
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise _Rejected(400, "the body is not valid JSON") from None
    items = doc.get("feedback") if isinstance(doc, dict) else None
    if isinstance(items, list) and len(items) > MAX_FEEDBACK_ITEMS:
        message = (
            f"too many feedback items: {len(items)} in one request, at most {MAX_FEEDBACK_ITEMS}; "
            "nothing was stored (send them in several requests)"
        )
        raise _Rejected(413, message, "too-costly")
    try:  # from the JSON text again: pydantic's JSON mode words its messages in JSON terms
        return FeedbackRequest.model_validate_json(raw)
    except ValidationError as exc:
        raise _Rejected(400, _message(exc.errors())) from None


def _items(raw: bytes) -> list[Feedback]:
    """Parse and convert: seconds of CPU for a body near the size limit, so run on a worker
    thread (``post_feedback``), never on the event loop that answers every other request."""
    return [item.to_feedback() for item in _parse(raw).feedback]


def _inline_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON Schema with its ``$defs`` inlined (they would not resolve in OpenAPI)."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node:
                return inline(defs[node["$ref"].rsplit("/", 1)[-1]])
            return {key: inline(value) for key, value in node.items()}
        if isinstance(node, list):
            return [inline(value) for value in node]
        return node

    return inline(schema)


router = APIRouter(route_class=_FeedbackRoute, tags=["CDS Hooks"])


@router.post(
    "/cds-services/{service_id}/feedback",
    status_code=200,
    response_class=Response,
    responses={
        200: {"description": "Stored durably (empty body: the specification defines none)."},
        400: {"description": "Malformed feedback (OperationOutcome says where)."},
        413: {
            "description": f"Over {MAX_FEEDBACK_BYTES} bytes or {MAX_FEEDBACK_ITEMS} items; nothing stored."
        },
        401: {"description": "The client is not authenticated."},
        404: {"description": "No such CDS service."},
        503: {"description": "The feedback database is unavailable; nothing was stored, retry."},
    },
    summary="Feedback on cards: accepted or overridden (with reason)",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": _inline_schema(FeedbackRequest)}},
        }
    },
)
async def post_feedback(
    request: Request,
    client: Annotated[str, Depends(cds_client)],
    service_id: Annotated[str, Depends(_known_service)],
) -> Response:
    """Store every feedback item of the request (all or nothing), then answer 200.

    Checked in this order: client (401), service (404), body (415, 413, 400).
    """
    items = await to_thread.run_sync(_items, await _read_body(request))
    try:
        record = partial(feedback_store(request).record_feedback, site=sites.current())
        await to_thread.run_sync(record, service_id, items, client, int(time.time()))
    except FeedbackStoreError as exc:
        log.error("feedback_not_stored", service=service_id, items=len(items), error=str(exc))
        metrics.store_error("feedback")
        return outcome_response(
            503, "feedback could not be stored; nothing was kept, retry", "transient", path=request.url.path
        )
    outcomes = Counter(item.outcome for item in items)
    log.info("feedback_stored", service=service_id, items=len(items), **outcomes)
    return Response(status_code=200)
