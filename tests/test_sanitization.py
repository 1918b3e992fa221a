"""No password, password hash, token or token hash leaves the server: not in a response body,
not in a hook payload. Every event is listened to while every flow runs over HTTP."""

from __future__ import annotations

import hashlib
from datetime import timedelta
from typing import get_args

import httpx
import jwt

from accounts_server import AccountsServer, EventName, HookEvent, SessionConfig, Store
from accounts_server.http import create_app

from .conftest import MakeServer
from .helpers import PASSWORD


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
