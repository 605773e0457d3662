"""A question as it enters the answer flow: cleaned and checked before anything is recorded."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from ragledger.core.ids import uuid7
from ragledger.core.settings import Settings
from ragledger.events.envelope import EventMetadata
from ragledger.models.documents import DocumentRow
from ragledger.services.documents import Reader, readable_documents
from ragledger.services.errors import InvalidInputError, PermissionDeniedError
from ragledger.services.grounded_answers import AnswerMode, resolve_mode


@dataclass(frozen=True, slots=True)
class QuestionRequest:
    """A validated question and who asks it."""

    question_id: uuid.UUID
    question: str
    top_k: int
    document_ids: tuple[uuid.UUID, ...]
    reader: Reader
    asker_id: uuid.UUID
    metadata: EventMetadata
    # extractive or generative; None: the configured default (see resolve_mode).
    mode: AnswerMode | None = None


async def validate_question(
    session: AsyncSession,
    *,
    question: str,
    top_k: int | None,
    document_ids: Sequence[uuid.UUID] | None,
    reader: Reader,
    settings: Settings,
) -> tuple[str, int, tuple[uuid.UUID, ...]]:
    """Clean and check a question before anything is recorded (422, 403)."""
    cleaned = " ".join(question.replace("\x00", " ").split())
    if not cleaned:
        raise InvalidInputError("the question is empty")
    if len(cleaned) > settings.question_max_chars:
        raise InvalidInputError(
            f"the question is longer than {settings.question_max_chars} characters"
        )
    k = settings.top_k_default if top_k is None else top_k
    if not 1 <= k <= settings.top_k_max:
        raise InvalidInputError(f"top_k must be between 1 and {settings.top_k_max}")
    ids = tuple(dict.fromkeys(document_ids or ()))
    if ids:
        readable = set(
            (
                await session.scalars(
                    readable_documents(reader)
                    .where(DocumentRow.document_id.in_(ids))
                    .with_only_columns(DocumentRow.document_id)
                )
            ).all()
        )
        if set(ids) - readable:
            raise PermissionDeniedError(
                "you may not read some of the documents named in document_ids",
                reason="document_not_readable",
                user_id=reader.user_id,
            )
    return cleaned, k, ids


async def question_request(
    session: AsyncSession,
    *,
    question: str,
    top_k: int | None,
    document_ids: Sequence[uuid.UUID] | None,
    mode: str | None,
    reader: Reader,
    asker_id: uuid.UUID,
    metadata: EventMetadata,
    settings: Settings,
) -> QuestionRequest:
    """Check a question and build its request, with a new question id (422, 403).

    The one way the API, the console and the CLI turn what an asker typed into a
    request for `answer_question`; nothing is recorded yet.
    """
    cleaned, k, ids = await validate_question(
        session,
        question=question,
        top_k=top_k,
        document_ids=document_ids,
        reader=reader,
        settings=settings,
    )
    return QuestionRequest(
        question_id=uuid7(),
        question=cleaned,
        top_k=k,
        document_ids=ids,
        reader=reader,
        asker_id=asker_id,
        metadata=metadata,
        mode=resolve_mode(mode, settings),
    )
