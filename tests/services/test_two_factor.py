"""Two-factor authentication over HTTP, as the accounts-js client speaks it: TOTP codes from
pyotp against the injected clock (a time step passes by advancing it), a real SQLite file, the
real ASGI app. Store races are judged on every store by tests/stores/test_two_factor.py."""

from __future__ import annotations

import asyncio
import base64
import re
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import jwt
import pyotp
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from accounts_password import PasswordService
from accounts_server import (
    AccountsServer,
    HookEvent,
    InvalidRequest,
    KeyRing,
    RateLimits,
    SealingKeys,
    TokenConfig,
    TwoFactorCodeMismatch,
    TwoFactorCodeRequired,
    TwoFactorConfig,
    User,
)
from accounts_server.http import create_app
from accounts_server.stores import SQLiteStore

from ..conftest import Clock, MakeServer
from ..helpers import PASSWORD, SMTPServer, load_key, register

STEP = timedelta(seconds=30)
RECOVERY = re.compile(r"[a-z2-9]{4}-[a-z2-9]{4}-[a-z2-9]{4}")


@dataclass
class Site:
    server: AccountsServer
    api: httpx.AsyncClient
    clock: Clock
    events: list[HookEvent] = field(default_factory=list)

    async def post(self, path: str, body: Any = None, token: str | None = None) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return await self.api.post(f"/accounts{path}", json=body or {}, headers=headers)

    async def register(self, name: str = "ann") -> str:
        user = {"username": name, "email": f"{name}@example.com", "password": PASSWORD}
        response = await self.post("/password/register", {"user": user})
        assert response.status_code == 200, response.text
        return str(response.json()["userId"])

    async def login(
        self, name: str = "ann", code: str | None = None, password: str = PASSWORD
    ) -> httpx.Response:
        body: dict[str, Any] = {"user": {"username": name}, "password": password}
        if code is not None:
            body["code"] = code
        return await self.post("/password/authenticate", body)

    async def access(self, name: str = "ann", code: str | None = None) -> str:
        response = await self.login(name, code)
        assert response.status_code == 200, response.text
        return str(response.json()["tokens"]["accessToken"])

    async def secret(self, token: str | None = None) -> dict[str, str]:
        response = await self.post("/password/twoFactorSecret", token=token)
        assert response.status_code == 200, response.text
        secret: dict[str, str] = response.json()["secret"]
        return secret

    def code(self, secret: dict[str, str], steps: int = 0) -> str:
        at = self.clock.now.timestamp()
        return pyotp.TOTP(secret["base32"]).at(at, counter_offset=steps)

    async def enable(self, token: str) -> tuple[dict[str, str], list[str]]:
        """Two-factor on for the token's user; the secret and the recovery codes."""
        secret = await self.secret()
        response = await self.post(
            "/password/twoFactorSet", {"secret": secret, "code": self.code(secret)}, token
        )
        assert response.status_code == 200, response.text
        self.clock.advance(STEP)  # the enabling code's step is spent
        return secret, response.json()["recoveryCodes"]


async def _site(server: AccountsServer, clock: Clock) -> AsyncIterator[Site]:
    transport = httpx.ASGITransport(app=create_app(server), client=("203.0.113.7", 4242))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as api:
        site = Site(server, api, clock)
        for name in ("two_factor_enabled", "two_factor_disabled", "recovery_code_used"):
            server.on(name, site.events.append)
        yield site


@pytest.fixture
async def site(make_server: MakeServer, clock: Clock) -> AsyncIterator[Site]:
    async for site in _site(make_server(sealing=SealingKeys.generate()), clock):
        yield site


def claims(token: str) -> dict[str, Any]:
    decoded: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    return decoded


def assert_error(
    response: httpx.Response, status: int, code: str, message: str, *, session: bool = False
) -> None:
    """`session`: the request was a login, so a `TwoFactorCodeRequired` says how to finish it."""
    assert response.status_code == status, response.text
    body = response.json()
    assert {"code": body.pop("code"), "message": body.pop("message")} == {
        "code": code,
        "message": message,
    }
    if code == "TwoFactorCodeRequired" and session:  # how to finish the login (mfa.py)
        assert set(body) == {"mfaToken", "factors", "challenges"}
        assert body["factors"] == ["totp"]
    else:
        assert body == {}


