"""The audit views over HTTP: the ledger with signed keyset cursors, answers, one
question's story, a document's history, and the AuditViewed record of every read.

Answers come from the real asking flow with the OpenAI-compatible fake as the model;
bulk ledger traffic is appended with the store directly, where HTTP is not the point.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC

import pytest
from pydantic import SecretStr
from sqlalchemy import text

from ragledger.events import store
from ragledger.events.access import PasswordResetRequested, UserVerified
from ragledger.events.envelope import EventMetadata, RecordedEvent
from ragledger.projections.audit_answers import AuditAnswersProjection
from ragledger.projections.chunks import ChunksProjection
from ragledger.projections.documents import DocumentsProjection
from ragledger.projections.ingestion import IngestionReactor
from ragledger.projections.runner import reset_projection, run_until_caught_up
from tests.e2e.conftest import Account, login, make_account

EVENTS = "/api/v1/audit/events"
ANSWERS = "/api/v1/audit/answers"

LEAVE = b"""# Leave policy

## Annual leave

Employees get thirty days of annual leave per calendar year. Unused days expire in March.

## Sick leave

Sick leave needs a doctor's note after three days.
"""
BUDGET = b"""# Finance budget

## Secret numbers

The confidential acquisition budget for Project Falcon is 42 million euros.
"""


@pytest.fixture
def settings(settings, fake_openai):
    """The test settings with the fake OpenAI server as the model (overrides the root one)."""
    return settings.model_copy(
        update={
            "llm_model": "openai/fake-chat",
            "llm_api_base": fake_openai.base_url,
            "llm_api_key": SecretStr(fake_openai.api_key),
            "llm_num_retries": 0,
            "sse_keepalive_s": 0.5,
        }
    )


async def drain(db, settings) -> None:
    """Run the subscribers these views need until the ledger stops growing."""
    subscribers = [
        DocumentsProjection(),
        ChunksProjection(),
        IngestionReactor(settings),
        AuditAnswersProjection(),
    ]
    while True:
        async with db.sessionmaker() as session:
            before = (await store.head(session)).position
        for subscriber in subscribers:
            assert await run_until_caught_up(db.engine, subscriber)
        async with db.sessionmaker() as session:
            if (await store.head(session)).position == before:
                return


async def append(
    db, count: int, *, stream: str = "load", actor: str | None = None, kind=UserVerified
) -> list[RecordedEvent]:
    async with db.sessionmaker() as session, session.begin():
        return await store.append(
            session,
            stream,
            [kind(user_id=uuid.uuid4()) for _ in range(count)],
            metadata=EventMetadata(actor_id=actor, actor_role="test" if actor else None),
        )


async def ledger(db, *types: str) -> list[RecordedEvent]:
    async with db.sessionmaker() as session:
        return await store.read_all(session, event_types=set(types) or None, limit=1_000_000)


async def get_page(client, account: Account, **params) -> dict:
    response = await client.get(EVENTS, headers=account.headers, params=params)
    assert response.status_code == 200, response.text
    return response.json()


async def views(db) -> list[RecordedEvent]:
    return await ledger(db, "AuditViewed")


# --------------------------------------------------------------------------- the ledger


async def test_newest_first_is_stable_while_events_are_appended(db, client, accounts) -> None:
    await append(db, 300)
    auditor = accounts["auditor"]
    first_page_read = asyncio.Event()
    appended: list[int] = []

    async def appender() -> None:
        await first_page_read.wait()
        for _ in range(40):
            appended.extend(e.position for e in await append(db, 5, stream="live"))
            await asyncio.sleep(0.002)

    async def pager() -> tuple[list[int], int]:
        seen: list[int] = []
        page = await get_page(client, auditor, size=23)
        first_page_read.set()
        appended_at_first_page = len(appended)
        seen += [item["position"] for item in page["items"]]
        while page["next_page"]:
            await asyncio.sleep(0.003)
            page = await get_page(client, auditor, size=23, cursor=page["next_page"])
            seen += [item["position"] for item in page["items"]]
        return seen, len(appended) - appended_at_first_page

    (seen, appended_while_paging), _ = await asyncio.gather(pager(), appender())
    assert appended_while_paging > 0, "the appender ran while the pages were read"
    head_at_first_page = seen[0]
    # Every event that existed at the first page, once each, newest first; nothing newer.
    assert seen == list(range(head_at_first_page, 0, -1))
    assert len(seen) >= 300


async def test_oldest_first_reaches_the_events_appended_meanwhile(db, client, accounts) -> None:
    await append(db, 200)
    auditor = accounts["auditor"]
    page = await get_page(client, auditor, order="oldest", size=40)
    seen = [item["position"] for item in page["items"]]
    assert seen[0] == 1
    late = []
    for _ in range(3):
        page = await get_page(client, auditor, order="oldest", size=40, cursor=page["next_page"])
        seen += [item["position"] for item in page["items"]]
        late += [e.position for e in await append(db, 30, stream="late")]
    while page["next_page"]:
        page = await get_page(client, auditor, order="oldest", size=40, cursor=page["next_page"])
        seen += [item["position"] for item in page["items"]]
    assert seen == list(range(1, seen[-1] + 1)), "no gap, no repeat"
    assert set(late) <= set(seen)
    # At the head, the current page's cursor is the one to poll for what comes next.
    assert page["current_page"]
    await append(db, 3, stream="later")
    page = await get_page(client, auditor, order="oldest", size=40, cursor=page["current_page"])
    polled = [i["stream_id"] for i in page["items"]]
    while page["next_page"]:
        page = await get_page(client, auditor, order="oldest", size=40, cursor=page["next_page"])
        polled += [i["stream_id"] for i in page["items"]]
    assert polled.count("later") == 3


async def test_previous_page_walks_back(db, client, accounts) -> None:
    await append(db, 100)
    auditor = accounts["auditor"]
    for order in ("newest", "oldest"):
        first = await get_page(client, auditor, order=order, size=10)
        assert first["previous_page"] is None
        second = await get_page(client, auditor, order=order, size=10, cursor=first["next_page"])
        back = await get_page(client, auditor, order=order, size=10, cursor=second["previous_page"])
        assert [i["position"] for i in back["items"]] == [i["position"] for i in first["items"]]
        if order == "oldest":
            assert back["previous_page"] is None
        else:
            # Newer than the first page: the reads recorded since, reachable backwards.
            newer = await get_page(
                client, auditor, order=order, size=10, cursor=back["previous_page"]
            )
            assert newer["items"]
            assert {i["event_type"] for i in newer["items"]} == {"AuditViewed"}
            assert newer["items"][-1]["position"] > first["items"][0]["position"]
        forward = await get_page(client, auditor, order=order, size=10, cursor=back["next_page"])
        assert forward["items"] == second["items"]


async def test_items_carry_the_whole_event(db, client, accounts) -> None:
    [event] = await append(db, 1, stream="one", actor="someone")
    [item] = (await get_page(client, accounts["auditor"], stream="one"))["items"]
    assert item == {
        "position": event.position,
        "event_id": str(event.event_id),
        "stream_id": "one",
        "stream_version": 1,
        "event_type": "UserVerified",
        "schema_version": 1,
        "recorded_at": item["recorded_at"],
        "payload": event.payload,
        "metadata": {"actor_id": "someone", "actor_role": "test"},
        "prev_hash": event.prev_hash.hex(),
        "hash": event.hash.hex(),
    }
    assert item["recorded_at"].startswith(event.recorded_at.isoformat()[:19])


async def test_filters_by_type_actor_stream_time_and_position(db, client, accounts) -> None:
    auditor = accounts["auditor"]
    a = await append(db, 4, stream="s-a", actor="actor-a")
    b = await append(db, 3, stream="s-b", actor="actor-b", kind=PasswordResetRequested)
    c = await append(db, 2, stream="s-a", actor="actor-b")

    def positions(page: dict) -> list[int]:
        return sorted(i["position"] for i in page["items"])

    def of(*batches: list[RecordedEvent]) -> list[int]:
        return sorted(e.position for batch in batches for e in batch)

    assert positions(await get_page(client, auditor, event_type="PasswordResetRequested")) == of(b)
    both = await get_page(
        client, auditor, event_type=["PasswordResetRequested", "UserVerified"], size=500
    )
    assert set(of(a, b, c)) <= set(positions(both))
    assert {i["event_type"] for i in both["items"]} == {"PasswordResetRequested", "UserVerified"}
    assert positions(await get_page(client, auditor, actor="actor-b")) == of(b, c)
    assert positions(await get_page(client, auditor, stream="s-a")) == of(a, c)
    assert positions(await get_page(client, auditor, stream="s-a", actor="actor-b")) == of(c)
    # Each batch has its own database time; `to` is exclusive.
    t_a, t_b, t_c = a[0].recorded_at, b[0].recorded_at, c[0].recorded_at
    assert t_a < t_b < t_c
    window = {"from": t_a.isoformat(), "to": t_c.isoformat()}
    assert positions(await get_page(client, auditor, **window)) == of(a, b)
    assert positions(
        await get_page(client, auditor, **{"from": t_b.isoformat()}, stream="s-b")
    ) == of(b)
    assert positions(
        await get_page(client, auditor, **{"from": t_c.isoformat()}, actor="actor-b")
    ) == of(c)
    naive = t_b.astimezone(UTC).replace(tzinfo=None).isoformat()
    assert positions(await get_page(client, auditor, **{"from": naive}, actor="actor-a")) == []
    assert positions(await get_page(client, auditor, **{"from": naive}, stream="s-b")) == of(b)
    span = {"from_position": b[0].position, "to_position": b[-1].position}
    assert positions(await get_page(client, auditor, **span)) == of(b)
    # The filters hold across pages too.
    page = await get_page(client, auditor, actor="actor-b", size=2, order="oldest")
    seen = positions(page)
    while page["next_page"]:
        page = await get_page(
            client, auditor, actor="actor-b", size=2, order="oldest", cursor=page["next_page"]
        )
        seen += positions(page)
    assert seen == of(b, c)


async def test_size_is_clamped(db, client, accounts) -> None:
    await append(db, 520)
    auditor = accounts["auditor"]
    assert len((await get_page(client, auditor, size=100_000))["items"]) == 500
    assert len((await get_page(client, auditor, size=0))["items"]) == 1
    assert len((await get_page(client, auditor, size=-7))["items"]) == 1
    assert len((await get_page(client, auditor))["items"]) == 50


async def test_bad_cursors_and_reversed_ranges_are_400_and_record_nothing(
    db, client, accounts
) -> None:
    await append(db, 30)
    auditor = accounts["auditor"]
    page = await get_page(client, auditor, size=5)
    token = page["next_page"]
    body, signature = token.split(".")
    recorded = len(await views(db))
    bad = [
        ({"cursor": "garbage"}, "malformed cursor"),
        ({"cursor": "a.b.c"}, "malformed cursor"),
        ({"cursor": "%%%.%%%"}, "malformed cursor"),
        ({"cursor": f"{body}.{signature[:-4]}AAAA"}, "signature"),
        ({"cursor": f"{body[:-3]}xyz.{signature}"}, None),
        ({"cursor": token, "order": "oldest"}, "other filters or another order"),
        ({"cursor": token, "actor": "someone"}, "other filters or another order"),
        ({"from": "2026-01-02T00:00:00Z", "to": "2026-01-01T00:00:00Z"}, "reversed"),
        ({"from_position": 9, "to_position": 3}, "reversed"),
        ({"actor": "a\x00b"}, "NUL"),
    ]
    for params, detail in bad:
        response = await client.get(EVENTS, headers=auditor.headers, params=params)
        assert response.status_code == 400, (params, response.text)
        if detail:
            assert detail in response.json()["detail"], (params, response.text)
    # A cursor signed with another server's key is a forgery here.
    from ragledger.services.audit.cursor import EventCursor, cursor_key, encode_cursor

    forged = encode_cursor(EventCursor(3, "newest", "next", "0" * 16), cursor_key("not ours"))
    response = await client.get(EVENTS, headers=auditor.headers, params={"cursor": forged})
    assert response.status_code == 400
    assert "signature" in response.json()["detail"]
    assert len(await views(db)) == recorded, "failed reads record nothing"


async def test_injection_looking_values_are_plain_values(db, client, accounts) -> None:
    await append(db, 5, stream="kept")
    auditor = accounts["auditor"]
    before = len(await ledger(db))
    for params in [
        {"actor": "' OR '1'='1"},
        {"stream": "x'; DROP TABLE events; --"},
        {"event_type": ["UserVerified' OR 'a'='a", "); DELETE FROM audit_answers; --"]},
        {"actor": "actor_id' OR metadata->>'actor_id' IS NOT NULL OR '"},
        {"stream": "%"},
        {"stream": "kept' UNION SELECT * FROM users --"},
    ]:
        page = await get_page(client, auditor, **params)
        assert page["items"] == [], params
    assert len((await get_page(client, auditor, stream="kept"))["items"]) == 5
    # Only the reads themselves were added.
    assert len(await ledger(db)) == before + 7
    response = await client.get(EVENTS, headers=auditor.headers, params={"document": "1 OR 1=1"})
    assert response.status_code == 422


async def test_employees_are_refused_and_the_refusal_recorded(db, client, accounts) -> None:
    employee = accounts["employee"]
    for path in (
        EVENTS,
        ANSWERS,
        f"{ANSWERS}/{uuid.uuid4()}",
        f"/api/v1/audit/documents/{uuid.uuid4()}/history",
    ):
        response = await client.get(path, headers=employee.headers)
        assert response.status_code == 403, path
        assert (await client.get(path)).status_code == 401
    # Refusals are recorded once per source (here the employee) and reason per window,
    # the repeats counted into one later event (issue 14, item 9): the first is at once.
    (denied,) = [e for e in await ledger(db, "AccessDenied") if e.payload["reason"] == "role"]
    assert denied.payload["path"] == EVENTS
    assert denied.payload["user_id"] == str(employee.id)
    assert denied.payload["count"] == 1
    assert await views(db) == []


async def test_every_read_is_recorded_as_audit_viewed(db, client, accounts) -> None:
    await append(db, 12, stream="watched", actor="who")
    for role in ("auditor", "admin"):
        account = accounts[role]
        page = await get_page(
            client, account, stream="watched", actor="who", size=5, order="oldest"
        )
        await get_page(
            client,
            account,
            stream="watched",
            actor="who",
            size=5,
            order="oldest",
            cursor=page["next_page"],
        )
        first, second = (await views(db))[-2:]
        assert first.stream_id == second.stream_id == f"audit-{account.id}"
        assert first.metadata["actor_id"] == str(account.id)
        assert first.metadata["actor_role"] == role
        assert first.payload == {
            "auditor_id": str(account.id),
            "view": "events",
            "filters": {
                "actor": ["who"],
                "stream": ["watched"],
                "order": ["oldest"],
                "size": ["5"],
            },
            "item_count": 5,
            "target_id": None,
        }
        assert second.payload["filters"]["cursor"] == ["next", str(page["items"][-1]["position"])]


# --------------------------------------------------------------------------- answers


async def ask(client, account: Account, question: str) -> str:
    """Ask through the real flow; returns the question id once the stream has ended."""
    response = await client.post(
        "/api/v1/questions", headers=account.headers, json={"question": question}
    )
    assert response.status_code == 200, response.text
    # Keep-alive comments may come first while the model loads.
    for block in response.text.split("\n\n"):
        if block.startswith("event: question\n"):
            return json.loads(block.split("data: ", 1)[1])["question_id"]
    raise AssertionError(response.text)


async def upload(client, admin: Account, content: bytes, name: str, groups=(), path=None) -> str:
    response = await client.post(
        path or "/api/v1/documents",
        headers=admin.headers,
        files={"file": (name, content, "text/markdown")},
        data={"access_groups": list(groups)} if groups else {},
    )
    assert response.status_code == 202, response.text
    return response.json()["document_id"]


async def answers_scenario(db, settings, client, accounts, fake_openai) -> dict:
    """Four questions: cited, uncited, no readable context, and a failed model call."""
    sales = await make_account(db, "sami@example.com", "employee", ("sales",))
    await login(client, sales)
    hr, admin = accounts["employee"], accounts["admin"]
    leave = await upload(client, admin, LEAVE, "leave.md", groups=["hr"])
    budget = await upload(client, admin, BUDGET, "budget.md", groups=["finance"])
    await drain(db, settings)
    fake_openai.chat.answer = "Employees get thirty days of annual leave [1]."
    cited = await ask(client, hr, "How many days of annual leave do employees get?")
    fake_openai.chat.answer = "Thirty days."
    uncited = await ask(client, hr, "How many days of annual leave?")
    nothing = await ask(client, sales, "What is the acquisition budget for Project Falcon?")
    fake_openai.chat.error_status = 500
    fake_openai.chat.error_times = 1
    failed = await ask(client, hr, "When do unused leave days expire?")
    feedback = await client.post(
        f"/api/v1/answers/{cited}/feedback", headers=hr.headers, json={"helpful": True}
    )
    assert feedback.status_code == 201
    await drain(db, settings)
    return {
        "cited": cited,
        "uncited": uncited,
        "nothing": nothing,
        "failed": failed,
        "leave": leave,
        "budget": budget,
        "sales": sales,
    }


async def test_answers_view_and_its_filters(db, settings, client, accounts, fake_openai) -> None:
    s = await answers_scenario(db, settings, client, accounts, fake_openai)
    auditor, hr = accounts["auditor"], accounts["employee"]

    async def ids(**params) -> list[str]:
        response = await client.get(ANSWERS, headers=auditor.headers, params=params)
        assert response.status_code == 200, response.text
        return [item["question_id"] for item in response.json()["items"]]

    newest_first = [s["failed"], s["nothing"], s["uncited"], s["cited"]]
    assert await ids() == newest_first
    assert await ids(status="answered") == [s["uncited"], s["cited"]]
    assert await ids(status=["failed", "no_context"]) == [s["failed"], s["nothing"]]
    assert await ids(without_citation="true") == [s["uncited"]]
    assert await ids(without_citation="false") == [s["cited"]]
    assert await ids(user=str(hr.id)) == [s["failed"], s["uncited"], s["cited"]]
    assert await ids(user=str(s["sales"].id)) == [s["nothing"]]
    assert await ids(document=s["leave"]) == [s["failed"], s["uncited"], s["cited"]]
    assert await ids(document=s["leave"], document_match="cited") == [s["cited"]]
    assert await ids(document=s["budget"]) == []

    page = (await client.get(ANSWERS, headers=auditor.headers)).json()
    assert page["total"] == 4
    last = (await views(db))[-1]
    assert last.payload["view"] == "answers"
    assert last.payload["item_count"] == 4
    assert last.payload["filters"] == {"page": ["1"], "size": ["50"]}
    by_id = {item["question_id"]: item for item in page["items"]}
    cited = by_id[s["cited"]]
    assert cited["status"] == "answered"
    assert cited["model"] == "openai/fake-chat"
    assert cited["citations"] == [1]
    assert cited["citation_count"] == 1
    assert cited["context_chunk_count"] >= 1
    assert cited["cited_document_ids"] == [s["leave"]]
    assert cited["context_document_ids"] == [s["leave"]]
    assert cited["ttft_ms"] is not None
    assert cited["llm_ms"] is not None
    assert cited["total_ms"] is not None
    assert len(cited["prompt_sha256"]) == 64
    assert cited["feedback_helpful"] is True
    assert cited["feedback_count"] == 1
    assert cited["question"] == "How many days of annual leave do employees get?"
    assert by_id[s["nothing"]]["status"] == "no_context"
    assert by_id[s["nothing"]]["context_chunk_count"] == 0
    assert by_id[s["failed"]]["status"] == "failed"
    assert by_id[s["failed"]]["failure_reason"].startswith("llm_error")
    assert by_id[s["uncited"]]["feedback_helpful"] is None

    asked = {item["question_id"]: item["asked_at"] for item in page["items"]}
    assert await ids(**{"from": asked[s["uncited"]]}) == [s["failed"], s["nothing"], s["uncited"]]
    assert await ids(**{"to": asked[s["uncited"]]}) == [s["cited"]]
    reversed_range = {"from": asked[s["failed"]], "to": asked[s["cited"]]}
    response = await client.get(ANSWERS, headers=auditor.headers, params=reversed_range)
    assert response.status_code == 400

    filtered = [v for v in await views(db) if "without_citation" in v.payload["filters"]]
    assert filtered[0].payload["filters"]["without_citation"] == ["true"]
    assert filtered[0].payload["item_count"] == 1


async def test_one_questions_whole_story_and_who_read_it(
    db, settings, client, accounts, fake_openai
) -> None:
    s = await answers_scenario(db, settings, client, accounts, fake_openai)
    auditor, admin = accounts["auditor"], accounts["admin"]
    url = f"{ANSWERS}/{s['cited']}"

    story = (await client.get(url, headers=auditor.headers)).json()
    assert story["status"] == "answered"
    assert story["answer"] == "Employees get thirty days of annual leave [1]."
    assert story["prompt_verified"] is True
    assert len(story["prompt_sha256"]) == 64
    assert story["citations"] == [1]
    assert any("thirty days" in block["text"] for block in story["context"])
    assert all(block["text_verified"] for block in story["context"])
    assert [e["event_type"] for e in story["events"]] == [
        "QuestionAsked",
        "ContextRetrieved",
        "AnswerGenerated",
        "AnswerFeedbackGiven",
    ]
    chain = story["events"]
    assert all(len(e["hash"]) == 64 and len(e["prev_hash"]) == 64 for e in chain)
    assert chain[2]["payload"]["prompt_sha256"] == story["prompt_sha256"]
    assert chain[0]["metadata"]["actor_id"] == str(accounts["employee"].id)
    assert {e["event_type"] for e in story["source_events"]} == {"DocumentChunked"}
    assert story["reads"] == []
    assert [e["payload"]["question"] for e in chain[:1]] == [story["question"]]

    # The asker reading their own answer is not an audit read.
    assert (
        await client.get(f"/api/v1/answers/{s['cited']}", headers=accounts["employee"].headers)
    ).status_code == 200
    later = (await client.get(url, headers=admin.headers)).json()
    [read] = later["reads"]
    assert read["auditor_id"] == str(auditor.id)
    assert read["actor_role"] == "auditor"
    assert read["view"] == "answer"
    recorded = (await views(db))[-1]
    assert recorded.payload["target_id"] == s["cited"]
    assert recorded.payload["auditor_id"] == str(admin.id)

    failed = (await client.get(f"{ANSWERS}/{s['failed']}", headers=auditor.headers)).json()
    assert failed["status"] == "failed"
    assert failed["events"][-1]["event_type"] == "AnswerFailed"

    before = len(await views(db))
    response = await client.get(f"{ANSWERS}/{uuid.uuid4()}", headers=auditor.headers)
    assert response.status_code == 404
    assert len(await views(db)) == before


async def test_audit_answers_rebuilds_to_the_same_rows(
    db, settings, client, accounts, fake_openai
) -> None:
    await answers_scenario(db, settings, client, accounts, fake_openai)

    async def snapshot() -> list:
        async with db.owner_engine.connect() as conn:
            rows = await conn.execute(text("SELECT * FROM audit_answers ORDER BY question_id"))
            return [tuple(row) for row in rows]

    live = await snapshot()
    assert len(live) == 4
    projection = AuditAnswersProjection()
    await reset_projection(db.engine, projection)
    assert await snapshot() == []
    assert await run_until_caught_up(db.engine, projection)
    assert await snapshot() == live


# --------------------------------------------------------------------------- a document


async def test_document_history_with_the_versions_answers_cited(
    db, settings, client, accounts, fake_openai
) -> None:
    hr, admin, auditor = accounts["employee"], accounts["admin"], accounts["auditor"]
    fake_openai.chat.answer = "Thirty days [1]."
    document = await upload(client, admin, LEAVE, "leave.md", groups=["hr"])
    await drain(db, settings)
    first = await ask(client, hr, "How many days of annual leave?")
    await upload(
        client,
        admin,
        LEAVE.replace(b"thirty", b"twenty-five"),
        "leave.md",
        path=f"/api/v1/documents/{document}/versions",
    )
    await drain(db, settings)
    fake_openai.chat.answer = "Twenty-five days."
    second = await ask(client, hr, "How many days of annual leave?")
    changed = await client.patch(
        f"/api/v1/documents/{document}",
        headers=admin.headers,
        json={"access_groups": ["hr", "sales"]},
    )
    assert changed.status_code == 200
    assert (
        await client.delete(f"/api/v1/documents/{document}", headers=admin.headers)
    ).status_code == 204
    await drain(db, settings)

    response = await client.get(
        f"/api/v1/audit/documents/{document}/history", headers=auditor.headers
    )
    assert response.status_code == 200, response.text
    history = response.json()
    assert [(v["version"], v["status"]) for v in history["versions"]] == [
        (1, "indexed"),
        (2, "indexed"),
    ]
    assert all(v["chunk_count"] and v["text_sha256"] for v in history["versions"])
    assert history["versions"][0]["access_groups"] == ["hr"]
    assert history["versions"][0]["uploaded_by"] == str(admin.id)
    [change] = history["access_changes"]
    assert (change["old_groups"], change["new_groups"]) == (["hr"], ["hr", "sales"])
    assert change["changed_by"] == str(admin.id)
    assert history["retraction"]["retracted_by"] == str(admin.id)
    types = [e["event_type"] for e in history["events"]]
    assert types[0] == "DocumentUploaded"
    assert types[-1] == "DocumentRetracted"
    assert {"DocumentChunked", "ChunksEmbedded", "DocumentIndexed"} <= set(types)
    assert [
        (a["question_id"], a["versions_in_context"], a["cited_versions"])
        for a in history["answers"]
    ] == [(second, [2], []), (first, [1], [1])]
    assert history["answer_count"] == 2
    assert history["answers_truncated"] is False
    head = (await ledger(db))[-1].position
    assert history["answers_projected_to"] <= head

    # The ledger view's document filter: the document's stream and its questions' streams.
    page = await get_page(client, auditor, document=document, size=500, order="oldest")
    streams = {item["stream_id"] for item in page["items"]}
    assert streams == {f"document-{document}", f"question-{first}", f"question-{second}"}

    [recorded] = [v for v in await views(db) if v.payload["view"] == "document_history"]
    assert recorded.payload["target_id"] == document
    assert recorded.payload["item_count"] == len(history["events"]) + 2

    limited = (
        await client.get(
            f"/api/v1/audit/documents/{document}/history",
            headers=auditor.headers,
            params={"answers_limit": 1},
        )
    ).json()
    assert [a["question_id"] for a in limited["answers"]] == [second]
    assert limited["answers_truncated"] is True
    missing = await client.get(
        f"/api/v1/audit/documents/{uuid.uuid4()}/history", headers=auditor.headers
    )
    assert missing.status_code == 404


async def test_cursors_need_no_escaping_in_a_query_string(db, client, accounts) -> None:
    await append(db, 15)
    auditor = accounts["auditor"]
    page = await get_page(client, auditor, size=10)
    raw = await client.get(f"{EVENTS}?size=10&cursor={page['next_page']}", headers=auditor.headers)
    assert raw.status_code == 200
    assert len(raw.json()["items"]) == 10
