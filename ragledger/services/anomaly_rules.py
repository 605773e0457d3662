"""Anomaly rules as pure functions: plain values in, a Finding (or None) out.

The `anomaly_detector` reactor gathers the values from the ledger and its own state and
asks these functions; thresholds come from settings (see Settings for how each was
chosen). Comparisons are spelled out once here so that tests pin them down:
- rates and sizes must be *above* their limit (`count > max(floor, factor x median)`),
  since "far above usual" excludes reaching it exactly;
- failure counts fire *at* their threshold (`count >= threshold`): "5 failures" means
  the fifth one raises.

Summaries name users, documents and questions by id only: the personal data stays in
the events that the evidence positions point to.
"""

from __future__ import annotations

import hashlib
import re
import statistics
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ragledger.events.anomaly_kinds import Rule, Severity

# An anomaly lists at most this many evidence positions (the most recent ones); its
# summary gives the full count. A burst of thousands would otherwise bloat the ledger.
MAX_EVIDENCE = 100


@dataclass(frozen=True, slots=True)
class Finding:
    """Something a rule found: what, how bad, about whom, and the events that show it."""

    rule: Rule
    severity: Severity
    subject: str
    summary: str
    evidence_positions: tuple[int, ...]


def _evidence(positions: Sequence[int]) -> tuple[int, ...]:
    return tuple(sorted(set(positions))[-MAX_EVIDENCE:])


def user_subject(user_id: object) -> str:
    """The subject naming an account by id."""
    return f"user:{user_id}"


def email_subject(email: str) -> str:
    """The subject of an email that matches no account: a pseudonym, never the address.

    The address is personal data and is in the LoginFailed events the evidence names;
    the same address always gives the same pseudonym, so the failures still add up.
    """
    digest = hashlib.sha256(email.strip().casefold().encode("utf-8")).hexdigest()
    return f"email:{digest[:16]}"


def address_subject(client_ip: str) -> str:
    """The subject naming a client address."""
    return f"address:{client_ip}"


def median(values: Sequence[int]) -> float:
    """The median of `values`; 0 when there are none (no history: only the floor counts)."""
    return float(statistics.median(values)) if values else 0.0


def baseline_limit(baseline: Sequence[int], *, floor: int, factor: float) -> float:
    """The highest value still usual: max(floor, factor x median(baseline))."""
    return max(float(floor), factor * median(baseline))


def question_rate(
    *,
    user_id: object,
    window_positions: Sequence[int],
    baseline_window_counts: Sequence[int],
    floor: int,
    factor: float,
    window_s: int,
) -> Finding | None:
    """Rule (a): a user asks far more questions in the window than they usually do.

    `window_positions` are the user's QuestionAsked events in the last `window_s`;
    `baseline_window_counts` their question counts per window over the baseline days,
    for the windows in which they asked anything (zeros would make every median 0).
    """
    count = len(window_positions)
    limit = baseline_limit(baseline_window_counts, floor=floor, factor=factor)
    if count <= limit:
        return None
    usual = median(baseline_window_counts)
    return Finding(
        rule=Rule.QUESTION_RATE,
        severity=Severity.MEDIUM,
        subject=user_subject(user_id),
        summary=(
            f"user {user_id} asked {count} questions in {window_s // 60} minutes; "
            f"their usual is {usual:g} per {window_s // 60} minutes when active "
            f"(limit {limit:g})"
        ),
        evidence_positions=_evidence(window_positions),
    )


def repeated_auth_failures(
    *,
    subject: str,
    positions: Sequence[int],
    threshold: int,
    window_s: int,
    count: int | None = None,
) -> Finding | None:
    """Rule (b): at least `threshold` failed logins or denials for one account or address.

    `count` is the number of failures the events at `positions` stand for (an
    aggregated AccessDenied counts the denials it summarizes); default one each.
    """
    count = len(positions) if count is None else count
    if count < threshold:
        return None
    what = "address" if subject.startswith("address:") else "account"
    return Finding(
        rule=Rule.REPEATED_AUTH_FAILURES,
        severity=Severity.HIGH,
        subject=subject,
        summary=(
            f"{count} failed logins or denied requests for {what} {subject.split(':', 1)[1]} "
            f"within {window_s // 60} minutes (threshold {threshold})"
        ),
        evidence_positions=_evidence(positions),
    )


