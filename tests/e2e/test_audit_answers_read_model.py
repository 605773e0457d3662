"""The answers view's document filter, through `audit_answer_documents`, keeps its meaning.

`GET /audit/answers?document=X` selects the answers whose context held X
(`document_match=context`) or whose answer cited one of X's blocks (`cited`): exactly
`context_document_ids` / `cited_document_ids` of audit_answers. Every page and every
total of the view, alone and combined with the other filters, is checked against that
definition evaluated over the projected rows.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable
from typing import Any

from sqlalchemy import text

from ragledger.projections.audit_answers import AuditAnswersProjection
from ragledger.projections.runner import run_until_caught_up
from tests.e2e.conftest import Account
from tests.integration.projections.audit_answers_scenario import append_scenario

ANSWERS = "/api/v1/audit/answers"
Predicate = Callable[[Any], bool]
MATCHES = (("context", "context_document_ids"), ("cited", "cited_document_ids"))


async def projected(db) -> list[Any]:
    """Every audit_answers row, newest question first."""
    async with db.owner_engine.connect() as conn:
        return list(
            await conn.execute(text("SELECT * FROM audit_answers ORDER BY asked_position DESC"))
        )


async def walk(client, auditor: Account, params: dict[str, Any], size: int) -> list[str]:
    """Every question id the view lists for `params`, page by page, totals checked."""
    seen: list[str] = []
    first = None
    number = 1
    while True:
        response = await client.get(
            ANSWERS, headers=auditor.headers, params={**params, "page": number, "size": size}
        )
        assert response.status_code == 200, response.text
        body = response.json()
        first = body["total"] if first is None else first
        assert body["total"] == first, ("the total moved between pages", params)
        assert body["pages"] == math.ceil(first / size), params
        if not body["items"]:
            break
        seen += [item["question_id"] for item in body["items"]]
        number += 1
    assert first == len(seen), params
    return seen


async def test_document_pages_and_totals_match_the_array_definition(db, client, accounts) -> None:
    auditor = accounts["auditor"]
    scenario = await append_scenario(db.sessionmaker, seed=11, questions=70)
    assert await run_until_caught_up(db.engine, AuditAnswersProjection(), batch_size=13)
    rows = await projected(db)
    times = sorted(row.asked_at for row in rows)
    start, end = times[10], times[50]
    asker = scenario.askers[0]

    cases: list[tuple[dict[str, Any], Predicate]] = []
    for doc in [*scenario.documents, uuid.uuid4()]:
        d = str(doc)
        in_context: Predicate = lambda r, doc=doc: doc in r.context_document_ids  # noqa: E731
        cited: Predicate = lambda r, doc=doc: doc in r.cited_document_ids  # noqa: E731
        cases += [
            ({"document": d}, in_context),
            ({"document": d, "document_match": "context"}, in_context),
            ({"document": d, "document_match": "cited"}, cited),
            (
                {"document": d, "user": str(asker)},
                lambda r, p=in_context: p(r) and r.asked_by == asker,
            ),
            (
                {"document": d, "document_match": "cited", "status": ["answered", "failed"]},
                lambda r, p=cited: p(r) and r.status in ("answered", "failed"),
            ),
            (
                {"document": d, "without_citation": "true"},
                lambda r, p=in_context: p(r) and r.status == "answered" and r.citation_count == 0,
            ),
            (
                {"document": d, "without_citation": "false"},
                lambda r, p=in_context: p(r) and r.citation_count > 0,
            ),
            (
                {"document": d, "from": start.isoformat(), "to": end.isoformat()},
                lambda r, p=in_context: p(r) and start <= r.asked_at < end,
            ),
            (
                {"document": d, "document_match": "cited", "from": start.isoformat()},
                lambda r, p=cited: p(r) and start <= r.asked_at,
            ),
        ]
    nonempty = 0
    for params, predicate in cases:
        expected = [str(r.question_id) for r in rows if predicate(r)]
        nonempty += bool(expected)
        for size in (1, 4, 50):
            assert await walk(client, auditor, params, size) == expected, (params, size)
    assert nonempty >= 30, "the cases select answers, not only empty pages"


async def test_document_filter_follows_the_projection_as_answers_change(
    db, client, accounts
) -> None:
    auditor = accounts["auditor"]
    scenario = await append_scenario(db.sessionmaker, seed=12, questions=40)
    projection = AuditAnswersProjection()
    # Caught up in small steps, the view checked against the definition at each.
    for _ in range(4):
        async with db.engine.connect() as conn:
            head = int(await conn.scalar(text("SELECT max(position) FROM events")) or 0)
        assert await run_until_caught_up(db.engine, projection, batch_size=7)
        rows = await projected(db)
        for doc in scenario.documents:
            for match, column in (
                ("context", "context_document_ids"),
                ("cited", "cited_document_ids"),
            ):
                expected = [str(r.question_id) for r in rows if doc in getattr(r, column)]
                params = {"document": str(doc), "document_match": match}
                assert await walk(client, auditor, params, 6) == expected
        await append_scenario(
            db.sessionmaker, seed=100 + head, questions=5, documents=scenario.documents
        )
