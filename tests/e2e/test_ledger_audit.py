"""Verification, signed digests and exports, checked by an independent stdlib verifier."""

from __future__ import annotations

import asyncio
import base64
import subprocess
import sys
from pathlib import Path

import pytest

from ragledger.events import store
from ragledger.events.envelope import NewEvent
from tests.ledger_tampering import tamper

VERIFIER = Path(__file__).resolve().parents[2] / "ops" / "verify_export.py"


async def _seed(db, count: int = 12) -> None:
    async with db.sessionmaker() as session, session.begin():
        for i in range(count):
            await store.append(session, f"s-{i % 3}", [NewEvent("Seeded", {"i": i, "t": "é✓"})])


async def _events(db, event_type: str) -> list:
    async with db.sessionmaker() as session:
        return await store.read_all(session, event_types={event_type}, limit=10_000)


def _verify_offline(path: Path, public_key: str, *extra: str) -> subprocess.CompletedProcess[str]:
    # -I: isolated mode, no site-packages, no project on the path: the standard library only.
    return subprocess.run(
        [sys.executable, "-I", str(VERIFIER), str(path), public_key, *extra],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=path.parent,
    )


async def test_verify_full_and_incremental_and_recorded(db, client, accounts) -> None:
    await _seed(db)
    auditor = accounts["auditor"]
    full = (
        await client.get("/api/v1/audit/verify", params={"full": True}, headers=auditor.headers)
    ).json()
    assert full["valid"] is True
    assert full["from_position"] == 0
    assert full["first_invalid_position"] is None
    digest = (await client.post("/api/v1/audit/digests", headers=auditor.headers)).json()["digest"]
    await _seed(db, 5)
    incremental = (await client.get("/api/v1/audit/verify", headers=auditor.headers)).json()
    assert incremental["valid"] is True
    assert incremental["from_position"] == digest["position"]
    assert incremental["checked"] < full["checked"] + 7
    verified = await _events(db, "LedgerVerified")
    assert [e.payload["full"] for e in verified] == [True, False]
    assert len(await _events(db, "DigestSigned")) == 1


async def test_tampering_is_found_at_its_position(db, client, accounts) -> None:
    await _seed(db)
    await tamper(db, """UPDATE events SET payload = '{"i": 99}' WHERE position = 7""")
    result = (
        await client.get(
            "/api/v1/audit/verify", params={"full": True}, headers=accounts["admin"].headers
        )
    ).json()
    assert result["valid"] is False
    assert result["first_invalid_position"] == 7
    assert await _events(db, "LedgerVerified") == []
    [recorded] = await _events(db, "LedgerVerificationFailed")
    assert recorded.payload["source"] == "verification"
    assert recorded.payload["first_invalid_position"] == 7
    assert recorded.payload["digest_position"] is None


async def test_kept_digests_prove_the_ledger_unchanged_or_not(db, client, accounts) -> None:
    await _seed(db)
    auditor = accounts["auditor"]
    signed = (await client.post("/api/v1/audit/digests", headers=auditor.headers)).json()
    digest = signed["digest"]
    key = (await client.get("/api/v1/audit/public-key", headers=auditor.headers)).json()
    assert key["public_key"] == signed["public_key"]
    assert key["algorithm"] == "Ed25519"

    ok = (
        await client.post("/api/v1/audit/digests/verify", headers=auditor.headers, json=digest)
    ).json()
    assert ok == {
        "signature_valid": True,
        "ledger_matches": True,
        "valid": True,
        "detail": ok["detail"],
    }
    forged = dict(digest, position=digest["position"] - 1)
    bad = (
        await client.post("/api/v1/audit/digests/verify", headers=auditor.headers, json=forged)
    ).json()
    assert bad["signature_valid"] is False

    from ragledger.services.signing import DigestSigner

    other = DigestSigner.load(Path("/nonexistent"), _other_key_pem())
    foreign = other.sign(digest["position"], digest["hash"])
    foreign_body = {
        "position": foreign.position,
        "hash": foreign.hash,
        "signed_at": foreign.signed_at,
        "key_id": foreign.key_id,
        "signature": foreign.signature,
    }
    rejected = (
        await client.post(
            "/api/v1/audit/digests/verify", headers=auditor.headers, json=foreign_body
        )
    ).json()
    assert rejected["valid"] is False
    assert rejected["signature_valid"] is False

    await tamper(db, f"UPDATE events SET hash = sha256('x') WHERE position = {digest['position']}")
    changed = (
        await client.post("/api/v1/audit/digests/verify", headers=auditor.headers, json=digest)
    ).json()
    assert changed["signature_valid"] is True
    assert changed["ledger_matches"] is False
    assert changed["valid"] is False


async def test_a_digest_past_the_largest_position_is_422(client, accounts) -> None:
    # Found by tests/e2e/test_schema_fuzz.py: position 2**63 overflowed bigint in the
    # driver (a 500). Positions are bounded like the ledger's column now.
    digest = {
        "position": 2**63,
        "hash": "0" * 64,
        "signed_at": "2026-01-01T00:00:00+00:00",
        "key_id": "k",
        "signature": "",
    }
    response = await client.post(
        "/api/v1/audit/digests/verify", headers=accounts["auditor"].headers, json=digest
    )
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "position"]


def _other_key_pem() -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    return (
        Ed25519PrivateKey.generate()
        .private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        .decode()
    )


