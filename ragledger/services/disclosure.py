"""What an answer's reader may be shown beyond the answer itself.

Timings, cache flags and the access filter's count describe the platform, not the
answer, and they leak: a fast embedding tells an employee that someone else asked the
same question (the query embedding cache), search time and the count of candidates the
access filter removed tell them that documents they cannot read match their words.
Admins and auditors see all of it; anyone else sees only the model's own timings.
"""

from __future__ import annotations

from collections.abc import Mapping

# Measured from the request to the model onward: they depend on the model and the
# answer, not on what other users asked or on documents the reader cannot read.
READER_TIMINGS = frozenset({"ttft_ms", "llm_ms"})
# Retrieval settings that describe other users' activity rather than the configuration.
PRIVILEGED_SETTINGS = frozenset({"query_embedding_cached"})


def visible_timings(timings: Mapping[str, int], *, sees_everything: bool) -> dict[str, int]:
    """The timings a reader may see."""
    if sees_everything:
        return dict(timings)
    return {key: value for key, value in timings.items() if key in READER_TIMINGS}


def visible_settings(settings: Mapping[str, str], *, sees_everything: bool) -> dict[str, str]:
    """The retrieval settings a reader may see."""
    if sees_everything:
        return dict(settings)
    return {key: value for key, value in settings.items() if key not in PRIVILEGED_SETTINGS}


def visible_removed_count(count: int | None, *, sees_everything: bool) -> int | None:
    """How many candidates the access filter removed, for admins and auditors only."""
    return count if sees_everything else None
