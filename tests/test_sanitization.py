"""No password, password hash, token or token hash leaves the server: not in a response body,
not in a hook payload. Every event is listened to while every flow runs over HTTP."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import timedelta
from importlib.metadata import entry_points
from typing import Any, get_args

import httpx
import jwt

from accounts_magic_link import MagicLinkService
from accounts_password import PasswordService
from accounts_server import (
    AccountsServer,
    EndpointRequest,
    EventName,
    HookEvent,
    ServiceContext,
    ServiceEndpoint,
    SessionConfig,
    Store,
    User,
)
from accounts_server.http import create_app

from .conftest import MakeServer
from .helpers import PASSWORD, SMTPServer


async def test_nothing_secret_in_bodies_or_hook_payloads(
    make_server: MakeServer, store: Store
) -> None:
    server: AccountsServer = make_server(
        impersonation_authorize=lambda actor, target: True,
        sessions=SessionConfig(reuse_grace=timedelta(seconds=5)),
    )
    events: list[HookEvent] = []

    def allow(event: HookEvent) -> bool:
        events.append(event)
        return True  # validate_login: a listener returning None would veto every login

    for name in get_args(EventName):
        server.on(name, allow)
    bodies: list[str] = []
    tokens_seen: list[str] = []

    transport = httpx.ASGITransport(app=create_app(server))
    async with httpx.AsyncClient(transport=transport, base_url="http://t/accounts") as api:

        async def call(path: str, **kwargs: object) -> httpx.Response:
            response = await api.post(path, **kwargs)  # type: ignore[arg-type]
            bodies.append(response.text)
            return response

        for name in ("alice", "bob"):
            user = {"username": name, "email": f"{name}@example.com", "password": PASSWORD}
            await call("/password/register", json={"user": user})
        await call("/password/register", json={"user": {"username": "alice", "password": PASSWORD}})
        await call("/password/authenticate", json={"user": "alice", "password": "wrong-wrong"})
        await call("/password/verifyAuthentication", json={"user": "alice", "password": PASSWORD})
        login = (
            await call("/password/authenticate", json={"user": "alice", "password": PASSWORD})
        ).json()
        access, refresh = login["tokens"]["accessToken"], login["tokens"]["refreshToken"]
        await call("/user", headers={"Authorization": f"Bearer {access}"})
        await call("/user", headers={"Authorization": "Bearer forged"})
        rotated = (await call("/refreshTokens", json={"refreshToken": refresh})).json()
        await call("/refreshTokens", json={"refreshToken": refresh})  # inside grace
        imp = (
            await call(
                "/impersonate",
                json={
                    "accessToken": rotated["tokens"]["accessToken"],
                    "impersonated": {"username": "bob"},
                },
            )
        ).json()
        await call("/logout", headers={"Authorization": f"Bearer {imp['tokens']['accessToken']}"})
        second = (
            await call("/refreshTokens", json={"refreshToken": rotated["tokens"]["refreshToken"]})
        ).json()
        await call("/refreshTokens", json={"refreshToken": refresh})  # reuse after two rotations
        await call(
            "/logout", headers={"Authorization": f"Bearer {second['tokens']['accessToken']}"}
        )
        for result in (login, rotated, imp, second):
            tokens_seen += result["tokens"].values()
    await server.deactivate_user(login["user"]["id"])
    await server.activate_user(login["user"]["id"])
    await server.delete_user(login["user"]["id"])

    assert {e.name for e in events} >= {
        "create_user_success",
        "create_user_error",
        "login_success",
        "login_error",
        "authenticate_success",
        "resume_session_success",
        "resume_session_error",
        "refresh_tokens_success",
        "refresh_tokens_error",
        "refresh_token_reused",
        "impersonation_success",
        "logout_success",
        "user_deactivated",
        "user_activated",
        "user_deleted",
    }
    bob = await store.find_user_by_username("bob")
    assert bob is not None
    data = await store.get_service_data(bob.id, "password")
    assert data is not None
    secrets = [PASSWORD, str(data["argon2"]), "argon2"]
    for token in tokens_seen:
        jti = jwt.decode(token, options={"verify_signature": False})["jti"]
        digest = hashlib.sha256(jti.encode()).digest()
        secrets += [digest.hex(), repr(digest)]
    payloads = [repr(event) for event in events]
    for secret in secrets:
        for text in bodies:
            assert secret not in text
        for text in payloads:
            assert secret not in text
    for token in tokens_seen:
        for text in payloads:
            assert token not in text


HIDDEN = "hidden-field-value-7f3a"


class StoredUserService:
    """A third party's endpoint answering with a user straight from the store."""

    name = "stored"

    def endpoints(self) -> Sequence[ServiceEndpoint]:
        return (ServiceEndpoint("me", self._me, auth="required"),)

    async def authenticate(self, params: Mapping[str, Any], ctx: ServiceContext) -> User | None:
        return None

    async def _me(self, request: EndpointRequest, ctx: ServiceContext) -> list[User | None]:
        user, _ = await ctx.authenticated(request.access_token)
        return [await ctx.store.find_user_by_id(user.id)]


