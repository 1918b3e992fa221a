"""Passkeys over HTTP, on SQLite and MongoDB: the software authenticator (tests/authenticator.py,
ES256 and EdDSA keys, `none` and packed attestation) plays the browser against the real ASGI app;
time passes by the injected clock. What only a browser shows is in test_passkeys_browser.py."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import jwt
import pyotp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from accounts_password import PasswordService
from accounts_server import (
    AccountsServer,
    ConfigurationError,
    ConnectionInfo,
    EventName,
    HookEvent,
    RateLimits,
    SealingKeys,
    ServiceSettings,
    Store,
)
from accounts_server.http import create_app
from accounts_server.stores import SQLiteStore
from accounts_webauthn import WebAuthnService, from_settings

from ..authenticator import SoftAuthenticator, b64url, unb64url
from ..conftest import Clock, MakeServer
from ..helpers import PASSWORD

RP_ID = "example.com"
ORIGIN = "https://app.example.com"
INFO = ConnectionInfo(ip="203.0.113.7")
EVENTS: tuple[EventName, ...] = (
    "passkey_registered",
    "passkey_removed",
    "passkey_sign_count_regressed",
    "login_error",
)


@pytest.fixture(params=["sqlite", "mongo"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    """Passkeys are credentials in the store, with unique ids and compare-and-set counters:
    every test here runs on SQLite (a real file) and MongoDB (over TCP)."""
    if request.param == "sqlite":
        opened = SQLiteStore(tmp_path / "accounts.db")
        yield opened
        await opened.close()
        return
    from pymongo import AsyncMongoClient

    from accounts_server.stores.mongo import MongoStore

    client: Any = AsyncMongoClient(
        request.getfixturevalue("mongodb_url"), serverSelectionTimeoutMS=5000
    )
    name = f"test_{uuid.uuid4().hex}"
    yield MongoStore(client[name])
    await client.drop_database(name)
    await client.close()


@dataclass
class Site:
    server: AccountsServer
    api: httpx.AsyncClient
    clock: Clock
    events: list[HookEvent] = field(default_factory=list)

    async def call(
        self, method: str, path: str, body: Any = None, token: str | None = None
    ) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return await self.api.request(
            method,
            f"/accounts{path}",
            json=None if method == "GET" else body or {},
            headers=headers,
        )

    async def post(self, path: str, body: Any = None, token: str | None = None) -> httpx.Response:
        return await self.call("POST", path, body, token)

    async def sign_up(self, name: str = "ann") -> str:
        """A password user, logged in: the access token."""
        user = {"username": name, "email": f"{name}@example.com", "password": PASSWORD}
        assert (await self.post("/password/register", {"user": user})).status_code == 200
        return await self.password_login(name)

    async def password_login(self, name: str = "ann") -> str:
        response = await self.post("/password/authenticate", self.credentials(name))
        assert response.status_code == 200, response.text
        token: str = response.json()["tokens"]["accessToken"]
        return token

    @staticmethod
    def credentials(name: str = "ann") -> dict[str, Any]:
        return {"user": {"email": f"{name}@example.com"}, "password": PASSWORD}

    async def options(self, token: str) -> dict[str, Any]:
        response = await self.post("/webauthn/register/options", {}, token)
        assert response.status_code == 200, response.text
        options: dict[str, Any] = response.json()
        return options

    async def add(
        self, token: str, authenticator: SoftAuthenticator, name: str = "Laptop", **forge: Any
    ) -> httpx.Response:
        response = authenticator.create(await self.options(token), **forge)
        return await self.post(
            "/webauthn/register/verify", {"webauthn": response, "name": name}, token
        )

    async def login_options(self) -> dict[str, Any]:
        response = await self.post("/webauthn/login/options")
        assert response.status_code == 200, response.text
        options: dict[str, Any] = response.json()
        return options

    async def passkey_login(self, authenticator: SoftAuthenticator, **forge: Any) -> httpx.Response:
        assertion = authenticator.get(await self.login_options(), **forge)
        return await self.post("/webauthn/authenticate", {"webauthn": assertion})

    def named(self, name: str) -> list[HookEvent]:
        return [event for event in self.events if event.name == name]


def service(**overrides: Any) -> WebAuthnService:
    options: dict[str, Any] = {
        "rp_id": RP_ID,
        "rp_name": "Example",
        "origins": [ORIGIN, "https://example.com"],
    }
    options.update(overrides)
    return WebAuthnService(**options)


async def _site(server: AccountsServer, clock: Clock) -> AsyncIterator[Site]:
    transport = httpx.ASGITransport(app=create_app(server), client=("203.0.113.7", 4242))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as api:
        site = Site(server, api, clock)
        for name in EVENTS:
            server.on(name, site.events.append)
        yield site


@pytest.fixture
async def site(make_server: MakeServer, clock: Clock) -> AsyncIterator[Site]:
    server = make_server(
        services=[PasswordService(), service()],
        sealing=SealingKeys.generate(),
        impersonation_authorize=lambda actor, target: actor.username == "root",
    )
    async for site in _site(server, clock):
        yield site


@pytest.fixture(params=["ES256", "EdDSA"])
def authenticator(request: pytest.FixtureRequest) -> SoftAuthenticator:
    return SoftAuthenticator(origin=ORIGIN, alg=request.param)


def claims(token: str) -> dict[str, Any]:
    decoded: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    return decoded


def refused(response: httpx.Response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["code"] == code, body
    message: str = body["message"]
    return message


class TestRegister:
    async def test_options_bind_a_fresh_challenge_to_the_user(self, site: Site) -> None:
        token = await site.sign_up()
        options = await site.options(token)
        user = (await site.call("GET", "/user", token=token)).json()
        assert options["rp"] == {"id": RP_ID, "name": "Example"}
        assert unb64url(options["user"]["id"]) == user["id"].encode()
        assert options["user"]["name"] == "ann"
        assert len(unb64url(options["challenge"])) >= 16  # ≥ 128 bits (we send 256)
        assert options["challenge"] != (await site.options(token))["challenge"]
        assert options["authenticatorSelection"] == {
            "residentKey": "preferred",
            "requireResidentKey": False,
            "userVerification": "required",
        }
        assert options["attestation"] == "none"
        assert {p["alg"] for p in options["pubKeyCredParams"]} >= {-7, -8}
        assert options["excludeCredentials"] == []
        assert options["timeout"] == 300_000

    async def test_register_list_and_exclude(
        self, site: Site, authenticator: SoftAuthenticator
    ) -> None:
        token = await site.sign_up()
        response = await site.add(token, authenticator, "  Work laptop  ")
        assert response.status_code == 200, response.text
        passkey = response.json()
        credential = authenticator.credentials[0]
        assert passkey == {
            "id": credential.id_b64,
            "name": "Work laptop",
            "createdAt": int(site.clock.now.timestamp() * 1000),
            "lastUsedAt": None,
            "transports": ["internal"],
            "aaguid": "00000000-0000-0000-0000-000000000000",
            "backupEligible": False,
            "backedUp": False,
        }
        listed = await site.call("GET", "/webauthn/credentials", token=token)
        assert listed.json() == [passkey]
        [event] = site.named("passkey_registered")
        assert event.user is not None and event.session_id is not None
        options = await site.options(token)
        assert [c["id"] for c in options["excludeCredentials"]] == [credential.id_b64]
        with pytest.raises(ValueError, match="excluded"):  # the browser refuses a second one
            authenticator.create(options)

    async def test_backup_flags_are_kept(self, site: Site) -> None:
        token = await site.sign_up()
        synced = SoftAuthenticator(origin=ORIGIN, backup_eligible=True, backed_up=True)
        passkey = (await site.add(token, synced)).json()
        assert passkey["backupEligible"] is True and passkey["backedUp"] is True

    async def test_a_credential_id_belongs_to_one_user(self, site: Site) -> None:
        ann, bob = await site.sign_up("ann"), await site.sign_up("bob")
        first = SoftAuthenticator(origin=ORIGIN)
        assert (await site.add(ann, first)).status_code == 200
        again = SoftAuthenticator(origin=ORIGIN)
        response = await site.add(bob, again, credential_id=first.credentials[0].id)
        refused(response, 409, "CredentialAlreadyExists")

    async def test_challenge_is_single_use_and_bound_to_the_session(self, site: Site) -> None:
        token, other = await site.sign_up(), await site.password_login()
        authenticator = SoftAuthenticator(origin=ORIGIN)
        created = authenticator.create(await site.options(token))
        body = {"webauthn": created}
        response = await site.post("/webauthn/register/verify", body, other)
        refused(response, 422, "PasskeyRegistrationRefused")
        # Refused once, the challenge is spent: not even its own session can use it now.
        response = await site.post("/webauthn/register/verify", body, token)
        assert "used" in refused(response, 422, "PasskeyRegistrationRefused")

    async def test_challenge_expires(self, site: Site) -> None:
        token = await site.sign_up()
        created = SoftAuthenticator(origin=ORIGIN).create(await site.options(token))
        site.clock.advance(timedelta(minutes=5, seconds=1))
        response = await site.post("/webauthn/register/verify", {"webauthn": created}, token)
        refused(response, 422, "PasskeyRegistrationRefused")

    @pytest.mark.parametrize(
        ("forge", "reason"),
        [
            ({"origin": "https://evil.example"}, "origin"),
            ({"origin": "https://example.com.evil.test", "rp_id": RP_ID}, "origin"),
            ({"rp_id": "evil.test", "origin": ORIGIN}, "RP ID"),
            ({"user_verified": False}, "verif"),
            ({"user_present": False}, "present"),
            ({"client_type": "webauthn.get"}, "type"),
        ],
    )
    async def test_refusals(self, site: Site, forge: dict[str, Any], reason: str) -> None:
        token = await site.sign_up()
        response = await site.add(token, SoftAuthenticator(origin=ORIGIN), **forge)
        assert reason in refused(response, 422, "PasskeyRegistrationRefused")
        assert (await site.call("GET", "/webauthn/credentials", token=token)).json() == []

    async def test_a_junk_public_key_is_not_stored(self, site: Site) -> None:
        """py_webauthn does not load the key of a `none` attestation; we do, before storing."""
        token = await site.sign_up()
        authenticator = SoftAuthenticator(origin=ORIGIN)
        created = authenticator.create(await site.options(token))
        attestation = _cbor_replace_key(unb64url(created["response"]["attestationObject"]))
        created["response"]["attestationObject"] = b64url(attestation)
        response = await site.post("/webauthn/register/verify", {"webauthn": created}, token)
        refused(response, 422, "PasskeyRegistrationRefused")

    async def test_a_stale_sign_in_must_sign_in_again(self, site: Site) -> None:
        token = await site.sign_up()
        site.clock.advance(timedelta(minutes=15, seconds=1))
        response = await site.post("/webauthn/register/options", {}, token)
        refused(response, 401, "InsufficientUserAuthentication")

    async def test_not_from_an_impersonation_session(self, site: Site) -> None:
        await site.sign_up("ann")
        root = await site.sign_up("root")
        result = await site.server.impersonate(root, {"username": "ann"}, INFO)
        assert result.tokens is not None
        response = await site.post("/webauthn/register/options", {}, result.tokens.access_token)
        refused(response, 403, "NotWhileImpersonating")

    async def test_bad_names_and_bodies(self, site: Site) -> None:
        token = await site.sign_up()
        created = SoftAuthenticator(origin=ORIGIN).create(await site.options(token))
        for body in (
            {"webauthn": created, "name": ""},
            {"webauthn": created, "name": "x" * 65},
            {"webauthn": created, "name": "a\u0000b"},
            {"webauthn": created, "name": 7},
            {"webauthn": "not an object"},
            {},
        ):
            response = await site.post("/webauthn/register/verify", body, token)
            refused(response, 400, "InvalidRequest")

    async def test_needs_a_token(self, site: Site) -> None:
        for path in ("/webauthn/register/options", "/webauthn/register/verify"):
            refused(await site.post(path, {}), 401, "InvalidToken")


class TestAttestationPolicy:
    async def test_none_refused_when_formats_are_required(
        self, make_server: MakeServer, clock: Clock
    ) -> None:
        strict = service(attestation="direct", attestation_formats=frozenset({"packed"}))
        server = make_server(services=[PasswordService(), strict])
        async for site in _site(server, clock):
            token = await site.sign_up()
            assert (await site.options(token))["attestation"] == "direct"
            response = await site.add(token, SoftAuthenticator(origin=ORIGIN))
            assert "'none'" in refused(response, 422, "PasskeyRegistrationRefused")
            response = await site.add(token, SoftAuthenticator(origin=ORIGIN), fmt="packed")
            assert response.status_code == 200, response.text

    async def test_authenticator_models(self, make_server: MakeServer, clock: Clock) -> None:
        model = uuid.UUID("01020304-0506-0708-0102-030405060708")
        server = make_server(services=[PasswordService(), service(aaguids=frozenset({str(model)}))])
        async for site in _site(server, clock):
            token = await site.sign_up()
            response = await site.add(token, SoftAuthenticator(origin=ORIGIN))
            refused(response, 422, "PasskeyRegistrationRefused")
            allowed = SoftAuthenticator(origin=ORIGIN, aaguid=model.bytes)
            assert (await site.add(token, allowed)).status_code == 200


class TestPasswordless:
    async def test_login_with_a_passkey(self, site: Site, authenticator: SoftAuthenticator) -> None:
        token = await site.sign_up()
        await site.add(token, authenticator)
        options = await site.login_options()
        assert options["rpId"] == RP_ID and options["userVerification"] == "required"
        assert options.get("allowCredentials", []) == []  # discoverable: no username asked
        site.clock.advance(timedelta(minutes=1))
        response = await site.post(
            "/webauthn/authenticate", {"webauthn": authenticator.get(options)}
        )
        assert response.status_code == 200, response.text
        result = response.json()
        assert result["user"]["username"] == "ann"
        access = claims(result["tokens"]["accessToken"])
        assert set(access["amr"]) == {"hwk", "mfa", "user"}
        me = await site.call("GET", "/user", token=result["tokens"]["accessToken"])
        assert me.json()["username"] == "ann"
        [passkey] = (await site.call("GET", "/webauthn/credentials", token=token)).json()
        assert passkey["lastUsedAt"] == int(site.clock.now.timestamp() * 1000)

    async def test_a_replayed_assertion_is_refused(self, site: Site) -> None:
        authenticator = SoftAuthenticator(origin=ORIGIN)
        await site.add(await site.sign_up(), authenticator)
        assertion = authenticator.get(await site.login_options())
        body = {"webauthn": assertion}
        assert (await site.post("/webauthn/authenticate", body)).status_code == 200
        message = refused(await site.post("/webauthn/authenticate", body), 401, "PasskeyRefused")
        assert "challenge" in message

    async def test_a_challenge_serves_one_purpose(self, site: Site) -> None:
        authenticator = SoftAuthenticator(origin=ORIGIN)
        token = await site.sign_up()
        await site.add(token, authenticator)
        registration = (await site.options(token))["challenge"]
        assertion = authenticator.get(await site.login_options(), challenge=registration)
        response = await site.post("/webauthn/authenticate", {"webauthn": assertion})
        refused(response, 401, "PasskeyRefused")

    async def test_a_challenge_expires(self, site: Site) -> None:
        authenticator = SoftAuthenticator(origin=ORIGIN)
        await site.add(await site.sign_up(), authenticator)
        assertion = authenticator.get(await site.login_options())
        site.clock.advance(timedelta(minutes=5, seconds=1))
        response = await site.post("/webauthn/authenticate", {"webauthn": assertion})
        refused(response, 401, "PasskeyRefused")

    @pytest.mark.parametrize(
        ("forge", "reason"),
        [
            ({"origin": "https://evil.example"}, "origin"),
            ({"rp_id": "evil.test", "origin": ORIGIN}, "RP ID"),
            ({"user_verified": False}, "verif"),
            ({"user_present": False}, "present"),
            ({"client_type": "webauthn.create"}, "type"),
            ({"user_handle": b"someone else"}, "user handle"),
        ],
    )
    async def test_refusals(self, site: Site, forge: dict[str, Any], reason: str) -> None:
        authenticator = SoftAuthenticator(origin=ORIGIN)
        await site.add(await site.sign_up(), authenticator)
        forged = authenticator.credentials[0]
        response = await site.passkey_login(authenticator, credential=forged, **forge)
        assert reason in refused(response, 401, "PasskeyRefused")
        assert site.named("login_error")

    async def test_a_forged_signature_and_an_unknown_key(self, site: Site) -> None:
        authenticator = SoftAuthenticator(origin=ORIGIN)
        await site.add(await site.sign_up(), authenticator)
        assertion = authenticator.get(await site.login_options())
        signature = bytearray(unb64url(assertion["response"]["signature"]))
        signature[-1] ^= 1
        assertion["response"]["signature"] = b64url(bytes(signature))
        response = await site.post("/webauthn/authenticate", {"webauthn": assertion})
        assert "signature" in refused(response, 401, "PasskeyRefused")
        stranger = SoftAuthenticator(origin=ORIGIN)
        stranger.create({**(await site.login_options()), **_creation_shape()})
        response = await site.passkey_login(stranger)
        assert "unknown" in refused(response, 401, "PasskeyRefused")

    async def test_a_counter_that_goes_back_is_refused_and_reported(self, site: Site) -> None:
        authenticator = SoftAuthenticator(origin=ORIGIN)
        await site.add(await site.sign_up(), authenticator)
        assert (await site.passkey_login(authenticator)).status_code == 200
        assert (await site.passkey_login(authenticator)).status_code == 200
        for count in (2, 1):  # a clone replaying the last count, or an older one
            response = await site.passkey_login(authenticator, sign_count=count)
            refused(response, 401, "PasskeySignCountRegressed")
        assert len(site.named("passkey_sign_count_regressed")) == 2
        assert (await site.passkey_login(authenticator)).status_code == 200

    async def test_an_authenticator_without_a_counter_works(self, site: Site) -> None:
        synced = SoftAuthenticator(origin=ORIGIN, counter=False)  # most synced passkeys send 0
        await site.add(await site.sign_up(), synced)
        for _ in range(3):
            assert (await site.passkey_login(synced)).status_code == 200
        assert site.named("passkey_sign_count_regressed") == []

    async def test_concurrent_assertions_with_one_count_one_wins(self, site: Site) -> None:
        authenticator = SoftAuthenticator(origin=ORIGIN)
        await site.add(await site.sign_up(), authenticator)
        assertions = [authenticator.get(await site.login_options(), sign_count=5) for _ in range(4)]
        responses = await asyncio.gather(
            *(site.post("/webauthn/authenticate", {"webauthn": a}) for a in assertions)
        )
        assert sorted(r.status_code for r in responses) == [200, 401, 401, 401]

    async def test_a_deactivated_user_cannot(self, site: Site) -> None:
        authenticator = SoftAuthenticator(origin=ORIGIN)
        token = await site.sign_up()
        await site.add(token, authenticator)
        user_id = (await site.call("GET", "/user", token=token)).json()["id"]
        await site.server.deactivate_user(user_id)
        refused(await site.passkey_login(authenticator), 403, "UserDeactivated")

    async def test_options_say_nothing_about_accounts(self, site: Site) -> None:
        first = await site.login_options()
        await site.add(await site.sign_up(), SoftAuthenticator(origin=ORIGIN))
        second = await site.login_options()
        assert first.keys() == second.keys()
        assert {k: v for k, v in first.items() if k != "challenge"} == {
            k: v for k, v in second.items() if k != "challenge"
        }

    async def test_options_are_rate_limited_per_ip(
        self, make_server: MakeServer, clock: Clock
    ) -> None:
        server = make_server(services=[PasswordService(), service()], rate_limits=RateLimits())
        async for site in _site(server, clock):
            statuses = [(await site.post("/webauthn/login/options")).status_code for _ in range(21)]
            assert statuses == [200] * 20 + [429]


class TestSecondFactor:
    async def test_password_then_passkey(
        self, site: Site, authenticator: SoftAuthenticator
    ) -> None:
        await site.add(await site.sign_up(), authenticator)
        response = await site.post("/password/authenticate", site.credentials())
        message = refused(response, 401, "TwoFactorCodeRequired")
        assert message == "2FA code required"
        body = response.json()
        assert body["factors"] == ["webauthn"]
        options = body["challenges"]["webauthn"]
        assert [c["id"] for c in options["allowCredentials"]] == [
            authenticator.credentials[0].id_b64
        ]
        assert options["userVerification"] == "preferred"
        finish = {"mfaToken": body["mfaToken"], "webauthn": authenticator.get(options)}
        done = await site.post("/mfa/authenticate", finish)
        assert done.status_code == 200, done.text
        assert set(claims(done.json()["tokens"]["accessToken"])["amr"]) == {"hwk", "mfa", "pwd"}
        refused(await site.post("/mfa/authenticate", finish), 401, "InvalidToken")

    async def test_the_token_is_not_in_events(self, site: Site) -> None:
        await site.add(await site.sign_up(), SoftAuthenticator(origin=ORIGIN))
        await site.post("/password/authenticate", site.credentials())
        [event] = site.named("login_error")
        assert event.error is not None and event.error.code == "TwoFactorCodeRequired"
        assert getattr(event.error, "mfa_token", None) is None

    async def test_a_refused_proof_keeps_the_first_step(self, site: Site) -> None:
        authenticator = SoftAuthenticator(origin=ORIGIN)
        await site.add(await site.sign_up(), authenticator)
        body = (await site.post("/password/authenticate", site.credentials())).json()
        options = body["challenges"]["webauthn"]
        wrong = authenticator.get(options, origin="https://evil.example")
        response = await site.post(
            "/mfa/authenticate", {"mfaToken": body["mfaToken"], "webauthn": wrong}
        )
        refused(response, 401, "PasskeyRefused")
        # That spent the challenge, not the mfaToken: a new password step brings a new one.
        again = (await site.post("/password/authenticate", site.credentials())).json()
        good = authenticator.get(again["challenges"]["webauthn"])
        response = await site.post(
            "/mfa/authenticate", {"mfaToken": body["mfaToken"], "webauthn": good}
        )
        assert response.status_code == 200, response.text

    async def test_another_users_passkey_is_no_second_factor(self, site: Site) -> None:
        ann, bob = SoftAuthenticator(origin=ORIGIN), SoftAuthenticator(origin=ORIGIN)
        await site.add(await site.sign_up("ann"), ann)
        await site.add(await site.sign_up("bob"), bob)
        body = (await site.post("/password/authenticate", site.credentials("ann"))).json()
        options = body["challenges"]["webauthn"]
        assertion = bob.get(options, credential=bob.credentials[0])
        response = await site.post(
            "/mfa/authenticate", {"mfaToken": body["mfaToken"], "webauthn": assertion}
        )
        refused(response, 401, "PasskeyRefused")
        # Nor is a passwordless challenge a second factor's.
        assertion = ann.get(await site.login_options())
        response = await site.post(
            "/mfa/authenticate", {"mfaToken": body["mfaToken"], "webauthn": assertion}
        )
        refused(response, 401, "PasskeyRefused")

    async def test_the_token_expires(self, site: Site) -> None:
        authenticator = SoftAuthenticator(origin=ORIGIN)
        await site.add(await site.sign_up(), authenticator)
        body = (await site.post("/password/authenticate", site.credentials())).json()
        site.clock.advance(timedelta(minutes=5, seconds=1))
        finish = {
            "mfaToken": body["mfaToken"],
            "webauthn": authenticator.get(body["challenges"]["webauthn"]),
        }
        refused(await site.post("/mfa/authenticate", finish), 401, "InvalidToken")

    async def test_totp_and_passkey_either_finishes(self, site: Site) -> None:
        authenticator = SoftAuthenticator(origin=ORIGIN)
        token = await site.sign_up()
        await site.add(token, authenticator)
        secret = (await site.post("/password/twoFactorSecret", {}, token)).json()["secret"]
        totp = pyotp.TOTP(secret["base32"])
        code = totp.at(site.clock.now.timestamp())
        enabled = await site.post("/password/twoFactorSet", {"secret": secret, "code": code}, token)
        assert enabled.status_code == 200, enabled.text
        site.clock.advance(timedelta(seconds=30))
        body = (await site.post("/password/authenticate", site.credentials())).json()
        assert body["factors"] == ["totp", "webauthn"]
        code = totp.at(site.clock.now.timestamp())
        done = await site.post("/mfa/authenticate", {"mfaToken": body["mfaToken"], "code": code})
        assert set(claims(done.json()["tokens"]["accessToken"])["amr"]) == {"mfa", "otp", "pwd"}
        # accounts-js's way, the code on the password step, still works with a passkey too.
        site.clock.advance(timedelta(seconds=30))
        code = totp.at(site.clock.now.timestamp())
        direct = await site.post("/password/authenticate", {**site.credentials(), "code": code})
        assert direct.status_code == 200, direct.text

    async def test_mfa_route_refuses_bad_bodies(self, site: Site) -> None:
        await site.add(await site.sign_up(), SoftAuthenticator(origin=ORIGIN))
        body = (await site.post("/password/authenticate", site.credentials())).json()
        token = body["mfaToken"]
        for bad in (
            {"mfaToken": token},
            {"mfaToken": token, "code": "123456", "webauthn": {}},
            {"mfaToken": token, "code": "123456"},  # no authenticator app on this account
        ):
            refused(await site.post("/mfa/authenticate", bad), 400, "InvalidRequest")
        refused(
            await site.post("/mfa/authenticate", {"mfaToken": "nope", "code": "1"}),
            401,
            "InvalidToken",
        )
        refused(
            await site.post("/mfa/authenticate", {"mfaToken": 5, "code": "1"}), 401, "InvalidToken"
        )

    async def test_remember_me_survives_the_second_step(self, site: Site) -> None:
        authenticator = SoftAuthenticator(origin=ORIGIN)
        await site.add(await site.sign_up(), authenticator)
        login = {**site.credentials(), "remember": False}
        body = (await site.post("/password/authenticate", login)).json()
        finish = {
            "mfaToken": body["mfaToken"],
            "webauthn": authenticator.get(body["challenges"]["webauthn"]),
        }
        result = (await site.post("/mfa/authenticate", finish)).json()
        [session] = [
            s
            for s in (
                await site.call("GET", "/sessions", token=result["tokens"]["accessToken"])
            ).json()
            if s["current"]
        ]
        short = site.server.session_config.short_lifetime
        assert session["expiresAt"] - session["createdAt"] == int(short.total_seconds() * 1000)


class TestManage:
    async def test_rename(self, site: Site) -> None:
        token = await site.sign_up()
        passkey = (await site.add(token, SoftAuthenticator(origin=ORIGIN))).json()
        path = f"/webauthn/credentials/{passkey['id']}"
        renamed = await site.call("PATCH", path, {"name": "Phone"}, token)
        assert renamed.status_code == 200 and renamed.json()["name"] == "Phone"
        assert (await site.call("GET", "/webauthn/credentials", token=token)).json()[0][
            "name"
        ] == "Phone"
        refused(await site.call("PATCH", path, {"name": ""}, token), 400, "InvalidRequest")
        other = await site.sign_up("bob")
        refused(await site.call("PATCH", path, {"name": "Mine"}, other), 404, "PasskeyNotFound")
        refused(await site.call("DELETE", path, None, other), 404, "PasskeyNotFound")

    async def test_delete_keeps_a_way_in(
        self, site: Site, make_server: MakeServer, clock: Clock
    ) -> None:
        token = await site.sign_up()
        passkey = (await site.add(token, SoftAuthenticator(origin=ORIGIN))).json()
        response = await site.call("DELETE", f"/webauthn/credentials/{passkey['id']}", None, token)
        assert response.status_code == 200 and response.json() is None  # the password remains
        assert len(site.named("passkey_removed")) == 1
        # A user with passkeys only: the last one stays.
        user = await site.server.create_user(username="pat")
        result = await site.server.login_with_user(user, INFO)
        pat = result.tokens.access_token
        first = (await site.add(pat, SoftAuthenticator(origin=ORIGIN))).json()
        second = (await site.add(pat, SoftAuthenticator(origin=ORIGIN))).json()
        assert (
            await site.call("DELETE", f"/webauthn/credentials/{first['id']}", None, pat)
        ).status_code == 200
        response = await site.call("DELETE", f"/webauthn/credentials/{second['id']}", None, pat)
        refused(response, 409, "LastLoginMethod")
        assert len((await site.call("GET", "/webauthn/credentials", token=pat)).json()) == 1

    async def test_concurrent_deletes_leave_one(self, site: Site) -> None:
        user = await site.server.create_user(username="pat")
        pat = (await site.server.login_with_user(user, INFO)).tokens.access_token
        ids = [
            (await site.add(pat, SoftAuthenticator(origin=ORIGIN))).json()["id"] for _ in range(2)
        ]
        await asyncio.gather(
            *(site.call("DELETE", f"/webauthn/credentials/{i}", None, pat) for i in ids)
        )
        assert len((await site.call("GET", "/webauthn/credentials", token=pat)).json()) >= 1


class TestConfiguration:
    @pytest.mark.parametrize(
        ("rp_id", "origins", "says"),
        [
            ("example.com", ["https://evil.test"], "registrable suffix"),
            ("example.com", ["https://notexample.com"], "registrable suffix"),
            ("app.example.com", ["https://example.com"], "registrable suffix"),
            ("example.com", ["http://example.com"], "https"),
            ("example.com", ["https://example.com/login"], "without a path"),
            ("example.com", ["https://Example.com"], "lower case"),
            ("Example.com", ["https://example.com"], "lower-case"),
            ("com", ["https://com"], "registrable"),
            ("127.0.0.1", ["https://127.0.0.1"], "IP address"),
            ("example.com", [], "non-empty"),
            ("example.com", "https://example.com", "non-empty"),
        ],
    )
    def test_refused_at_startup(self, rp_id: str, origins: Any, says: str) -> None:
        with pytest.raises(ConfigurationError, match=says):
            WebAuthnService(rp_id=rp_id, rp_name="x", origins=origins)

    def test_several_origins_and_localhost(self) -> None:
        WebAuthnService(
            rp_id="example.com",
            rp_name="x",
            origins=["https://example.com", "https://app.example.com:8443"],
        )
        WebAuthnService(rp_id="localhost", rp_name="x", origins=["http://localhost:3000"])

    def test_from_its_settings(self) -> None:
        def loaded(**values: object) -> WebAuthnService:
            settings = ServiceSettings(
                name="webauthn", values=values, site_url="https://app.example.com/"
            )
            return from_settings(settings)

        site = loaded()
        assert (site.rp_id, site.origins) == ("app.example.com", ["https://app.example.com"])
        # As variables give them: one string, origins separated by commas or spaces.
        two = loaded(rp_id="example.com", origins="https://a.example.com,https://example.com")
        assert (two.rp_id, len(two.origins)) == ("example.com", 2)
        assert loaded(max_passkeys="5").max_passkeys == 5
        with pytest.raises(ConfigurationError, match="names no origin"):
            loaded(origins=" , ")
        with pytest.raises(ConfigurationError, match=r"unknown setting.*rp_idd"):
            loaded(rp_idd="example.com")
        with pytest.raises(ConfigurationError, match=r"services\.webauthn\.max_passkeys"):
            loaded(max_passkeys="many")

    def test_a_service_may_not_take_a_route_name(self) -> None:
        renamed = service()
        renamed.name = "mfa"
        with pytest.raises(ConfigurationError, match="route"):
            AccountsServer(store=SQLiteStore(":memory:"), tokens=_tokens(), services=[renamed])


# -- malformed input: a clear refusal, never a 500 --------------------------------------------


def _nested(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.lists(children, max_size=3) | st.dictionaries(
        st.text(max_size=8), children, max_size=3
    )


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20), _nested, max_leaves=8
)
#: Hints outside the signed data: an absent or empty user handle, an attachment that is no
#: string (py_webauthn ignores it, as browsers may omit it).
_UNSIGNED = {("authenticatorAttachment",), ("response", "userHandle")}
_PATHS = [
    ("id",),
    ("rawId",),
    ("type",),
    ("response",),
    ("response", "clientDataJSON"),
    ("response", "authenticatorData"),
    ("response", "signature"),
    ("response", "userHandle"),
    ("authenticatorAttachment",),
]


@pytest.fixture(scope="module")
def fuzzed(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Any, httpx.AsyncClient, Any]]:
    """One server and one registered passkey for every example (hypothesis runs examples in a
    loop of its own, so the fixtures are built on it)."""
    loop = asyncio.new_event_loop()
    store = SQLiteStore(tmp_path_factory.mktemp("fuzz") / "accounts.db")
    server = AccountsServer(
        store=store,
        tokens=_tokens(),
        services=[PasswordService(), service()],
        rate_limits=RateLimits(enabled=False),
    )
    transport = httpx.ASGITransport(app=create_app(server))
    api = httpx.AsyncClient(transport=transport, base_url="http://testserver")
    authenticator = SoftAuthenticator(origin=ORIGIN)

    async def enrol() -> None:
        user = {"username": "ann", "email": "ann@example.com", "password": PASSWORD}
        await api.post("/accounts/password/register", json={"user": user})
        login = await api.post("/accounts/password/authenticate", json=Site.credentials())
        token = login.json()["tokens"]["accessToken"]
        headers = {"Authorization": f"Bearer {token}"}
        options = (
            await api.post("/accounts/webauthn/register/options", json={}, headers=headers)
        ).json()
        created = authenticator.create(options)
        await api.post(
            "/accounts/webauthn/register/verify", json={"webauthn": created}, headers=headers
        )

    loop.run_until_complete(enrol())
    yield loop, api, authenticator
    loop.run_until_complete(api.aclose())
    loop.run_until_complete(server.close())
    loop.close()


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(where=st.sampled_from(_PATHS), value=_JSON)
def test_any_mangled_assertion_is_refused_cleanly(
    fuzzed: tuple[Any, httpx.AsyncClient, SoftAuthenticator], where: tuple[str, ...], value: object
) -> None:
    """A good assertion with one field replaced by any JSON value is refused with a 4xx and
    a code, never accepted and never a 500."""
    loop, api, authenticator = fuzzed

    async def attempt() -> httpx.Response:
        options = (await api.post("/accounts/webauthn/login/options", json={})).json()
        assertion = authenticator.get(options)
        target = assertion
        for key in where[:-1]:
            target = target[key]
        if target.get(where[-1]) == value:
            return httpx.Response(401, json={"code": "unchanged"})
        target[where[-1]] = value
        return await api.post("/accounts/webauthn/authenticate", json={"webauthn": assertion})

    response = loop.run_until_complete(attempt())
    if response.status_code == 200:  # only fields the signature does not cover may change
        assert where in _UNSIGNED, (where, value)
        return
    assert response.status_code in (400, 401), response.text
    assert response.json()["code"]


def _tokens() -> Any:
    from accounts_server import KeyRing, TokenConfig

    from ..helpers import load_key

    return TokenConfig(keys=KeyRing([load_key("ed25519")]))


def _creation_shape() -> dict[str, Any]:
    """What `create` needs beyond request options, for a credential the server never saw."""
    return {
        "rp": {"id": RP_ID, "name": "x"},
        "user": {"id": b64url(b"nobody"), "name": "nobody", "displayName": "nobody"},
        "pubKeyCredParams": [{"type": "public-key", "alg": -7}, {"type": "public-key", "alg": -8}],
    }


def _cbor_replace_key(attestation: bytes) -> bytes:
    """The attestation object with its credential public key replaced by a CBOR int (4)."""
    import cbor2

    decoded = cbor2.loads(attestation)
    auth_data: bytes = decoded["authData"]
    head = 37 + 16  # rpIdHash, flags, signCount, aaguid
    length = int.from_bytes(auth_data[head : head + 2], "big")
    start = head + 2 + length
    decoded["authData"] = auth_data[:start] + cbor2.dumps(4)
    return bytes(cbor2.dumps(decoded))
