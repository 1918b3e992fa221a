"""A Starlette app that mounts accounts-server and guards routes with its backend.

uvicorn examples.starlette_host:app
"""

from __future__ import annotations

import os
from pathlib import Path

from starlette.applications import Starlette
from starlette.authentication import requires
from starlette.middleware import Middleware
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route

from accounts_password import PasswordService
from accounts_server import AccountsServer, KeyRing, SigningKey, TokenConfig
from accounts_server.http import AccountsBackend, create_app, on_auth_error
from accounts_server.stores import SQLiteStore


def build(db: str | Path, key: SigningKey) -> Starlette:
    server = AccountsServer(
        store=SQLiteStore(db),
        tokens=TokenConfig(keys=KeyRing([key])),
        services=[PasswordService()],
    )

    @requires("authenticated")
    async def dashboard(request: Request) -> JSONResponse:
        return JSONResponse({"user": request.user.display_name})

    return Starlette(
        routes=[
            Route("/dashboard", dashboard),
            Mount("/accounts", app=create_app(server, prefix="")),
        ],
        middleware=[
            Middleware(
                AuthenticationMiddleware, backend=AccountsBackend(server), on_error=on_auth_error
            )
        ],
    )


app = build(os.environ.get("ACCOUNTS_DB", "accounts.db"), SigningKey.generate())
