"""The Starlette app speaking the accounts-js REST protocol. Glue only: each route parses the
request, calls one server method and serializes the result; the rules are in the core."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from ..errors import AccountsError, AuthenticationFailed, InvalidRequest, InvalidToken
from ..server import AccountsServer
from ..services import EndpointHandler, EndpointRequest, ProvidesEndpoints, Redirect
from ..types import Session, User
from .admin import admin_routes
from .errors import handle_accounts_error, handle_http_exception, handle_unexpected
from .openapi import openapi_document
from .request import MAX_BODY_BYTES, Network, access_token, connection_info, read_json
from .wire import NO_STORE, json_response, to_wire

__all__ = ["create_app"]

logger = logging.getLogger("accounts_server.http")


def _json(value: object) -> Response:
    return json_response(to_wire(value), headers=NO_STORE)


class _Routes:
    def __init__(
        self, server: AccountsServer, trusted_proxies: Sequence[Network], max_body: int
    ) -> None:
        self.server = server
        self.proxies = trusted_proxies
        self.max_body = max_body
        self.document: dict[str, Any] = {}

    async def _body(self, request: Request) -> Any:
        return await read_json(request, max_bytes=self.max_body)

    async def authenticate(self, request: Request) -> Response:
        body = await self._body(request)
        service = request.path_params["service"]
        info = connection_info(request, self.proxies)
        return _json(await self.server.login_with_service(service, body, info))

    async def verify_authentication(self, request: Request) -> Response:
        body = await self._body(request)
        service = request.path_params["service"]
        info = connection_info(request, self.proxies)
        return _json(await self.server.authenticate_with_service(service, body, info))

    async def refresh_tokens(self, request: Request) -> Response:
        body = await self._body(request)
        refresh, access = body.get("refreshToken"), body.get("accessToken")
        if not isinstance(refresh, str) or not (access is None or isinstance(access, str)):
            raise InvalidRequest("refreshToken (and accessToken, if given) must be strings")
        info = connection_info(request, self.proxies)
        return _json(await self.server.refresh_tokens(access, refresh, info))

    async def logout(self, request: Request) -> Response:
        await self.server.logout(self._token(request, await self._body(request)))
        return _json(None)

    async def user(self, request: Request) -> Response:
        """200 `null` without a valid token: the accounts-js client's "am I logged in" check
        relies on it. A store outage is still a 503, never a silent `null`."""
        body = await self._body(request) if request.method == "POST" else {}
        token = access_token(request, body)
        if token is None:
            return _json(None)
        try:
            return _json(await self.server.resume_session(token))
        except AuthenticationFailed:
            return _json(None)

    @staticmethod
    def _token(request: Request, body: Any = None) -> str:
        token = access_token(request, body)
        if token is None:
            raise InvalidToken(reason="missing")
        return token

    async def _caller(self, request: Request) -> tuple[User, Session]:
        return await self.server.resume(self._token(request))

    async def list_sessions(self, request: Request) -> Response:
        """The caller's own sessions only; no secret or hash in any field."""
        user, session = await self._caller(request)
        return _json(await self.server.list_sessions(user.id, current_session_id=session.id))

    async def revoke_session(self, request: Request) -> Response:
        """Another user's session id answers exactly as an unknown one: 404."""
        user, _ = await self._caller(request)
        await self.server.revoke_session(user.id, request.path_params["sid"])
        return _json(None)

    async def freshen_session(self, request: Request) -> Response:
        """Mark this session used now (pushes back its idle expiry, never its absolute one)."""
        return _json(await self.server.freshen_session(self._token(request)))

    async def revoke_other_sessions(self, request: Request) -> Response:
        user, session = await self._caller(request)
        revoked = await self.server.revoke_all_sessions(user.id, except_=[session.id])
        return _json({"revoked": revoked})

    async def delete_user(self, request: Request) -> Response:
        """`DELETE /user {password}`: delete one's own account."""
        body = await self._body(request)
        await self.server.delete_own_account(self._token(request, body), body.get("password"))
        return _json(None)

    async def impersonate(self, request: Request) -> Response:
        body = await self._body(request)
        token = body.get("accessToken")
        token = token if isinstance(token, str) and token else access_token(request)
        if token is None:
            raise InvalidToken(reason="missing")
        target = body.get("impersonated")
        if not isinstance(target, dict):
            raise InvalidRequest("impersonated must be an object")
        info = connection_info(request, self.proxies)
        return _json(await self.server.impersonate(token, target, info))

    async def jwks(self, request: Request) -> Response:
        return json_response(self.server.jwks(), headers={"Cache-Control": "public, max-age=300"})

    async def openapi(self, request: Request) -> Response:
        return json_response(self.document)

    async def health(self, request: Request) -> Response:
        await self.server.store.find_user_by_id("")  # StoreUnavailable → 503
        return _json({"status": "ok"})

    def endpoint(
        self, handler: EndpointHandler, cookie_path: str
    ) -> Callable[[Request], Awaitable[Response]]:
        async def route(request: Request) -> Response:
            body = await self._body(request) if request.method == "POST" else {}
            call = EndpointRequest(
                server=self.server,
                body=body,
                info=connection_info(request, self.proxies),
                access_token=access_token(request, body),
                path_params=dict(request.path_params),
                query=dict(request.query_params),
                cookies=dict(request.cookies),
                url=str(request.url),
            )
            result = await handler(call)
            if isinstance(result, Redirect):
                return _redirect(result, secure=request.url.scheme == "https", path=cookie_path)
            return _json(result)

        return route


