"""Protecting a host app's routes: Starlette backend, FastAPI dependencies, and the stateless
verifier against a real server's JWKS over TCP."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pyotp
import pytest
from fastapi import Depends, FastAPI
from starlette.applications import Starlette
from starlette.authentication import requires
from starlette.middleware import Middleware
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route

from accounts_server import AccountsServer, ConnectionInfo, InvalidToken, SealingKeys, User
from accounts_server.http import (
    AccountsBackend,
    CurrentUser,
    StatelessBackend,
    TokenVerifier,
    create_app,
    on_auth_error,
)

from ..conftest import Clock, MakeServer
from ..helpers import PASSWORD, register
from .test_uvicorn import serving


async def access_token(server: AccountsServer) -> str:
    account = await register(server)
    result = await server.login_with_service("password", account.credentials(), ConnectionInfo())
    return result.tokens.access_token


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_starlette_host_with_the_backend(server: AccountsServer) -> None:
    @requires("authenticated")
    async def me(request: Request) -> JSONResponse:
        return JSONResponse({"id": request.user.identity, "scopes": request.auth.scopes})

    host = Starlette(
        routes=[Route("/me", me), Mount("/accounts", app=create_app(server, prefix=""))],
        middleware=[
            Middleware(
                AuthenticationMiddleware, backend=AccountsBackend(server), on_error=on_auth_error
            )
        ],
    )
    token = await access_token(server)
    transport = httpx.ASGITransport(app=host)
    async with httpx.AsyncClient(transport=transport, base_url="http://host") as client:
        assert (await client.get("/me")).status_code == 403  # anonymous: no scope
        bad = await client.get("/me", headers=bearer("not-a-token"))
        assert bad.status_code == 401 and bad.json()["code"] == "InvalidToken"
        ok = await client.get("/me", headers=bearer(token))
        assert ok.status_code == 200 and ok.json()["scopes"] == ["authenticated"]
        # The mounted accounts app logs out; the backend sees it on the very next request.
        assert (await client.post("/accounts/logout", headers=bearer(token))).status_code == 200
        assert (await client.get("/me", headers=bearer(token))).status_code == 401


async def test_fastapi_host_with_dependencies(server: AccountsServer) -> None:
    app = FastAPI()
    current_user, maybe_user = CurrentUser(server), CurrentUser(server, optional=True)

    @app.get("/me")
    # FastAPI's documented style; stringified annotations cannot name these local callables.
    async def me(user: User = Depends(current_user)) -> dict[str, Any]:  # noqa: B008
        return {"id": user.id}

    @app.get("/hello")
    async def hello(user: User | None = Depends(maybe_user)) -> dict[str, Any]:  # noqa: B008
        return {"user": user.id if user else None}

    app.mount("/accounts", create_app(server, prefix=""))
    token = await access_token(server)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://host") as client:
        anonymous = await client.get("/me")
        assert anonymous.status_code == 401
        assert anonymous.headers["www-authenticate"] == "Bearer"
        assert (await client.get("/hello")).json() == {"user": None}
        user_id = (await client.get("/me", headers=bearer(token))).json()["id"]
        assert (await client.get("/hello", headers=bearer(token))).json() == {"user": user_id}
        await server.deactivate_user(user_id)
        assert (await client.get("/me", headers=bearer(token))).status_code == 401
        assert (await client.get("/hello", headers=bearer(token))).json() == {"user": None}
        assert (await client.get("/accounts/health")).status_code == 200


async def test_token_verifier_with_only_the_jwks_url(tmp_path: Path) -> None:
    with serving(tmp_path) as api:
        user = {"username": "vic", "password": PASSWORD}
        api.post("/password/register", json={"user": user})
        tokens = api.post(
            "/password/authenticate", json={"user": "vic", "password": PASSWORD}
        ).json()
        access = tokens["tokens"]["accessToken"]
        root = f"http://{api.base_url.host}:{api.base_url.port}"
        verifier = TokenVerifier(f"{root}/.well-known/jwks.json")
        claims = await verifier.verify(access)
        assert claims.sub == tokens["user"]["id"]
        with pytest.raises(InvalidToken):
            await verifier.verify(tokens["tokens"]["refreshToken"])
        with pytest.raises(InvalidToken):
            await verifier.verify(access[:-4] + "AAAA")
        # Stateless, knowingly: after logout the token still verifies until it expires.
        api.post("/logout", headers=bearer(access))
        assert (await verifier.verify(access)).sub == claims.sub

        backend_host = Starlette(
            routes=[Route("/who", lambda r: JSONResponse({"sub": r.user.identity}))],
            middleware=[Middleware(AuthenticationMiddleware, backend=StatelessBackend(verifier))],
        )
        transport = httpx.ASGITransport(app=backend_host)
        async with httpx.AsyncClient(transport=transport, base_url="http://svc") as client:
            assert (await client.get("/who", headers=bearer(access))).json() == {"sub": claims.sub}


async def test_a_route_that_needs_a_second_factor(make_server: MakeServer, clock: Clock) -> None:
    """One line per framework (`requires([..., "mfa"])`, `CurrentUser(mfa=True, max_age=)`):
    the session that enrolled signed in with the password alone and is sent to sign in again
    (RFC 9470's challenge), as is a sign-in older than `max_age`, refreshes notwithstanding."""
    server = make_server(sealing=SealingKeys.generate())
    account = await register(server)
    first = await server.login_with_service("password", account.credentials(), ConnectionInfo())
    user = await server.find_user_by_id(account.user_id)
    assert user is not None
    secret = await server.two_factor.new_secret()
    totp = pyotp.TOTP(secret.base32)
    code = totp.at(clock.now.timestamp())
    await server.two_factor.enable(
        user, {"base32": secret.base32}, code, session_id=first.session_id
    )
    clock.advance(timedelta(seconds=30))
    params = {**account.credentials(), "code": totp.at(clock.now.timestamp())}
    second = await server.login_with_service("password", params, ConnectionInfo())
    password_only, with_mfa = first.tokens.access_token, second.tokens.access_token

    @requires(["authenticated", "mfa"])
    async def payouts(request: Request) -> JSONResponse:
        return JSONResponse({"scopes": request.auth.scopes})

    api = FastAPI()
    recent_mfa = CurrentUser(server, mfa=True, max_age=timedelta(minutes=10))

    @api.post("/transfer")
    async def transfer(user: User = Depends(recent_mfa)) -> dict[str, Any]:  # noqa: B008
        return {"id": user.id}

    host = Starlette(
        routes=[Route("/payouts", payouts), Mount("/api", app=api)],
        middleware=[Middleware(AuthenticationMiddleware, backend=AccountsBackend(server))],
    )
    transport = httpx.ASGITransport(app=host)
    async with httpx.AsyncClient(transport=transport, base_url="http://host") as client:
        assert (await client.get("/payouts", headers=bearer(password_only))).status_code == 403
        ok = await client.get("/payouts", headers=bearer(with_mfa))
        assert ok.json()["scopes"] == ["authenticated", "mfa"]

        refused = await client.post("/api/transfer", headers=bearer(password_only))
        assert refused.status_code == 401
        assert refused.json()["detail"]["code"] == "InsufficientUserAuthentication"
        assert refused.headers["WWW-Authenticate"] == (
            'Bearer error="insufficient_user_authentication"'
        )
        assert (await client.post("/api/transfer", headers=bearer(with_mfa))).status_code == 200

        clock.advance(timedelta(minutes=11))
        refreshed = await server.refresh_tokens(None, second.tokens.refresh_token, ConnectionInfo())
        late = await client.post("/api/transfer", headers=bearer(refreshed.tokens.access_token))
        assert late.status_code == 401
        assert late.headers["WWW-Authenticate"].endswith('max_age="600"')
