"""Signed digests are copied out of the database, and a copy proves a later rewrite."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from ragledger.events import store
from ragledger.events.envelope import NewEvent
from ragledger.projections.digest_publisher import DigestPublisherReactor
from ragledger.projections.registry import all_subscribers
from ragledger.projections.runner import run_until_caught_up
from tests.ledger_tampering import rewrite_and_rechain


class Receiver:
    """An HTTP endpoint on loopback that answers POSTs with the statuses it is given."""

    def __init__(self, statuses: list[int]) -> None:
        self.statuses = statuses
        self.received: list[tuple[dict, str | None]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                if status == 200:
                    receiver.received.append(
                        (json.loads(body), self.headers.get("Idempotency-Key"))
                    )
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/digests"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    endpoint = Receiver([503])
    endpoint.thread.start()
    yield endpoint
    endpoint.server.shutdown()
    endpoint.server.server_close()


@pytest.fixture
def settings(settings, tmp_path: Path, receiver: Receiver):
    """The shared test settings, publishing digests to a directory and to the receiver."""
    return settings.model_copy(
        update={
            "digest_publish_dir": tmp_path / "published",
            "digest_publish_url": receiver.url,
        }
    )


async def test_digests_are_published_and_a_published_copy_proves_a_rewrite(
    db, client, accounts, settings, receiver: Receiver
) -> None:
    auditor = accounts["auditor"]
    async with db.sessionmaker() as session, session.begin():
        for i in range(6):
            await store.append(session, "s", [NewEvent("Seeded", {"i": i})])
    signed = (await client.post("/api/v1/audit/digests", headers=auditor.headers)).json()
    publisher = next(s for s in all_subscribers(settings) if s.name == "digest_publisher")
    assert isinstance(publisher, DigestPublisherReactor)

    # The endpoint fails first: the reactor raises and the digest is retried, not skipped.
    with pytest.raises(Exception, match="503"):
        await run_until_caught_up(db.engine, publisher)
    assert await run_until_caught_up(db.engine, publisher)

    [published] = list((settings.digest_publish_dir).glob("digest-*.json"))
    document = json.loads(published.read_text())
    assert document["digest"] == signed["digest"]
    assert document["public_key"] == signed["public_key"]
    assert document["purpose"] == "requested"
    [(posted, key)] = receiver.received
    assert posted == document
    assert key == published.stem

    # The copy kept outside the database proves the rewrite that the ledger now hides.
    await rewrite_and_rechain(db, 2, {"i": 42})
    check = await client.post(
        "/api/v1/audit/digests/verify", headers=auditor.headers, json=document["digest"]
    )
    assert check.json()["signature_valid"] is True
    assert check.json()["valid"] is False


def test_the_publisher_runs_only_where_a_destination_is_set(settings) -> None:
    names = {s.name for s in all_subscribers(settings)}
    assert "digest_publisher" in names
    bare = settings.model_copy(update={"digest_publish_dir": None, "digest_publish_url": None})
    assert "digest_publisher" not in {s.name for s in all_subscribers(bare)}