def _redirect(redirect: Redirect, *, secure: bool, path: str) -> Response:
    response = RedirectResponse(redirect.location, status_code=302, headers=NO_STORE)
    for name, value in redirect.cookies.items():
        if value is None:
            response.delete_cookie(name, path=path, secure=secure, httponly=True, samesite="lax")
        else:
            response.set_cookie(
                name,
                value,
                max_age=redirect.cookie_max_age,
                path=path,
                secure=secure,
                httponly=True,
                samesite="lax",
            )
    return response


def _routes(server: AccountsServer, handlers: _Routes, prefix: str) -> list[BaseRoute]:
    routes: list[BaseRoute] = [
        Route("/refreshTokens", handlers.refresh_tokens, methods=["POST"]),
        Route("/logout", handlers.logout, methods=["POST"]),
        Route("/user", handlers.user, methods=["GET", "POST"]),
        Route("/user", handlers.delete_user, methods=["DELETE"]),
        Route("/sessions", handlers.list_sessions, methods=["GET"]),
        Route("/sessions", handlers.revoke_other_sessions, methods=["DELETE"]),
        Route("/sessions/freshen", handlers.freshen_session, methods=["POST"]),
        Route("/sessions/{sid}", handlers.revoke_session, methods=["DELETE"]),
        Route("/impersonate", handlers.impersonate, methods=["POST"]),
        Route("/.well-known/jwks.json", handlers.jwks, methods=["GET"]),
        Route("/health", handlers.health, methods=["GET"]),
        Route("/openapi.json", handlers.openapi, methods=["GET"]),
        *admin_routes(server, handlers.max_body),
    ]
    for name, service in server.services.items():
        if isinstance(service, ProvidesEndpoints):
            for endpoint in service.endpoints():
                route = handlers.endpoint(endpoint.handler, cookie_path=prefix or "/")
                path = (
                    endpoint.path if endpoint.path.startswith("/") else f"/{name}/{endpoint.path}"
                )
                routes.append(Route(path, route, methods=[endpoint.method]))
    routes += [
        Route("/{service}/authenticate", handlers.authenticate, methods=["POST"]),
        Route("/{service}/verifyAuthentication", handlers.verify_authentication, methods=["POST"]),
    ]
    return routes


def _under(prefix: str, route: BaseRoute) -> BaseRoute:
    """The route at `prefix + path`. Flat routes instead of a `Mount`: one router level less
    on every request (a few µs of `GET /user`, measured in benchmarks/run.py)."""
    assert isinstance(route, Route)
    return Route(prefix + route.path, route.endpoint, methods=route.methods, name=route.name)


async def _prune_forever(server: AccountsServer, every: timedelta) -> None:
    while True:
        await asyncio.sleep(every.total_seconds())
        try:
            await server.prune_expired()
        except AccountsError:
            logger.warning("periodic session prune failed; will retry", exc_info=True)


def create_app(
    server: AccountsServer,
    *,
    prefix: str = "/accounts",
    trusted_proxies: Sequence[str] = (),
    max_body_size: int = MAX_BODY_BYTES,
    close_store_on_shutdown: bool = False,
    prune_every: timedelta | None = None,
) -> Starlette:
    """The ASGI app. Routes live under `prefix`; with `prefix=""` it is meant to be mounted
    (`host.mount("/accounts", create_app(server, prefix=""))`). With a prefix, the JWKS is also
    served at the root `/.well-known/jwks.json`. `prune_every` deletes expired sessions
    periodically while the app runs (validity never depends on it).

    Raises:
        ConfigurationError: never; `ValueError` for an unparsable proxy network.
    """
    proxies = [ipaddress.ip_network(net, strict=False) for net in trusted_proxies]
    handlers = _Routes(server, proxies, max_body_size)
    root = prefix.rstrip("/")
    handlers.document = openapi_document(server, root)
    app_routes: list[BaseRoute] = [_under(root, r) for r in _routes(server, handlers, root)]
    if prefix:
        app_routes.append(Route("/.well-known/jwks.json", handlers.jwks, methods=["GET"]))

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await server.store.setup()
        pruner = None
        if prune_every is not None:
            pruner = asyncio.create_task(_prune_forever(server, prune_every))
        try:
            yield
        finally:
            if pruner is not None:
                pruner.cancel()
            if close_store_on_shutdown:
                await server.close()

    return Starlette(
        routes=app_routes,
        exception_handlers={
            AccountsError: handle_accounts_error,
            HTTPException: handle_http_exception,
            Exception: handle_unexpected,
        },
        lifespan=lifespan,
    )
