"""Protecting a host app's routes: a Starlette `AuthenticationBackend` and FastAPI
dependencies, both on the server's stateful `resume_user_and_session` (revocation holds on the
next request), and a backend on the stateless `TokenVerifier` for services that hold only the JWKS.

Starlette's convention: `authenticate` returns None for an anonymous request and raises
`AuthenticationError` for a bad token; `on_auth_error` turns that into our JSON 401.
"""

from __future__ import annotations

from starlette.authentication import (
    AuthCredentials,
    AuthenticationBackend,
    AuthenticationError,
    BaseUser,
)
from starlette.exceptions import HTTPException
from starlette.requests import HTTPConnection, Request
from starlette.responses import Response

from ..errors import AccountsError, AuthenticationFailed, TemporarilyUnavailable
from ..server import AccountsServer
from ..tokens import AccessClaims
from ..types import Session, User
from .errors import status_for
from .request import bearer_token
from .verifier import TokenVerifier
from .wire import json_response

__all__ = [
    "AccountsBackend",
    "AccountsUser",
    "CurrentUser",
    "StatelessBackend",
    "TokenUser",
    "on_auth_error",
]


class AccountsUser(BaseUser):
    """`request.user` for a request with a live session."""

    def __init__(self, user: User, session: Session) -> None:
        self.user = user
        self.session = session

    @property
    def is_authenticated(self) -> bool:
        return True

    @property
    def display_name(self) -> str:
        if self.user.username:
            return self.user.username
        return self.user.emails[0].address if self.user.emails else self.user.id

    @property
    def identity(self) -> str:
        return self.user.id


class TokenUser(BaseUser):
    """`request.user` from a verified token alone (stateless)."""

    def __init__(self, claims: AccessClaims) -> None:
        self.claims = claims

    @property
    def is_authenticated(self) -> bool:
        return True

    @property
    def display_name(self) -> str:
        return self.claims.sub

    @property
    def identity(self) -> str:
        return self.claims.sub


def _scopes(impersonated: bool) -> AuthCredentials:
    return AuthCredentials(["authenticated", "impersonated"] if impersonated else ["authenticated"])


class AccountsBackend(AuthenticationBackend):
    """Stateful: every request checks the session and the user (one store round trip)."""

    def __init__(self, server: AccountsServer) -> None:
        self.server = server

    async def authenticate(self, conn: HTTPConnection) -> tuple[AuthCredentials, BaseUser] | None:
        token = bearer_token(conn)
        if token is None:
            return None
        try:
            user, session = await self.server.resume_user_and_session(token)
        except AuthenticationFailed as exc:
            raise AuthenticationError(exc.code) from exc
        return _scopes(session.impersonator_id is not None), AccountsUser(user, session)


class StatelessBackend(AuthenticationBackend):
    """Signature and claims only: a revoked session is seen only when its access token expires
    (at most the access lifetime, 15 minutes by default). Choose it knowingly."""

    def __init__(self, verifier: TokenVerifier) -> None:
        self.verifier = verifier

    async def authenticate(self, conn: HTTPConnection) -> tuple[AuthCredentials, BaseUser] | None:
        token = bearer_token(conn)
        if token is None:
            return None
        try:
            claims = await self.verifier.verify(token)
        except AuthenticationFailed as exc:
            raise AuthenticationError(exc.code) from exc
        return _scopes(claims.actor is not None), TokenUser(claims)


def on_auth_error(conn: HTTPConnection, exc: AuthenticationError) -> Response:
    """For `AuthenticationMiddleware(on_error=...)`: a JSON 401 with the stable code."""
    return json_response(
        {"message": "Invalid or expired token", "code": str(exc) or "InvalidToken"},
        status_code=401,
        headers={"WWW-Authenticate": "Bearer"},
    )


class CurrentUser:
    """A FastAPI dependency (any callable taking a `Request` works):
    `Depends(CurrentUser(server))` is the user of a live session or a 401;
    `Depends(CurrentUser(server, optional=True))` is None for anonymous callers.
    A deactivated user's sessions are revoked at once, so every user returned is active."""

    def __init__(self, server: AccountsServer, *, optional: bool = False) -> None:
        self.server = server
        self.optional = optional

    async def __call__(self, request: Request) -> User | None:
        token = bearer_token(request)
        try:
            if token is None:
                raise AuthenticationFailed("Not authenticated")
            user, _ = await self.server.resume_user_and_session(token)
        except AuthenticationFailed as exc:
            if self.optional:
                return None
            raise _http_error(exc) from exc
        except TemporarilyUnavailable as exc:
            raise _http_error(exc) from exc
        return user


def _http_error(error: AccountsError) -> HTTPException:
    headers = {"WWW-Authenticate": "Bearer"}
    if isinstance(error, TemporarilyUnavailable):
        headers = {"Retry-After": str(error.retry_after)}
    detail = {"message": error.message, "code": error.code}
    return HTTPException(status_for(error), detail=detail, headers=headers)  # type: ignore[arg-type]
