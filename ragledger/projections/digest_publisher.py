"""The `digest_publisher` reactor: copy each signed digest out of the database.

It follows DigestSigned (every digest: scheduled, requested, at an export) and writes
each to DIGEST_PUBLISH_DIR and/or POSTs it to DIGEST_PUBLISH_URL, after the digest's
event committed and outside the ledger's append lock. A failure (a full disk, an
endpoint down) raises, so the runner retries from that digest with backoff and nothing
is skipped; a retry may deliver a copy twice, which is harmless (same file name, same
Idempotency-Key). It appends no events. It runs only when a destination is configured,
and a destination added later receives every digest from the first one on.
"""

from __future__ import annotations

import asyncio

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from ragledger.core.settings import Settings
from ragledger.events.envelope import RecordedEvent
from ragledger.projections.subscriber import Reactor
from ragledger.services.digest_checks import digest_from_payload
from ragledger.services.digest_publishing import digest_document, post_digest, write_digest_file
from ragledger.services.signing import DigestSigner

log = structlog.get_logger(__name__)


class DigestPublisherReactor(Reactor):
    """Publishes every signed digest to the configured directory and endpoint."""

    name = "digest_publisher"
    event_types = frozenset({"DigestSigned"})
    # Slow I/O per event: a small batch keeps a retry from repeating much.
    batch_size = 20

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._signer: DigestSigner | None = None

    def _public_key(self, key_id: str) -> str | None:
        if self._signer is None:
            self._signer = DigestSigner.from_settings(self._settings)
        return self._signer.public_key_b64_of(key_id)

    async def handle(self, session: AsyncSession, recorded: RecordedEvent) -> None:
        """Copy one digest to every configured destination."""
        digest = digest_from_payload(recorded.payload)
        if digest is None:
            log.warning("digest_publish_skipped", position=recorded.position, why="malformed")
            return
        document = digest_document(
            digest,
            public_key=self._public_key(digest.key_id),
            recorded_position=recorded.position,
            purpose=str(recorded.payload.get("purpose", "")),
        )
        settings = self._settings
        if settings.digest_publish_dir is not None:
            path = await asyncio.to_thread(
                write_digest_file, settings.digest_publish_dir, digest, document
            )
            log.info("digest_published", position=digest.position, path=str(path))
        if settings.digest_publish_url is not None:
            await post_digest(
                settings.digest_publish_url,
                digest,
                document,
                timeout_s=settings.digest_publish_timeout_s,
            )
            log.info("digest_posted", position=digest.position)
