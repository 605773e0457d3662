"""Access holds at read time: withdrawn text stays withdrawn, changes hold at once, fail closed.

Over real HTTP (uvicorn on loopback) with the runner stopped: the projections move only
when a test drains them, so a search right after a command shows whether the command's
own transaction, not a projection, decided what the reader sees.
"""

# ruff: noqa: F811  (the fixtures imported from test_questions are the tests' parameters)
from __future__ import annotations

import pytest

from ragledger.events import store
from tests.e2e.test_documents import drain
from tests.e2e.test_questions import (  # noqa: F401  (fixtures)
    ANSWER,
    BUDGET,
    LEAVE,
    ask,
    base_url,
    http,
    llm_settings,
    people,
)

MENU = b"# Canteen\n\nThe canteen serves lentil soup on Mondays.\n"


async def _upload(http, admin, content: bytes, name: str, groups=(), public=None) -> str:
    data: dict = {"access_groups": list(groups)} if groups else {}
    if public is not None:
        data["public"] = "true" if public else "false"
    response = await http.post(
        "/api/v1/documents",
        headers=admin.headers,
        files={"file": (name, content, "text/markdown")},
        data=data,
    )
    assert response.status_code == 202, response.text
    return response.json()["document_id"]


async def _search(http, account, query: str) -> set[str]:
    response = await http.post(
        "/api/v1/search", headers=account.headers, json={"query": query, "top_k": 5}
    )
    assert response.status_code == 200, response.text
    return {hit["document_id"] for hit in response.json()["results"]}


async def _listed(http, account) -> set[str]:
    response = await http.get("/api/v1/documents", headers=account.headers)
    assert response.status_code == 200
    return {d["document_id"] for d in response.json()["items"]}


async def _cited_documents(http, account, question: str) -> set[str]:
    events = dict(await ask(http, account, question))
    return {c["document_id"] for c in events["context"]["citations"]}


async def _audit_views(db) -> list:
    async with db.sessionmaker() as session:
        return await store.read_all(session, event_types={"AuditViewed"}, limit=1000)


async def test_access_changes_and_retractions_hold_before_any_projection_runs(
    db, llm_settings, http, people, fake_openai
) -> None:
    fake_openai.chat.answer = ANSWER
    admin, hr, sales = people["admin"], people["hr"], people["sales"]
    leave = await _upload(http, admin, LEAVE, "leave.md", groups=["hr"])
    menu = await _upload(http, admin, MENU, "menu.md", groups=["hr"])
    await drain(db, llm_settings)
    assert leave in await _search(http, hr, "annual leave days")
    assert menu in await _search(http, hr, "lentil soup canteen")

    # The runner is stopped from here on: nothing but the commands writes anything.
    moved = await http.patch(
        f"/api/v1/documents/{leave}", headers=admin.headers, json={"access_groups": ["sales"]}
    )
    assert moved.status_code == 200
    retracted = await http.delete(f"/api/v1/documents/{menu}", headers=admin.headers)
    assert retracted.status_code == 204

    assert leave not in await _search(http, hr, "annual leave days")
    assert menu not in await _search(http, hr, "lentil soup canteen")
    assert leave not in await _cited_documents(http, hr, "How many days of annual leave?")
    assert menu not in await _cited_documents(http, hr, "What does the canteen serve?")
    assert not {leave, menu} & await _listed(http, hr)
    # A grant holds at once too, and a retraction hides the document from admins as well.
    assert leave in await _search(http, sales, "annual leave days")
    assert menu not in await _search(http, admin, "lentil soup canteen")
    assert moved.json() == {"document_id": leave, "access_groups": ["sales"], "public": False}

    # When the projections catch up, they agree with what the commands wrote.
    await drain(db, llm_settings)
    assert leave not in await _search(http, hr, "annual leave days")
    assert leave in await _search(http, sales, "annual leave days")
    assert menu not in await _search(http, admin, "lentil soup canteen")