class TestSecret:
    async def test_without_a_token_in_the_accounts_js_shape(self, site: Site) -> None:
        secret = await site.secret()
        assert set(secret) == {"ascii", "hex", "base32", "otpauth_url"}
        key = secret["ascii"].encode()
        assert base64.b32decode(secret["base32"]) == key
        assert bytes.fromhex(secret["hex"]) == key
        assert len(key) * 5.95 >= 160  # alphanumeric characters, ~5.95 bits each
        assert secret["otpauth_url"] == (
            f"otpauth://totp/accounts-server:account?secret={secret['base32']}"
            "&issuer=accounts-server"
        )
        assert (await site.secret())["base32"] != secret["base32"]

    async def test_with_a_token_the_app_shows_the_account(self, site: Site) -> None:
        await site.register()
        secret = await site.secret(await site.access())
        assert secret["otpauth_url"].startswith("otpauth://totp/accounts-server:ann?")

    async def test_a_server_without_sealing_keys_says_so(self, make_server: MakeServer) -> None:
        async for site in _site(make_server(), Clock()):
            response = await site.post("/password/twoFactorSecret")
            assert response.status_code == 503
            assert response.json()["code"] == "TwoFactorUnavailable"


class TestLogin:
    async def test_set_login_and_unset_with_accounts_js_messages(self, site: Site) -> None:
        user_id = await site.register()
        token = await site.access()
        secret, codes = await site.enable(token)
        assert len(codes) == 10 and len(set(codes)) == 10
        assert all(RECOVERY.fullmatch(code) for code in codes)

        response = await site.login()
        assert_error(response, 401, "TwoFactorCodeRequired", "2FA code required", session=True)
        assert_error(
            await site.login(code="000000" if site.code(secret) != "000000" else "111111"),
            401,
            "TwoFactorCodeMismatch",
            "2FA code didn't match",
        )
        for code in (None, site.code(secret)):  # a wrong password never hears of 2FA
            response = await site.login(code=code, password="not the password")
            assert response.json()["code"] == "InvalidCredentials"

        response = await site.login(code=site.code(secret))
        assert response.status_code == 200, response.text
        access = response.json()["tokens"]["accessToken"]
        assert claims(access)["amr"] == ["mfa", "otp", "pwd"]
        assert claims(access)["auth_time"] == int(site.clock.now.timestamp())
        assert claims(token)["amr"] == ["pwd"]

        status = await site.api.get("/accounts/password/twoFactorStatus", headers=_bearer(access))
        assert status.json()["enabled"] is True and status.json()["recoveryCodesLeft"] == 10

        site.clock.advance(STEP)
        response = await site.post("/password/twoFactorUnset", {"code": site.code(secret)}, access)
        assert response.status_code == 200 and response.json() == {}
        response = await site.login()
        assert response.status_code == 200
        assert claims(response.json()["tokens"]["accessToken"])["amr"] == ["pwd"]
        assert [(e.name, e.user and e.user.id) for e in site.events] == [
            ("two_factor_enabled", user_id),
            ("two_factor_disabled", user_id),
        ]

    async def test_a_code_is_accepted_once(self, site: Site) -> None:
        await site.register()
        secret, _ = await site.enable(await site.access())
        code = site.code(secret)
        assert (await site.login(code=code)).status_code == 200
        assert_error(
            await site.login(code=code), 401, "TwoFactorCodeMismatch", "2FA code didn't match"
        )
        # Nor an earlier step still inside the drift window once a later one was used.
        site.clock.advance(STEP)
        assert (await site.login(code=site.code(secret))).status_code == 200
        assert (await site.login(code=site.code(secret, -1))).status_code == 401

    async def test_drift_window(self, site: Site) -> None:
        await site.register()
        secret, _ = await site.enable(await site.access())
        site.clock.advance(STEP * 4)
        assert (await site.login(code=site.code(secret, -2))).status_code == 401
        assert (await site.login(code=site.code(secret, -1))).status_code == 200
        assert (await site.login(code=site.code(secret, 1))).status_code == 200
        assert (await site.login(code=site.code(secret, 2))).status_code == 401

    async def test_no_drift_when_configured(self, make_server: MakeServer, clock: Clock) -> None:
        server = make_server(
            sealing=SealingKeys.generate(), two_factor=TwoFactorConfig(drift_steps=0)
        )
        async for site in _site(server, clock):
            await site.register()
            secret, _ = await site.enable(await site.access())
            assert (await site.login(code=site.code(secret, 1))).status_code == 401
            assert (await site.login(code=site.code(secret))).status_code == 200

    async def test_concurrent_logins_with_one_code_one_wins(self, site: Site) -> None:
        await site.register()
        secret, _ = await site.enable(await site.access())
        code = site.code(secret)
        responses = await asyncio.gather(*(site.login(code=code) for _ in range(8)))
        assert sorted(r.status_code for r in responses) == [200] + [401] * 7

    async def test_verify_authentication_applies_the_same_rule(self, site: Site) -> None:
        await site.register()
        secret, _ = await site.enable(await site.access())
        body: dict[str, Any] = {"user": {"username": "ann"}, "password": PASSWORD}
        response = await site.post("/password/verifyAuthentication", body)
        assert_error(response, 401, "TwoFactorCodeRequired", "2FA code required")
        response = await site.post(
            "/password/verifyAuthentication", {**body, "code": site.code(secret)}
        )
        assert response.status_code == 200 and response.json() is True

    async def test_a_code_of_the_wrong_type_is_a_bad_request(self, site: Site) -> None:
        await site.register()
        await site.enable(await site.access())
        for code in (123456, ["123456"], "1" * 65):
            body = {"user": {"username": "ann"}, "password": PASSWORD, "code": code}
            response = await site.post("/password/authenticate", body)
            assert response.status_code == 400, code


