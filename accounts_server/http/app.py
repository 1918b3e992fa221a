"""The Starlette app speaking the accounts-js REST protocol. Glue only: each route parses the
request, calls one server method and serializes the result; the rules are in the core. Every
route is one `Operation` in the table below (login services' endpoints and the admin surface
included), from which both the routes and the OpenAPI document are derived."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import ClientDisconnect, Request
from starlette.routing import BaseRoute, Route

from ..deadline import STORE_DEADLINE
from ..errors import (
    AccountsError,
    AuthenticationFailed,
    ConfigurationError,
    InvalidRequest,
    InvalidToken,
    StoreUnavailable,
)
from ..server import AccountsServer
from ..services import EndpointHandler, EndpointRequest, ProvidesEndpoints
from .admin import admin_operations
from .errors import (
    handle_accounts_error,
    handle_client_disconnect,
    handle_http_exception,
    handle_unexpected,
)
from .observe import Observed, Observer, log_request
from .operations import Handler, Operation, openapi_document, route
from .request import (
    BODY_TIMEOUT,
    MAX_BODY_BYTES,
    Network,
    access_token,
    connection_info,
    query_int,
    read_json,
)
from .ui import UIConfig
from .wire import AUDIT_PAGE, audit_page, ref

__all__ = ["create_app"]

logger = logging.getLogger("accounts_server.http")

_STRING = {"type": "string"}
_NULL = {"type": "null"}
_WHO = "The logged-in user, or null"
_USER_OR_NULL = {"oneOf": [ref("User"), _NULL]}


class _Handlers:
    def __init__(
        self,
        server: AccountsServer,
        trusted_proxies: Sequence[Network],
        max_body: int,
        body_timeout: float,
    ) -> None:
        self.server = server
        self.proxies = trusted_proxies
        self.max_body = max_body
        self.body_timeout = body_timeout
        self.document: dict[str, Any] = {}

    async def body(self, request: Request) -> Any:
        return await read_json(request, max_bytes=self.max_body, arrival=self.body_timeout)

    @staticmethod
    def _token(request: Request, body: Any = None) -> str:
        token = access_token(request, body)
        if token is None:
            raise InvalidToken(reason="missing")
        return token

    async def authenticate(self, request: Request) -> object:
        body = await self.body(request)
        info = connection_info(request, self.proxies)
        return await self.server.login_with_service(request.path_params["service"], body, info)

    async def mfa_authenticate(self, request: Request) -> object:
        body = await self.body(request)
        return await self.server.login_with_mfa(body, connection_info(request, self.proxies))

    async def verify_authentication(self, request: Request) -> object:
        body = await self.body(request)
        info = connection_info(request, self.proxies)
        service = request.path_params["service"]
        return await self.server.authenticate_with_service(service, body, info)

    async def refresh_tokens(self, request: Request) -> object:
        body = await self.body(request)
        refresh, access = body.get("refreshToken"), body.get("accessToken")
        if not isinstance(refresh, str) or not (access is None or isinstance(access, str)):
            raise InvalidRequest("refreshToken (and accessToken, if given) must be strings")
        info = connection_info(request, self.proxies)
        return await self.server.refresh_tokens(access, refresh, info)

    async def logout(self, request: Request) -> object:
        await self.server.logout(self._token(request, await self.body(request)))
        return None

    async def user(self, request: Request) -> object:
        """200 `null` without a valid token: the accounts-js client's "am I logged in" check
        relies on it. A store outage is still a 503, never a silent `null`."""
        body = await self.body(request) if request.method == "POST" else {}
        token = access_token(request, body)
        if token is None:
            return None
        try:
            return await self.server.resume_session(token)
        except AuthenticationFailed:
            return None

    async def delete_user(self, request: Request) -> object:
        """`DELETE /user {password}`: delete one's own account."""
        body = await self.body(request)
        await self.server.delete_own_account(self._token(request, body), body.get("password"))
        return None

    async def list_sessions(self, request: Request) -> object:
        """The caller's own sessions only; no secret or hash in any field."""
        return await self.server.list_own_sessions(self._token(request))

    async def list_audit(self, request: Request) -> object:
        """The caller's own recent security activity, newest first, a page at a time."""
        limit = query_int(request, "limit", 50)
        before = request.query_params.get("before") or None
        records = await self.server.list_own_audit(self._token(request), before=before, limit=limit)
        return audit_page(records, limit)

    async def revoke_session(self, request: Request) -> object:
        """Another user's session id answers exactly as an unknown one: 404."""
        await self.server.revoke_own_session(self._token(request), request.path_params["sid"])
        return None

    async def freshen_session(self, request: Request) -> object:
        """Mark this session used now (pushes back its idle expiry, never its absolute one)."""
        return await self.server.freshen_session(self._token(request))

    async def revoke_other_sessions(self, request: Request) -> object:
        return {"revoked": await self.server.revoke_other_sessions(self._token(request))}

    async def impersonate(self, request: Request) -> object:
        body = await self.body(request)
        token = body.get("accessToken")
        token = token if isinstance(token, str) and token else access_token(request)
        if token is None:
            raise InvalidToken(reason="missing")
        target = body.get("impersonated")
        if not isinstance(target, dict):
            raise InvalidRequest("impersonated must be an object")
        info = connection_info(request, self.proxies)
        return await self.server.impersonate(token, target, info)

    async def jwks(self, request: Request) -> object:
        return self.server.jwks()

    async def openapi(self, request: Request) -> object:
        return self.document

    async def health(self, request: Request) -> object:
        await self.server.store.find_user_by_id("")  # StoreUnavailable → 503
        return {"status": "ok"}

    def endpoint(self, handler: EndpointHandler) -> Handler:
        async def call(request: Request) -> object:
            body = await self.body(request) if request.method != "GET" else {}
            endpoint_request = EndpointRequest(
                body=body,
                info=connection_info(request, self.proxies),
                access_token=access_token(request, body),
                path_params=dict(request.path_params),
                query=dict(request.query_params),
                cookies=dict(request.cookies),
                url=str(request.url),
            )
            return await self.server.call_endpoint(handler, endpoint_request)

        return call


