"""The Python servers the HTTP benchmark starts (one process each, pinned by the caller).

    python benchmarks/servers.py accounts PORT STORE ALG TOKENS SESSIONS
    python benchmarks/servers.py bare PORT

`accounts`: accounts-server with the password service on STORE (a SQLite file path, or a
mongodb:// URL), signing with HS256 or EdDSA. Before it serves, it opens SESSIONS sessions for
the user `bench` and writes one "accessToken refreshToken" line per session to TOKENS, for the
refresh and logout runs (each refresh or logout uses a session up).
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
from starlette.routing import Route

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


def accounts(location: str, algorithm: str, tokens: Path, sessions: int) -> Any:
    key = (
        SigningKey.from_secret(secrets.token_bytes(32))
        if algorithm == "HS256"
        else SigningKey.generate("EdDSA")
    )
    server = AccountsServer(
        store=_store(location),
        tokens=TokenConfig(keys=KeyRing([key])),
        services=[PasswordService()],
        # The load generator is one client address; per-IP limits would measure 429s.
        rate_limits=RateLimits(enabled=False),
    )
    app = create_app(server)
    serve = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with serve(app):
            user = await server.create_user(username="bench")
            info = ConnectionInfo(ip="127.0.0.1", user_agent="bench")
            lines = []
            for _ in range(sessions):
                pair = (await server.login_with_user(user, info)).tokens
                lines.append(f"{pair.access_token} {pair.refresh_token}\n")
            tokens.write_text("".join(lines))  # noqa: ASYNC240 (once, before serving)
            yield

    app.router.lifespan_context = lifespan
    return app


def bare() -> Any:
    async def hello(request: Request) -> JSONResponse:
        return JSONResponse({"id": "0123456789abcdef01234567", "username": "bench"})

    return Starlette(routes=[Route("/json", hello)])


def main() -> None:
    kind, port = sys.argv[1], int(sys.argv[2])
    if kind == "accounts":
        location, algorithm, tokens, sessions = sys.argv[3:7]
        app = accounts(location, algorithm, Path(tokens), int(sessions))
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
