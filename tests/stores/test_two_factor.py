"""Two-factor decisions that rest on the store's compare-and-set, on every store: a code is
accepted once however many logins race with it, and a recovery code likewise. The HTTP
protocol and its messages are tested once, in tests/services/test_two_factor.py."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pyotp

from accounts_server import (
    AccountsServer,
    ConnectionInfo,
    SealingKeys,
    TwoFactorAlreadySet,
    TwoFactorCodeMismatch,
    User,
)

from ..conftest import Clock, MakeServer
from ..helpers import PASSWORD, register

INFO = ConnectionInfo(ip="192.0.2.1")


async def enabled_user(server: AccountsServer, clock: Clock) -> tuple[User, str, list[str]]:
    account = await register(server)
    user = await server.find_user_by_id(account.user_id)
    assert user is not None
    secret = await server.two_factor.new_secret()
    code = pyotp.TOTP(secret.base32).at(clock.now.timestamp())
    codes = await server.two_factor.enable(user, {"base32": secret.base32}, code)
    clock.advance(timedelta(seconds=30))
    return user, secret.base32, codes


async def login(server: AccountsServer, user: User, code: str) -> bool:
    params = {"user": {"id": user.id}, "password": PASSWORD, "code": code}
    try:
        result = await server.login_with_service("password", params, INFO)
    except TwoFactorCodeMismatch:
        return False
    session = await server.get_session(user.id, result.session_id)
    assert session.amr == ("mfa", "otp", "pwd")
    return True


async def test_one_code_one_login_however_many_race(make_server: MakeServer, clock: Clock) -> None:
    server = make_server(sealing=SealingKeys.generate())
    user, secret, _ = await enabled_user(server, clock)
    code = pyotp.TOTP(secret).at(clock.now.timestamp())
    results = await asyncio.gather(*(login(server, user, code) for _ in range(10)))
    assert sorted(results) == [False] * 9 + [True]
    assert not await login(server, user, code)


async def test_one_recovery_code_one_login(make_server: MakeServer, clock: Clock) -> None:
    server = make_server(sealing=SealingKeys.generate())
    user, _, codes = await enabled_user(server, clock)
    results = await asyncio.gather(*(login(server, user, codes[0]) for _ in range(10)))
    assert sorted(results) == [False] * 9 + [True]
    status = await server.two_factor.status(user.id)
    assert status.enabled and status.recovery_codes_left == 9


async def test_enabling_twice_at_once_keeps_one(make_server: MakeServer, clock: Clock) -> None:
    server = make_server(sealing=SealingKeys.generate())
    account = await register(server)
    user = await server.find_user_by_id(account.user_id)
    assert user is not None
    secrets = [await server.two_factor.new_secret() for _ in range(5)]

    async def enable(base32: str) -> bool:
        code = pyotp.TOTP(base32).at(clock.now.timestamp())
        try:
            await server.two_factor.enable(user, {"base32": base32}, code)
        except TwoFactorAlreadySet:
            return False
        return True

    results = await asyncio.gather(*(enable(s.base32) for s in secrets))
    assert sorted(results) == [False] * 4 + [True]


async def test_deleting_the_user_removes_the_second_factor(
    make_server: MakeServer, clock: Clock
) -> None:
    server = make_server(sealing=SealingKeys.generate())
    user, _, _ = await enabled_user(server, clock)
    await server.delete_user(user.id)
    assert await server.store.list_user_credentials(user.id) == []
