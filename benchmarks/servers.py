"""The servers the HTTP benchmark starts (one process each, pinned by the caller).

    python benchmarks/servers.py accounts PORT DB ALG   accounts-server, SQLite, HS256 or EdDSA
    python benchmarks/servers.py bare PORT              a bare Starlette JSON endpoint

Both run under the same uvicorn configuration (uvloop, httptools, no access log), so the bare
endpoint is the ceiling for what any route of this stack can do.
"""

from __future__ import annotations

import secrets
import sys
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from accounts_password import PasswordService
from accounts_server import AccountsServer, KeyRing, RateLimits, SigningKey, TokenConfig
from accounts_server.http import create_app
from accounts_server.stores import SQLiteStore


def accounts(db: str, algorithm: str) -> Any:
    key = (
        SigningKey.from_secret(secrets.token_bytes(32))
        if algorithm == "HS256"
        else SigningKey.generate("EdDSA")
    )
    server = AccountsServer(
        store=SQLiteStore(db),
        tokens=TokenConfig(keys=KeyRing([key])),
        services=[PasswordService()],
        # The load generator is one client address; per-IP limits would measure 429s.
        rate_limits=RateLimits(enabled=False),
    )
    return create_app(server)


def bare() -> Any:
    async def hello(request: Request) -> JSONResponse:
        return JSONResponse({"id": "0123456789abcdef01234567", "username": "bench"})

    return Starlette(routes=[Route("/json", hello)])


def main() -> None:
    kind, port = sys.argv[1], int(sys.argv[2])
    app = accounts(sys.argv[3], sys.argv[4]) if kind == "accounts" else bare()
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
