"""Copies of signed digests kept outside the database: a directory and/or an HTTP endpoint.

A digest proves that the ledger up to its position was not rewritten only while a copy
of it survives somewhere the database's owner cannot reach; the DigestSigned events in
the ledger can be deleted with the rest by whoever rewrites it. Each copy is the JSON
document below; its `digest` member is exactly the body that
`POST /api/v1/audit/digests/verify` takes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
from pathlib import Path
from typing import Any

import httpx

from ragledger.services.signing import SignedDigest

FORMAT = "ragledger-digest/v1"


def digest_document(
    digest: SignedDigest, *, public_key: str | None, recorded_position: int, purpose: str
) -> dict[str, Any]:
    """The published form of a digest, with the public key that checks it (if known)."""
    return {
        "format": FORMAT,
        "digest": {
            "position": digest.position,
            "hash": digest.hash,
            "signed_at": digest.signed_at,
            "key_id": digest.key_id,
            "signature": digest.signature,
        },
        "public_key": public_key,
        "purpose": purpose,
        "recorded_at_position": recorded_position,
    }


def document_name(digest: SignedDigest) -> str:
    """A file name unique to the digest (two digests of one position differ in signature)."""
    tag = hashlib.sha256(digest.signature.encode("ascii")).hexdigest()[:16]
    return f"digest-{digest.position:012d}-{tag}.json"


def write_digest_file(directory: Path, digest: SignedDigest, document: dict[str, Any]) -> Path:
    """Write the document whole (temporary file, fsync, rename); rewriting it is harmless."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / document_name(digest)
    data = (json.dumps(document, sort_keys=True, indent=2) + "\n").encode("utf-8")
    temporary = directory / f".{path.name}.{secrets.token_hex(8)}.tmp"
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        try:
            os.write(descriptor, data)
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
        os.replace(temporary, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
    return path


async def post_digest(
    url: str, digest: SignedDigest, document: dict[str, Any], *, timeout_s: float
) -> None:
    """POST the document; any answer but 2xx raises (the caller retries).

    `Idempotency-Key` is the same for every attempt of one digest, so that a receiver
    can drop the copy a retry sends after a lost answer.
    """
    async with httpx.AsyncClient(timeout=timeout_s) as client:
        response = await client.post(
            url,
            json=document,
            headers={"Idempotency-Key": document_name(digest).removesuffix(".json")},
        )
        response.raise_for_status()
