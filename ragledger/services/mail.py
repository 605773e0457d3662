"""Outgoing mail through fastapi-mail; without a mail server, mail goes to the log.

Nothing is silently dropped: with no MAIL_SERVER configured, the message is logged at
WARNING (recipients, subject and kind) so that a developer or an operator still sees it.
Its body is logged only when the caller says it may be (`log_body=True`, as for anomaly
alerts): a reset or verification mail carries a token that works for whoever reads the
log, so such a body never reaches it.
A message that the server refuses, or a server that cannot be reached, raises
MailDeliveryError: callers decide whether to retry (the notifier does, with backoff).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import structlog
from fastapi_mail import ConnectionConfig, FastMail, MessageSchema, MessageType
from fastapi_mail.schemas import MultipartSubtypeEnum

from ragledger.core.settings import Settings

log = structlog.get_logger(__name__)


class MailDeliveryError(RuntimeError):
    """The mail server could not be reached or refused the message."""


@dataclass(frozen=True, slots=True)
class MailResult:
    """How a message left: `smtp` or `log`."""

    transport: str


def connection_config(settings: Settings) -> ConnectionConfig | None:
    """fastapi-mail's connection settings, or None when no mail server is configured."""
    if not settings.mail_server:
        return None
    return ConnectionConfig(
        MAIL_USERNAME=settings.mail_username or "",
        MAIL_PASSWORD=settings.mail_password or "",  # type: ignore[arg-type]
        MAIL_FROM=settings.mail_from,
        MAIL_FROM_NAME=settings.mail_from_name,
        MAIL_PORT=settings.mail_port,
        MAIL_SERVER=settings.mail_server,
        MAIL_STARTTLS=settings.mail_starttls,
        MAIL_SSL_TLS=settings.mail_ssl_tls,
        USE_CREDENTIALS=bool(settings.mail_username),
        VALIDATE_CERTS=settings.mail_validate_certs,
        TIMEOUT=settings.mail_timeout_s,
        SUPPRESS_SEND=0,
    )


class Mailer:
    """Sends plain-text (optionally also HTML) mail, or logs it when no server is set."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        config = connection_config(settings)
        self._client: FastMail | None = FastMail(config) if config is not None else None

    @property
    def configured(self) -> bool:
        """Whether a mail server is configured (otherwise mail goes to the log)."""
        return self._client is not None

    async def send(
        self,
        *,
        to: list[str],
        subject: str,
        body: str,
        html: str | None = None,
        headers: Mapping[str, str] | None = None,
        kind: str = "mail",
        log_body: bool = False,
    ) -> MailResult:
        """Send one message (text `body`, and `html` as its alternative); returns how it left.

        Without a mail server the message goes to the log: recipients, subject and
        `kind` always, the body only with `log_body` (never for a body with a secret).
        """
        if self._client is None:
            if log_body:
                log.warning("mail_logged_no_smtp", kind=kind, to=to, subject=subject, body=body)
            else:
                log.warning(
                    "mail_logged_no_smtp",
                    kind=kind,
                    to=to,
                    subject=subject,
                    body="(withheld: it carries a secret; configure MAIL_SERVER to deliver it)",
                )
            return MailResult("log")
        if html is None:
            message = MessageSchema(
                subject=subject,
                recipients=to,  # type: ignore[arg-type]
                body=body,
                subtype=MessageType.plain,
                headers=dict(headers) if headers else None,
            )
        else:
            # multipart/alternative with the text first: clients show the last part they
            # can render, so HTML where possible and the text everywhere else.
            message = MessageSchema(
                subject=subject,
                recipients=to,  # type: ignore[arg-type]
                body=body,
                alternative_body=html,
                subtype=MessageType.plain,
                multipart_subtype=MultipartSubtypeEnum.alternative,
                headers=dict(headers) if headers else None,
            )
        try:
            await self._client.send_message(message)
        except Exception as exc:
            # fastapi-mail wraps connection failures in ConnectionErrors (whose text is in
            # `expression`); refusals come from aiosmtplib as SMTP response errors.
            detail = getattr(exc, "expression", None) or str(exc) or type(exc).__name__
            log.warning("mail_failed", to_count=len(to), subject=subject, error=str(detail))
            raise MailDeliveryError(str(detail)) from exc
        log.info("mail_sent", to_count=len(to), subject=subject)
        return MailResult("smtp")
