"""The Python servers the HTTP benchmark starts (one process each, pinned by the caller).

    python benchmarks/servers.py accounts|mounted PORT STORE ALG TOKENS SESSIONS
    python benchmarks/servers.py bare PORT

`accounts`: accounts-server with the password service on STORE (a SQLite file path, or a
mongodb:// URL), signing with HS256 or EdDSA. Before it serves, it opens SESSIONS sessions for
the user `bench` and writes one "accessToken refreshToken" line per session to TOKENS, for the
refresh and logout runs (each refresh or logout uses a session up).
`mounted`: the same, mounted under a host Starlette app (the README's way).
`bare`: a bare Starlette JSON endpoint, the ceiling for any route of this stack.

Both run under the same uvicorn configuration (uvloop, httptools, no access log).
"""

from __future__ import annotations

import secrets
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route

from accounts_password import PasswordService
from accounts_server import (
    AccountsServer,
    ConnectionInfo,
    KeyRing,
    RateLimits,
    SigningKey,
    TokenConfig,
)
from accounts_server.http import create_app
from accounts_server.stores import SQLiteStore, Store


def _store(location: str) -> Store:
    if location.startswith("mongodb://"):
        from accounts_server.stores.mongo import MongoStore

        return MongoStore.from_url(location, f"bench_{secrets.token_hex(4)}")
    return SQLiteStore(location)


def _server(location: str, algorithm: str) -> AccountsServer:
    key = (
        SigningKey.from_secret(secrets.token_bytes(32))
        if algorithm == "HS256"
        else SigningKey.generate("EdDSA")
    )
    return AccountsServer(
        store=_store(location),
        tokens=TokenConfig(keys=KeyRing([key])),
        services=[PasswordService()],
        # The load generator is one client address; per-IP limits would measure 429s.
        rate_limits=RateLimits(enabled=False),
    )


async def _seed(server: AccountsServer, tokens: Path, sessions: int) -> None:
    user = await server.create_user(username="bench")
    info = ConnectionInfo(ip="127.0.0.1", user_agent="bench")
    lines = []
    for _ in range(sessions):
        pair = (await server.login_with_user(user, info)).tokens
        lines.append(f"{pair.access_token} {pair.refresh_token}\n")
    tokens.write_text("".join(lines))  # noqa: ASYNC240 (once, before serving)


def accounts(location: str, algorithm: str, tokens: Path, sessions: int) -> Any:
    """`create_app(server)` as `serve` runs it."""
    server = _server(location, algorithm)
    app = create_app(server)
    serve = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with serve(app):
            await _seed(server, tokens, sessions)
            yield

    app.router.lifespan_context = lifespan
    return app


def mounted(location: str, algorithm: str, tokens: Path, sessions: int) -> Any:
    """Mounted in a host Starlette app as the README shows (`Mount("/accounts",
    create_app(server, prefix=""))`); a mounted app's lifespan does not run, so the host's
    sets the store up."""
    server = _server(location, algorithm)

    async def home(request: Request) -> JSONResponse:
        return JSONResponse({"host": True})

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await server.store.setup()
        await _seed(server, tokens, sessions)
        yield
        await server.close()

    return Starlette(
        routes=[Route("/", home), Mount("/accounts", app=create_app(server, prefix=""))],
        lifespan=lifespan,
    )


def bare() -> Any:
    async def hello(request: Request) -> JSONResponse:
        return JSONResponse({"id": "0123456789abcdef01234567", "username": "bench"})

    return Starlette(routes=[Route("/json", hello)])


def main() -> None:
    kind, port = sys.argv[1], int(sys.argv[2])
    if kind in ("accounts", "mounted"):
        location, algorithm, tokens, sessions = sys.argv[3:7]
        build = accounts if kind == "accounts" else mounted
        app = build(location, algorithm, Path(tokens), int(sessions))
    else:
        app = bare()
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=port,
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
    )


if __name__ == "__main__":
    main()
