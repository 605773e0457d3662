"""A rewritten ledger never verifies: a signed digest that disagrees with it is proof.

The attacker is a database superuser who rewrites an early payload and recomputes every
later hash (and the stored canonical bytes, so the content guard stays satisfied). The
chain read back is consistent from genesis; only the signed digests can tell.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ragledger.events import store
from ragledger.events.envelope import NewEvent
from tests.e2e.test_cli import _env, _run
from tests.e2e.test_documents import drain
from tests.fakes.smtp_server import FakeSMTPServer
from tests.ledger_tampering import rewrite_and_rechain


@pytest.fixture
def smtp() -> Iterator[FakeSMTPServer]:
    with FakeSMTPServer() as server:
        yield server


@pytest.fixture
def settings(settings, smtp: FakeSMTPServer):
    """The shared test settings, with mail going to the fake SMTP server."""
    return settings.model_copy(update=smtp.mail_settings())


async def _seed(db, count: int) -> None:
    async with db.sessionmaker() as session, session.begin():
        for i in range(count):
            await store.append(session, f"s-{i % 3}", [NewEvent("Seeded", {"i": i})])


async def _events(db, event_type: str) -> list:
    async with db.sessionmaker() as session:
        return await store.read_all(session, event_types={event_type}, limit=10_000)


async def _verify(client, headers, **params) -> dict:
    response = await client.get("/api/v1/audit/verify", params=params, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


async def test_a_rewritten_chain_is_refused_over_http_and_admins_are_mailed(
    db, client, accounts, settings, smtp: FakeSMTPServer
) -> None:
    await _seed(db, 12)
    auditor, admin = accounts["auditor"], accounts["admin"]
    signed = await client.post("/api/v1/audit/digests", headers=auditor.headers)
    digest = signed.json()["digest"]
    await _seed(db, 5)
    assert (await _verify(client, auditor.headers))["valid"] is True

    await rewrite_and_rechain(db, 3, {"i": 99, "rewritten": True})

    for params in ({}, {"full": True}):
        result = await _verify(client, auditor.headers, **params)
        assert result["valid"] is False, (params, result)
        assert result["digest_position"] == digest["position"]
        assert "signed digest" in result["reason"]
    failed = await _events(db, "LedgerVerificationFailed")
    assert [e.payload["full"] for e in failed] == [False, True]
    assert all(e.payload["digest_position"] == digest["position"] for e in failed)

    # The kept digest, checked by hand, says the same and is recorded the same way.
    kept = await client.post("/api/v1/audit/digests/verify", headers=auditor.headers, json=digest)
    assert kept.json()["signature_valid"] is True
    assert kept.json()["valid"] is False
    assert len(await _events(db, "LedgerVerificationFailed")) == 3

    await drain(db, settings)
    anomalies = [
        e.payload
        for e in await _events(db, "AnomalyDetected")
        if e.payload["rule"] == "ledger_verification_failed"
    ]
    assert anomalies, "no anomaly raised for a rewritten ledger"
    assert anomalies[0]["severity"] == "critical"
    assert digest["position"] in anomalies[0]["evidence_positions"]
    mails = smtp.wait_for(1)
    assert any("ledger_verification_failed" in mail.subject for mail in mails)
    assert all(mail.rcpt_tos == (admin.email,) for mail in mails)


async def test_an_older_digest_is_checked_even_when_the_newest_matches(
    db, client, accounts
) -> None:
    """A digest signed after the rewrite vouches for the forged head; the older one does not."""
    await _seed(db, 10)
    auditor = accounts["auditor"]
    older = (await client.post("/api/v1/audit/digests", headers=auditor.headers)).json()["digest"]
    await _seed(db, 4)
    await rewrite_and_rechain(db, 2, {"i": -1})
    newer = (await client.post("/api/v1/audit/digests", headers=auditor.headers)).json()["digest"]
    assert newer["position"] > older["position"]

    for params in ({}, {"full": True}):
        result = await _verify(client, auditor.headers, **params)
        assert result["valid"] is False, (params, result)
        assert result["digest_position"] == older["position"]


async def test_incremental_verification_starts_only_from_a_digest_that_still_matches(
    db, client, accounts
) -> None:
    await _seed(db, 6)
    auditor = accounts["auditor"]
    digest = (await client.post("/api/v1/audit/digests", headers=auditor.headers)).json()["digest"]
    await _seed(db, 3)
    result = await _verify(client, auditor.headers)
    assert result["valid"] is True
    assert result["from_position"] == digest["position"]
    assert result["digest_position"] is None
    assert [e.payload["valid"] for e in await _events(db, "LedgerVerified")] == [True]


async def test_cli_verify_exits_1_on_a_rewritten_chain(
    db, client, accounts, database_url, tmp_path
):
    await _seed(db, 8)
    digest = (
        await client.post("/api/v1/audit/digests", headers=accounts["auditor"].headers)
    ).json()["digest"]
    await _seed(db, 3)
    # The same data dir as the app under test (conftest's settings): the same signing key.
    env = _env(DATABASE_URL=database_url, RAGLEDGER_DATA_DIR=str(tmp_path / "data"))
    ok = await _run("ledger", "verify", env=env)
    assert ok.returncode == 0, ok.stderr

    await rewrite_and_rechain(db, 4, {"i": 1000})
    for args in ((), ("--incremental",)):
        broken = await _run("ledger", "verify", *args, env=env)
        assert broken.returncode == 1, (args, broken.stdout, broken.stderr)
        assert f"signed digest at position {digest['position']}" in broken.stderr