async def test_a_document_without_groups_is_for_admins_and_auditors_unless_public(
    db, llm_settings, http, people
) -> None:
    admin, hr, auditor = people["admin"], people["hr"], people["auditor"]
    closed = await _upload(http, admin, LEAVE, "leave.md")
    public = await _upload(http, admin, MENU, "menu.md", public=True)
    await drain(db, llm_settings)

    assert closed not in await _search(http, hr, "annual leave days")
    assert public in await _search(http, hr, "lentil soup canteen")
    assert await _listed(http, hr) == {public}
    assert (await http.get(f"/api/v1/documents/{closed}", headers=hr.headers)).status_code == 404
    assert await _listed(http, auditor) == {closed, public}
    assert closed in await _search(http, admin, "annual leave days")
    details = (await http.get(f"/api/v1/documents/{public}", headers=admin.headers)).json()
    assert (details["public"], details["access_groups"]) == (True, [])

    # Opening the closed one to everyone, then closing it again, hold at once.
    opened = await http.patch(
        f"/api/v1/documents/{closed}", headers=admin.headers, json={"public": True}
    )
    assert opened.json() == {"document_id": closed, "access_groups": [], "public": True}
    assert closed in await _search(http, hr, "annual leave days")
    await http.patch(f"/api/v1/documents/{closed}", headers=admin.headers, json={"public": False})
    assert closed not in await _search(http, hr, "annual leave days")
    nothing = await http.patch(f"/api/v1/documents/{closed}", headers=admin.headers, json={})
    assert nothing.status_code == 422

    uploaded = await _events(db, "DocumentUploaded")
    assert {e.payload["public"] for e in uploaded} == {False, True}
    assert all(e.schema_version == 2 for e in uploaded)


async def _events(db, event_type: str) -> list:
    async with db.sessionmaker() as session:
        return await store.read_all(session, event_types={event_type}, limit=1000)


@pytest.mark.parametrize("withdrawal", ["moved", "retracted"])
async def test_an_old_answer_withholds_text_the_reader_may_no_longer_read(
    db, llm_settings, http, people, fake_openai, withdrawal: str
) -> None:
    fake_openai.chat.answer = ANSWER
    admin, hr, auditor = people["admin"], people["hr"], people["auditor"]
    leave = await _upload(http, admin, LEAVE, "leave.md", groups=["hr"])
    await drain(db, llm_settings)
    events = await ask(http, hr, "How many days of annual leave do employees get?")
    answer_id = events[0][1]["question_id"]
    before = (await http.get(f"/api/v1/answers/{answer_id}", headers=hr.headers)).json()
    assert any("thirty days" in (c["text"] or "") for c in before["context"])
    assert {c.get("withheld") for c in before["context"]} == {None}
    assert before["answer"] == ANSWER

    if withdrawal == "moved":
        response = await http.patch(
            f"/api/v1/documents/{leave}", headers=admin.headers, json={"access_groups": ["sales"]}
        )
        assert response.status_code == 200
    else:
        response = await http.delete(f"/api/v1/documents/{leave}", headers=admin.headers)
        assert response.status_code == 204

    after = await http.get(f"/api/v1/answers/{answer_id}", headers=hr.headers)
    assert after.status_code == 200
    view = after.json()
    reason = "access_revoked" if withdrawal == "moved" else "retracted"
    assert "thirty days" not in after.text
    assert view["answer"] is None
    assert view["answer_withheld"] == reason
    for block, was in zip(view["context"], before["context"], strict=True):
        assert block["withheld"] == reason
        assert (block["text"], block["title"], block["heading_path"]) == (None, None, [])
        for kept in ("chunk_id", "document_id", "version", "text_sha256", "text_verified"):
            assert block[kept] == was[kept]
    assert view["events"] == before["events"]

    # Auditors and admins still see everything.
    for account in (auditor, admin):
        full = (await http.get(f"/api/v1/answers/{answer_id}", headers=account.headers)).json()
        assert full["answer"] == ANSWER
        assert full["answer_withheld"] is None
        assert any("thirty days" in (c["text"] or "") for c in full["context"])
        assert {c["withheld"] for c in full["context"]} == {None}


