"""HTTP shapes of verification, signed digests and the public key."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

# PostgreSQL's bigint, the type of ledger positions: a larger one would fail in the
# database (a 500) instead of in validation.
MAX_POSITION = 2**63 - 1


class HeadPublic(BaseModel):
    """A ledger position and its hash."""

    position: int
    hash: str


class VerificationPublic(BaseModel):
    """The outcome of recomputing the chain."""

    valid: bool
    checked: int
    full: bool
    from_position: int
    head: HeadPublic
    first_invalid_position: int | None = Field(
        description="Where the chain itself breaks; None when it reads back consistent"
    )
    reason: str | None
    digest_position: int | None = Field(
        default=None,
        description=(
            "The earliest signed digest that disagrees with the ledger: proof that the "
            "ledger up to it was rewritten after it was signed"
        ),
    )
    last_matching_digest_position: int | None = Field(
        default=None,
        description="The newest signed digest below digest_position that still matches",
    )
    digests_compared: int = Field(
        default=0, description="Stored signed digests compared with the ledger"
    )


class DigestPublic(BaseModel):
    """A signed digest; keep it to prove later that the ledger up to `position` is intact."""

    model_config = ConfigDict(extra="forbid")

    position: int = Field(ge=0, le=MAX_POSITION)
    hash: str = Field(pattern=r"^[0-9a-f]{64}$")
    signed_at: str = Field(max_length=40)
    key_id: str = Field(max_length=64)
    signature: str = Field(max_length=200)


class SignedDigestPublic(BaseModel):
    """A fresh digest with the key that signed it."""

    digest: DigestPublic
    public_key: str
    public_key_pem: str


class PublicKeyPublic(BaseModel):
    """The server's digest-signing key."""

    key_id: str
    algorithm: str = "Ed25519"
    public_key: str = Field(description="Raw 32-byte key, base64")
    public_key_pem: str


class DigestCheckPublic(BaseModel):
    """Whether a kept digest still holds against today's ledger."""

    signature_valid: bool
    ledger_matches: bool
    valid: bool
    detail: str
