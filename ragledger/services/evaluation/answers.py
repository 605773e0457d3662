"""What an answer's outcome says about its quality: support, citations, a decline.

The answer path's `done` event is read defensively: a support score and a decline are
taken from the fields the answer path sends when it checks its answers
(`groundedness`, `support`, `declined`, `decline_reason`), and are unknown (None) when
it sends none. An answer with no context at all is a decline in any build.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ragledger.services.evaluation.dataset import holds_evidence
from ragledger.services.prompting import NO_CONTEXT_ANSWER


@dataclass(frozen=True, slots=True)
class AnswerScores:
    """One answer's measures; None where the answer path did not say."""

    answer: str
    declined: bool | None
    decline_reason: str | None
    support: float | None
    citations: tuple[int, ...]
    citation_precision: float | None
    error: str | None = None


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    if isinstance(value, Mapping):
        for key in ("groundedness", "score", "overall", "support"):
            if key in value:
                return _number(value[key])
    return None


def support_of(done: Mapping[str, Any]) -> float | None:
    """The answer's overall support (groundedness) in [0, 1], if the answer path sent one."""
    for key in ("groundedness", "support", "grounding"):
        if key in done:
            found = _number(done[key])
            if found is not None:
                return found
    return None


def decline_of(done: Mapping[str, Any], answer: str) -> tuple[bool | None, str | None]:
    """Whether the answer declined, and why, as far as the outcome tells."""
    reason = done.get("decline_reason") or done.get("declined_reason")
    declined = done.get("declined")
    if isinstance(declined, bool):
        return declined, reason if isinstance(reason, str) else None
    if isinstance(declined, str) and declined:
        # The answer path sends the decline's reason in `declined` (null when it answered).
        return True, declined
    if isinstance(reason, str) and reason:
        return True, reason
    if answer.strip() == NO_CONTEXT_ANSWER.strip():
        return True, "no_context"
    if "declined" in done or "decline_reason" in done:
        return False, None
    # No field and an ordinary answer: this build does not decline otherwise.
    return False, None


def score_answer(
    *,
    done: Mapping[str, Any],
    answer: str,
    context: Sequence[uuid.UUID],
    texts: Mapping[uuid.UUID, str],
    evidence: str | None,
) -> AnswerScores:
    """Measures of one answer: its support, its decline, and the precision of its citations.

    Citation precision is the share of the cited blocks (numbers into `context`) whose
    text holds the evidence; unknown for an unanswerable question or no citation.
    """
    raw = done.get("citations") or ()
    cited = tuple(int(n) for n in raw if isinstance(n, int) and 1 <= n <= len(context))
    precision = None
    if evidence is not None and cited:
        hits = sum(1 for n in cited if holds_evidence(texts.get(context[n - 1], ""), evidence))
        precision = hits / len(cited)
    declined, reason = decline_of(done, answer)
    return AnswerScores(
        answer=answer,
        declined=declined,
        decline_reason=reason,
        support=support_of(done),
        citations=cited,
        citation_precision=precision,
    )
