"""The audit views (auditor and admin): the ledger, answers, one question, one document.

Every successful read appends AuditViewed to the reader's `audit-<id>` stream in the
request's transaction, so the record commits with the response and a failed request
records nothing.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, cast

import structlog
from fastapi import APIRouter, Query, Request
from fastapi_pagination import resolve_params

from ragledger.api.app_services import app_services
from ragledger.api.deps import AuditorUser, SessionDep
from ragledger.api.errors import error_responses
from ragledger.api.provenance import ledger_ref, provenance_fields
from ragledger.api.request_context import event_metadata
from ragledger.events.envelope import RecordedEvent
from ragledger.schemas.audit import (
    AccessChangePublic,
    AuditAnswerPage,
    AuditAnswerPublic,
    AuditAnswerStory,
    AuditCursorParams,
    AuditEventPage,
    AuditEventPublic,
    AuditReadPublic,
    CitingAnswerPublic,
    DocumentHistoryPublic,
    DocumentVersionHistory,
    RetractionPublic,
)
from ragledger.schemas.ledger_audit import MAX_POSITION
from ragledger.schemas.pagination import PageParams
from ragledger.services.audit.answer_pages import page_answers
from ragledger.services.audit.cursor import Order
from ragledger.services.audit.event_pages import clamp_size, page_events
from ragledger.services.audit.filters import (
    AnswerFilters,
    AnswerStatus,
    DocumentMatch,
    EventFilters,
)
from ragledger.services.audit.recorded_views import record_answer_view, record_view
from ragledger.services.audit.stories import MAX_HISTORY_ANSWERS, document_history, question_story

log = structlog.get_logger(__name__)
router = APIRouter(prefix="/audit", tags=["audit"], responses=error_responses(401, 403))

BAD_REQUEST = error_responses(
    422, described={400: "Malformed or forged cursor, reversed range, bad filter"}
)

EventTypeQuery = Annotated[
    list[str] | None, Query(description="Repeat for several; unknown types match nothing.")
]
FromQuery = Annotated[
    datetime | None,
    Query(alias="from", description="ISO 8601, inclusive; no zone means UTC."),
]
ToQuery = Annotated[
    datetime | None,
    Query(alias="to", description="ISO 8601, exclusive; no zone means UTC."),
]


def event_public(event: RecordedEvent) -> AuditEventPublic:
    """A ledger event as the audit views show it."""
    return AuditEventPublic(
        position=event.position,
        event_id=event.event_id,
        stream_id=event.stream_id,
        stream_version=event.stream_version,
        event_type=event.event_type,
        schema_version=event.schema_version,
        recorded_at=event.recorded_at,
        payload=event.payload,
        metadata=event.metadata,
        prev_hash=event.prev_hash.hex(),
        hash=event.hash.hex(),
    )


@router.get("/events", response_model=AuditEventPage, responses=BAD_REQUEST)
async def list_events(
    request: Request,
    session: SessionDep,
    auditor: AuditorUser,
    order: Annotated[Order, Query(description="newest (default) or oldest first")] = "newest",
    event_type: EventTypeQuery = None,
    actor: Annotated[str | None, Query(description="metadata.actor_id, exactly")] = None,
    stream: Annotated[str | None, Query(description="stream_id, exactly")] = None,
    document: Annotated[
        uuid.UUID | None,
        Query(
            description=(
                "The document's own stream, and the streams of the questions whose "
                "retrieved context held one of its chunks"
            )
        ),
    ] = None,
    recorded_from: FromQuery = None,
    recorded_to: ToQuery = None,
    from_position: Annotated[int | None, Query(ge=0, le=MAX_POSITION)] = None,
    to_position: Annotated[int | None, Query(ge=0, le=MAX_POSITION)] = None,
) -> AuditEventPage:
    """The ledger, newest or oldest first, with signed keyset cursors (auditor, admin)."""
    # fastapi-pagination injects the page's params (cursor, size) for this route.
    params: AuditCursorParams = resolve_params()
    assert isinstance(params, AuditCursorParams)
    filters = EventFilters.build(
        event_types=event_type,
        actor=actor,
        stream=stream,
        document_id=document,
        recorded_from=recorded_from,
        recorded_to=recorded_to,
        from_position=from_position,
        to_position=to_position,
    )
    size = clamp_size(params.size)
    page = await page_events(
        session,
        filters=filters,
        order=order,
        size=size,
        cursor=params.cursor,
        key=app_services(request.app).cursor_key,
    )
    await record_view(
        session,
        auditor_id=auditor.id,
        view="events",
        filters={**filters.record(), **page.record(), "order": (order,), "size": (str(size),)},
        item_count=len(page.items),
        metadata=event_metadata(request, auditor),
    )
    log.info("audit_events_read", items=len(page.items), order=order, size=size)
    return AuditEventPage(
        items=[event_public(e) for e in page.items],
        total=None,
        current_page=page.current_page,
        current_page_backwards=None,
        next_page=page.next_page,
        previous_page=page.previous_page,
    )


@router.get("/answers", response_model=AuditAnswerPage, responses=BAD_REQUEST)
async def list_answers(
    request: Request,
    session: SessionDep,
    auditor: AuditorUser,
    user: Annotated[uuid.UUID | None, Query(description="Who asked")] = None,
    document: Annotated[uuid.UUID | None, Query(description="See document_match")] = None,
    document_match: Annotated[
        DocumentMatch,
        Query(
            description=(
                "context (default): the document was in the retrieved context; "
                "cited: the answer cited one of its blocks"
            )
        ),
    ] = "context",
    asked_from: FromQuery = None,
    asked_to: ToQuery = None,
    status: Annotated[list[AnswerStatus] | None, Query(description="Repeat for several")] = None,
    without_citation: Annotated[
        bool | None,
        Query(description="true: answered without any citation; false: with at least one"),
    ] = None,
    max_groundedness: Annotated[
        float | None,
        Query(
            ge=0.0,
            le=1.0,
            description="Checked answers whose groundedness (share of supported "
            "sentences, 0-1) is at most this",
        ),
    ] = None,
) -> AuditAnswerPage:
    """Every question with its outcome, newest first, filtered (auditor, admin)."""
    filters = AnswerFilters.build(
        asked_by=user,
        document_id=document,
        document_match=document_match,
        asked_from=asked_from,
        asked_to=asked_to,
        statuses=status,
        without_citation=without_citation,
        max_groundedness=max_groundedness,
    )
    # fastapi-pagination injects the page's params (page, size) for this route.
    params: PageParams = resolve_params()
    assert isinstance(params, PageParams)
    found = await page_answers(session, filters=filters, page=params.page, size=params.size)
    # create() is typed as returning the library's Page; it builds an instance of cls.
    page = cast(
        AuditAnswerPage,
        AuditAnswerPage.create(
            [AuditAnswerPublic.model_validate(row) for row in found.items],
            params,
            total=found.total,
        ),
    )
    await record_view(
        session,
        auditor_id=auditor.id,
        view="answers",
        filters={**filters.record(), "page": (str(params.page),), "size": (str(params.size),)},
        item_count=len(page.items),
        metadata=event_metadata(request, auditor),
    )
    log.info("audit_answers_read", items=len(page.items), page=params.page, total=found.total)
    return page


@router.get(
    "/answers/{question_id}", response_model=AuditAnswerStory, responses=error_responses(404, 422)
)
async def get_answer_story(
    request: Request, question_id: uuid.UUID, session: SessionDep, auditor: AuditorUser
) -> AuditAnswerStory:
    """One question's whole story from the ledger, and who read it since (auditor, admin)."""
    story = await question_story(session, question_id, auditor_id=auditor.id)
    response = AuditAnswerStory(
        **provenance_fields(story.provenance),
        events=[event_public(e) for e in story.question_events],
        source_events=[ledger_ref(e) for e in story.source_events],
        reads=[
            AuditReadPublic(
                position=e.position,
                recorded_at=e.recorded_at,
                auditor_id=e.payload["auditor_id"],
                actor_role=e.metadata.get("actor_role"),
                view=e.payload["view"],
                request_id=e.metadata.get("request_id"),
                hash=e.hash.hex(),
            )
            for e in story.reads
        ],
    )
    await record_answer_view(
        session,
        reader_id=auditor.id,
        answer_id=question_id,
        metadata=event_metadata(request, auditor),
    )
    return response