async def test_employees_see_no_cache_flags_timings_or_filter_counts(
    db, llm_settings, http, people, fake_openai
) -> None:
    fake_openai.chat.answer = ANSWER
    admin, hr, auditor = people["admin"], people["hr"], people["auditor"]
    await _upload(http, admin, LEAVE, "leave.md", groups=["hr"])
    await _upload(http, admin, BUDGET, "budget.md", groups=["finance"])
    await drain(db, llm_settings)
    question = "How many days of annual leave do employees get?"
    await ask(http, admin, question)  # someone else asked first: the embedding is cached
    events = dict(await ask(http, hr, question))
    done = events["done"]
    assert set(done["timings_ms"]) <= {"ttft_ms", "llm_ms"}
    assert "llm_ms" in done["timings_ms"]

    answer_id = done["answer_id"]
    mine = (await http.get(f"/api/v1/answers/{answer_id}", headers=hr.headers)).json()
    assert mine["removed_by_access_filter"] is None
    assert "query_embedding_cached" not in mine["retrieval_settings"]
    assert set(mine["timings_ms"]) <= {"ttft_ms", "llm_ms"}
    assert "top_k" in mine["retrieval_settings"]

    audited = (await http.get(f"/api/v1/answers/{answer_id}", headers=auditor.headers)).json()
    assert audited["removed_by_access_filter"] >= 1
    assert audited["retrieval_settings"]["query_embedding_cached"] == "true"
    # How the context was ranked is on record: the re-ranking's depth and weights too.
    assert audited["retrieval_settings"]["rerank_depth"] == "15"
    assert audited["retrieval_settings"]["rerank_window_weight"] == "0.5"
    assert {"embed_ms", "retrieval_ms", "total_ms"} <= set(audited["timings_ms"])
    admin_done = dict(await ask(http, admin, question))["done"]
    assert {"embed_ms", "retrieval_ms", "total_ms"} <= set(admin_done["timings_ms"])

    # The stream is data for one user: no cache may keep it (no-cache alone lets it).
    async with http.stream(
        "POST", "/api/v1/questions", headers=hr.headers, json={"question": question}
    ) as response:
        assert response.headers["cache-control"] == "no-store"
        await response.aread()


async def test_reading_someone_elses_answer_is_recorded_but_not_ones_own(
    db, llm_settings, http, people, fake_openai
) -> None:
    fake_openai.chat.answer = ANSWER
    admin, hr, auditor = people["admin"], people["hr"], people["auditor"]
    await _upload(http, admin, LEAVE, "leave.md", groups=["hr"])
    await drain(db, llm_settings)
    theirs = (await ask(http, hr, "How many days of annual leave?"))[0][1]["question_id"]
    own = (await ask(http, auditor, "How many days of annual leave?"))[0][1]["question_id"]

    assert (await http.get(f"/api/v1/answers/{theirs}", headers=hr.headers)).status_code == 200
    assert (await http.get(f"/api/v1/answers/{own}", headers=auditor.headers)).status_code == 200
    assert await _audit_views(db) == []

    assert (await http.get(f"/api/v1/answers/{theirs}", headers=auditor.headers)).status_code == 200
    assert (await http.get(f"/api/v1/answers/{theirs}", headers=admin.headers)).status_code == 200
    views = await _audit_views(db)
    assert [(v.payload["auditor_id"], v.payload["target_id"]) for v in views] == [
        (str(auditor.id), theirs),
        (str(admin.id), theirs),
    ]
    assert {v.payload["view"] for v in views} == {"answer"}
    # The audit story lists those reads.
    story = await http.get(f"/api/v1/audit/answers/{theirs}", headers=auditor.headers)
    assert [r["auditor_id"] for r in story.json()["reads"]][:2] == [str(auditor.id), str(admin.id)]
