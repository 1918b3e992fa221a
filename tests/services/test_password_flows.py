"""The password mail flows end to end: real HTTP through the app, a real SMTP server, the link
read out of the delivered mail."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import bcrypt
import httpx
import pytest

from accounts_password import CannotRemoveLastEmail, PasswordService
from accounts_password.policy import common_passwords
from accounts_server import (
    AccountsServer,
    ConfigurationError,
    ConnectionInfo,
    HookEvent,
    MailUnavailable,
    SMTPMailer,
    Store,
)
from accounts_server.http import create_app

from ..conftest import Clock, MakeServer
from ..helpers import PASSWORD, SMTPServer, free_port

NEW_PASSWORD = "a brand new passphrase"


@dataclass
class Site:
    server: AccountsServer
    service: PasswordService
    api: httpx.AsyncClient
    smtp: SMTPServer
    events: list[HookEvent]

    async def post(
        self, path: str, body: dict[str, Any], token: str | None = None
    ) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return await self.api.post(path, json=body, headers=headers)

    async def register(self, name: str) -> str:
        user = {"username": name, "email": f"{name}@example.com", "password": PASSWORD}
        response = await self.post("/password/register", {"user": user})
        assert response.status_code == 200, response.text
        return str(response.json()["userId"])

    async def login(self, name: str, password: str = PASSWORD) -> httpx.Response:
        body = {"user": {"username": name}, "password": password}
        return await self.post("/password/authenticate", body)

    async def access(self, name: str, password: str = PASSWORD) -> str:
        response = await self.login(name, password)
        assert response.status_code == 200, response.text
        return str(response.json()["tokens"]["accessToken"])

    async def user(self, token: str) -> Any:
        return (await self.api.get("/user", headers={"Authorization": f"Bearer {token}"})).json()


@pytest.fixture
async def site(make_server: MakeServer, smtp: SMTPServer) -> AsyncIterator[Site]:
    smtp.checkpoint()
    service = PasswordService(mailer=smtp.mailer())
    server = make_server(services=[service])
    events: list[HookEvent] = []
    for name in ("email_verified", "reset_password_success", "change_password_success"):
        server.on(name, events.append)
    transport = httpx.ASGITransport(app=create_app(server), client=("198.51.100.4", 1))
    async with httpx.AsyncClient(transport=transport, base_url="http://t/accounts") as api:
        yield Site(server, service, api, smtp, events)


def assert_error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.json()["code"] == code


class TestVerification:
    async def test_mail_link_verifies_the_address_once(self, site: Site) -> None:
        await site.register("vera")
        response = await site.post("/password/sendVerificationEmail", {"email": "VERA@example.com"})
        assert response.status_code == 200 and response.json() is None
        message = await site.smtp.wait_for("vera@example.com")
        assert message["Subject"] == "Verify your email"
        token = site.smtp.link_token(message)
        assert (await site.post("/password/verifyEmail", {"token": token})).json() is None
        access = await site.access("vera")
        assert (await site.user(access))["emails"] == [
            {"address": "vera@example.com", "verified": True}
        ]
        assert [e.name for e in site.events] == ["email_verified"]
        assert_error(
            await site.post("/password/verifyEmail", {"token": token}), 401, "InvalidToken"
        )

    async def test_expired_link(self, site: Site, clock: Clock) -> None:
        await site.register("vito")
        await site.post("/password/sendVerificationEmail", {"email": "vito@example.com"})
        token = site.smtp.link_token(await site.smtp.wait_for("vito@example.com"))
        clock.advance(timedelta(hours=24, seconds=1))
        response = await site.post("/password/verifyEmail", {"token": token})
        assert_error(response, 401, "VerifyEmailLinkExpired")


class TestReset:
    async def test_reset_sets_the_password_and_ends_every_session(self, site: Site) -> None:
        await site.register("rita")
        before = await site.access("rita")
        await site.post("/password/sendResetPasswordEmail", {"email": "rita@example.com"})
        message = await site.smtp.wait_for("rita@example.com")
        token = site.smtp.link_token(message)
        assert "reset-password" in message.as_string()

        weak = await site.post(
            "/password/resetPassword", {"token": token, "newPassword": "password123"}
        )
        assert_error(weak, 422, "InvalidPassword")  # and the link is still good:
        body = {"token": token, "newPassword": NEW_PASSWORD}
        assert (await site.post("/password/resetPassword", body)).json() is None

        assert await site.user(before) is None
        assert_error(await site.login("rita"), 401, "InvalidCredentials")
        assert await site.user(await site.access("rita", NEW_PASSWORD))
        assert_error(await site.post("/password/resetPassword", body), 401, "InvalidToken")
        assert "reset_password_success" in [e.name for e in site.events]
        # Following the link proved the address.
        me = await site.user(await site.access("rita", NEW_PASSWORD))
        assert me["emails"][0]["verified"] is True

    async def test_concurrent_resets_with_one_link_one_wins(self, site: Site) -> None:
        await site.register("rudy")
        await site.post("/password/sendResetPasswordEmail", {"email": "rudy@example.com"})
        token = site.smtp.link_token(await site.smtp.wait_for("rudy@example.com"))
        body = {"token": token, "newPassword": NEW_PASSWORD}
        responses = await asyncio.gather(
            *(site.post("/password/resetPassword", body) for _ in range(5))
        )
        assert sorted(r.status_code for r in responses) == [200, 401, 401, 401, 401]

    async def test_expired_link(self, site: Site, clock: Clock) -> None:
        await site.register("rex")
        await site.post("/password/sendResetPasswordEmail", {"email": "rex@example.com"})
        token = site.smtp.link_token(await site.smtp.wait_for("rex@example.com"))
        clock.advance(timedelta(minutes=61))
        body = {"token": token, "newPassword": NEW_PASSWORD}
        assert_error(
            await site.post("/password/resetPassword", body), 401, "ResetPasswordLinkExpired"
        )

    async def test_unknown_address_answers_the_same_and_sends_nothing(self, site: Site) -> None:
        await site.register("rosa")
        known = await site.post("/password/sendResetPasswordEmail", {"email": "rosa@example.com"})
        unknown = await site.post("/password/sendResetPasswordEmail", {"email": "nope@example.com"})
        resend = await site.post("/password/sendVerificationEmail", {"email": "nope@example.com"})
        assert (known.status_code, known.content) == (unknown.status_code, unknown.content)
        assert (resend.status_code, resend.content) == (known.status_code, known.content)
        await site.server.drain()  # every mail the requests started has gone out
        await site.smtp.wait_for("rosa@example.com")
        assert site.smtp.messages("nope@example.com") == []


class TestLookAlikeAddresses:
    async def test_every_spelling_of_one_address_reaches_one_account(self, site: Site) -> None:
        """Register, login and reset look addresses up canonically (`canonical_email`); the mail
        goes to the address as it was registered."""
        user = {"username": "lia", "email": "Lia@Example.com", "password": PASSWORD}
        assert (await site.post("/password/register", {"user": user})).status_code == 200
        twin = {"username": "lia2", "email": "ｌｉａ@ＥＸＡＭＰＬＥ.com", "password": PASSWORD}
        assert_error(
            await site.post("/password/register", {"user": twin}), 409, "EmailAlreadyExists"
        )
        login = {"user": {"email": "ＬＩＡ@example.COM"}, "password": PASSWORD}
        response = await site.post("/password/authenticate", login)
        assert response.status_code == 200, response.text
        assert response.json()["user"]["emails"][0]["address"] == "Lia@Example.com"
        body = {"email": "ｌｉａ@example.com"}
        assert (await site.post("/password/sendResetPasswordEmail", body)).status_code == 200
        token = site.smtp.link_token(await site.smtp.wait_for("Lia@Example.com"))
        body = {"token": token, "newPassword": NEW_PASSWORD}
        assert (await site.post("/password/resetPassword", body)).json() is None
        assert await site.access("lia", NEW_PASSWORD)


class TestEnrollment:
    async def test_enrollment_link_sets_a_first_password_and_verifies(self, site: Site) -> None:
        user = await site.server.create_user(username="enzo", emails=["enzo@example.com"])
        await site.service.send_enrollment_email(site.server.context, user.id)
        message = await site.smtp.wait_for("enzo@example.com")
        assert "enroll-account" in message.as_string()
        token = site.smtp.link_token(message)
        body = {"token": token, "newPassword": NEW_PASSWORD}
        assert (await site.post("/password/resetPassword", body)).status_code == 200
        me = await site.user(await site.access("enzo", NEW_PASSWORD))
        assert me["emails"] == [{"address": "enzo@example.com", "verified": True}]


class TestChangePassword:
    async def test_change_keeps_this_session_and_ends_the_others(self, site: Site) -> None:
        await site.register("carl")
        this, other = await site.access("carl"), await site.access("carl")
        await site.post("/password/sendResetPasswordEmail", {"email": "carl@example.com"})
        reset_token = site.smtp.link_token(await site.smtp.wait_for("carl@example.com"))

        wrong = {"oldPassword": "not my password", "newPassword": NEW_PASSWORD}
        assert_error(
            await site.post("/password/changePassword", wrong, this), 401, "InvalidCredentials"
        )
        body = {"oldPassword": PASSWORD, "newPassword": NEW_PASSWORD}
        assert (await site.post("/password/changePassword", body, this)).json() is None

        assert await site.user(this) is not None
        assert await site.user(other) is None
        assert await site.access("carl", NEW_PASSWORD)
        reuse = {"token": reset_token, "newPassword": "another new passphrase"}
        assert_error(await site.post("/password/resetPassword", reuse), 401, "InvalidToken")
        assert "change_password_success" in [e.name for e in site.events]
        assert_error(await site.post("/password/changePassword", body), 401, "InvalidToken")

    async def test_admin_set_password_ends_every_session(self, site: Site) -> None:
        user_id = await site.register("sam")
        session = await site.access("sam")
        await site.service.set_password(site.server.context, user_id, NEW_PASSWORD)
        assert await site.user(session) is None
        assert await site.access("sam", NEW_PASSWORD)


class TestEmails:
    async def test_add_email_and_never_remove_the_last_login(self, site: Site) -> None:
        await site.register("ada")
        access = await site.access("ada")
        added = await site.post("/password/addEmail", {"newEmail": "ada@work.example"}, access)
        assert added.status_code == 200
        assert_error(
            await site.post("/password/addEmail", {"newEmail": "ADA@work.example"}, access),
            409,
            "EmailAlreadyExists",
        )
        assert len((await site.user(access))["emails"]) == 2

        only = await site.server.create_user(emails=["solo@example.com"])
        with pytest.raises(CannotRemoveLastEmail):
            await site.service.remove_email(site.server.context, only.id, "solo@example.com")
        await site.service.add_email(site.server.context, only.id, "solo2@example.com")
        await site.service.remove_email(site.server.context, only.id, "SOLO@example.com")
        found = await site.server.find_user_by_id(only.id)
        assert found is not None and [e.address for e in found.emails] == ["solo2@example.com"]


class TestMailFailures:
    async def test_smtp_down_is_a_clear_error_and_leaves_no_link(
        self, make_server: MakeServer, store: Store
    ) -> None:
        dead = SMTPMailer(sender="a@example.com", port=free_port(), timeout=2)
        service = PasswordService(mailer=dead)
        server = make_server(services=[service])
        user = await service.create_user(
            server.context, username="dan", email="dan@example.com", password=PASSWORD
        )
        with pytest.raises(MailUnavailable):
            await service.send_reset_password_email(server.context, "dan@example.com")
        assert await store.delete_user_tokens(user.id, ["reset"]) == 0

    async def test_no_mailer_refuses_everyone_alike(self, make_server: MakeServer) -> None:
        server = make_server(services=[PasswordService()])
        transport = httpx.ASGITransport(app=create_app(server))
        async with httpx.AsyncClient(transport=transport, base_url="http://t/accounts") as api:
            for email in ("someone@example.com", "nobody@example.com"):
                response = await api.post("/password/sendResetPasswordEmail", json={"email": email})
                assert_error(response, 503, "MailUnavailable")


class TestLegacyHashes:
    @pytest.mark.parametrize("prefix", ["$2a$", "$2b$", "$2y$"])
    async def test_bcrypt_from_accounts_js_verifies_then_upgrades(
        self, make_server: MakeServer, store: Store, prefix: str
    ) -> None:
        server = make_server()
        legacy = prefix + bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()[4:]
        user = await server.create_user(
            username="legacy", services={"password": {"bcrypt": legacy}}
        )
        info = ConnectionInfo()
        wrong = {"user": "legacy", "password": "not the password"}
        from accounts_server import InvalidCredentials

        with pytest.raises(InvalidCredentials):
            await server.login_with_service("password", wrong, info)
        right = {"user": "legacy", "password": PASSWORD}
        await server.login_with_service("password", right, info)
        data = await store.get_service_data(user.id, "password")
        assert data is not None and set(data) == {"argon2"}
        await server.login_with_service("password", right, info)


def test_blocklist_ships_over_ten_thousand_common_passwords() -> None:
    blocklist = common_passwords()
    assert len(blocklist) >= 10_000
    assert {"password123", "iloveyou1", "qwertyuiop"} <= blocklist


@pytest.mark.parametrize("value", [{"$ne": None}, {"$gt": ""}, {"$where": "1"}, ["a"], 7, True])
async def test_operator_values_in_mail_and_token_fields_are_refused(
    site: Site, value: object
) -> None:
    await site.register("ian")
    access = await site.access("ian")
    cases = [
        ("/password/verifyEmail", {"token": value}, None),
        ("/password/resetPassword", {"token": value, "newPassword": NEW_PASSWORD}, None),
        ("/password/resetPassword", {"token": "x", "newPassword": value}, None),
        ("/password/sendResetPasswordEmail", {"email": value}, None),
        ("/password/sendVerificationEmail", {"email": value}, None),
        ("/password/addEmail", {"newEmail": value}, access),
        ("/password/changePassword", {"oldPassword": value, "newPassword": NEW_PASSWORD}, access),
    ]
    for path, body, token in cases:
        response = await site.post(path, body, token)
        assert response.status_code in (400, 401, 422), (path, response.text)
    assert await site.user(access) is not None  # nothing matched, nothing changed


async def test_flow_hook_payloads_carry_no_secret(site: Site, store: Store) -> None:
    user_id = await site.register("hugo")
    access = await site.access("hugo")
    await site.post("/password/sendVerificationEmail", {"email": "hugo@example.com"})
    verify = site.smtp.link_token(await site.smtp.wait_for("hugo@example.com"))
    await site.post("/password/verifyEmail", {"token": verify})
    await site.post("/password/sendResetPasswordEmail", {"email": "hugo@example.com"})
    reset = site.smtp.link_token(await site.smtp.wait_for("hugo@example.com", count=2))
    body = {"oldPassword": PASSWORD, "newPassword": NEW_PASSWORD}
    await site.post("/password/changePassword", body, access)
    data = await store.get_service_data(user_id, "password")
    assert data is not None
    assert [e.name for e in site.events] == ["email_verified", "change_password_success"]
    for event in site.events:
        assert event.user is not None and event.user.id == user_id
        text = repr(event)
        for secret in (PASSWORD, NEW_PASSWORD, verify, reset, str(data["argon2"]), access):
            assert secret not in text


class TestAmbiguousRegistration:
    async def test_a_taken_address_answers_like_a_new_one_and_mails_its_owner(
        self, make_server: MakeServer, smtp: SMTPServer
    ) -> None:
        """Issue 14 #7: the enumeration-safe sign-up (accounts-js `ambiguousErrorMessages`)."""
        smtp.checkpoint()
        service = PasswordService(mailer=smtp.mailer(), ambiguous_registration=True)
        server = make_server(services=[service])
        transport = httpx.ASGITransport(app=create_app(server))
        async with httpx.AsyncClient(transport=transport, base_url="http://t/accounts") as api:
            new = {"user": {"email": "nia@example.com", "password": PASSWORD}}
            first = await api.post("/password/register", json=new)
            taken = {"user": {"email": "NIA@example.com", "password": NEW_PASSWORD}}
            second = await api.post("/password/register", json=taken)
            assert (first.status_code, first.content) == (second.status_code, second.content)
            assert first.json() == {}
            await server.drain()
            await smtp.wait_for("nia@example.com", count=2)  # both went to the stored address
            messages = smtp.messages("nia@example.com")
            subjects = sorted(m["Subject"] for m in messages)
            assert subjects == ["Verify your email", "Your account"], subjects
            exists = next(m for m in messages if m["Subject"] == "Your account")
            # The owner's mail carries a working reset link; the second password did nothing.
            token = smtp.link_token(exists)
            body = {"token": token, "newPassword": "the owner's new passphrase"}
            assert (await api.post("/password/resetPassword", json=body)).status_code == 200
            login = {"user": {"email": "nia@example.com"}, "password": NEW_PASSWORD}
            assert (await api.post("/password/authenticate", json=login)).status_code == 401
        assert len(await server.list_users()) == 1

    def test_it_needs_a_mailer(self) -> None:
        with pytest.raises(ConfigurationError):
            PasswordService(ambiguous_registration=True)
