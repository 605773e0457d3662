"""Comparing signed digests with the ledger's hashes (pure)."""

from __future__ import annotations

from ragledger.events.codec import GENESIS_HASH
from ragledger.services.digest_checks import compare_digests, digest_from_payload
from ragledger.services.signing import SignedDigest


def _digest(position: int, hash_hex: str, signed_at: str = "2026-01-01T00:00:00.000000Z"):
    return SignedDigest(position, hash_hex, signed_at, "k", "sig")


def test_every_digest_is_compared_and_the_earliest_mismatch_is_the_proof() -> None:
    stored = {0: GENESIS_HASH, 3: b"\x03" * 32, 7: b"\x07" * 32, 9: b"\x09" * 32}
    digests = [
        _digest(0, GENESIS_HASH.hex()),  # the empty ledger's digest still holds
        _digest(3, (b"\x03" * 32).hex()),
        _digest(9, (b"\x09" * 32).hex()),  # newest, signed after a rewrite: matches
        _digest(7, (b"\xee" * 32).hex()),  # older, disagrees
        _digest(12, (b"\x0c" * 32).hex()),  # past the head: the tail was deleted
    ]
    check = compare_digests(digests, stored)
    assert check.compared == 5
    assert [m.digest.position for m in check.mismatches] == [7, 12]
    assert check.first_mismatch is not None
    assert check.first_mismatch.stored_hash == (b"\x07" * 32).hex()
    assert check.mismatches[1].stored_hash is None
    assert check.last_matching_before_mismatch == 3
    assert check.newest_matching is not None
    assert check.newest_matching.position == 9


def test_all_matching_digests_give_the_newest_as_the_start() -> None:
    stored = {2: b"\x02" * 32, 5: b"\x05" * 32}
    check = compare_digests(
        [_digest(5, (b"\x05" * 32).hex()), _digest(2, (b"\x02" * 32).hex())], stored
    )
    assert check.first_mismatch is None
    assert check.newest_matching is not None
    assert check.newest_matching.position == 5
    assert check.last_matching_before_mismatch is None


def test_malformed_digest_payloads_are_not_digests() -> None:
    good = {"position": 1, "hash": "AB" * 32, "signed_at": "t", "key_id": "k", "signature": "s"}
    parsed = digest_from_payload(good)
    assert parsed is not None
    assert parsed.hash == "ab" * 32
    for bad in (None, [], dict(good, position="1"), dict(good, position=True), dict(good, hash=1)):
        assert digest_from_payload(bad) is None
