"""No pooled connection is checked out while a question's candidate windows are embedded.

Re-ranking embeds each candidate's sentence windows (seconds for a cold question on a
loaded machine); the question path reads its candidates in a transaction, gives the
connection back, and only then runs the model (tests/pool_spy.py has the probe).
"""

from __future__ import annotations

import uuid

import onnxruntime
import pytest
from transformers import BertModel

from ragledger.events import store
from ragledger.events.envelope import EventMetadata
from ragledger.services import answering
from ragledger.services.answering import StreamEvent, retrieval_params
from ragledger.services.documents import Reader
from ragledger.services.embedding import Embedder, get_embedder
from ragledger.services.retrieval import retrieve
from tests.off_loop import CallSpy, spy_on
from tests.pool_spy import QUESTION, WINDOWS, PoolSpy, cold_windows, load_chunks


@pytest.fixture
async def embedder(db, settings, monkeypatch: pytest.MonkeyPatch) -> Embedder:
    """The real model, four public chunks it embedded, and a cold window cache."""
    model = get_embedder(settings)
    await load_chunks(db.sessionmaker, model)
    cold_windows(monkeypatch)
    return model


async def test_a_question_embeds_its_windows_without_a_connection(
    db, settings, embedder: Embedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every chunk is relevant, so every chunk's windows are embedded (depth 15 > 4).
    tuned = settings.model_copy(update={"min_similarity": -1.0})
    spy = PoolSpy(db.engine)
    spy.install(monkeypatch, embedder)
    # The torch backend's forward passes, or the ONNX backend's session runs.
    forward = spy_on(monkeypatch, BertModel, "forward")
    session_run = spy_on(monkeypatch, onnxruntime.InferenceSession, "run")
    request = answering.QuestionRequest(
        question_id=uuid.uuid4(),
        question=QUESTION,
        top_k=3,
        document_ids=(),
        reader=Reader(user_id=uuid.uuid4(), role="employee", groups=("hr",)),
        asker_id=uuid.uuid4(),
        metadata=EventMetadata(actor_id="test", actor_role="employee"),
        mode="extractive",
    )
    events: list[StreamEvent] = []

    async def emit(event: StreamEvent) -> None:
        events.append(event)

    await answering.answer_question(
        request, sessionmaker=db.sessionmaker, embedder=embedder, settings=tuned, emit=emit
    )

    assert events[-1].name == "done", events[-1]
    assert spy.windows_embedded() == WINDOWS
    # Neither when the model started on the windows nor when it finished was any of the
    # engine's connections out of the pool.
    during = spy.checked_out_during_windows()
    assert during == [(0, 0)] * len(during)
    # And the model ran on the embedder's worker thread, never on the event loop's.
    passes = CallSpy(forward.calls + session_run.calls)
    assert passes.all_off_the_loop, passes.calls
    # The context is on the record as before: re-ranked, the asker's top 3.
    async with db.sessionmaker() as session:
        recorded = await store.read_stream(session, f"question-{request.question_id}")
    context = next(e for e in recorded if e.event_type == "ContextRetrieved")
    assert len(context.payload["chunks"]) == 3
    assert context.payload["settings"]["rerank_depth"] == str(settings.rerank_depth)


async def test_the_probe_sees_a_connection_held_across_the_embedding(
    db, settings, embedder: Embedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The probe's control: `retrieve` inside a caller's transaction (what the question
    # path did before) embeds the windows while that transaction's connection is out.
    params = retrieval_params(settings.model_copy(update={"min_similarity": -1.0}), 3)
    (vector,) = await embedder.embed([QUESTION])
    spy = PoolSpy(db.engine)
    spy.install(monkeypatch, embedder)
    async with db.sessionmaker() as session, session.begin():
        result = await retrieve(
            session,
            query=QUESTION,
            query_vector=vector,
            reader=Reader(user_id=None, role="admin", groups=()),
            params=params,
            embedder=embedder,
        )
    assert len(result.chunks) == 3
    assert spy.windows_embedded() == WINDOWS
    during = spy.checked_out_during_windows()
    assert during == [(1, 1)] * len(during)
