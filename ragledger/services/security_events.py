"""Record security signals in a transaction of their own.

A denied request rolls its own transaction back, yet the denial happened and must be
recorded: these appends commit independently of the request.
"""

from __future__ import annotations

from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ragledger.events import store
from ragledger.events.access import SECURITY_STREAM
from ragledger.events.envelope import EventMetadata

log = structlog.get_logger(__name__)


async def record_security_event(
    sessionmaker: async_sessionmaker[AsyncSession],
    event: Any,
    metadata: EventMetadata,
    *,
    stream_id: str = SECURITY_STREAM,
) -> None:
    """Append one security event and commit it at once; failures are logged, not raised."""
    try:
        await store.append_autocommitted(sessionmaker, stream_id, [event], metadata=metadata)
    except Exception as exc:  # noqa: BLE001  (a denial must still be answered)
        log.error("security_event_not_recorded", event_type=type(event).__name__, error=repr(exc))
