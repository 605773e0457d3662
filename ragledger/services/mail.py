"""Outgoing mail through fastapi-mail; without an SMTP host, mail goes to the log.

Nothing is silently dropped: with no SMTP host configured, the whole message is
logged at WARNING so that a developer (or an operator reading logs) still gets it.
"""

from __future__ import annotations

from dataclasses import dataclass

import structlog
from fastapi_mail import ConnectionConfig, FastMail, MessageSchema, MessageType

from ragledger.core.settings import Settings

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class MailResult:
    """How a message left: `smtp` or `log`."""

    transport: str


class Mailer:
    """Sends plain-text mail, or logs it when no SMTP host is configured."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._client: FastMail | None = None
        if settings.smtp_host:
            self._client = FastMail(
                ConnectionConfig(
                    MAIL_USERNAME=settings.smtp_username or "",
                    MAIL_PASSWORD=settings.smtp_password or "",  # type: ignore[arg-type]
                    MAIL_FROM=settings.mail_from,
                    MAIL_PORT=settings.smtp_port,
                    MAIL_SERVER=settings.smtp_host,
                    MAIL_STARTTLS=settings.smtp_starttls,
                    MAIL_SSL_TLS=False,
                    USE_CREDENTIALS=bool(settings.smtp_username),
                    VALIDATE_CERTS=True,
                    SUPPRESS_SEND=0,
                )
            )

    async def send(self, *, to: list[str], subject: str, body: str) -> MailResult:
        """Send one message; returns how it left."""
        if self._client is None:
            log.warning("mail_logged_no_smtp", to=to, subject=subject, body=body)
            return MailResult("log")
        message = MessageSchema(
            subject=subject, recipients=to, body=body, subtype=MessageType.plain
        )
        await self._client.send_message(message)
        log.info("mail_sent", to_count=len(to), subject=subject)
        return MailResult("smtp")