def audit_read_size(payload: Mapping[str, Any]) -> int | None:
    """How many events or items an AuditViewed/AuditExported payload says were read.

    The audit events belong to another module; read them defensively: `event_count`
    (AuditExported), `item_count` (AuditViewed), then `items` (a count, or the list of
    items), then `count`.
    """
    for key in ("event_count", "item_count", "items", "count"):
        value = payload.get(key)
        if isinstance(value, bool):
            continue
        if isinstance(value, int):
            return max(value, 0)
        if isinstance(value, str) and value.isdigit():
            return int(value)
        if isinstance(value, list | tuple):
            return len(value)
    return None


def large_export(
    *,
    actor_id: object,
    event_count: int,
    position: int,
    previous_counts: Sequence[int],
    floor: int,
    factor: float,
) -> Finding | None:
    """Rule (c), exports: one export far larger than the actor's previous exports."""
    limit = baseline_limit(previous_counts, floor=floor, factor=factor)
    if event_count <= limit:
        return None
    return Finding(
        rule=Rule.LARGE_AUDIT_READ,
        severity=Severity.HIGH,
        subject=user_subject(actor_id),
        summary=(
            f"user {actor_id} exported {event_count} events; their usual export is "
            f"{median(previous_counts):g} (limit {limit:g})"
        ),
        evidence_positions=(position,),
    )


def audit_read_burst(
    *,
    actor_id: object,
    window_items: int,
    window_positions: Sequence[int],
    baseline_window_totals: Sequence[int],
    floor: int,
    factor: float,
    window_s: int,
) -> Finding | None:
    """Rule (c), views: far more audit-view items read in the window than usual."""
    limit = baseline_limit(baseline_window_totals, floor=floor, factor=factor)
    if window_items <= limit:
        return None
    return Finding(
        rule=Rule.LARGE_AUDIT_READ,
        severity=Severity.MEDIUM,
        subject=user_subject(actor_id),
        summary=(
            f"user {actor_id} read {window_items} audit items in {window_s // 60} minutes; "
            f"their usual is {median(baseline_window_totals):g} (limit {limit:g})"
        ),
        evidence_positions=_evidence(window_positions),
    )


def uncited_answer(
    *,
    question_id: object,
    model: str,
    citations: Sequence[int],
    no_context: bool,
    position: int,
    declined: bool = False,
) -> Finding | None:
    """Rule (d): an answer given from context that cites none of it.

    With no context the platform answers with its fixed "I don't know" text, which
    rightly cites nothing, and so does an answer that declines (the documents do not
    cover the question). The subject is the model, so that a model or prompt that
    stopped citing gives one anomaly per burst, not one per answer.
    """
    if no_context or citations or declined:
        return None
    return Finding(
        rule=Rule.UNCITED_ANSWER,
        severity=Severity.LOW,
        subject=f"model:{model}",
        summary=(
            f"the answer to question {question_id} by model {model} cites none of the "
            "context it was given"
        ),
        evidence_positions=(position,),
    )


def is_unsupported(groundedness: str | None, *, below: float) -> bool | None:
    """Whether a checked answer counts as unsupported; None when it was not checked."""
    if groundedness is None:
        return None
    return float(groundedness) < below


def unsupported_answers(
    *, model: str, recent: Sequence[tuple[int, bool]], run: int, below: float
) -> Finding | None:
    """Rule (g): the model's last `run` checked answers were all unsupported.

    `recent` holds (position, unsupported) of the model's latest checked generative
    answers, newest first. A supported answer ends a run; extractive answers, which
    quote their sources, and the no-context answer are never counted.
    """
    latest = list(recent[:run])
    if len(latest) < run or not all(unsupported for _position, unsupported in latest):
        return None
    return Finding(
        rule=Rule.UNSUPPORTED_ANSWERS,
        severity=Severity.MEDIUM,
        subject=f"model:{model}",
        summary=(
            f"the last {run} answers by model {model} were not supported by their context "
            f"(groundedness below {below:g} each)"
        ),
        evidence_positions=_evidence([position for position, _unsupported in latest]),
    )


