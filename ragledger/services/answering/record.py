"""One question's stream in the ledger, as the answer flow writes it.

Each append is its own short transaction, made with the stream's version as
expected_version, so that a question gets exactly one outcome even when a disconnect
races the final append.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import structlog
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ragledger.core import metrics
from ragledger.events import store
from ragledger.events.errors import WrongExpectedVersionError
from ragledger.events.questions import AnswerFailed, AnswerGenerated, question_stream
from ragledger.services.answer_support import SupportReport
from ragledger.services.answering.intake import QuestionRequest
from ragledger.services.grounded_answers import AnswerMode

log = structlog.get_logger(__name__)

# A terminal event (AnswerGenerated, AnswerFailed) must land even when the database is
# briefly unreachable or its pool exhausted: a question without one stays "pending" in
# every audit view. Retries are safe: expected_version turns a retry of an append that
# did commit into WrongExpectedVersionError, which the callers read as "recorded".
TERMINAL_APPEND_DELAYS_S = (0.2, 0.5, 1.0, 2.0, 4.0)
TERMINAL_EVENT_TYPES = frozenset({"AnswerGenerated", "AnswerFailed"})


@dataclass(slots=True)
class QuestionRecord:
    """What the flow has recorded and sent for one question, and how to record more."""

    sessionmaker: async_sessionmaker[AsyncSession]
    request: QuestionRequest
    # perf_counter() when the flow started: the base of the total_ms timing.
    started: float = field(default_factory=time.perf_counter)
    # The answer's text as sent to the asker so far, piece by piece.
    sent: list[str] = field(default_factory=list)
    prompt_sha256: str | None = None
    timings: dict[str, int] = field(default_factory=dict)
    # True once the question has its outcome (AnswerGenerated or AnswerFailed).
    finished: bool = False
    # The question stream's version after our last append: the next append's
    # expected_version.
    version: int = 0

    async def append(self, event: object, *, terminal: bool = False) -> None:
        """Append one event to the question's stream; a terminal one is retried.

        A terminal event is retried on database errors (TERMINAL_APPEND_DELAYS_S); any
        other append fails at once and stores nothing.
        """
        delays = iter(TERMINAL_APPEND_DELAYS_S if terminal else ())
        retrying = False
        while True:
            try:
                recorded = await store.append_autocommitted(
                    self.sessionmaker,
                    question_stream(self.request.question_id),
                    [event],
                    expected_version=self.version,
                    metadata=self.request.metadata,
                )
            except WrongExpectedVersionError:
                if not retrying:
                    raise
                # Only this flow writes the question's stream: the attempt whose commit
                # we did not hear back from did land.
                self.version = (self.version or 0) + 1
                return
            except (SQLAlchemyError, OSError, TimeoutError) as exc:
                retrying = True
                delay = next(delays, None)
                if delay is None:
                    raise
                log.warning(
                    "answer_append_retry",
                    question_id=str(self.request.question_id),
                    event_type=type(event).__name__,
                    error=repr(exc),
                    retry_in_s=delay,
                )
                await asyncio.sleep(delay)
                continue
            self.version = recorded[0].stream_version
            return

    async def record_failure(self, *, model: str, reason: str, detail: str) -> None:
        """End the question with AnswerFailed (and what was sent), unless it has ended."""
        if self.finished:
            return
        self.timings["total_ms"] = self._elapsed_ms()
        failed = AnswerFailed(
            question_id=self.request.question_id,
            reason=reason,
            detail=detail,
            partial_answer="".join(self.sent),
            model=model,
            prompt_sha256=self.prompt_sha256,
            timings_ms=dict(self.timings),
        )
        try:
            await self.append(failed, terminal=True)
        except WrongExpectedVersionError as exc:
            if await self._has_outcome():
                # The answer was recorded complete just before the failure: it stands.
                return
            # An earlier append landed although we never heard back (cancelled while its
            # commit was on the way): the question still needs its outcome.
            self.version = exc.actual
            await self.append(failed, terminal=True)
        self.finished = True
        metrics.questions.labels(f"failed_{reason}").inc()
        log.info("answer_failed", question_id=str(self.request.question_id), reason=reason)

    async def record_answer(
        self,
        *,
        answer: str,
        model: str,
        citations: tuple[int, ...],
        usage: dict[str, int],
        mode: AnswerMode,
        support: SupportReport | None,
        declined: str | None,
        generated_answer: str | None,
    ) -> None:
        """End the question with AnswerGenerated; a disconnect cannot cut the append."""
        self.timings["total_ms"] = self._elapsed_ms()
        # Shielded: a disconnect arriving now must not leave the final append half done.
        await asyncio.shield(
            self.append(
                AnswerGenerated(
                    question_id=self.request.question_id,
                    answer=answer,
                    model=model,
                    prompt_sha256=self.prompt_sha256,
                    citations=citations,
                    usage=usage,
                    timings_ms=dict(self.timings),
                    no_context=support is None,
                    mode=mode,
                    support=support.record() if support is not None else None,
                    declined=declined,
                    generated_answer=generated_answer,
                ),
                terminal=True,
            )
        )
        self.finished = True
        outcome = "no_context" if support is None else "declined" if declined else "answered"
        metrics.questions.labels(outcome).inc()
        log.info(
            "answer_generated",
            question_id=str(self.request.question_id),
            model=model,
            mode=mode,
            citations=len(citations),
            groundedness=None if support is None else round(support.groundedness, 3),
            declined=declined,
            **self.timings,
        )

    def _elapsed_ms(self) -> int:
        return round((time.perf_counter() - self.started) * 1000)

    async def _has_outcome(self) -> bool:
        async with self.sessionmaker() as session:
            events = await store.read_stream(session, question_stream(self.request.question_id))
        return any(e.event_type in TERMINAL_EVENT_TYPES for e in events)
