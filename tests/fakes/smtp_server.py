"""A real SMTP server on loopback (aiosmtpd) that records what it receives, or refuses it.

    with FakeSMTPServer() as smtp:
        settings = settings.model_copy(update=smtp.mail_settings())
        ...  # send through fastapi-mail
        assert smtp.messages[0].subject.startswith("[ragledger]")
        smtp.refuse(451)          # temporary failure at DATA ("try again later")
        smtp.refuse(550, at="rcpt")  # permanent refusal of every recipient
        smtp.accept()
        smtp.stop()               # down: connections are refused
        smtp.start()              # up again, on the same port

or take the `fake_smtp` fixture. The server runs aiosmtpd's Controller, which serves on
its own event loop in a daemon thread, so a client in the test's loop talks to it over
a real socket, exactly as to a mail server.
"""

from __future__ import annotations

import email
import email.policy
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any, Literal, Self

import pytest
from aiosmtpd.controller import Controller


@dataclass(frozen=True)
class ReceivedMail:
    """One message the server accepted: envelope and parsed content."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    raw: bytes
    message: EmailMessage

    @property
    def subject(self) -> str:
        """The Subject header."""
        return str(self.message["Subject"] or "")

    def header(self, name: str) -> str | None:
        """A header's value, or None."""
        value = self.message[name]
        return None if value is None else str(value)

    def part(self, subtype: Literal["plain", "html"]) -> str | None:
        """The text/plain or text/html body, decoded."""
        for part in self.message.walk():
            if part.get_content_type() == f"text/{subtype}":
                return part.get_content()  # type: ignore[attr-defined]
        return None

    @property
    def text(self) -> str:
        """The plain-text body ("" when there is none)."""
        return self.part("plain") or ""

    @property
    def html(self) -> str:
        """The HTML body ("" when there is none)."""
        return self.part("html") or ""


class _Handler:
    def __init__(self, server: FakeSMTPServer) -> None:
        self._server = server

    async def handle_RCPT(
        self, _server: Any, _session: Any, envelope: Any, address: str, _options: list[str]
    ) -> str:
        refusal = self._server.refusal("rcpt")
        if refusal is not None:
            return refusal
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, _server: Any, _session: Any, envelope: Any) -> str:
        refusal = self._server.refusal("data")
        if refusal is not None:
            return refusal
        self._server.record(envelope)
        return "250 Message accepted for delivery"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class FakeSMTPServer:
    """aiosmtpd on 127.0.0.1 with switches to refuse mail or be down."""

    def __init__(self, host: str = "127.0.0.1", port: int | None = None) -> None:
        self.host = host
        self.port = port or _free_port()
        self._lock = threading.Lock()
        self._messages: list[ReceivedMail] = []
        self._refuse: tuple[str, str] | None = None
        self._controller: Controller | None = None
        self.refused = 0

    # Lifecycle.
    def start(self) -> Self:
        """Listen (again) on the same port."""
        if self._controller is None:
            controller = Controller(_Handler(self), hostname=self.host, port=self.port)
            controller.start()
            self._controller = controller
        return self

    def stop(self) -> None:
        """Stop listening: clients get "connection refused"."""
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    @property
    def running(self) -> bool:
        """Whether the server is listening."""
        return self._controller is not None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    # Behaviour.
    def refuse(
        self, code: int = 451, message: str | None = None, *, at: Literal["rcpt", "data"] = "data"
    ) -> None:
        """Answer every RCPT or DATA with `code` (4xx: try later, 5xx: refused for good)."""
        text = message or ("Try again later" if code < 500 else "Refused")
        self._refuse = (at, f"{code} {text}")

    def accept(self) -> None:
        """Accept mail again."""
        self._refuse = None

    def refusal(self, stage: str) -> str | None:
        """The reply that refuses `stage`, if refusing there."""
        refuse = self._refuse
        if refuse is not None and refuse[0] == stage:
            with self._lock:
                self.refused += 1
            return refuse[1]
        return None

    # What arrived.
    def record(self, envelope: Any) -> None:
        """Keep one accepted message."""
        raw = bytes(envelope.original_content or envelope.content)
        message = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        with self._lock:
            self._messages.append(
                ReceivedMail(envelope.mail_from, tuple(envelope.rcpt_tos), raw, message)
            )

    @property
    def messages(self) -> list[ReceivedMail]:
        """A copy of the messages accepted so far, in order."""
        with self._lock:
            return list(self._messages)

    def clear(self) -> None:
        """Forget the messages received so far."""
        with self._lock:
            self._messages.clear()

    def wait_for(self, count: int, timeout_s: float = 10.0) -> list[ReceivedMail]:
        """Block until at least `count` messages arrived; the messages."""
        deadline = time.monotonic() + timeout_s
        while len(self.messages) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"expected {count} messages, got {len(self.messages)}")
            time.sleep(0.02)
        return self.messages

    def mail_settings(self) -> dict[str, Any]:
        """Settings fields that point fastapi-mail at this server (plain SMTP, no login)."""
        return {
            "mail_server": self.host,
            "mail_port": self.port,
            "mail_starttls": False,
            "mail_ssl_tls": False,
            "mail_username": None,
            "mail_password": None,
            "mail_from": "ragledger@example.com",
            "mail_timeout_s": 5,
        }


@pytest.fixture
def fake_smtp() -> Iterator[FakeSMTPServer]:
    """A running fake SMTP server, stopped after the test."""
    with FakeSMTPServer() as server:
        yield server
