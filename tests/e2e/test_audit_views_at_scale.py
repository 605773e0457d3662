"""The audit views' fast paths give exactly the answers of their plain definitions.

The document filter reads the `audit_document_events` projection plus the ledger after
its checkpoint; time filters become position ranges; answers are paged by position
with the total counted apart. Each is checked here against the definition it replaces,
at every position the projection can stand at, across pages and at the boundaries.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from ragledger.core.ids import uuid7
from ragledger.events import store
from ragledger.events.access import UserVerified
from ragledger.events.documents import document_stream
from ragledger.events.envelope import RecordedEvent
from ragledger.events.questions import (
    AnswerFeedbackGiven,
    question_stream,
)
from ragledger.projections.audit_answers import AuditAnswersProjection
from ragledger.projections.audit_document_events import AuditDocumentEventsProjection
from ragledger.projections.runner import process_batch, reset_projection, run_until_caught_up
from tests.e2e.conftest import Account
from tests.integration.projections.audit_answers_scenario import META, answered, asked, context

EVENTS = "/api/v1/audit/events"
ANSWERS = "/api/v1/audit/answers"


async def append(db, stream: str, events: list) -> list[RecordedEvent]:
    async with db.sessionmaker() as session, session.begin():
        return await store.append(session, stream, events, metadata=META)


async def reference(db, document_id: uuid.UUID) -> list[int]:
    """The document filter's definition, straight from the ledger (oldest first)."""
    async with db.owner_engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT position FROM events WHERE stream_id IN ("
                " SELECT CAST(:own AS text) UNION"
                " SELECT c.stream_id FROM events AS c WHERE c.event_type = 'ContextRetrieved'"
                " AND c.payload->'chunks' @> CAST(:needle AS jsonb))"
                " ORDER BY position"
            ),
            {
                "own": document_stream(document_id),
                "needle": f'[{{"document_id": "{document_id}"}}]',
            },
        )
        return [row[0] for row in rows]


async def walk(client, account: Account, path: str = EVENTS, **params) -> list[int]:
    """Every position a filtered ledger view yields, following next_page to the end."""
    seen: list[int] = []
    page = None
    while page is None or page["next_page"]:
        assert len(seen) < 1000, ("the pages do not end", params, seen[:40])
        extra = {"cursor": page["next_page"]} if page else {}
        response = await client.get(path, headers=account.headers, params={**params, **extra})
        assert response.status_code == 200, response.text
        page = response.json()
        seen += [item["position"] for item in page["items"]]
    return seen


async def document_positions(client, account: Account, document_id: uuid.UUID) -> list[int]:
    """The document's events through the view, both orders, checked to agree."""
    oldest = await walk(client, account, document=str(document_id), order="oldest", size=2)
    newest = await walk(client, account, document=str(document_id), order="newest", size=3)
    assert newest == oldest[::-1]
    return oldest