def _hide(user: User) -> User:
    return replace(user, extra={k: v for k, v in user.extra.items() if k != "hidden"})


async def test_the_user_sanitizer_holds_on_every_service_path(
    make_server: MakeServer, smtp: SMTPServer
) -> None:
    """A sanitizer that drops a field: no response and no event payload of any service (the
    password, magic-link and API-key services, the admin surface, impersonation) carries it.
    The OIDC service's path is in tests/services/test_oauth.py (it needs the provider)."""
    smtp.checkpoint()
    # examples/api_key_service, found as `serve` finds it: by its entry point.
    (entry,) = entry_points(group="accounts_server.services", name="apikey")
    api_key_service = entry.load()()
    password = PasswordService(mailer=smtp.mailer())
    magic = MagicLinkService(mailer=smtp.mailer(), site_url="https://app.example")
    server = make_server(
        services=[password, magic, api_key_service, StoredUserService()],
        user_sanitizer=_hide,
        impersonation_authorize=lambda actor, target: True,
        authorize_admin=lambda user, action: True,
    )
    events: list[HookEvent] = []

    def record(event: HookEvent) -> bool:
        events.append(event)
        return True

    for name in get_args(EventName):
        server.on(name, record)
    bodies: list[str] = []
    transport = httpx.ASGITransport(app=create_app(server))
    async with httpx.AsyncClient(transport=transport, base_url="http://t/accounts") as api:

        async def call(method: str, path: str, bearer: str | None = None, **json: Any) -> Any:
            headers = {"Authorization": f"Bearer {bearer}"} if bearer else {}
            response = await api.request(method, path, json=json or None, headers=headers)
            bodies.append(response.text)
            assert response.status_code == 200, response.text
            return response.json()

        ids = {}
        for name in ("ann", "ben"):
            user = {"username": name, "email": f"{name}@example.com", "password": PASSWORD}
            ids[name] = (await call("POST", "/password/register", user=user))["userId"]
            await server.update_user(ids[name], extra={"hidden": HIDDEN, "shown": "yes"})
        login = await call("POST", "/password/authenticate", user="ann", password=PASSWORD)
        assert login["user"]["shown"] == "yes"
        access = login["tokens"]["accessToken"]
        await call("POST", "/password/verifyAuthentication", user="ann", password=PASSWORD)
        await call("GET", "/user", access)
        refreshed = await call(
            "POST", "/refreshTokens", refreshToken=login["tokens"]["refreshToken"]
        )
        access = refreshed["tokens"]["accessToken"]
        await call("POST", "/password/addEmail", access, newEmail="ann@work.example")
        await call("POST", "/password/sendVerificationEmail", email="ann@work.example")
        await call("POST", "/magiclink/requestMagicLinkEmail", email="ann@example.com")
        await server.drain()
        verify = smtp.link_token(await smtp.wait_for("ann@work.example"))
        await call("POST", "/password/verifyEmail", token=verify)
        mail = (await smtp.wait_for("ann@example.com")).as_string()
        match = re.search(r"https://app\.example/magic-link/(\S+)", mail)
        assert match
        await call("POST", "/magicLink/authenticate", token=match.group(1))
        key = (await call("POST", "/apikey/createKey", access))["apiKey"]
        await call("POST", "/apikey/authenticate", apiKey=key)
        await call("GET", f"/admin/users/{ids['ben']}", access)
        await call("GET", "/admin/users", access)
        assert (await call("POST", "/stored/me", access))[0]["shown"] == "yes"
        await call("POST", "/impersonate", accessToken=access, impersonated={"username": "ben"})
        await call(
            "POST",
            "/password/changePassword",
            access,
            oldPassword=PASSWORD,
            newPassword="another horse battery staple",
        )
        await call("POST", "/logout", access)
    names = {e.name for e in events}
    assert {
        "login_success",
        "authenticate_success",
        "email_verified",
        "change_password_success",
        "admin_action",
        "impersonation_success",
        "session_revoked",
    } <= names, names
    stored = await server.store.find_user_by_id(ids["ann"])
    assert stored is not None and stored.extra["hidden"] == HIDDEN  # stored, only hidden
    for text in bodies:
        assert HIDDEN not in text
    for event in events:
        assert HIDDEN not in repr(event), event.name
