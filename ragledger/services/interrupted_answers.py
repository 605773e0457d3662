"""Questions a crash left without an outcome get `AnswerFailed` with reason `interrupted`.

A process killed while answering (`kill -9`, a lost machine) never appends the
question's outcome, and the question would stay `pending` in every view. A question
still without one after the longest an answer may take (LLM_TIMEOUT_S plus
INTERRUPTED_ANSWER_MARGIN_S, by the database clock) was cut off. The sweep finds
candidates in the `audit_answers` read model, re-reads each question's own stream
(the truth), and appends the outcome with the stream version it read as the expected
version: when several processes sweep at once, or the answer lands at the last
moment, the losers get a version conflict and the question keeps exactly one outcome.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass

import structlog
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ragledger.core.settings import Settings
from ragledger.events import store
from ragledger.events.envelope import EventMetadata
from ragledger.events.errors import WrongExpectedVersionError
from ragledger.events.questions import AnswerFailed, question_stream

log = structlog.get_logger(__name__)

INTERRUPTED = "interrupted"
_TERMINAL = frozenset({"AnswerGenerated", "AnswerFailed"})
# Index ix_audit_answers_status_asked_position serves this: pending rows are few.
_PENDING = text(
    """
    SELECT question_id FROM audit_answers
    WHERE status = 'pending' AND asked_at < now() - make_interval(secs => :age)
    ORDER BY asked_position
    LIMIT :limit
    """
)


@dataclass(frozen=True, slots=True)
class SweepResult:
    """What one sweep did: the questions it failed and those someone else had settled."""

    failed: tuple[uuid.UUID, ...]
    skipped: int


def interrupted_after_s(settings: Settings) -> float:
    """How old a question without an outcome must be to count as interrupted."""
    return settings.llm_timeout_s + settings.interrupted_answer_margin_s


async def fail_interrupted_answers(
    sessionmaker: async_sessionmaker[AsyncSession], *, older_than_s: float, limit: int = 200
) -> SweepResult:
    """Append AnswerFailed(interrupted) to each question older than that with no outcome."""
    async with sessionmaker() as session:
        candidates = list(
            (await session.execute(_PENDING, {"age": older_than_s, "limit": limit})).scalars()
        )
    failed: list[uuid.UUID] = []
    for question_id in candidates:
        if await _fail_one(sessionmaker, question_id, older_than_s=older_than_s):
            failed.append(question_id)
    return SweepResult(tuple(failed), len(candidates) - len(failed))


async def _fail_one(
    sessionmaker: async_sessionmaker[AsyncSession], question_id: uuid.UUID, *, older_than_s: float
) -> bool:
    stream = question_stream(question_id)
    async with sessionmaker() as session:
        events = await store.read_stream(session, stream)
        now = (await session.execute(text("SELECT now()"))).scalar_one()
    if not events or any(e.event_type in _TERMINAL for e in events):
        return False
    asked = events[0]
    age_s = (now - asked.recorded_at).total_seconds()
    if age_s < older_than_s:
        return False
    failed = AnswerFailed(
        question_id=question_id,
        reason=INTERRUPTED,
        detail=(
            f"no outcome was recorded within {round(older_than_s)} s of the question: the "
            "process answering it stopped (killed, crashed or lost) before finishing"
        ),
        partial_answer="",
        model="unknown",
        prompt_sha256=None,
        timings_ms={},
    )
    metadata = EventMetadata(
        actor_id="system:interrupted_answers",
        actor_role="system",
        correlation_id=asked.metadata.get("correlation_id"),
        causation_id=str(asked.event_id),
    )
    try:
        await store.append_autocommitted(
            sessionmaker,
            stream,
            [failed],
            expected_version=events[-1].stream_version,
            metadata=metadata,
        )
    except WrongExpectedVersionError:
        # Another sweeper, or the answer itself, settled the question first.
        return False
    log.warning("answer_interrupted", question_id=str(question_id), age_s=round(age_s))
    return True


async def sweep_interrupted_answers(
    sessionmaker: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    """Sweep at start-up, then every INTERRUPTED_ANSWER_SWEEP_INTERVAL_S, until cancelled."""
    while True:
        try:
            result = await fail_interrupted_answers(
                sessionmaker, older_than_s=interrupted_after_s(settings)
            )
            if result.failed:
                log.info("interrupted_answers_failed", count=len(result.failed))
        except Exception as exc:  # noqa: BLE001  (retried at the next tick)
            log.warning("interrupted_answer_sweep_failed", error=repr(exc))
        await asyncio.sleep(settings.interrupted_answer_sweep_interval_s)
