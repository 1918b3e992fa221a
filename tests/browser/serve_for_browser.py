"""The server the passkeys browser test talks to (test-only; started and stopped by PID).

    python tests/browser/serve_for_browser.py PORT DB_PATH

A Starlette host app on 127.0.0.1:PORT: `GET /` is tests/browser/page.html and the accounts API
is mounted at /accounts, so the page and the API share the origin http://localhost:PORT (a
secure context over plain HTTP, which WebAuthn needs; the RP ID is "localhost"). Differences
from `accounts-server serve`, each for the test: passwords and passkeys only, throwaway
signing and sealing keys (they die with the process), and no rate limits (the test logs in
several times in a few seconds).
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse
from starlette.routing import Mount, Route

from accounts_password import PasswordService
from accounts_server import (
    AccountsServer,
    KeyRing,
    RateLimits,
    SealingKeys,
    SigningKey,
    TokenConfig,
)
from accounts_server.http import create_app
from accounts_server.stores import SQLiteStore
from accounts_webauthn import WebAuthnService

PAGE = Path(__file__).parent / "page.html"


def build(port: int, db_path: str) -> Starlette:
    server = AccountsServer(
        store=SQLiteStore(db_path),
        tokens=TokenConfig(keys=KeyRing([SigningKey.generate()])),
        services=[
            PasswordService(),
            WebAuthnService(
                rp_id="localhost",
                rp_name="accounts-server tests",
                origins=[f"http://localhost:{port}"],
            ),
        ],
        sealing=SealingKeys.generate(),
        rate_limits=RateLimits(enabled=False),
    )

    async def page(request: Request) -> FileResponse:
        return FileResponse(PAGE, media_type="text/html", headers={"Cache-Control": "no-store"})

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await server.store.setup()  # a mounted app's own lifespan does not run
        yield
        await server.close()

    return Starlette(
        routes=[Route("/", page), Mount("/accounts", app=create_app(server, prefix=""))],
        lifespan=lifespan,
    )


def main() -> None:
    port, db_path = int(sys.argv[1]), sys.argv[2]
    uvicorn.run(build(port, db_path), host="127.0.0.1", port=port, log_level="warning")


if __name__ == "__main__":
    main()