def _operations(server: AccountsServer, h: _Handlers) -> list[Operation]:
    """Every route, in matching order (services' own paths before `/{service}/...`)."""
    token_body = _object(accessToken=_STRING)
    refresh_body = {
        **_object(accessToken=_STRING, refreshToken=_STRING),
        "required": ["refreshToken"],
    }
    target = _object(userId=_STRING, username=_STRING, email=_STRING)
    mfa_body = {
        **_object(mfaToken=_STRING, code=_STRING, webauthn={"type": "object"}),
        "required": ["mfaToken"],
    }
    impersonate_body = {
        **_object(accessToken=_STRING, impersonated=target),
        "required": ["accessToken", "impersonated"],
    }
    # A table: one operation per entry (fmt: off keeps its columns).
    # fmt: off
    operations = [
        Operation("POST", "/mfa/authenticate", h.mfa_authenticate,
                  "Finish a login that answered TwoFactorCodeRequired: its mfaToken and one "
                  "proof, a TOTP or recovery `code` or a factor service's (`webauthn`)",
                  ref("LoginResult"), body=mfa_body),
        Operation("POST", "/refreshTokens", h.refresh_tokens,
                  "Rotate the refresh token and issue a new pair", ref("LoginResult"),
                  body=refresh_body),
        Operation("POST", "/logout", h.logout, "End this session", _NULL,
                  auth="required", body=token_body, body_required=False),
        Operation("GET", "/user", h.user, _WHO, _USER_OR_NULL, auth="optional"),
        Operation("POST", "/user", h.user, _WHO, _USER_OR_NULL,
                  auth="optional", body=token_body, body_required=False),
        Operation("DELETE", "/user", h.delete_user,
                  "Delete one's own account (users with a password give it)", _NULL,
                  auth="required", body=_object(password=_STRING), body_required=False),
        Operation("GET", "/audit", h.list_audit,
                  "One's own recent security activity, newest first (before, limit)",
                  AUDIT_PAGE, auth="required"),
        Operation("GET", "/sessions", h.list_sessions, "One's own live sessions",
                  {"type": "array", "items": ref("Session")}, auth="required"),
        Operation("DELETE", "/sessions", h.revoke_other_sessions, "End all one's other sessions",
                  _object(revoked={"type": "integer"}), auth="required"),
        Operation("POST", "/sessions/freshen", h.freshen_session, "Mark this session used now",
                  ref("Session"), auth="required"),
        Operation("DELETE", "/sessions/{sid}", h.revoke_session, "End one of one's sessions",
                  _NULL, auth="required"),
        Operation("POST", "/impersonate", h.impersonate,
                  "Open a session as another user, if allowed", ref("ImpersonationResult"),
                  body=impersonate_body),
        Operation("GET", "/.well-known/jwks.json", h.jwks, "Public keys", ref("JWKS"),
                  max_age=300),
        Operation("GET", "/health", h.health, "Liveness, including the store",
                  _object(status=_STRING)),
        Operation("GET", "/openapi.json", h.openapi, "This document", {"type": "object"}),
        *admin_operations(server, h.body),
    ]
    # fmt: on
    for name, service in server.services.items():
        if isinstance(service, ProvidesEndpoints):
            for endpoint in service.endpoints():
                path = endpoint.path
                operations.append(
                    Operation(
                        endpoint.method,
                        path if path.startswith("/") else f"/{name}/{path}",
                        h.endpoint(endpoint.handler),
                        endpoint.summary or f"{name}: {path}",
                        endpoint.response,
                        body=endpoint.body if endpoint.method != "GET" else None,
                        body_required=False,
                        auth=endpoint.auth,
                        redirects=endpoint.redirects,
                    )
                )
    # fmt: off
    operations += [
        Operation("POST", "/{service}/authenticate", h.authenticate,
                  "Log in with a login service", ref("LoginResult"), body={"type": "object"}),
        Operation("POST", "/{service}/verifyAuthentication", h.verify_authentication,
                  "Check credentials without opening a session", {"type": "boolean"},
                  body={"type": "object"}),
    ]
    # fmt: on
    return operations


