"""Document commands: upload, new version, retract, change access; and the catalog queries.

Commands append to the document's stream with optimistic concurrency: the version
number is derived from the stream, and a concurrent upload of the same document gets a
409 instead of a duplicate version.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import ColumnElement, Select, and_, false, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from ragledger.events import store
from ragledger.events.blobs import put_blob
from ragledger.events.documents import (
    DocumentAccessChanged,
    DocumentRetracted,
    DocumentUploaded,
    document_stream,
)
from ragledger.events.envelope import EventMetadata
from ragledger.events.registry import registry
from ragledger.models.documents import DocumentAccessRow, DocumentRow, DocumentVersionRow
from ragledger.models.ledger import SubscriberCheckpoint
from ragledger.models.users import Role, User
from ragledger.services.document_access import record_access
from ragledger.services.errors import ConflictError, InvalidInputError, NotFoundError
from ragledger.services.extraction import ExtractionError, sniff_content_type
from ragledger.services.filenames import sanitize_filename
from ragledger.services.users import normalize_groups

MAX_TITLE_CHARS = 300


class PayloadTooLargeError(InvalidInputError):
    """The upload is over the size limit (HTTP 413)."""

    status_code = 413


class UnsupportedMediaTypeError(InvalidInputError):
    """The upload's content is not a type we ingest (HTTP 415)."""

    status_code = 415


@dataclass(frozen=True, slots=True)
class Reader:
    """Who is reading: their role decides whether groups restrict what they see."""

    user_id: uuid.UUID | None
    role: str
    groups: tuple[str, ...]

    @property
    def sees_everything(self) -> bool:
        """Admins manage every document and auditors audit them all."""
        return self.role in (Role.ADMIN.value, Role.AUDITOR.value)


def reader_of(user: User) -> Reader:
    """The reading rights of a user (the API, the console and the CLI all read them so)."""
    return Reader(user_id=user.id, role=user.role, groups=tuple(user.groups or ()))


@dataclass(frozen=True, slots=True)
class UploadAccepted:
    """What an upload answers: the document, its new version, its status."""

    document_id: uuid.UUID
    version: int
    status: str
    blob_sha256: str
    content_type: str


def _clean_title(title: str | None, filename: str) -> str:
    cleaned = " ".join((title or "").split())
    if "\x00" in cleaned:
        cleaned = cleaned.replace("\x00", "")
    if len(cleaned) > MAX_TITLE_CHARS:
        raise InvalidInputError(f"title must be at most {MAX_TITLE_CHARS} characters")
    if cleaned:
        return cleaned
    stem = filename.rsplit(".", 1)[0] if "." in filename else filename
    return stem or "Untitled document"


async def upload(
    session: AsyncSession,
    *,
    content: bytes,
    filename: str | None,
    title: str | None,
    access_groups: Sequence[str] | None,
    max_bytes: int,
    actor_id: uuid.UUID | None,
    metadata: EventMetadata,
    document_id: uuid.UUID | None = None,
    public: bool | None = None,
) -> UploadAccepted:
    """Store the bytes and append DocumentUploaded (a new document, or a new version).

    Size and type are checked first (413, 415); the type is sniffed from the content.
    A new document without groups is readable by admins and auditors only, unless
    `public`. For a new version, `access_groups` and `public` None keep the document's.
    The document's access row is written in the same transaction as the event.
    """
    if len(content) > max_bytes:
        raise PayloadTooLargeError(f"the file is larger than the limit of {max_bytes} bytes")
    if not content:
        raise InvalidInputError("the file is empty")
    try:
        content_type = sniff_content_type(content)
    except ExtractionError as exc:
        raise UnsupportedMediaTypeError(str(exc)) from None
    safe_name = sanitize_filename(filename)
    original = (filename or "").replace("\x00", "")[:1024]
    blob_sha256 = await put_blob(session, content)

    if document_id is None:
        document_id = uuid.uuid4()
        expected, version = store.NO_STREAM, 1
        groups = normalize_groups(access_groups or [])
        is_public = bool(public)
        clean_title = _clean_title(title, safe_name)
    else:
        history = await store.read_stream(session, document_stream(document_id))
        if not history:
            raise NotFoundError("document not found")
        state = _fold(history)
        if state.retracted:
            raise ConflictError("the document was retracted; upload a new document instead")
        expected, version = history[-1].stream_version, state.version + 1
        groups = (
            normalize_groups(access_groups) if access_groups is not None else state.access_groups
        )
        is_public = state.public if public is None else public
        clean_title = _clean_title(title, safe_name) if title else state.title
    [recorded] = await store.append(
        session,
        document_stream(document_id),
        [
            DocumentUploaded(
                document_id=document_id,
                version=version,
                title=clean_title,
                filename=safe_name,
                original_filename=original,
                blob_sha256=blob_sha256,
                size=len(content),
                content_type=content_type,
                access_groups=groups,
                uploaded_by=actor_id,
                public=is_public,
            )
        ],
        expected_version=expected,
        metadata=metadata,
    )
    await record_access(
        session,
        document_id=document_id,
        position=recorded.position,
        access_groups=groups,
        public=is_public,
        retracted=False,
    )
    return UploadAccepted(document_id, version, "pending", blob_sha256, content_type)


@dataclass(slots=True)
class _DocumentState:
    version: int = 0
    title: str = ""
    access_groups: tuple[str, ...] = ()
    public: bool = False
    retracted: bool = False


