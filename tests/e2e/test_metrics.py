"""`GET /metrics`: who may read it, and that it reports what happened.

Metrics live in the process's default registry, shared by every test of the session, so
the assertions compare values before and after the action under test.
"""

from __future__ import annotations

import re

import httpx
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from ragledger.api.app import create_app
from tests.e2e.test_documents import drain
from tests.e2e.test_questions import (  # noqa: F401  (fixtures used by name)
    ANSWER,
    LEAVE,
    ask,
    base_url,
    http,
    llm_settings,
    people,
    upload,
)

UUID_LIKE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-")


def parse(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample as {(name, sorted labels): value}."""
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples, name: str, **labels: str) -> float:
    """The sample's value, 0 when it has not been created yet."""
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def scrape(client: httpx.AsyncClient, **headers: str) -> dict:
    response = await client.get("/metrics", headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return parse(response.text)


async def test_metrics_are_refused_to_other_addresses_without_the_token(settings) -> None:
    app = create_app(
        settings.model_copy(update={"metrics_token": SecretStr("scrape-me-please")}),
        run_subscribers=False,
    )
    async with app.router.lifespan_context(app):
        outside = httpx.ASGITransport(app, client=("203.0.113.7", 50000))
        inside = httpx.ASGITransport(app, client=("127.0.0.1", 50000))
        async with httpx.AsyncClient(transport=outside, base_url="http://test") as http:
            # No token from outside the allowed networks: 403, and it says how to get in.
            refused = await http.get("/metrics")
            assert refused.status_code == 403
            assert "METRICS_TOKEN" in refused.json()["detail"]
            # A wrong token: 401, from anywhere (a stale scraper config should be loud).
            wrong = await http.get("/metrics", headers={"Authorization": "Bearer nope"})
            assert wrong.status_code == 401
            basic = await http.get("/metrics", headers={"Authorization": "Basic c2NyYXBl"})
            assert basic.status_code == 401
            # The right token: the metrics.
            samples = await scrape(http, Authorization="Bearer scrape-me-please")
            assert ("ragledger_ledger_head_position", ()) in samples
        async with httpx.AsyncClient(transport=inside, base_url="http://test") as http:
            await scrape(http)  # loopback is allowed by default
            wrong = await http.get("/metrics", headers={"Authorization": "Bearer nope"})
            assert wrong.status_code == 401
        # /metrics is an operator's endpoint, not part of the public API schema.
        assert "/metrics" not in app.openapi()["paths"]


async def test_metrics_refuse_everyone_but_loopback_when_no_token_is_set(settings) -> None:
    app = create_app(settings, run_subscribers=False)
    async with app.router.lifespan_context(app):
        outside = httpx.ASGITransport(app, client=("10.1.2.3", 50000))
        async with httpx.AsyncClient(transport=outside, base_url="http://test") as http:
            refused = await http.get("/metrics", headers={"Authorization": "Bearer "})
            assert refused.status_code == 401
            assert (await http.get("/metrics")).status_code == 403


async def test_metrics_report_requests_questions_llm_retrieval_and_lag(
    db,
    llm_settings,  # noqa: F811  (pytest fixtures imported above)
    http,  # noqa: F811
    people,  # noqa: F811
    fake_openai,
) -> None:
    fake_openai.chat.answer = ANSWER
    before = await scrape(http)

    await upload(http, people["admin"], LEAVE, "leave.md", groups=["hr"])
    # Not drained yet: the projections trail the head, in events and in seconds.
    pending = await scrape(http)
    head = value(pending, "ragledger_ledger_head_position")
    assert head > value(before, "ragledger_ledger_head_position")
    lag = value(pending, "ragledger_subscriber_lag_events", subscriber="documents")
    assert lag > 0
    assert value(pending, "ragledger_subscriber_lag_seconds", subscriber="documents") >= 0

    await drain(db, llm_settings)
    drained = await scrape(http)
    assert value(drained, "ragledger_subscriber_lag_events", subscriber="documents") == 0
    assert value(drained, "ragledger_subscriber_lag_seconds", subscriber="documents") == 0

    events = await ask(http, people["hr"], "How many days of annual leave do employees get?")
    assert events[-1][0] == "done"
    after = await scrape(http)

    answered = ("ragledger_questions_total", {"outcome": "answered"})
    assert value(after, answered[0], **answered[1]) == value(before, answered[0], **answered[1]) + 1
    model = {"model": "openai/fake-chat"}
    for histogram in (
        "ragledger_llm_time_to_first_token_seconds_count",
        "ragledger_llm_duration_seconds_count",
    ):
        assert value(after, histogram, **model) == value(before, histogram, **model) + 1
    search = "ragledger_retrieval_duration_seconds_count"
    assert value(after, search, stage="search") > value(before, search, stage="search")
    # Requests are counted per route template (never per id) and status.
    asked = {"method": "POST", "route": "/api/v1/questions", "status": "200"}
    assert value(after, "ragledger_http_requests_total", **asked) == (
        value(before, "ragledger_http_requests_total", **asked) + 1
    )
    assert value(after, "ragledger_http_request_duration_seconds_count", **asked) >= 1
    appended = "ragledger_ledger_events_appended_total"
    assert value(after, appended, event_type="QuestionAsked") > value(
        before, appended, event_type="QuestionAsked"
    )
    # The event-loop lag monitor runs in every API process.
    assert value(after, "ragledger_event_loop_lag_seconds_count") > 0
    # No label carries an id: routes are templates.
    routes = {dict(labels).get("route") for (_name, labels) in after}
    assert not any(route and UUID_LIKE.search(route) for route in routes)
