"""Signed digests: Ed25519 signatures over (position, hash, signed_at) of the ledger.

The signed message is the ASCII text
``ragledger-digest/v1\\n<position>\\n<hash hex>\\n<signed_at>`` so that anyone can rebuild
it without our code. The key is SIGNING_KEY (a PEM private key), or read from
SIGNING_KEY_FILE, or else generated once into the data dir; `key_id` is the first 16
hex digits of the sha256 of the raw 32-byte public key.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from ragledger.core.secret_files import SecretFileError, read_or_create_secret, read_secret_file
from ragledger.events.codec import format_timestamp

if TYPE_CHECKING:
    from ragledger.core.settings import Settings


@dataclass(frozen=True, slots=True)
class SignedDigest:
    """A digest as handed to auditors."""

    position: int
    hash: str
    signed_at: str
    key_id: str
    signature: str

    def message(self) -> bytes:
        """The exact bytes that were signed."""
        return digest_message(self.position, self.hash, self.signed_at)


def digest_message(position: int, hash_hex: str, signed_at: str) -> bytes:
    """The signed text of a digest."""
    return f"ragledger-digest/v1\n{int(position)}\n{hash_hex.lower()}\n{signed_at}".encode("ascii")


def key_id(public_key: Ed25519PublicKey) -> str:
    """A short fingerprint of a public key."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def load_public_key(text: str) -> Ed25519PublicKey:
    """An Ed25519 public key from PEM or from the base64 of its raw 32 bytes."""
    problem = "not an Ed25519 public key (PEM, or the base64 of its 32 raw bytes)"
    text = text.strip()
    try:
        if text.startswith("-----BEGIN"):
            key = serialization.load_pem_public_key(text.encode())
        else:
            key = Ed25519PublicKey.from_public_bytes(base64.b64decode(text, validate=True))
    except (ValueError, TypeError) as exc:
        raise ValueError(problem) from exc
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError(problem)
    return key


def _new_private_key_pem() -> bytes:
    return Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


class DigestSigner:
    """Signs digests with the server's Ed25519 key; checks them with it or a retired key.

    Retired keys (SIGNING_RETIRED_PUBLIC_KEYS) are public keys of earlier signing keys
    that are still trusted: digests they signed keep checking as valid after a rotation.
    A key that leaked must not be listed: its digests could be forged.
    """

    def __init__(
        self, private_key: Ed25519PrivateKey, retired: Sequence[Ed25519PublicKey] = ()
    ) -> None:
        self._private = private_key
        self.public_key = private_key.public_key()
        self.key_id = key_id(self.public_key)
        self.retired = {key_id(public): public for public in retired}
        self.retired.pop(self.key_id, None)

    @classmethod
    def from_settings(cls, settings: Settings) -> DigestSigner:
        """The signer the settings describe (SIGNING_KEY or the data dir's key)."""
        return cls.load(
            settings.data_dir,
            settings.signing_key.get_secret_value() if settings.signing_key else None,
            retired=[load_public_key(text) for text in settings.signing_retired_public_keys],
            key_file=settings.signing_key_file,
        )

    @classmethod
    def load(
        cls,
        data_dir: Path,
        pem: str | None = None,
        retired: Sequence[Ed25519PublicKey] = (),
        *,
        key_file: Path | None = None,
    ) -> DigestSigner:
        """The key given as PEM, else read from `key_file`, else generated once in data_dir.

        An empty key, given or read, is refused; `key_file` must exist (it is the
        operator's secret, never generated here).
        """
        if pem is not None:
            if not pem.strip():
                raise SecretFileError("the signing key is empty")
            data = pem.encode()
            source = "SIGNING_KEY"
        elif key_file is not None:
            if not key_file.is_file():
                raise SecretFileError(
                    f"SIGNING_KEY_FILE {key_file} does not exist (create one with "
                    f"`openssl genpkey -algorithm ed25519 -out {key_file}`)"
                )
            data = read_secret_file(key_file)
            source = str(key_file)
        else:
            path = data_dir / "signing_key.pem"
            data = read_or_create_secret(path, _new_private_key_pem)
            source = str(path)
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"the signing key from {source} is not a PEM private key") from exc
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError(f"the signing key from {source} must be an Ed25519 private key")
        return cls(key, retired)

    def public_key_b64(self) -> str:
        """The raw 32-byte public key, base64."""
        raw = self.public_key.public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        return base64.b64encode(raw).decode("ascii")

    def public_key_b64_of(self, key_id: str) -> str | None:
        """The raw public key (base64) of this key or a retired one; None if unknown."""
        public = self.public_key if key_id == self.key_id else self.retired.get(key_id)
        if public is None:
            return None
        raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return base64.b64encode(raw).decode("ascii")

    def public_key_pem(self) -> str:
        """The public key as PEM (SubjectPublicKeyInfo)."""
        return self.public_key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode("ascii")

    def sign(self, position: int, hash_hex: str, signed_at: datetime | None = None) -> SignedDigest:
        """Sign a ledger position and its hash now (or at `signed_at`)."""
        at = format_timestamp(signed_at or datetime.now(UTC))
        signature = self._private.sign(digest_message(position, hash_hex, at))
        return SignedDigest(
            position=position,
            hash=hash_hex.lower(),
            signed_at=at,
            key_id=self.key_id,
            signature=base64.b64encode(signature).decode("ascii"),
        )

    def sign_message(self, message: bytes) -> str:
        """An Ed25519 signature of `message` (base64) by the current key."""
        return base64.b64encode(self._private.sign(message)).decode("ascii")

    def check_message(self, key_id: str, message: bytes, signature: str) -> bool:
        """Whether `signature` (base64) over `message` is by key `key_id` (current or retired)."""
        public = self.public_key if key_id == self.key_id else self.retired.get(key_id)
        if public is None:
            return False
        try:
            public.verify(base64.b64decode(signature, validate=True), message)
        except (InvalidSignature, ValueError):
            return False
        return True

    def check(self, digest: SignedDigest) -> bool:
        """Whether the digest was signed by this key or a retired one (and not altered)."""
        public = self.public_key if digest.key_id == self.key_id else None
        public = public or self.retired.get(digest.key_id)
        if public is None:
            return False
        try:
            public.verify(base64.b64decode(digest.signature, validate=True), digest.message())
        except (InvalidSignature, ValueError):
            return False
        return True