def _fold(history: Sequence[object]) -> _DocumentState:
    state = _DocumentState()
    for recorded in history:
        event = registry.decode(recorded)  # type: ignore[arg-type]
        match event:
            case DocumentUploaded():
                state.version = event.version
                state.title = event.title
                state.access_groups = event.access_groups
                state.public = event.public
            case DocumentAccessChanged():
                state.access_groups = event.new_groups
                state.public = event.new_public
            case DocumentRetracted():
                state.retracted = True
            case _:
                pass
    return state


async def _stream_state(
    session: AsyncSession, document_id: uuid.UUID
) -> tuple[_DocumentState, int]:
    history = await store.read_stream(session, document_stream(document_id))
    if not history:
        raise NotFoundError("document not found")
    return _fold(history), history[-1].stream_version


async def retract(
    session: AsyncSession,
    *,
    document_id: uuid.UUID,
    actor_id: uuid.UUID | None,
    metadata: EventMetadata,
) -> None:
    """Append DocumentRetracted and hide the document at once; retracting twice is a 409."""
    state, stream_version = await _stream_state(session, document_id)
    if state.retracted:
        raise ConflictError("the document is already retracted")
    [recorded] = await store.append(
        session,
        document_stream(document_id),
        [DocumentRetracted(document_id=document_id, retracted_by=actor_id)],
        expected_version=stream_version,
        metadata=metadata,
    )
    await record_access(
        session, document_id=document_id, position=recorded.position, retracted=True
    )


@dataclass(frozen=True, slots=True)
class AccessState:
    """Who may read a document after a change of access."""

    access_groups: tuple[str, ...]
    public: bool


async def change_access(
    session: AsyncSession,
    *,
    document_id: uuid.UUID,
    access_groups: Sequence[str] | None,
    actor_id: uuid.UUID | None,
    metadata: EventMetadata,
    public: bool | None = None,
) -> AccessState:
    """Append DocumentAccessChanged when the readers really change; None keeps a field.

    The document's access row is written in the same transaction as the event, so
    every search, question and read after this returns honours the change.
    """
    state, stream_version = await _stream_state(session, document_id)
    if state.retracted:
        raise ConflictError("the document is retracted")
    groups = normalize_groups(access_groups) if access_groups is not None else state.access_groups
    is_public = state.public if public is None else public
    if groups != state.access_groups or is_public != state.public:
        [recorded] = await store.append(
            session,
            document_stream(document_id),
            [
                DocumentAccessChanged(
                    document_id,
                    state.access_groups,
                    groups,
                    actor_id,
                    old_public=state.public,
                    new_public=is_public,
                )
            ],
            expected_version=stream_version,
            metadata=metadata,
        )
        await record_access(
            session,
            document_id=document_id,
            position=recorded.position,
            access_groups=groups,
            public=is_public,
        )
    return AccessState(groups, is_public)


def readable_documents(
    reader: Reader, *, include_retracted: bool = False
) -> Select[tuple[DocumentRow]]:
    """The catalog query restricted to what `reader` may read now.

    Access is read from `document_access` (written by the commands), not from the
    catalog's projected copy, so a change holds as soon as its command returned.
    Retracted documents are hidden, except from admins and auditors who ask for them.
    """
    access = DocumentAccessRow
    query = select(DocumentRow).join(
        access, access.document_id == DocumentRow.document_id, isouter=reader.sees_everything
    )
    if not (include_retracted and reader.sees_everything):
        query = query.where(
            DocumentRow.retracted.is_(False),
            or_(access.retracted.is_(None), access.retracted.is_(False)),
        )
    if not reader.sees_everything:
        groups = list(reader.groups)
        query = query.where(
            or_(access.public, access.access_groups.overlap(groups) if groups else false())
        )
    return query


async def get_document(
    session: AsyncSession, document_id: uuid.UUID, reader: Reader
) -> tuple[DocumentRow, list[DocumentVersionRow]]:
    """A readable document and its versions; 404 when absent or not readable."""
    document = await session.scalar(
        readable_documents(reader).where(DocumentRow.document_id == document_id)
    )
    if document is None:
        raise NotFoundError("document not found")
    versions = list(
        (
            await session.scalars(
                select(DocumentVersionRow)
                .where(DocumentVersionRow.document_id == document_id)
                .order_by(DocumentVersionRow.version)
            )
        ).all()
    )
    return document, versions


# The projection whose checkpoint says how far the chunks are searchable.
CHUNKS_PROJECTION = "chunks"


async def searchable_up_to(session: AsyncSession) -> int:
    """The ledger position up to which the `chunks` projection has applied events.

    The projection commits its rows and its checkpoint together, so every document
    whose DocumentIndexed is at or below this position has all its chunks searchable.
    """
    position = await session.scalar(
        select(SubscriberCheckpoint.position).where(SubscriberCheckpoint.name == CHUNKS_PROJECTION)
    )
    return int(position or 0)


def reported_status(status: str, indexed_position: int | None, searchable: int) -> str:
    """The status to report: `indexed` only once the chunks are searchable, else `pending`.

    The `documents` projection records DocumentIndexed on its own schedule; until the
    `chunks` projection has applied the same event a search would miss the document.
    A NULL position (indexed before migration 0016) counts as searchable.
    """
    if status == "indexed" and indexed_position is not None and indexed_position > searchable:
        return "pending"
    return status


def status_condition(status: str, searchable: int) -> ColumnElement[bool]:
    """The catalog filter for a reported status (see `reported_status`)."""
    lagging = and_(
        DocumentRow.status == "indexed",
        DocumentRow.indexed_position.is_not(None),
        DocumentRow.indexed_position > searchable,
    )
    if status == "indexed":
        return and_(DocumentRow.status == "indexed", ~lagging)
    if status == "pending":
        return or_(DocumentRow.status == "pending", lagging)
    return DocumentRow.status == status
