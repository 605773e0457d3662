"""Admin users: list and filter, create, change role and groups, deactivate, reactivate."""

from __future__ import annotations

import uuid
from typing import Annotated, Any
from urllib.parse import parse_qsl, urlencode

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.datastructures import QueryParams

from ragledger.api.deps import AdminUser, SessionDep, SettingsDep
from ragledger.api.request_context import event_metadata
from ragledger.models.users import Role
from ragledger.services import users as users_service
from ragledger.services.errors import DomainError
from ragledger.web.paging import PAGE_SIZE, Pager, back_query, page_number, query_prefix
from ragledger.web.rendering import render

router = APIRouter()
ROLES = tuple(r.value for r in Role)
# The list's own query parameters: what a form's `back` may carry to the redirect.
LIST_PARAMETERS = ("email", "role", "page")


def _groups(text: str) -> list[str]:
    return [g.strip() for g in text.replace(";", ",").split(",") if g.strip()]


async def _page(
    request: Request,
    session: SessionDep,
    *,
    email: str = "",
    role: str = "",
    page: int = 1,
    error: str | None = None,
    status_code: int = 200,
    created: dict[str, Any] | None = None,
    notice: str | None = None,
) -> HTMLResponse:
    number = page_number(page)
    listed = QueryParams({k: v for k, v in (("email", email), ("role", role)) if v})
    query = users_service.accounts_query(
        role=role if role in ROLES else None, email=email.strip() or None
    )
    rows = list(await session.scalars(query.offset((number - 1) * PAGE_SIZE).limit(PAGE_SIZE + 1)))
    return render(
        request,
        "users.html",
        {
            "rows": rows[:PAGE_SIZE],
            "pager": Pager(number, number > 1, len(rows) > PAGE_SIZE),
            "roles": ROLES,
            "filter": {"email": email, "role": role},
            # From the filters, not the request: a refused POST shows the same list.
            "query_prefix": query_prefix(listed),
            "current_query": urlencode([*listed.multi_items(), ("page", str(number))]),
            "error": error,
            "notice": notice,
            "created": created or {"email": "", "role": "employee", "groups": ""},
        },
        status_code=status_code,
        title="Users",
    )


@router.get("/admin/users", response_class=HTMLResponse)
async def users_page(
    request: Request,
    session: SessionDep,
    _admin: AdminUser,
    email: str = "",
    role: str = "",
    page: int = 1,
) -> HTMLResponse:
    """Accounts, oldest first, filtered by email (substring) and role (admin)."""
    return await _page(request, session, email=email, role=role, page=page)


@router.post("/admin/users", response_model=None)
async def create_user(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    admin: AdminUser,
    email: Annotated[str, Form(max_length=320)] = "",
    password: Annotated[str, Form(max_length=1024)] = "",
    role: Annotated[str, Form(max_length=20)] = "employee",
    groups: Annotated[str, Form(max_length=2000)] = "",
) -> Response:
    """Create an account, as POST /api/v1/admin/users (admin)."""
    try:
        view = await users_service.create_user(
            session,
            email=email,
            password=password,
            role=role,
            groups=_groups(groups),
            password_min_length=settings.password_min_length,
            actor_id=admin.id,
            via="admin",
            metadata=event_metadata(request, admin),
        )
    except DomainError as exc:
        await session.rollback()
        return await _page(
            request,
            session,
            error=exc.detail,
            status_code=exc.status_code,
            created={"email": email, "role": role, "groups": groups},
        )
    return await _page(request, session, notice=f"Created {view.email} ({view.role}).")


@router.post("/admin/users/{user_id}", response_model=None)
async def update_user(
    request: Request,
    user_id: uuid.UUID,
    session: SessionDep,
    admin: AdminUser,
    role: Annotated[str | None, Form(max_length=20)] = None,
    groups: Annotated[str | None, Form(max_length=2000)] = None,
    active: Annotated[str | None, Form(max_length=5)] = None,
    back: Annotated[str, Form(max_length=2000)] = "",
) -> Response:
    """Change role, groups or active state, as PATCH /api/v1/admin/users/{id} (admin).

    Back to the list as it was filtered and paged (`back`, the list's query string).
    """
    kept = back_query(back, LIST_PARAMETERS)
    try:
        await users_service.update_user(
            session,
            user_id=user_id,
            role=role or None,
            groups=_groups(groups) if groups is not None else None,
            is_active={"true": True, "false": False}.get(active or ""),
            actor_id=admin.id,
            metadata=event_metadata(request, admin),
        )
    except DomainError as exc:
        await session.rollback()
        listed = dict(parse_qsl(kept))
        return await _page(
            request,
            session,
            email=listed.get("email", ""),
            role=listed.get("role", ""),
            page=int(listed["page"]) if listed.get("page", "").isdigit() else 1,
            error=exc.detail,
            status_code=exc.status_code,
        )
    return RedirectResponse(f"/admin/users?{kept}" if kept else "/admin/users", status_code=303)
