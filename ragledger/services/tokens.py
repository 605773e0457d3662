"""Access tokens: HS256 JWTs with a token id, and the one check that admits a token.

`TokenService.authenticate` is the only place a token is accepted: the API's bearer
dependency uses it, and so must any other transport of the same token (a browser
cookie), so that every rule below holds for all of them. A token is refused when:
- its signature, audience or expiry is wrong (`decode`);
- its account is unknown or deactivated;
- it was logged out (a `revoked_tokens` row, written with the `UserLoggedOut` event);
- it was issued before the account's `tokens_valid_after` (a password reset or a
  deactivation since then).
The account row and the revocation are read in one query, from PostgreSQL only: the
answer never depends on Redis.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

import jwt
from sqlalchemy import exists, select
from sqlalchemy.ext.asyncio import AsyncSession

from ragledger.models.users import USER_COLUMNS, RevokedTokenRow, User
from ragledger.services.errors import AuthenticationError
from ragledger.services.token_revocation import revoke_token

# fastapi-users' own audience, so its JWTStrategy and ours read the same tokens.
AUDIENCE = "fastapi-users:auth"
ALGORITHM = "HS256"


@dataclass(frozen=True, slots=True)
class TokenClaims:
    """What a valid token says."""

    user_id: uuid.UUID
    token_id: str
    expires_at: float
    # Unix seconds with sub-second precision: a login in the same second as a
    # password reset must still be told apart from the tokens the reset ended.
    issued_at: float


class TokenService:
    """Issues, checks and revokes access tokens."""

    def __init__(self, *, secret: str, lifetime_s: int) -> None:
        self._secret = secret
        self.lifetime_s = lifetime_s

    def issue(self, user_id: uuid.UUID) -> tuple[str, TokenClaims]:
        """A new token for `user_id` and its claims."""
        now = time.time()
        claims = TokenClaims(
            user_id=user_id,
            token_id=uuid.uuid4().hex,
            expires_at=int(now) + self.lifetime_s,
            issued_at=now,
        )
        token = jwt.encode(
            {
                "sub": str(user_id),
                "aud": AUDIENCE,
                "jti": claims.token_id,
                # NumericDate may carry a fraction (RFC 7519, section 2).
                "iat": round(now, 6),
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
                # Ours always carry one; a token without is as old as can be.
                issued_at=float(data.get("iat", 0)),
            )
        except jwt.ExpiredSignatureError:
            raise AuthenticationError("token expired", reason="token_expired") from None
        except jwt.InvalidSignatureError:
            raise AuthenticationError("invalid token", reason="token_tampered") from None
        except (jwt.InvalidTokenError, ValueError, TypeError):
            raise AuthenticationError("invalid token", reason="token_malformed") from None

    async def authenticate(self, session: AsyncSession, token: str) -> tuple[User, TokenClaims]:
        """The active account a valid, unrevoked, current token belongs to; else
        AuthenticationError (with the reason the denial is recorded under)."""
        claims = self.decode(token)
        revoked = exists().where(RevokedTokenRow.token_id == claims.token_id)
        row = (
            await session.execute(
                select(User, revoked.label("revoked")).where(USER_COLUMNS.id == claims.user_id)
            )
        ).first()
        if row is None:
            raise AuthenticationError(
                "invalid token", reason="unknown_user", user_id=claims.user_id
            )
        user, is_revoked = row
        if is_revoked:
            raise AuthenticationError("token revoked", reason="token_revoked", user_id=user.id)
        if not user.is_active:
            raise AuthenticationError(
                "account is deactivated", reason="deactivated", user_id=user.id
            )
        valid_after = user.tokens_valid_after
        if valid_after is not None and claims.issued_at < valid_after.timestamp():
            raise AuthenticationError(
                "token no longer valid: the password was reset or the account was "
                "deactivated after it was issued; log in again",
                reason="token_superseded",
                user_id=user.id,
            )
        return user, claims

    async def revoke(self, session: AsyncSession, claims: TokenClaims) -> None:
        """Refuse this token once the caller's transaction commits, until it expires."""
        await revoke_token(
            session,
            token_id=claims.token_id,
            user_id=claims.user_id,
            expires_at=claims.expires_at,
        )
