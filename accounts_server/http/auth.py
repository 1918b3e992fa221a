"""Protecting a host app's routes: a Starlette `AuthenticationBackend` and FastAPI
dependencies, both on the server's stateful `resume_user_and_session` (revocation holds on the
next request), and a backend on the stateless `TokenVerifier` for services that hold only the JWKS.

Starlette's convention: `authenticate` returns None for an anonymous request and raises
`AuthenticationError` for a bad token; `on_auth_error` turns that into our JSON 401.

Step-up (RFC 9470): every access token says how and when its user signed in (`amr`,
`auth_time`). The backends grant the scope `mfa` to a sign-in with a second factor, so
`@requires(["authenticated", "mfa"])` guards a Starlette route in one line;
`CurrentUser(server, mfa=True, max_age=...)` does it for FastAPI and answers RFC 9470's 401
`insufficient_user_authentication`, which tells the client to sign in again.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from starlette.authentication import (
    AuthCredentials,
    AuthenticationBackend,
    AuthenticationError,
    BaseUser,
)
from starlette.exceptions import HTTPException
from starlette.requests import HTTPConnection, Request
from starlette.responses import Response

from ..errors import AccountsError, AuthenticationFailed, StepUpRequired, TemporarilyUnavailable
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
    "check_step_up",
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


def _scopes(impersonated: bool, amr: tuple[str, ...]) -> AuthCredentials:
    scopes = ["authenticated"]
    if impersonated:
        scopes.append("impersonated")
    if "mfa" in amr:
        scopes.append("mfa")
    return AuthCredentials(scopes)


def check_step_up(
    session: Session, *, now: datetime, mfa: bool = False, max_age: timedelta | None = None
) -> None:
    """Whether the session's sign-in is enough: with a second factor (`mfa`), and no longer
    ago than `max_age`.

    Raises:
        StepUpRequired.
    """
    if mfa and "mfa" not in session.amr:
        raise StepUpRequired()
    if max_age is not None and now - session.created_at > max_age:
        raise StepUpRequired("This needs a recent sign-in", max_age=int(max_age.total_seconds()))


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
        scopes = _scopes(session.impersonator_id is not None, session.amr)
        return scopes, AccountsUser(user, session)


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
        return _scopes(claims.actor is not None, claims.amr), TokenUser(claims)


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
    `Depends(CurrentUser(server, optional=True))` is None for anonymous callers;
    `Depends(CurrentUser(server, mfa=True, max_age=timedelta(minutes=10)))` also wants a
    sign-in with a second factor, at most 10 minutes ago (else RFC 9470's 401).
    A deactivated user's sessions are revoked at once, so every user returned is active."""

    def __init__(
        self,
        server: AccountsServer,
        *,
        optional: bool = False,
        mfa: bool = False,
        max_age: timedelta | None = None,
    ) -> None:
        self.server = server
        self.optional = optional
        self.mfa = mfa
        self.max_age = max_age

    async def __call__(self, request: Request) -> User | None:
        token = bearer_token(request)
        try:
            if token is None:
                raise AuthenticationFailed("Not authenticated")
            user, session = await self.server.resume_user_and_session(token)
            check_step_up(session, now=self.server.clock(), mfa=self.mfa, max_age=self.max_age)
        except StepUpRequired as exc:
            raise _http_error(exc) from exc
        except AuthenticationFailed as exc:
            if self.optional:
                return None
            raise _http_error(exc) from exc
        except TemporarilyUnavailable as exc:
            raise _http_error(exc) from exc
        return user


def _http_error(error: AccountsError) -> HTTPException:
    headers = {"WWW-Authenticate": "Bearer"}
    if isinstance(error, StepUpRequired):
        # RFC 9470 §3: the challenge says what would be enough.
        challenge = 'Bearer error="insufficient_user_authentication"'
        if error.max_age is not None:
            challenge += f', max_age="{error.max_age}"'
        headers = {"WWW-Authenticate": challenge}
    if isinstance(error, TemporarilyUnavailable):
        headers = {"Retry-After": str(error.retry_after)}
    detail = {"message": error.message, "code": error.code}
    return HTTPException(status_for(error), detail=detail, headers=headers)  # type: ignore[arg-type]
