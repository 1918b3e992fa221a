"""Another service that trusts accounts-server's tokens knowing only its JWKS URL.

    ACCOUNTS_JWKS_URL=http://127.0.0.1:8000/.well-known/jwks.json uvicorn examples.jwks_verifier:app

Stateless: a logged-out session's access token keeps working here until it expires (at most
the access lifetime, 15 minutes by default). Use the stateful backend where that matters.
"""

from __future__ import annotations

import os

from starlette.applications import Starlette
from starlette.authentication import requires
from starlette.middleware import Middleware
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from accounts_server.http import StatelessBackend, TokenVerifier, on_auth_error


def build(jwks_url: str) -> Starlette:
    @requires("authenticated")
    async def orders(request: Request) -> JSONResponse:
        return JSONResponse({"orders_of": request.user.identity})

    verifier = TokenVerifier(jwks_url)
    return Starlette(
        routes=[Route("/orders", orders)],
        middleware=[
            Middleware(
                AuthenticationMiddleware, backend=StatelessBackend(verifier), on_error=on_auth_error
            )
        ],
    )


app = build(os.environ.get("ACCOUNTS_JWKS_URL", "http://127.0.0.1:8000/.well-known/jwks.json"))