def _object(**properties: object) -> dict[str, Any]:
    return {"type": "object", "properties": properties}


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
    body_timeout: float = BODY_TIMEOUT,
    close_store_on_shutdown: bool = False,
    prune_every: timedelta | None = None,
    cors_origins: Sequence[str] = (),
    access_log: bool = False,
    metrics: bool = False,
    store_deadline: float = STORE_DEADLINE,
    ui: UIConfig | bool = False,
) -> Starlette:
    """The ASGI app. Routes live under `prefix`; with `prefix=""` it is meant to be mounted
    (`host.mount("/accounts", create_app(server, prefix=""))`). With a prefix, the JWKS is also
    served at the root `/.well-known/jwks.json`. A body must arrive within `body_timeout`
    seconds (408 otherwise). `prune_every` deletes expired sessions periodically while the app
    runs (validity never depends on it). `cors_origins` lets pages on those exact origins call
    the API with credentials (CORS is off without them; `*` is refused). `access_log` writes
    a line per request on `accounts_server.access` (route template, status, error code, request
    id, user id; never a path or query a client sent); `metrics` serves Prometheus text at the
    root `/metrics` (needs prometheus-client). All the store calls of one request share
    `store_deadline` seconds (`accounts_server.deadline`): a frozen database answers 503 in
    that time however many calls the request makes. `ui` (True, or a `UIConfig`) serves the
    hosted pages at `prefix + "/ui"` (needs Jinja2 and segno).

    Raises:
        ConfigurationError: a CORS origin that is not exact; `ValueError` for an unparsable
            proxy network.
    """
    middleware = [Middleware(CORSMiddleware, **cors_settings(cors_origins))] if cors_origins else []
    observers: list[Observer] = [log_request] if access_log else []
    proxies = [ipaddress.ip_network(net, strict=False) for net in trusted_proxies]
    handlers = _Handlers(server, proxies, max_body_size, body_timeout)
    root = prefix.rstrip("/")
    operations = _operations(server, handlers)
    handlers.document = openapi_document(operations, root)
    routes: list[BaseRoute] = [
        route(op, root, cookie_path=root or "/", deadline=store_deadline) for op in operations
    ]
    if root:
        jwks = next(op for op in operations if op.handler == handlers.jwks)
        routes.append(route(jwks, "", cookie_path="/", deadline=store_deadline))
    if ui:
        from .ui.mount import ui_mount

        config = ui if isinstance(ui, UIConfig) else UIConfig()
        routes.append(
            ui_mount(
                server,
                config,
                root=f"{root}/ui",
                api_root=root,
                proxies=proxies,
                deadline=store_deadline,
            )
        )
    if metrics:
        from .metrics import Metrics

        counted = Metrics(server)
        observers.append(counted.observe)
        routes.append(Route("/metrics", counted.endpoint, methods=["GET"]))
    if observers:  # outermost: it times and records what the client gets, CORS included
        middleware.insert(0, Middleware(Observed, observers=observers))

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            await server.store.setup()
        except StoreUnavailable:
            # Serve anyway: every request answers 503 until the database is back, then works
            # without a restart (stores never rely on setup for uniqueness).
            logger.warning("the store is unavailable at startup; answering 503 until it is back")
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
        routes=routes,
        exception_handlers={
            AccountsError: handle_accounts_error,
            ClientDisconnect: handle_client_disconnect,
            HTTPException: handle_http_exception,
            Exception: handle_unexpected,
        },
        lifespan=lifespan,
        middleware=middleware,
    )


def cors_settings(origins: Sequence[str]) -> dict[str, Any]:
    """CORSMiddleware's settings for exact origins: with credentials (the accounts-js client
    sends the Authorization header), so never a wildcard (the Fetch standard forbids `*` with
    credentials, and reflecting any origin would hand every site the API).

    Raises:
        ConfigurationError: an origin that is not exact.
    """
    for origin in origins:
        parts = urlsplit(origin)
        exact = (
            parts.scheme in ("http", "https")
            and parts.hostname
            and origin == f"{parts.scheme}://{parts.netloc}"
            and not parts.username
            and origin == origin.lower()
        )
        if not exact:
            raise ConfigurationError(
                f"CORS origin {origin!r} is not an exact origin such as https://app.example.com "
                "(lower case, no path, no trailing slash, no wildcard)"
            )
    return {
        "allow_origins": list(origins),
        "allow_credentials": True,
        "allow_methods": ["GET", "POST", "PATCH", "DELETE"],
        "allow_headers": ["Authorization", "Content-Type"],
        "max_age": 600,
    }
