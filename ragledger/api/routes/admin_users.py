"""Account management for admins: list, create, change role and groups, deactivate."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Query, Request, status
from fastapi_pagination.ext.sqlalchemy import apaginate

from ragledger.api.deps import NO_NUL, AdminUser, SessionDep, SettingsDep
from ragledger.api.errors import BODY_ERRORS, error_responses
from ragledger.api.request_context import event_metadata
from ragledger.models.users import Role
from ragledger.schemas.pagination import Page
from ragledger.schemas.users import GroupPublic, UserCreate, UserPublic, UserUpdate
from ragledger.services import users as users_service

router = APIRouter(prefix="/admin", tags=["admin"], responses=error_responses(401, 403))


@router.get("/users", response_model=Page[UserPublic], responses=error_responses(422))
async def list_users(
    session: SessionDep,
    _admin: AdminUser,
    role: Role | None = None,
    group: str | None = Query(default=None, max_length=64, pattern=NO_NUL),
    active: bool | None = None,
    email: str | None = Query(
        default=None, max_length=320, pattern=NO_NUL, description="Substring match."
    ),
) -> Page[UserPublic]:
    """List accounts, filtered by role, group, active state or email (admin)."""
    query = users_service.accounts_query(
        role=role.value if role is not None else None, group=group, active=active, email=email
    )
    return await apaginate(session, query)


@router.post(
    "/users",
    response_model=UserPublic,
    status_code=status.HTTP_201_CREATED,
    responses=error_responses(*BODY_ERRORS, described={409: "The email is taken"}),
)
async def create_user(
    request: Request,
    body: UserCreate,
    session: SessionDep,
    settings: SettingsDep,
    admin: AdminUser,
) -> UserPublic:
    """Create an account with a role and groups (admin)."""
    view = await users_service.create_user(
        session,
        email=body.email,
        password=body.password.get_secret_value(),
        role=body.role.value,
        groups=body.groups,
        password_min_length=settings.password_min_length,
        actor_id=admin.id,
        via="admin",
        metadata=event_metadata(request, admin),
    )
    return UserPublic.model_validate(view)


@router.get("/users/{user_id}", response_model=UserPublic, responses=error_responses(404, 422))
async def get_user(user_id: uuid.UUID, session: SessionDep, _admin: AdminUser) -> UserPublic:
    """One account (admin)."""
    return UserPublic.model_validate(await users_service.get_user(session, user_id))


@router.patch(
    "/users/{user_id}",
    response_model=UserPublic,
    responses=error_responses(
        *BODY_ERRORS, 404, described={409: "Would demote or deactivate the last active admin"}
    ),
)
async def update_user(
    request: Request,
    user_id: uuid.UUID,
    body: UserUpdate,
    session: SessionDep,
    admin: AdminUser,
) -> UserPublic:
    """Change role, groups or active state (admin)."""
    view = await users_service.update_user(
        session,
        user_id=user_id,
        role=body.role.value if body.role else None,
        groups=body.groups,
        is_active=body.is_active,
        actor_id=admin.id,
        metadata=event_metadata(request, admin),
    )
    return UserPublic.model_validate(view)


@router.post(
    "/users/{user_id}/deactivate",
    response_model=UserPublic,
    responses=error_responses(404, 422, described={409: "The last active admin"}),
)
async def deactivate_user(
    request: Request, user_id: uuid.UUID, session: SessionDep, admin: AdminUser
) -> UserPublic:
    """Deactivate an account: its tokens stop working at once (admin)."""
    view = await users_service.update_user(
        session,
        user_id=user_id,
        is_active=False,
        actor_id=admin.id,
        metadata=event_metadata(request, admin),
    )
    return UserPublic.model_validate(view)


@router.get("/groups", response_model=list[GroupPublic])
async def list_groups(session: SessionDep, _admin: AdminUser) -> list[GroupPublic]:
    """Groups in use, with their number of active members (admin)."""
    return [
        GroupPublic(name=name, members=count)
        for name, count in await users_service.list_groups(session)
    ]
