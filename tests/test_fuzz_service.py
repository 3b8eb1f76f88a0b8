"""Fuzzing the running service (the short run of ``bench.fuzz``), and the feedback endpoint's limits.

A real ``redflags serve`` on 127.0.0.1 gets a few hundred hypothesis-made calls (fixed seed):
``$evaluate``, the three CDS services and their feedback. Every answer is a 2xx or a 4xx with
an OperationOutcome; afterwards the service still evaluates a known fixture correctly. The long
run is ``python -m bench.fuzz --inputs 100000``.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx
import pytest
import requests
from anyio import to_thread

from bench import fuzz
from redflags.service.app import create_app
from redflags.service.cds import feedback
from redflags.service.settings import ServiceSettings

from .conftest import FIXTURES
from .service_harness import Service, running_service

SHORT_RUN = 300  # inputs: about 20 s on a quiet 2-core machine
ITEM = json.loads((FIXTURES / "external" / "cds-hooks" / "feedback-overridden.spec-2.0.1.json").read_text())[
    "feedback"
][0]


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    with running_service(tmp_path_factory.mktemp("fuzz"), "--allow-unauthenticated") as running:
        yield running


def test_fuzzed_calls_get_an_answer_or_an_outcome_and_the_service_still_answers(service: Service) -> None:
    session = requests.Session()
    fuzz.probe(session, service.url)
    before = fuzz.rss_kib(service.process.pid)
    tally = fuzz.Tally()
    fuzz.run_batch(fuzz.http_post(session, service.url), SHORT_RUN, seed=0, tally=tally)
    assert tally.counts["inputs"] == SHORT_RUN
    assert tally.failures == 0, tally.first  # no 5xx, no 4xx without OperationOutcome, no reset
    assert tally.counts["ok"] and tally.counts["rejected"]  # both paths were exercised
    fuzz.probe(session, service.url)  # /healthz, and a known fixture gives its expected alerts
    after = fuzz.rss_kib(service.process.pid)
    assert after < before + 300 * 1024, (before, after)  # KiB: no input kept in memory
    assert '"evaluate_failed"' not in service.log()


def _feedback(count: int) -> bytes:
    return json.dumps({"feedback": [ITEM] * count}).encode()


def test_feedback_over_the_item_cap_is_refused_with_a_413_and_nothing_stored(service: Service) -> None:
    url = f"{service.url}/cds-services/redflags-patient-view/feedback"
    over = requests.post(url, data=_feedback(feedback.MAX_FEEDBACK_ITEMS + 1), timeout=60)
    assert over.status_code == 413
    (issue,) = over.json()["issue"]
    assert issue["code"] == "too-costly"
    assert f"at most {feedback.MAX_FEEDBACK_ITEMS}" in issue["diagnostics"]
    assert f"{feedback.MAX_FEEDBACK_ITEMS + 1} in one request" in issue["diagnostics"]
    at_cap = requests.post(url, data=_feedback(feedback.MAX_FEEDBACK_ITEMS), timeout=60)
    assert at_cap.status_code == 200, at_cap.text


def test_a_feedback_body_over_its_byte_limit_is_refused_before_parsing(service: Service) -> None:
    url = f"{service.url}/cds-services/redflags-patient-view/feedback"
    body = json.dumps(
        {"feedback": [{**ITEM, "overrideReason": {"userComment": "x" * feedback.MAX_FEEDBACK_BYTES}}]}
    )
    over = requests.post(url, data=body.encode(), timeout=60)
    assert over.status_code == 413
    (issue,) = over.json()["issue"]
    assert (
        issue["code"] == "too-costly"
        and f"at most {feedback.MAX_FEEDBACK_BYTES} bytes" in issue["diagnostics"]
    )


def test_healthz_answers_while_a_feedback_body_is_being_validated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Validation runs off the event loop: while it is held, /healthz is answered.

    The validation is held until /healthz has answered (or 10 s have passed). On the event loop,
    holding it would hold /healthz too: the validation would then see no answer in time.
    """
    validating, healthz_answered = threading.Event(), threading.Event()
    saw_answer: list[bool] = []
    real_validate = feedback.FeedbackRequest.model_validate_json

    def held_validate(cls: type, raw: bytes, **options: object) -> feedback.FeedbackRequest:
        validating.set()
        saw_answer.append(healthz_answered.wait(10))
        return real_validate(raw, **options)

    monkeypatch.setattr(feedback.FeedbackRequest, "model_validate_json", classmethod(held_validate))
    app = create_app(ServiceSettings(allow_unauthenticated=True, feedback_db=str(tmp_path / "fb.sqlite")))

    async def scenario() -> tuple[int, int]:
        transport = httpx.ASGITransport(app=app)
        # the app's own start-up: its engine process (for /healthz) and its feedback store
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=transport, base_url="http://fuzz.test") as client,
        ):
            statuses: dict[str, int] = {}

            async def post() -> None:
                answer = await client.post(
                    "/cds-services/redflags-patient-view/feedback",
                    content=_feedback(feedback.MAX_FEEDBACK_ITEMS),
                    headers={"Content-Type": "application/json"},
                )
                statuses["feedback"] = answer.status_code

            async with anyio.create_task_group() as tasks:
                tasks.start_soon(post)
                with anyio.fail_after(20):
                    await to_thread.run_sync(validating.wait, 20)
                    statuses["healthz"] = (await client.get("/healthz")).status_code
                healthz_answered.set()
            return statuses["healthz"], statuses["feedback"]

    assert anyio.run(scenario) == (200, 200)
    assert saw_answer == [True]
