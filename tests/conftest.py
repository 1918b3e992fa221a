"""Shared fixtures: real stores on real files, a real password service, the real ASGI app."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from accounts_password import PasswordService
from accounts_server import AccountsServer, KeyRing, RateLimits, Store, TokenConfig
from accounts_server.http import create_app
from accounts_server.stores import SQLiteStore

from .helpers import (
    NodeServer,
    PostgresServer,
    SMTPServer,
    WireServer,
    create_database,
    drop_database,
    load_key,
    node_unavailable,
    postgres_unavailable,
    wire_server_unavailable,
)

#: Set (by .ci/run) to make any skipped test fail the run: a clone of this repository alone
#: must bring up every server its tests need, so a skip means one of them did not come up.
NO_SKIPS = "ACCOUNTS_TESTS_NO_SKIPS"
_skipped: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped and os.environ.get(NO_SKIPS):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        _skipped.append(f"{report.nodeid}: {reason}")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _skipped:
        lines = "\n  ".join(_skipped)
        print(f"\n{NO_SKIPS} is set, and {len(_skipped)} test(s) were skipped:\n  {lines}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(scope="session")
def mongodb_url() -> Iterator[str]:
    """A real MongoDB-wire server over TCP: `MONGODB_URL` (a real mongod) if set, else the
    repository's wire server (tests/servers/mongodb-wire) on a free port, stopped by its PID."""
    if url := os.environ.get("MONGODB_URL"):
        yield url
        return
    skip_reason = wire_server_unavailable()
    if skip_reason:
        pytest.skip(f"MongoDB tests skipped: MONGODB_URL is not set and {skip_reason}")
    server = WireServer.start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(scope="session")
def postgres_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real PostgreSQL server over TCP: `POSTGRES_URL` if set, else a throwaway cluster
    (helpers.PostgresServer: its own data dir and free port, never a system cluster on 5432),
    stopped by its PID."""
    if url := os.environ.get("POSTGRES_URL"):
        yield url
        return
    skip_reason = postgres_unavailable()
    if skip_reason:
        pytest.skip(f"PostgreSQL tests skipped: POSTGRES_URL is not set and {skip_reason}")
    server = PostgresServer.start(tmp_path_factory.mktemp("postgres"))
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def postgres_database(postgres_url: str) -> Iterator[str]:
    """A new, empty database for one test on `postgres_url`'s server (POSTGRES_URL's too): its
    URL. Dropped afterwards, so a shared server does not fill up with test databases."""
    name = f"test_{uuid.uuid4().hex}"
    yield create_database(postgres_url, name)
    drop_database(postgres_url, name)


@pytest.fixture(scope="session")
def smtp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SMTPServer]:
    """A real SMTP server (aiosmtpd) on loopback for the whole run, stopped by its PID."""
    server = SMTPServer.start(tmp_path_factory.mktemp("mail") / "maildir")
    yield server
    server.stop()


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    """SQLite on a real file: what the server, HTTP and service tests run on. Store behaviour
    is tested on every store by tests/stores/ (its conftest widens this fixture)."""
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
            # Limits are tested on their own; elsewhere they would only couple tests.
            "rate_limits": RateLimits(enabled=False),
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


#: The OpenID provider's one client: this server, at the ASGI tests' host.
CLIENT_ID, CLIENT_SECRET = "accounts-test", "a-test-client-secret-for-oidc"
CALLBACK = "http://testserver/accounts/oauth/test/callback"


@dataclass
class Provider:
    issuer: str
    pid: int


@pytest.fixture(scope="session")
def provider() -> Iterator[Provider]:
    """tests/servers/oidc-provider on a free port for the whole run, stopped by its PID."""
    if reason := node_unavailable("OIDC provider"):
        pytest.skip(f"OIDC tests skipped: {reason}")
    server = NodeServer.launch("oidc-provider", "provider.mjs", CLIENT_ID, CLIENT_SECRET, CALLBACK)
    try:
        yield Provider(f"http://127.0.0.1:{server.port}", server.pid)
    finally:
        server.stop()
