"""Shared fixtures: real stores on real files, a real password service, the real ASGI app."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from accounts_password import PasswordService
from accounts_server import AccountsServer, KeyRing, Store, TokenConfig
from accounts_server.http import create_app
from accounts_server.stores import SQLiteStore

from .helpers import load_key


@pytest.fixture(params=["sqlite"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    """Every store the contract covers; later stores join the params."""
    opened = SQLiteStore(tmp_path / "accounts.db")
    yield opened
    await opened.close()


@pytest.fixture
def password_service() -> PasswordService:
    return PasswordService()


class Clock:
    """A settable clock handed to the server, so expiry is tested without sleeping."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


@pytest.fixture
def clock() -> Clock:
    return Clock()


MakeServer = Callable[..., AccountsServer]


@pytest.fixture
def make_server(store: Store, password_service: PasswordService, clock: Clock) -> MakeServer:
    def make(**overrides: Any) -> AccountsServer:
        options: dict[str, Any] = {
            "store": store,
            "tokens": TokenConfig(keys=KeyRing([load_key("ed25519")])),
            "services": [password_service],
            "clock": clock,
        }
        options.update(overrides)
        return AccountsServer(**options)

    return make


@pytest.fixture
def server(make_server: MakeServer) -> AccountsServer:
    return make_server()


@pytest.fixture
async def client(server: AccountsServer) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(server), client=("203.0.113.7", 4242))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        yield c
