"""POST /search embeds the query and the candidates' windows with no pooled connection out.

The request's session reads the account and checks the query, then gives its
connection back; the candidates are read in a transaction of their own, and only then
does the model run (tests/pool_spy.py has the probe).
"""

from __future__ import annotations

import pytest

from ragledger.api.app_services import app_services
from ragledger.events import store
from ragledger.services.embedding import get_embedder
from tests.pool_spy import TEXTS, WINDOWS, PoolSpy, cold_windows, load_chunks

# A query no other test embeds, so the query-embedding cache does not have it yet.
QUERY = "Which rules of the annual leave policy apply to every team?"


async def test_search_embeds_without_a_connection(
    app, client, accounts, db, settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    embedder = get_embedder(settings)
    await load_chunks(db.sessionmaker, embedder)
    cold_windows(monkeypatch)
    await app_services(app).background.wait_idle()
    spy = PoolSpy(app_services(app).database.engine)
    spy.install(monkeypatch, embedder)
    # Every chunk relevant: every chunk's windows are embedded.
    app.state.settings = settings.model_copy(update={"min_similarity": -1.0})

    response = await client.post(
        "/api/v1/search",
        headers=accounts["employee"].headers,
        json={"query": QUERY, "top_k": 3},
    )

    assert response.status_code == 200, response.text
    hits = response.json()["results"]
    assert len(hits) == 3
    assert {h["text"] for h in hits} <= set(TEXTS)
    assert spy.windows_embedded() == WINDOWS
    question_calls = [c for c in spy.calls if c[0] == (QUERY,)]
    assert len(question_calls) == 1
    during = spy.checked_out_during_windows() + [(c[1], c[2]) for c in question_calls]
    assert during == [(0, 0)] * len(during)
    async with db.sessionmaker() as session:
        performed = await store.read_all(session, event_types=["SearchPerformed"])
    assert [e.payload["chunk_ids"] for e in performed] == [[h["chunk_id"] for h in hits]]
