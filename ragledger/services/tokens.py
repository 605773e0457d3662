"""Access tokens: HS256 JWTs with a token id, checked against the revocation list."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

import jwt

from ragledger.services.errors import AuthenticationError
from ragledger.services.token_revocation import TokenRevocations

# fastapi-users' own audience, so its JWTStrategy and ours read the same tokens.
AUDIENCE = "fastapi-users:auth"
ALGORITHM = "HS256"


@dataclass(frozen=True, slots=True)
class TokenClaims:
    """What a valid token says."""

    user_id: uuid.UUID
    token_id: str
    expires_at: float


class TokenService:
    """Issues, inspects and revokes access tokens."""

    def __init__(self, *, secret: str, lifetime_s: int, revocations: TokenRevocations) -> None:
        self._secret = secret
        self.lifetime_s = lifetime_s
        self.revocations = revocations

    def issue(self, user_id: uuid.UUID) -> tuple[str, TokenClaims]:
        """A new token for `user_id` and its claims."""
        now = int(time.time())
        claims = TokenClaims(
            user_id=user_id, token_id=uuid.uuid4().hex, expires_at=now + self.lifetime_s
        )
        token = jwt.encode(
            {
                "sub": str(user_id),
                "aud": AUDIENCE,
                "jti": claims.token_id,
                "iat": now,
                "exp": int(claims.expires_at),
            },
            self._secret,
            algorithm=ALGORITHM,
        )
        return token, claims

    def decode(self, token: str) -> TokenClaims:
        """Check signature, audience and expiry (not revocation); AuthenticationError if bad."""
        try:
            data = jwt.decode(
                token,
                self._secret,
                algorithms=[ALGORITHM],
                audience=AUDIENCE,
                options={"require": ["exp", "sub", "jti", "aud"]},
            )
            return TokenClaims(
                user_id=uuid.UUID(str(data["sub"])),
                token_id=str(data["jti"]),
                expires_at=float(data["exp"]),
            )
        except jwt.ExpiredSignatureError:
            raise AuthenticationError("token expired", reason="token_expired") from None
        except jwt.InvalidSignatureError:
            raise AuthenticationError("invalid token", reason="token_tampered") from None
        except (jwt.InvalidTokenError, ValueError):
            raise AuthenticationError("invalid token", reason="token_malformed") from None

    async def inspect(self, token: str) -> TokenClaims:
        """Decode and refuse revoked tokens."""
        claims = self.decode(token)
        if await self.revocations.is_revoked(claims.token_id):
            raise AuthenticationError(
                "token revoked", reason="token_revoked", user_id=claims.user_id
            )
        return claims

    async def revoke(self, claims: TokenClaims) -> None:
        """Refuse this token from now until it expires."""
        await self.revocations.revoke(claims.token_id, claims.expires_at)