async def test_export_verifies_offline_with_the_standard_library(
    db, client, accounts, tmp_path
) -> None:
    await _seed(db)
    auditor = accounts["auditor"]
    public_key = (await client.get("/api/v1/audit/public-key", headers=auditor.headers)).json()[
        "public_key"
    ]
    response = await client.get("/api/v1/audit/export", headers=auditor.headers)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/x-ndjson")
    export = tmp_path / "ledger.jsonl"
    export.write_bytes(response.content)
    lines = response.text.splitlines()
    assert len(lines) >= 13  # 12 seeded + login events, then the digest line
    checked = await asyncio.to_thread(_verify_offline, export, public_key)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.startswith("valid:")
    assert len(await _events(db, "AuditExported")) == 1

    # A changed character anywhere is found, at its position.
    tampered = tmp_path / "tampered.jsonl"
    tampered.write_text(response.text.replace('"i":5', '"i":6', 1), encoding="utf-8")
    found = await asyncio.to_thread(_verify_offline, tampered, public_key)
    assert found.returncode == 1
    assert "hash does not match" in found.stdout
    # Another key's signature is refused.
    stranger = base64.b64encode(bytes(32)).decode()
    assert (await asyncio.to_thread(_verify_offline, export, stranger)).returncode == 1


async def test_partial_export_needs_the_previous_hash(db, client, accounts, tmp_path) -> None:
    await _seed(db)
    auditor = accounts["auditor"]
    public_key = (await client.get("/api/v1/audit/public-key", headers=auditor.headers)).json()[
        "public_key"
    ]
    response = await client.get(
        "/api/v1/audit/export",
        headers=auditor.headers,
        params={"from_position": 4, "to_position": 9},
    )
    lines = response.text.splitlines()
    assert len(lines) == 7
    export = tmp_path / "part.jsonl"
    export.write_text(response.text)
    assert (await asyncio.to_thread(_verify_offline, export, public_key)).returncode == 1
    async with db.sessionmaker() as session:
        [third] = await store.read_all(session, after=2, limit=1)
    ok = await asyncio.to_thread(
        _verify_offline, export, public_key, "--prev-hash", third.hash.hex()
    )
    assert ok.returncode == 0, ok.stdout


@pytest.mark.parametrize(
    ("params", "status"),
    [
        ({"from_position": 9, "to_position": 3}, 400),
        ({"from_position": 10_000}, 400),
        ({"from_position": 0}, 422),
    ],
)
async def test_bad_export_ranges(db, client, accounts, params, status) -> None:
    await _seed(db)
    response = await client.get(
        "/api/v1/audit/export", headers=accounts["auditor"].headers, params=params
    )
    assert response.status_code == status
    assert await _events(db, "AuditExported") == []


async def test_cli_export_and_incremental_verify(db, database_url, tmp_path) -> None:
    from tests.e2e.test_cli import _env, _run

    await _seed(db)
    env = _env(DATABASE_URL=database_url, RAGLEDGER_DATA_DIR=str(tmp_path / "data"))
    out = tmp_path / "cli.jsonl"
    exported = await _run("audit", "export", "--out", str(out), env=env)
    assert exported.returncode == 0, exported.stderr
    public_key = exported.stdout.strip().rsplit(" ", 1)[-1]
    assert (await asyncio.to_thread(_verify_offline, out, public_key)).returncode == 0
    verified = await _run("ledger", "verify", "--incremental", env=env)
    assert verified.returncode == 0, verified.stderr
    assert "from position 12" in verified.stdout


async def test_digests_of_a_retired_key_stay_valid_after_rotation(db, settings, tmp_path) -> None:
    """Rotate SIGNING_KEY: old digests check only while the old public key is listed."""
    import httpx
    from pydantic import SecretStr

    from ragledger.api.app import create_app
    from ragledger.services.signing import DigestSigner
    from tests.e2e.conftest import login, make_account

    await _seed(db)
    old_pem, new_pem = _other_key_pem(), _other_key_pem()
    old = DigestSigner.load(tmp_path, old_pem)
    async with db.sessionmaker() as session:
        head = await store.head(session)
    kept = old.sign(head.position, head.hash.hex())
    body = {
        "position": kept.position,
        "hash": kept.hash,
        "signed_at": kept.signed_at,
        "key_id": kept.key_id,
        "signature": kept.signature,
    }
    auditor = await make_account(db, "aude@example.com", "auditor")

    async def check(**update) -> dict:
        app = create_app(settings.model_copy(update=update), run_subscribers=False)
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app), base_url="http://testserver"
            ) as http,
        ):
            await login(http, auditor)
            response = await http.post(
                "/api/v1/audit/digests/verify", headers=auditor.headers, json=body
            )
            assert response.status_code == 200, response.text
            return response.json()

    rotated = {"signing_key": SecretStr(new_pem)}
    # Rotated without listing the old key: its digest no longer checks.
    assert (await check(**rotated))["signature_valid"] is False
    # Listed as retired (PEM or raw base64): the old digest is valid again.
    for public in (old.public_key_pem(), old.public_key_b64()):
        result = await check(**rotated, signing_retired_public_keys=[public])
        assert result["signature_valid"] is True
        assert result["valid"] is True


def test_a_retired_key_that_is_not_ed25519_is_refused() -> None:
    from ragledger.services.signing import load_public_key

    for bad in (base64.b64encode(b"too short").decode(), "not base64 at all!", "-----BEGIN x"):
        with pytest.raises(ValueError, match="not an Ed25519 public key"):
            load_public_key(bad)
