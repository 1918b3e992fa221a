"""Magic links end to end: HTTP request, the mail on a real SMTP server, login with its token."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import timedelta

import httpx
import jwt
import pyotp
import pytest

from accounts_magic_link import MagicLinkService
from accounts_server import AccountsServer, SealingKeys
from accounts_server.http import create_app

from ..conftest import Clock, MakeServer
from ..helpers import SMTPServer, register


@pytest.fixture
async def magic(
    make_server: MakeServer, smtp: SMTPServer, password_service: object
) -> AsyncIterator[tuple[AccountsServer, httpx.AsyncClient]]:
    smtp.checkpoint()
    service = MagicLinkService(mailer=smtp.mailer(), site_url="https://app.example")
    server = make_server(services=[password_service, service])
    transport = httpx.ASGITransport(app=create_app(server))
    async with httpx.AsyncClient(transport=transport, base_url="http://t/accounts") as api:
        yield server, api


async def link_token(smtp: SMTPServer, to: str, count: int = 1) -> str:
    message = await smtp.wait_for(to, count)
    assert message["Subject"] == "Your login link"
    match = re.search(r"https://app\.example/magic-link/(\S+)", message.as_string())
    assert match
    return match.group(1)


async def test_link_logs_in_once_and_verifies_the_address(
    magic: tuple[AccountsServer, httpx.AsyncClient], smtp: SMTPServer
) -> None:
    server, api = magic
    account = await register(server)
    response = await api.post("/magiclink/requestMagicLinkEmail", json={"email": account.email})
    assert response.status_code == 200 and response.json() is None
    token = await link_token(smtp, account.email)

    login = await api.post("/magicLink/authenticate", json={"token": token})
    assert login.status_code == 200, login.text
    body = login.json()
    assert body["user"]["id"] == account.user_id
    assert body["user"]["emails"][0]["verified"] is True
    headers = {"Authorization": f"Bearer {body['tokens']['accessToken']}"}
    assert (await api.get("/user", headers=headers)).json()["id"] == account.user_id

    again = await api.post("/magicLink/authenticate", json={"token": token})
    assert again.status_code == 401 and again.json()["code"] == "InvalidToken"


async def test_expired_link(
    magic: tuple[AccountsServer, httpx.AsyncClient], smtp: SMTPServer, clock: Clock
) -> None:
    server, api = magic
    account = await register(server)
    await api.post("/magiclink/requestMagicLinkEmail", json={"email": account.email})
    token = await link_token(smtp, account.email)
    clock.advance(timedelta(minutes=15, seconds=1))
    response = await api.post("/magicLink/authenticate", json={"token": token})
    assert response.status_code == 401 and response.json()["code"] == "MagicLinkExpired"


async def test_unknown_address_same_answer_no_mail(
    magic: tuple[AccountsServer, httpx.AsyncClient], smtp: SMTPServer
) -> None:
    server, api = magic
    account = await register(server)
    known = await api.post("/magiclink/requestMagicLinkEmail", json={"email": account.email})
    unknown = await api.post("/magiclink/requestMagicLinkEmail", json={"email": "no@example.com"})
    assert (known.status_code, known.content) == (unknown.status_code, unknown.content)
    await server.drain()  # every mail the requests started has gone out
    await link_token(smtp, account.email)
    assert smtp.messages("no@example.com") == []


@pytest.mark.parametrize("value", [{"$ne": None}, {"$gt": ""}, ["a"], 1, None, "x" * 500])
async def test_bad_tokens_and_addresses_are_refused_cleanly(
    magic: tuple[AccountsServer, httpx.AsyncClient], value: object
) -> None:
    _, api = magic
    response = await api.post("/magicLink/authenticate", json={"token": value})
    assert response.status_code == 401
    response = await api.post("/magiclink/requestMagicLinkEmail", json={"email": value})
    assert response.status_code == 422


async def test_a_second_factor_is_asked_for_after_the_link(
    make_server: MakeServer, smtp: SMTPServer, password_service: object, clock: Clock
) -> None:
    """The mailbox is one factor: a link does not skip a user's TOTP (or passkey)."""
    smtp.checkpoint()
    service = MagicLinkService(mailer=smtp.mailer(), site_url="https://app.example")
    server = make_server(services=[password_service, service], sealing=SealingKeys.generate())
    account = await register(server)
    user = await server.find_user_by_id(account.user_id)
    assert user is not None
    secret = await server.two_factor.new_secret()
    totp = pyotp.TOTP(secret.base32)
    await server.two_factor.enable(user, {"base32": secret.base32}, totp.at(clock.now.timestamp()))
    clock.advance(timedelta(seconds=30))
    transport = httpx.ASGITransport(app=create_app(server))
    async with httpx.AsyncClient(transport=transport, base_url="http://t/accounts") as api:
        await api.post("/magiclink/requestMagicLinkEmail", json={"email": account.email})
        token = await link_token(smtp, account.email)
        first = await api.post("/magicLink/authenticate", json={"token": token})
        assert first.status_code == 401 and first.json()["code"] == "TwoFactorCodeRequired"
        assert first.json()["factors"] == ["totp"]
        code = totp.at(clock.now.timestamp())
        body = {"mfaToken": first.json()["mfaToken"], "code": code}
        done = await api.post("/mfa/authenticate", json=body)
        assert done.status_code == 200, done.text
        access = jwt.decode(
            done.json()["tokens"]["accessToken"], options={"verify_signature": False}
        )
        assert set(access["amr"]) == {"mfa", "otp"}
