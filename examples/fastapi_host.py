"""A FastAPI app that mounts accounts-server and protects its own routes.

pip install fastapi && uvicorn examples.fastapi_host:app
# accounts-js protocol under /accounts; GET /me needs "Authorization: Bearer <accessToken>"
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import Depends, FastAPI

from accounts_password import PasswordService
from accounts_server import AccountsServer, KeyRing, SigningKey, TokenConfig, User
from accounts_server.http import CurrentUser, create_app
from accounts_server.stores import SQLiteStore


def build(db: str | Path, key: SigningKey) -> FastAPI:
    server = AccountsServer(
        store=SQLiteStore(db),
        tokens=TokenConfig(keys=KeyRing([key])),
        services=[PasswordService()],
    )
    current_user = CurrentUser(server)
    maybe_user = CurrentUser(server, optional=True)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await server.store.setup()  # a mounted app's own lifespan does not run
        yield
        await server.close()

    app = FastAPI(lifespan=lifespan)
    app.mount("/accounts", create_app(server, prefix=""))

    @app.get("/me")
    async def me(user: User = Depends(current_user)) -> dict[str, str | None]:  # noqa: B008
        return {"id": user.id, "username": user.username}

    @app.get("/")
    async def home(user: User | None = Depends(maybe_user)) -> dict[str, str]:  # noqa: B008
        return {"hello": user.username or user.id if user else "stranger"}

    return app


app = build(os.environ.get("ACCOUNTS_DB", "accounts.db"), SigningKey.generate())