# Phrases that try to take over the model's instructions. Matched case-insensitively
# on text normalised by `_normalise` (NFKC, zero-width characters removed, whitespace
# collapsed), so full-width letters or hidden characters do not slip through.
INJECTION_PATTERNS: dict[str, re.Pattern[str]] = {
    name: re.compile(pattern, re.IGNORECASE)
    for name, pattern in {
        "ignore_previous_instructions": (
            r"\bignore\s+(?:all\s+|any\s+|the\s+|your\s+)*(?:previous|prior|above|earlier|"
            r"preceding)\s+(?:instructions?|prompts?|rules|directions|context)"
        ),
        "disregard_previous": (
            r"\bdisregard\s+(?:all\s+|any\s+|the\s+|your\s+)*(?:above|previous|prior|earlier|"
            r"instructions?|rules)"
        ),
        "forget_instructions": (
            r"\bforget\s+(?:all\s+|everything\s+|your\s+|the\s+)*(?:previous\s+|prior\s+)?"
            r"(?:instructions|rules|you\s+(?:were|have\s+been)\s+told)"
        ),
        "system_prompt": r"\bsystem\s+prompt\b",
        "role_override": r"\byou\s+are\s+now\b",
        "new_instructions": r"\bnew\s+instructions\s*:",
        "reveal_instructions": (
            r"\b(?:reveal|print|show|repeat|output)\s+(?:me\s+)?(?:your|the)\s+(?:hidden\s+|"
            r"initial\s+|original\s+)?(?:instructions|prompt)\b"
        ),
        "chat_template_tokens": r"<\|(?:im_start|im_end|system|endoftext)\|>|\[/?INST\]|<<SYS>>",
        "jailbreak": r"\bdo\s+anything\s+now\b|\bjailbreak",
    }.items()
}

_ZERO_WIDTH = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060\ufeff\u00ad"))
_SPACES = re.compile(r"\s+")


def _normalise(text: str) -> str:
    return _SPACES.sub(" ", unicodedata.normalize("NFKC", text).translate(_ZERO_WIDTH))


def injection_matches(text: str) -> tuple[str, ...]:
    """Names of the prompt-injection patterns that `text` matches, in a stable order."""
    normalised = _normalise(text)
    return tuple(name for name, pattern in INJECTION_PATTERNS.items() if pattern.search(normalised))


def injected_question(
    *, question_id: object, asked_by: object, question: str, position: int
) -> Finding | None:
    """Rule (e), questions: the question carries prompt-injection phrases."""
    matched = injection_matches(question)
    if not matched:
        return None
    return Finding(
        rule=Rule.PROMPT_INJECTION,
        severity=Severity.MEDIUM,
        subject=user_subject(asked_by),
        summary=(
            f"question {question_id} by user {asked_by} matches prompt-injection "
            f"patterns: {', '.join(matched)}"
        ),
        evidence_positions=(position,),
    )


def injected_document(
    *, document_id: object, version: int, chunk_texts: Sequence[str], position: int
) -> Finding | None:
    """Rule (e), documents: chunks of an uploaded version carry prompt-injection phrases."""
    matched: dict[str, None] = {}
    chunks: list[int] = []
    for index, text in enumerate(chunk_texts):
        names = injection_matches(text)
        if names:
            chunks.append(index)
            matched.update(dict.fromkeys(names))
    if not chunks:
        return None
    shown = ", ".join(str(i) for i in chunks[:20]) + (" ..." if len(chunks) > 20 else "")
    return Finding(
        rule=Rule.PROMPT_INJECTION,
        severity=Severity.MEDIUM,
        subject=f"document:{document_id}",
        summary=(
            f"document {document_id} version {version}: {len(chunks)} chunk(s) ({shown}) "
            f"match prompt-injection patterns: {', '.join(matched)}"
        ),
        evidence_positions=(position,),
    )


def _is_position(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def ledger_verification_failed(
    *,
    valid: object,
    position: int,
    first_invalid_position: object,
    reason: object,
    digest_position: object = None,
) -> Finding | None:
    """Rule (f): a verification of the hash chain failed (only an explicit false counts).

    `digest_position` is a signed digest that disagrees with the ledger (a rewrite);
    it joins the evidence with the verification itself and the broken position.
    """
    if valid is not False:
        return None
    evidence = [position]
    where = ""
    if _is_position(first_invalid_position):
        assert isinstance(first_invalid_position, int)
        evidence.append(first_invalid_position)
        where = f" at position {first_invalid_position}"
    if _is_position(digest_position):
        assert isinstance(digest_position, int)
        evidence.append(digest_position)
        where += f" (signed digest at position {digest_position} disagrees)"
    why = f": {reason}" if isinstance(reason, str) and reason else ""
    return Finding(
        rule=Rule.LEDGER_VERIFICATION_FAILED,
        severity=Severity.CRITICAL,
        subject="ledger",
        summary=f"ledger verification failed{where}{why}",
        evidence_positions=_evidence(evidence),
    )