class TestSetAndUnset:
    async def test_already_set(self, site: Site) -> None:
        await site.register()
        token = await site.access()
        await site.enable(token)
        secret = await site.secret()
        response = await site.post(
            "/password/twoFactorSet", {"secret": secret, "code": site.code(secret)}, token
        )
        assert_error(response, 409, "TwoFactorAlreadySet", "2FA already set")

    async def test_a_wrong_code_keeps_the_secret_usable(self, site: Site) -> None:
        await site.register()
        token = await site.access()
        secret = await site.secret()
        wrong = site.code(secret, 5)
        response = await site.post(
            "/password/twoFactorSet", {"secret": secret, "code": wrong}, token
        )
        assert_error(response, 401, "TwoFactorCodeMismatch", "2FA code didn't match")
        response = await site.post(
            "/password/twoFactorSet", {"secret": secret, "code": site.code(secret)}, token
        )
        assert response.status_code == 200

    async def test_only_a_secret_this_server_issued_and_only_once(self, site: Site) -> None:
        await site.register("ann")
        await site.register("bob")
        ann, bob = await site.access("ann"), await site.access("bob")
        planted = {"base32": pyotp.random_base32()}
        response = await site.post(
            "/password/twoFactorSet", {"secret": planted, "code": site.code(planted)}, ann
        )
        assert response.status_code == 422
        assert response.json()["code"] == "TwoFactorSecretRefused"

        secret = await site.secret()
        body = {"secret": secret, "code": site.code(secret)}
        assert (await site.post("/password/twoFactorSet", body, ann)).status_code == 200
        assert (await site.post("/password/twoFactorSet", body, bob)).status_code == 422

    async def test_a_secret_expires(self, site: Site) -> None:
        await site.register()
        token = await site.access()
        secret = await site.secret()
        site.clock.advance(timedelta(minutes=10, seconds=1))
        response = await site.post(
            "/password/twoFactorSet", {"secret": secret, "code": site.code(secret)}, token
        )
        assert response.json()["code"] == "TwoFactorSecretRefused"

    async def test_unset_needs_it_set_and_a_good_code(self, site: Site) -> None:
        await site.register()
        token = await site.access()
        response = await site.post("/password/twoFactorUnset", {"code": "123456"}, token)
        assert_error(response, 409, "TwoFactorNotSet", "2FA not set")
        secret, _ = await site.enable(token)
        wrong = site.code(secret, 5)
        response = await site.post("/password/twoFactorUnset", {"code": wrong}, token)
        assert_error(response, 401, "TwoFactorCodeMismatch", "2FA code didn't match")
        response = await site.post("/password/twoFactorUnset", {}, token)
        assert_error(response, 401, "TwoFactorCodeRequired", "2FA code required")

    async def test_set_and_unset_need_a_token(self, site: Site) -> None:
        for path in ("/password/twoFactorSet", "/password/twoFactorUnset"):
            assert (await site.post(path, {"code": "123456"})).status_code == 401

    async def test_enabling_ends_the_other_sessions_not_this_one(self, site: Site) -> None:
        await site.register()
        before, this = await site.access(), await site.access()
        await site.enable(this)
        assert (await site.api.get("/accounts/user", headers=_bearer(before))).json() is None
        user = await site.api.get("/accounts/user", headers=_bearer(this))
        assert user.json()["username"] == "ann"
        # This session signed in with the password alone, and its tokens keep saying so.
        assert claims(this)["amr"] == ["pwd"]

    async def test_the_secret_is_sealed_at_rest(self, site: Site, tmp_path: Path) -> None:
        await site.register()
        secret, codes = await site.enable(await site.access())
        stored = b"".join(p.read_bytes() for p in sorted(tmp_path.glob("accounts.db*")))  # noqa: ASYNC240 (a test reading the file it checks)
        for value in (secret["base32"], secret["ascii"], secret["hex"], *codes):
            assert value.encode() not in stored
        for event in site.events:
            assert secret["base32"] not in repr(event)