@router.get(
    "/documents/{document_id}/history",
    response_model=DocumentHistoryPublic,
    responses=error_responses(404, 422),
)
async def get_document_history(
    request: Request,
    document_id: uuid.UUID,
    session: SessionDep,
    auditor: AuditorUser,
    answers_limit: Annotated[
        int,
        Query(
            description=(
                f"Answers listed, newest first; values outside 1..{MAX_HISTORY_ANSWERS} are "
                "clamped. The rest: /audit/answers?document=ID"
            )
        ),
    ] = 200,
) -> DocumentHistoryPublic:
    """Every version, access change and retraction, and the answers that used it."""
    limit = max(1, min(answers_limit, MAX_HISTORY_ANSWERS))
    history = await document_history(session, document_id, answers_limit=limit)
    response = DocumentHistoryPublic(
        document_id=history.document_id,
        versions=[DocumentVersionHistory.model_validate(v) for v in history.versions],
        access_changes=[AccessChangePublic.model_validate(c) for c in history.access_changes],
        retraction=(
            RetractionPublic.model_validate(history.retraction) if history.retraction else None
        ),
        events=[ledger_ref(e) for e in history.events],
        answers=[CitingAnswerPublic.model_validate(a) for a in history.answers],
        answer_count=history.answer_count,
        answers_truncated=history.answer_count > len(history.answers),
        answers_projected_to=history.answers_projected_to,
    )
    await record_view(
        session,
        auditor_id=auditor.id,
        view="document_history",
        filters={"answers_limit": (str(limit),)},
        item_count=len(history.events) + len(history.answers),
        target_id=str(document_id),
        metadata=event_metadata(request, auditor),
    )
    return response
