"""The signed-in user's own account."""

from __future__ import annotations

from fastapi import APIRouter

from ragledger.api.deps import CurrentUser
from ragledger.api.errors import error_responses
from ragledger.schemas.users import UserPublic

router = APIRouter(prefix="/users", tags=["users"], responses=error_responses(401))


@router.get("/me", response_model=UserPublic)
async def read_me(user: CurrentUser) -> UserPublic:
    """Your account, role and groups (any signed-in user)."""
    return UserPublic.model_validate(user)
