"""Every subscriber the runner drives, by name."""

from __future__ import annotations

from ragledger.projections.streams import StreamsProjection
from ragledger.projections.subscriber import Subscriber


def all_subscribers() -> list[Subscriber]:
    """Fresh instances of every projection and reactor, in a stable order."""
    return [StreamsProjection()]
