"""An app over its real lifespan, an HTTP client, and one account per role."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest
from fastapi import FastAPI

from ragledger.api.app import create_app
from ragledger.core.settings import Settings
from ragledger.events.envelope import EventMetadata
from ragledger.services import users as users_service

PASSWORD = "correct horse battery staple"


@dataclass
class Account:
    """A test account with its password and (once logged in) its token."""

    id: object
    email: str
    role: str
    password: str
    token: str | None = None

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[FastAPI]:
    application = create_app(settings, run_subscribers=False)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app, client=("203.0.113.7", 50000)),
        base_url="http://testserver",
    ) as http:
        yield http


async def make_account(db, email: str, role: str, groups: tuple[str, ...] = ()) -> Account:
    async with db.sessionmaker() as session, session.begin():
        view = await users_service.create_user(
            session,
            email=email,
            password=PASSWORD,
            role=role,
            groups=groups,
            password_min_length=12,
            actor_id=None,
            via="cli",
            metadata=EventMetadata(actor_id="cli:test", actor_role="operator"),
        )
    return Account(view.id, view.email, view.role, PASSWORD)


async def login(client: httpx.AsyncClient, account: Account) -> str:
    response = await client.post(
        "/api/v1/auth/jwt/login", data={"username": account.email, "password": account.password}
    )
    assert response.status_code == 200, response.text
    account.token = response.json()["access_token"]
    return account.token


@pytest.fixture
async def accounts(db, client: httpx.AsyncClient) -> dict[str, Account]:
    """employee, auditor, admin and a deactivated employee, all logged in."""
    made = {
        "employee": await make_account(db, "emma@example.com", "employee", ("hr",)),
        "auditor": await make_account(db, "aude@example.com", "auditor"),
        "admin": await make_account(db, "adam@example.com", "admin"),
        "deactivated": await make_account(db, "dora@example.com", "employee"),
    }
    for account in made.values():
        await login(client, account)
    async with db.sessionmaker() as session, session.begin():
        await users_service.update_user(
            session,
            user_id=made["deactivated"].id,
            is_active=False,
            actor_id=made["admin"].id,
            metadata=EventMetadata(),
        )
    return made
