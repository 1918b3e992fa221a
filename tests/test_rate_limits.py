"""Rate limits and lockout (DESIGN §10) through HTTP, with the server's injected clock: no
sleeps. Counters live in the store, so two servers on one store share them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import pytest

from accounts_password import PasswordHasher, PasswordService
from accounts_server import AccountsServer, ConnectionInfo, Limit, Overloaded, RateLimits
from accounts_server.http import create_app

from .conftest import Clock, MakeServer
from .helpers import PASSWORD, SMTPServer


def client(server: AccountsServer, ip: str = "198.51.100.9") -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=create_app(server), client=(ip, 1))
    return httpx.AsyncClient(transport=transport, base_url="http://t/accounts")


@pytest.fixture
async def limited(
    make_server: MakeServer,
) -> AsyncIterator[tuple[AccountsServer, httpx.AsyncClient]]:
    server = make_server(rate_limits=RateLimits())
    async with client(server) as api:
        yield server, api


async def register(api: httpx.AsyncClient, name: str) -> None:
    user = {"username": name, "email": f"{name}@example.com", "password": PASSWORD}
    assert (await api.post("/password/register", json={"user": user})).status_code == 200


def login(name: str, password: str) -> dict[str, Any]:
    return {"user": {"username": name}, "password": password}


def assert_limited(response: httpx.Response) -> int:
    assert response.status_code == 429, response.text
    assert response.json()["code"] == "TooManyRequests"
    return int(response.headers["retry-after"])


async def test_failed_logins_lock_the_identifier_then_back_off(
    make_server: MakeServer, clock: Clock
) -> None:
    limits = RateLimits(login_per_ip=Limit(10_000, timedelta(minutes=1)))
    server = make_server(rate_limits=limits)
    # Align to a window start, so "the window ends" is the same for every run.
    clock.now = clock.now.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    async with client(server) as api:
        await register(api, "lou")
        for _ in range(10):
            response = await api.post("/password/authenticate", json=login("lou", "wrong guess!"))
            assert response.status_code == 401
        # Locked: even the right password is refused, without revealing whether it was right.
        retry = assert_limited(
            await api.post("/password/authenticate", json=login("lou", PASSWORD))
        )
        assert 0 < retry <= 15 * 60 + 1
        # The same for an identifier that does not exist: the limit does not enumerate.
        for _ in range(10):
            await api.post("/password/authenticate", json=login("ghost", "wrong guess!"))
        assert_limited(await api.post("/password/authenticate", json=login("ghost", PASSWORD)))

        clock.advance(timedelta(minutes=15))
        for _ in range(10):  # the second tier (20 an hour) fills up
            await api.post("/password/authenticate", json=login("lou", "wrong guess!"))
        clock.advance(timedelta(minutes=15))
        retry = assert_limited(
            await api.post("/password/authenticate", json=login("lou", PASSWORD))
        )
        assert retry > 15 * 60  # backed off to the hour
        clock.advance(timedelta(minutes=31))
        assert (
            await api.post("/password/authenticate", json=login("lou", PASSWORD))
        ).status_code == 200


async def test_success_clears_the_failure_count(make_server: MakeServer) -> None:
    server = make_server(rate_limits=RateLimits())
    async with client(server) as api:
        await register(api, "sue")
        for _ in range(2):
            for _ in range(9):
                await api.post("/password/authenticate", json=login("sue", "wrong guess!"))
            ok = await api.post("/password/authenticate", json=login("sue", PASSWORD))
            assert ok.status_code == 200


async def test_login_per_ip(limited: tuple[AccountsServer, httpx.AsyncClient]) -> None:
    server, api = limited
    await register(api, "ivy")
    for _ in range(20):
        assert (
            await api.post("/password/authenticate", json=login("ivy", PASSWORD))
        ).status_code == 200
    assert_limited(await api.post("/password/authenticate", json=login("ivy", PASSWORD)))
    async with client(server, ip="198.51.100.10") as other:  # another address is unaffected
        assert (
            await other.post("/password/authenticate", json=login("ivy", PASSWORD))
        ).status_code == 200


async def test_register_per_ip(limited: tuple[AccountsServer, httpx.AsyncClient]) -> None:
    _, api = limited
    for i in range(10):
        await register(api, f"reg{i}")
    user = {"username": "reg10", "password": PASSWORD}
    assert_limited(await api.post("/password/register", json={"user": user}))


async def test_token_submissions_per_ip(limited: tuple[AccountsServer, httpx.AsyncClient]) -> None:
    _, api = limited
    for _ in range(10):
        response = await api.post("/password/verifyEmail", json={"token": "guess"})
        assert response.status_code == 401
    assert_limited(await api.post("/password/verifyEmail", json={"token": "guess"}))
    body = {"token": "guess", "newPassword": "a brand new passphrase"}
    assert_limited(await api.post("/password/resetPassword", json=body))


async def test_refresh_per_session(limited: tuple[AccountsServer, httpx.AsyncClient]) -> None:
    _, api = limited
    await register(api, "rae")
    tokens = (await api.post("/password/authenticate", json=login("rae", PASSWORD))).json()[
        "tokens"
    ]
    for _ in range(30):
        response = await api.post("/refreshTokens", json=tokens)
        assert response.status_code == 200
        tokens = response.json()["tokens"]
    assert_limited(await api.post("/refreshTokens", json=tokens))


async def test_mails_per_account_are_capped_silently(
    make_server: MakeServer, smtp: SMTPServer
) -> None:
    smtp.checkpoint()
    server = make_server(rate_limits=RateLimits(), services=[PasswordService(mailer=smtp.mailer())])
    async with client(server) as api:
        await register(api, "meg")
        for _ in range(5):
            response = await api.post(
                "/password/sendResetPasswordEmail", json={"email": "meg@example.com"}
            )
            assert response.status_code == 200 and response.json() is None
        await server.drain()  # every mail the requests started has gone out
        await smtp.wait_for("meg@example.com", count=3)
        assert len(smtp.messages("meg@example.com")) == 3


async def test_workers_sharing_a_store_share_the_counters(make_server: MakeServer) -> None:
    first, second = make_server(rate_limits=RateLimits()), make_server(rate_limits=RateLimits())
    async with client(first) as a, client(second) as b:
        await register(a, "wes")
        for i in range(20):
            api = a if i % 2 else b
            await api.post("/password/authenticate", json=login("wes", PASSWORD))
        assert_limited(await a.post("/password/authenticate", json=login("wes", PASSWORD)))
        assert_limited(await b.post("/password/authenticate", json=login("wes", PASSWORD)))


async def test_hashing_queue_wait_is_bounded(make_server: MakeServer) -> None:
    hasher = PasswordHasher(max_concurrent=1, max_wait=0.005)
    service = PasswordService(hasher=hasher)
    server = make_server(services=[service])
    await service.create_user(server.context, username="hal", password=PASSWORD)
    params = {"user": "hal", "password": PASSWORD}
    results = await asyncio.gather(
        *(server.login_with_service("password", params, ConnectionInfo()) for _ in range(6)),
        return_exceptions=True,
    )
    assert any(isinstance(r, Overloaded) for r in results)
    assert not any(isinstance(r, Exception) and not isinstance(r, Overloaded) for r in results)
    async with client(server) as api:
        responses = await asyncio.gather(
            *(api.post("/password/authenticate", json=params) for _ in range(6))
        )
        overloaded = [r for r in responses if r.status_code == 503]
        assert overloaded and overloaded[0].json()["code"] == "Overloaded"
        assert overloaded[0].headers["retry-after"].isdigit()


async def test_failures_by_one_identifier_lock_the_account_by_every_other(
    make_server: MakeServer,
) -> None:
    """Issue 14 #4: ten failures by email also lock the username and the id; an unknown
    identifier still has a budget of its own (nothing about it is revealed)."""
    server = make_server(rate_limits=RateLimits(login_per_ip=Limit(10_000, timedelta(minutes=1))))
    async with client(server) as api:
        await register(api, "max")
        user = await server.find_user_by_username("max")
        assert user is not None
        for _ in range(10):
            wrong = {"user": {"email": "MAX@example.com"}, "password": "wrong guess!"}
            assert (await api.post("/password/authenticate", json=wrong)).status_code == 401
        for identity in ({"username": "max"}, {"id": user.id}, "max@example.com"):
            right = {"user": identity, "password": PASSWORD}
            assert_limited(await api.post("/password/authenticate", json=right))
        ghost = {"user": {"username": "ghost"}, "password": "wrong guess!"}
        assert (await api.post("/password/authenticate", json=ghost)).status_code == 401
        # So does re-checking the password before deleting the account.
        other = await make_server().login_with_user(user, ConnectionInfo())
        response = await api.request(
            "DELETE",
            "/user",
            json={"password": PASSWORD},
            headers={"Authorization": f"Bearer {other.tokens.access_token}"},
        )
        assert_limited(response)
