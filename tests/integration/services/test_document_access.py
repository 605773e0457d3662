"""`document_access`: old events keep their meaning, replays agree, nothing goes backwards."""

from __future__ import annotations

import uuid

from sqlalchemy import select

from ragledger.events import store
from ragledger.events.documents import (
    DocumentAccessChanged,
    DocumentUploaded,
    document_stream,
)
from ragledger.events.envelope import EventMetadata, NewEvent
from ragledger.events.registry import registry
from ragledger.models.documents import DocumentAccessRow, DocumentRow
from ragledger.projections.chunks import ChunksProjection
from ragledger.projections.documents import DocumentsProjection
from ragledger.projections.runner import reset_projection, run_until_caught_up
from ragledger.services import documents as documents_service

OPEN, HR, SWITCHED = (uuid.UUID(int=n) for n in (1, 2, 3))


def _v1_upload(document_id: uuid.UUID, groups: list[str]) -> NewEvent:
    """A DocumentUploaded as schema v1 wrote it: no `public`, no groups meant everyone."""
    return NewEvent(
        "DocumentUploaded",
        {
            "document_id": str(document_id),
            "version": 1,
            "title": "t",
            "filename": "t.md",
            "original_filename": "t.md",
            "blob_sha256": "0" * 64,
            "size": 1,
            "content_type": "text/markdown",
            "access_groups": groups,
            "uploaded_by": None,
        },
        schema_version=1,
    )


def _v1_access_changed(document_id: uuid.UUID, old: list[str], new: list[str]) -> NewEvent:
    return NewEvent(
        "DocumentAccessChanged",
        {"document_id": str(document_id), "old_groups": old, "new_groups": new, "changed_by": None},
        schema_version=1,
    )


async def _access(db) -> dict[uuid.UUID, tuple]:
    async with db.sessionmaker() as session:
        rows = await session.scalars(select(DocumentAccessRow))
        return {r.document_id: (r.access_groups, r.public, r.retracted, r.position) for r in rows}


async def test_schema_v1_events_keep_their_meaning_on_replay(db) -> None:
    async with db.sessionmaker() as session, session.begin():
        await store.append(session, document_stream(OPEN), [_v1_upload(OPEN, [])])
        await store.append(session, document_stream(HR), [_v1_upload(HR, ["hr"])])
        await store.append(
            session,
            document_stream(SWITCHED),
            [_v1_upload(SWITCHED, ["hr"]), _v1_access_changed(SWITCHED, ["hr"], [])],
        )
        recorded = await store.read_all(session, limit=10)
    uploaded = registry.decode(recorded[0])
    assert isinstance(uploaded, DocumentUploaded)
    assert uploaded.public is True  # v1: no groups meant every employee
    assert registry.decode(recorded[1]).public is False
    changed = registry.decode(recorded[3])
    assert isinstance(changed, DocumentAccessChanged)
    assert (changed.old_public, changed.new_public) == (False, True)

    chunks = ChunksProjection()
    assert await run_until_caught_up(db.engine, chunks)
    first = await _access(db)
    assert {k: v[:3] for k, v in first.items()} == {
        OPEN: ([], True, False),
        HR: (["hr"], False, False),
        SWITCHED: ([], True, False),
    }
    # A rebuild replays the same events into the same rows (the table is not emptied,
    # and a replayed event never moves a row back).
    await reset_projection(db.engine, chunks)
    assert await run_until_caught_up(db.engine, ChunksProjection())
    assert await _access(db) == first
    documents = DocumentsProjection()
    assert await run_until_caught_up(db.engine, documents)
    async with db.sessionmaker() as session:
        rows = await session.execute(select(DocumentRow.document_id, DocumentRow.public))
        public = dict(rows.all())
    assert public == {OPEN: True, HR: False, SWITCHED: True}


async def test_the_command_writes_access_in_its_transaction_and_replay_never_undoes_it(
    db,
) -> None:
    async with db.sessionmaker() as session, session.begin():
        accepted = await documents_service.upload(
            session,
            content=b"# Leave\n\nThirty days.\n",
            filename="leave.md",
            title=None,
            access_groups=["hr"],
            max_bytes=1_000_000,
            actor_id=None,
            metadata=EventMetadata(),
        )
    document_id = accepted.document_id
    after_upload = await _access(db)
    assert after_upload[document_id][:3] == (["hr"], False, False)

    async with db.sessionmaker() as session, session.begin():
        await documents_service.change_access(
            session,
            document_id=document_id,
            access_groups=["sales"],
            public=True,
            actor_id=None,
            metadata=EventMetadata(),
        )
        await documents_service.retract(
            session, document_id=document_id, actor_id=None, metadata=EventMetadata()
        )
    # Written by the commands, before any projection ran.
    final = await _access(db)
    assert final[document_id][:3] == (["sales"], True, True)
    # The projection then applies the upload and the change: older than the row, no-ops.
    assert await run_until_caught_up(db.engine, ChunksProjection())
    assert await _access(db) == final
