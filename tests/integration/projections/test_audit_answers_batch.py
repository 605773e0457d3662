"""The set-wise audit_answers projection gives exactly the rows of the per-event one.

One event at a time (`AuditAnswersProjection.handle`, a batch of one) and set-wise
(`handle_batch`) run over the same ledger at several batch sizes, so that rows are
folded within a batch, across batches and from rows read back; both tables must come
out identical, and `audit_answer_documents` must be exactly the documents of each row's
`context_document_ids` and `cited_document_ids`. Reset empties both tables; a batch the
set-wise path cannot apply is replayed per event and fails at the event to blame;
migration 0009 backfills the document rows of answers projected before it.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from sqlalchemy import Connection, text
from sqlalchemy.ext.asyncio import AsyncSession

from alembic import command
from ragledger.core.ids import uuid7
from ragledger.core.migrations import alembic_config, upgrade_to_head
from ragledger.events import store
from ragledger.events.envelope import RecordedEvent
from ragledger.events.questions import question_stream
from ragledger.projections.audit_answers import AuditAnswersProjection
from ragledger.projections.runner import process_batch, reset_projection, run_until_caught_up
from ragledger.projections.subscriber import HandlerError, Subscriber
from tests.integration.projections.audit_answers_scenario import (
    META,
    answered,
    append_scenario,
    asked,
    context,
)

Snapshot = tuple[list[tuple], list[tuple]]


class PerEvent(AuditAnswersProjection):
    """The projection applied one event at a time: the definition to match."""

    async def handle_batch(self, session: AsyncSession, events: Sequence[RecordedEvent]) -> None:
        """The base class's per-event loop."""
        await Subscriber.handle_batch(self, session, events)


class SetWise(AuditAnswersProjection):
    """The projection as shipped, counting the events it had to replay one at a time."""

    def __init__(self) -> None:
        self.replayed = 0

    async def handle(self, session: AsyncSession, recorded: RecordedEvent) -> None:
        """Count, then apply the event."""
        self.replayed += 1
        await super().handle(session, recorded)


async def snapshot(engine) -> Snapshot:
    """Every row of audit_answers and audit_answer_documents, in a stable order."""
    async with engine.connect() as conn:
        answers = await conn.execute(text("SELECT * FROM audit_answers ORDER BY question_id"))
        documents = await conn.execute(
            text("SELECT * FROM audit_answer_documents ORDER BY document_id, asked_position")
        )
        return [tuple(r) for r in answers], [tuple(r) for r in documents]


async def documents_by_definition(engine) -> list[tuple]:
    """The document rows as the arrays of audit_answers define them."""
    async with engine.connect() as conn:
        rows = await conn.execute(
            text(
                """
                SELECT d.document_id, a.asked_position,
                       d.document_id = ANY (a.context_document_ids),
                       d.document_id = ANY (a.cited_document_ids)
                FROM audit_answers AS a
                CROSS JOIN LATERAL (
                    SELECT unnest(a.context_document_ids)
                    UNION SELECT unnest(a.cited_document_ids)
                ) AS d(document_id)
                ORDER BY 1, 2
                """
            )
        )
        return [tuple(r) for r in rows]


async def test_set_wise_batches_give_the_rows_of_the_per_event_fold(db) -> None:
    scenario = await append_scenario(db.sessionmaker, seed=7, questions=80)
    reference = PerEvent()
    assert await run_until_caught_up(db.engine, reference, batch_size=500)
    expected = await snapshot(db.engine)
    answers, documents = expected
    assert len(answers) == 80
    # The scenario reaches every case the rows can be in.
    statuses = {row.status for row in await _answers(db.engine)}
    assert statuses == {"pending", "answered", "no_context", "failed"}
    assert any(not in_context for *_, in_context, _cited in documents)
    assert any(cited for *_, cited in documents)
    assert documents == await documents_by_definition(db.engine)

    for batch_size in (1, 3, 17, 500):
        await reset_projection(db.engine, reference)
        assert await snapshot(db.engine) == ([], [])
        projection = SetWise()
        assert await run_until_caught_up(db.engine, projection, batch_size=batch_size)
        assert projection.replayed == 0, "every batch applied set-wise"
        assert await snapshot(db.engine) == expected, f"batch size {batch_size}"

    # Caught up in parts, with events appended between: the same rows again.
    more = await append_scenario(db.sessionmaker, seed=8, questions=30)
    assert await run_until_caught_up(db.engine, SetWise(), batch_size=11)
    live = await snapshot(db.engine)
    assert len(live[0]) == 110
    await reset_projection(db.engine, reference)
    assert await run_until_caught_up(db.engine, PerEvent(), batch_size=500)
    assert await snapshot(db.engine) == live
    assert live[1] == await documents_by_definition(db.engine)
    assert scenario.events + more.events > 400


async def _answers(engine) -> list:
    async with engine.connect() as conn:
        return list(await conn.execute(text("SELECT * FROM audit_answers")))


async def test_reset_empties_both_tables_and_rebuild_refills_them(db) -> None:
    await append_scenario(db.sessionmaker, seed=3, questions=12)
    projection = AuditAnswersProjection()
    assert await run_until_caught_up(db.engine, projection)
    live = await snapshot(db.engine)
    assert live[0]
    assert live[1]
    await reset_projection(db.engine, projection)
    assert await snapshot(db.engine) == ([], [])
    assert await run_until_caught_up(db.engine, projection)
    assert await snapshot(db.engine) == live


@pytest.mark.parametrize("already_projected", [False, True])
async def test_a_question_asked_twice_fails_at_the_second_ask(db, already_projected) -> None:
    question = uuid7()
    asker = uuid7()
    async with db.sessionmaker() as session, session.begin():
        await store.append(
            session,
            question_stream(question),
            [asked(question, asker), context(question, uuid7())],
            metadata=META,
        )
    projection = SetWise()
    if already_projected:
        assert await run_until_caught_up(db.engine, projection)
    before = await snapshot(db.engine)
    async with db.sessionmaker() as session, session.begin():
        again = await store.append(
            session,
            question_stream(question),
            [answered(question, (1,)), asked(question, asker)],
            metadata=META,
        )
    with pytest.raises(HandlerError) as failure:
        async with AsyncSession(db.engine) as session, session.begin():
            await process_batch(session, projection, batch_size=500)
    assert failure.value.position == again[1].position
    assert projection.replayed > 0
    assert await snapshot(db.engine) == before


async def test_migration_0009_backfills_the_document_rows(db) -> None:
    await append_scenario(db.sessionmaker, seed=5, questions=20)
    assert await run_until_caught_up(db.engine, AuditAnswersProjection())
    live = await snapshot(db.engine)

    def downgrade(connection: Connection) -> None:
        config = alembic_config()
        config.attributes["connection"] = connection
        command.downgrade(config, "0008_audit_document_events")

    async with db.owner_engine.begin() as conn:
        await conn.run_sync(downgrade)
    await upgrade_to_head(db.owner_engine)
    assert await snapshot(db.engine) == live
    # The app role can still maintain the recreated table.
    await append_scenario(db.sessionmaker, seed=6, questions=5)
    assert await run_until_caught_up(db.engine, AuditAnswersProjection())
    assert (await snapshot(db.engine))[1] == await documents_by_definition(db.engine)