async def test_document_filter_matches_its_definition_wherever_the_projection_stands(
    db, client, accounts
) -> None:
    auditor = accounts["auditor"]
    doc, other = uuid.uuid4(), uuid.uuid4()
    asker = uuid.uuid4()
    q = [uuid7() for _ in range(5)]
    await append(db, document_stream(doc), [UserVerified(user_id=asker)] * 2)
    # q0: context with the document; q1: only another document; q2: both.
    await append(db, question_stream(q[0]), [asked(q[0], asker), context(q[0], doc, other)])
    await append(db, question_stream(q[1]), [asked(q[1], asker), context(q[1], other)])
    await append(db, question_stream(q[2]), [asked(q[2], asker), context(q[2], other, doc)])
    await append(db, "noise", [UserVerified(user_id=asker)] * 3)
    # q3 asks now; its context (with the document) comes later.
    await append(db, question_stream(q[3]), [asked(q[3], asker)])
    await append(db, question_stream(q[0]), [answered(q[0], (1,))])
    await append(db, question_stream(q[3]), [context(q[3], doc)])
    await append(db, question_stream(q[0]), [AnswerFeedbackGiven(q[0], True, None, asker)])
    await append(db, question_stream(q[4]), [asked(q[4], asker), context(q[4], doc, doc)])
    await append(db, document_stream(doc), [UserVerified(user_id=asker)])
    await append(db, question_stream(q[3]), [answered(q[3])])

    expected = await reference(db, doc)
    assert len(expected) == 14
    projection = AuditDocumentEventsProjection()
    await reset_projection(db.engine, projection)
    # Before the projection's first batch, at each of its checkpoints, and caught up
    # (the reads the view records land in audit streams and never match).
    # Every page read appends an AuditViewed, so the walk stops at the scenario's head.
    head = expected[-1]
    for _ in range(head // 3 + 2):
        assert await document_positions(client, auditor, doc) == expected
        assert await document_positions(client, auditor, other) == await reference(db, other)
        async with AsyncSession(db.engine) as session, session.begin():
            await process_batch(session, projection, batch_size=3)
    assert await run_until_caught_up(db.engine, projection)
    assert await document_positions(client, auditor, doc) == expected
    # Filters and the document together, across pages.
    types = await walk(
        client,
        auditor,
        document=str(doc),
        event_type="QuestionAsked",
        order="oldest",
        size=1,
    )
    assert len(types) == 4
    # Events appended after the projection's position are found without it.
    late = await append(db, question_stream(q[2]), [answered(q[2], (2,))])
    assert (await document_positions(client, auditor, doc))[-1] == late[0].position
    q5 = uuid7()
    newer = await append(db, question_stream(q5), [asked(q5, asker), context(q5, doc)])
    assert (await document_positions(client, auditor, doc))[-2:] == [e.position for e in newer]
    assert await document_positions(client, auditor, doc) == await reference(db, doc)


async def test_document_projection_rebuilds_to_the_same_rows(db) -> None:
    doc = uuid.uuid4()
    asker = uuid.uuid4()
    for _ in range(4):
        question = uuid7()
        await append(db, question_stream(question), [asked(question, asker)])
        await append(db, question_stream(question), [context(question, doc), answered(question)])

    async def snapshot() -> tuple[list, list]:
        async with db.owner_engine.connect() as conn:
            streams = await conn.execute(
                text("SELECT * FROM audit_document_streams ORDER BY stream_id, document_id")
            )
            events = await conn.execute(
                text("SELECT * FROM audit_document_events ORDER BY document_id, position")
            )
            return [tuple(r) for r in streams], [tuple(r) for r in events]

    projection = AuditDocumentEventsProjection()
    assert await run_until_caught_up(db.engine, projection, batch_size=2)
    live = await snapshot()
    assert len(live[0]) == 4
    assert len(live[1]) == 12
    await reset_projection(db.engine, projection)
    assert await snapshot() == ([], [])
    assert await run_until_caught_up(db.engine, projection, batch_size=500)
    assert await snapshot() == live


async def test_time_filters_are_the_position_ranges_they_cover(db, client, accounts) -> None:
    auditor = accounts["auditor"]
    batches = [
        await append(db, f"s-{n}", [UserVerified(user_id=uuid.uuid4())] * 3) for n in range(4)
    ]
    a, b, c, d = batches
    t_a, t_b, t_c, t_d = (batch[0].recorded_at for batch in batches)
    assert t_a < t_b < t_c < t_d, "each batch has its own database time"
    tick = timedelta(microseconds=1)

    async def positions(**params) -> list[int]:
        return sorted(await walk(client, auditor, order="oldest", size=2, **params))

    def of(*chosen: list[RecordedEvent]) -> list[int]:
        return sorted(e.position for batch in chosen for e in batch)

    # `from` inclusive, `to` exclusive, to the microsecond.
    assert await positions(**{"from": t_b.isoformat(), "to": t_d.isoformat()}) == of(b, c)
    assert await positions(**{"from": (t_b + tick).isoformat(), "to": t_d.isoformat()}) == of(c)
    assert await positions(
        **{"from": (t_b - tick).isoformat(), "to": (t_d + tick).isoformat()}
    ) == of(b, c, d)
    # Before the first event and after the last one.
    first = (await positions(**{"to": (t_a + tick).isoformat()}))[-3:]
    assert first == of(a)
    # (The reads above are recorded after d: only d's stream shows nothing is left.)
    assert await positions(**{"from": (t_d + tick).isoformat()}, stream="s-3") == []
    # A window still open at the end keeps the events appended since.
    window = {"from": t_c.isoformat(), "to": (t_d + timedelta(hours=1)).isoformat()}
    e = await append(db, "s-late", [UserVerified(user_id=uuid.uuid4())])
    assert await positions(**window, stream="s-late") == of(e)
    # With positions too: the intersection; newest first: the same set reversed.
    narrowed = {"from": t_b.isoformat(), "to_position": c[1].position}
    assert await positions(**narrowed) == [*of(b), c[0].position, c[1].position]
    newest = await walk(client, auditor, order="newest", size=2, **narrowed)
    assert newest == sorted(newest, reverse=True) == ([*of(b), c[0].position, c[1].position])[::-1]
    disjoint = {"from": t_c.isoformat(), "to_position": b[-1].position}
    assert await positions(**disjoint) == []


async def make_answers(db, count: int) -> tuple[list[str], uuid.UUID]:
    """`count` answered questions (every third with the document), newest first."""
    doc = uuid.uuid4()
    asker = uuid.uuid4()
    ids: list[str] = []
    for n in range(count):
        question = uuid7()
        documents = (doc,) if n % 3 == 0 else (uuid.uuid4(),)
        await append(
            db,
            question_stream(question),
            [asked(question, asker), context(question, *documents), answered(question, (1,))],
        )
        ids.append(str(question))
    assert await run_until_caught_up(db.engine, AuditAnswersProjection())
    return ids[::-1], doc


async def test_answers_pages_deep_and_totals(db, client, accounts) -> None:
    auditor = accounts["auditor"]
    newest_first, doc = await make_answers(db, 23)

    async def page(**params) -> dict:
        response = await client.get(ANSWERS, headers=auditor.headers, params=params)
        assert response.status_code == 200, response.text
        return response.json()

    seen: list[str] = []
    for number in range(1, 6):
        body = await page(page=number, size=5)
        assert (body["total"], body["pages"], body["page"], body["size"]) == (23, 5, number, 5)
        seen += [item["question_id"] for item in body["items"]]
    assert seen == newest_first
    beyond = await page(page=9, size=5)
    assert beyond["items"] == []
    assert beyond["total"] == 23
    # The document filter: its page and total from one scan.
    with_doc = newest_first[::-1][::3][::-1]
    body = await page(document=str(doc), page=2, size=3)
    assert [i["question_id"] for i in body["items"]] == with_doc[3:6]
    assert body["total"] == len(with_doc) == 8
    assert (await page(document=str(doc), page=4, size=3))["total"] == 8
    assert (await page(document=str(uuid.uuid4())))["total"] == 0
    # Time filters: asked_at [from, to) as asked_position ranges.
    items = (await page(size=100))["items"]
    at = {i["question_id"]: i["asked_at"] for i in items}
    window = {"from": at[newest_first[10]], "to": at[newest_first[3]]}
    body = await page(**window, size=4, page=2)
    assert [i["question_id"] for i in body["items"]] == newest_first[8:11]
    assert body["total"] == 7
    later = {"from": at[newest_first[0]]}
    assert [i["question_id"] for i in (await page(**later))["items"]] == newest_first[:1]
    past_end = await page(**{"from": "2999-01-01T00:00:00Z"})
    assert past_end["items"] == []
    assert past_end["total"] == 0