class TestRecoveryCodes:
    async def test_each_once_in_place_of_a_code(self, site: Site) -> None:
        user_id = await site.register()
        _, codes = await site.enable(await site.access())
        response = await site.login(code=codes[0].upper())  # case and dashes do not matter
        assert response.status_code == 200
        access = response.json()["tokens"]["accessToken"]
        assert claims(access)["amr"] == ["mfa", "otp", "pwd"]
        assert (await site.login(code=codes[0])).status_code == 401
        status = await site.api.get("/accounts/password/twoFactorStatus", headers=_bearer(access))
        assert status.json()["recoveryCodesLeft"] == 9
        assert [e.name for e in site.events][-1] == "recovery_code_used"
        assert site.events[-1].user is not None and site.events[-1].user.id == user_id

    async def test_regenerating_ends_the_old_set(self, site: Site) -> None:
        await site.register()
        token = await site.access()
        secret, old = await site.enable(token)
        response = await site.post("/password/twoFactorRecoveryCodes", {"code": old[0]}, token)
        assert response.status_code == 401  # a recovery code cannot mint more
        response = await site.post(
            "/password/twoFactorRecoveryCodes", {"code": site.code(secret)}, token
        )
        new = response.json()["recoveryCodes"]
        assert len(new) == 10 and not set(new) & set(old)
        assert (await site.login(code=old[1])).status_code == 401
        assert (await site.login(code=new[0])).status_code == 200

    async def test_a_recovery_code_turns_two_factor_off(self, site: Site) -> None:
        await site.register()
        token = await site.access()
        _, codes = await site.enable(token)
        response = await site.post("/password/twoFactorUnset", {"code": codes[3]}, token)
        assert response.status_code == 200
        assert (await site.login()).status_code == 200


class TestAttemptLimit:
    async def test_wrong_codes_lock_the_account_whatever_the_password(
        self, make_server: MakeServer, clock: Clock
    ) -> None:
        server = make_server(sealing=SealingKeys.generate(), rate_limits=RateLimits())
        async for site in _site(server, clock):
            await site.register()
            secret, _ = await site.enable(await site.access())
            wrong = site.code(secret, 10)
            for _ in range(5):
                assert (await site.login(code=wrong)).status_code == 401
            for password in (PASSWORD, "not the password"):
                response = await site.login(code=site.code(secret), password=password)
                assert response.status_code == 429
                assert int(response.headers["Retry-After"]) > 0
            clock.advance(timedelta(minutes=15))
            assert (await site.login(code=site.code(secret))).status_code == 200


class TestNotificationMail:
    async def test_enable_and_disable_are_mailed(
        self, make_server: MakeServer, clock: Clock, smtp: SMTPServer
    ) -> None:
        service = PasswordService(mailer=smtp.mailer())
        server = make_server(services=[service], sealing=SealingKeys.generate())
        async for site in _site(server, clock):
            smtp.checkpoint()
            await site.register("mia")
            token = await site.access("mia")
            secret, _ = await site.enable(token)
            mail = await smtp.wait_for("mia@example.com")
            assert mail["Subject"] == "Two-factor authentication is on"
            await site.post("/password/twoFactorUnset", {"code": site.code(secret)}, token)
            await smtp.wait_for("mia@example.com", count=2)
            mails = smtp.messages("mia@example.com")  # Maildir keys do not sort by arrival
            assert sorted(m["Subject"] for m in mails) == [
                "Two-factor authentication is off",
                "Two-factor authentication is on",
            ]
            assert all(secret["base32"] not in m.as_string() for m in mails)


class TestAdminReset:
    async def test_an_admin_removes_a_lost_second_factor(
        self, make_server: MakeServer, clock: Clock
    ) -> None:
        server = make_server(
            sealing=SealingKeys.generate(),
            authorize_admin=lambda user, action: user.username == "root",
        )
        async for site in _site(server, clock):
            ann_id = await site.register("ann")
            await site.register("root")
            await site.enable(await site.access("ann"))
            root = await site.access("root")
            response = await site.post(f"/admin/users/{ann_id}/resetTwoFactor", token=root)
            assert response.status_code == 200 and response.json() == {"removed": True}
            assert (await site.login("ann")).status_code == 200
            response = await site.post(f"/admin/users/{ann_id}/resetTwoFactor", token=root)
            assert response.json() == {"removed": False}
            ann = await site.access("ann")
            response = await site.post(f"/admin/users/{ann_id}/resetTwoFactor", token=ann)
            assert response.status_code == 403


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def enrolled(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Any, AccountsServer, User]]:
    """A server with one enrolled user, on a loop of its own (hypothesis runs sync tests)."""
    loop = asyncio.new_event_loop()
    clock = Clock()
    server = AccountsServer(
        store=SQLiteStore(tmp_path_factory.mktemp("codes") / "accounts.db"),
        tokens=TokenConfig(keys=KeyRing([load_key("ed25519")])),
        services=[PasswordService()],
        sealing=SealingKeys.generate(),
        rate_limits=RateLimits(enabled=False),
        clock=clock,
    )

    async def enrol() -> User:
        account = await register(server)
        user = await server.find_user_by_id(account.user_id)
        assert user is not None
        secret = await server.two_factor.new_secret()
        code = pyotp.TOTP(secret.base32).at(clock.now.timestamp())
        await server.two_factor.enable(user, {"base32": secret.base32}, code)
        return user

    user = loop.run_until_complete(enrol())
    yield loop, server, user
    loop.run_until_complete(server.close())
    loop.close()


@settings(max_examples=300, deadline=None)
@example(code="\u0661\u0662\u0663\u0664\u0665\u0666")  # Arabic-Indic digits: str.isdigit()
@example(code="\u00b2" * 6)
@given(code=st.one_of(st.text(max_size=80), st.integers(), st.none(), st.lists(st.text())))
def test_any_code_is_refused_cleanly(
    enrolled: tuple[Any, AccountsServer, User], code: object
) -> None:
    """Whatever arrives as a code (Unicode digits such as `٣`, huge strings, other JSON types)
    is a clear refusal, never an exception of another kind (a 500) and never an acceptance."""
    loop, server, user = enrolled
    with pytest.raises((InvalidRequest, TwoFactorCodeMismatch, TwoFactorCodeRequired)):
        loop.run_until_complete(server.two_factor.verify(user, code))


async def test_an_impersonator_cannot_change_the_users_second_factor(
    make_server: MakeServer, clock: Clock
) -> None:
    server = make_server(
        sealing=SealingKeys.generate(),
        impersonation_authorize=lambda actor, target: actor.username == "root",
    )
    async for site in _site(server, clock):
        ann = await site.register("ann")
        await site.register("root")
        root = await site.access("root")
        acting = await site.post(
            "/impersonate", {"accessToken": root, "impersonated": {"username": "ann"}}
        )
        assert acting.status_code == 200 and acting.json()["authorized"], acting.text
        as_ann = acting.json()["tokens"]["accessToken"]
        secret = await site.secret()
        for path, body in (
            ("/password/twoFactorSet", {"secret": secret, "code": site.code(secret)}),
            ("/password/twoFactorUnset", {"code": "123456"}),
            ("/password/twoFactorRecoveryCodes", {"code": "123456"}),
        ):
            refused = await site.post(path, body, as_ann)
            assert refused.status_code == 403, (path, refused.text)
            assert refused.json()["code"] == "NotWhileImpersonating"
        assert not (await server.two_factor.status(ann)).enabled
