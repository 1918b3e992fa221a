"""The values that cross the server's public surface.

They carry no secret by construction: password hashes and other service data live in the
store under the service's name and never become a field here, refresh-token hashes stay in
`stores.base.StoredSession`. So anything built from these types is safe to return or to hand
to a hook.

A session's fields are declared once, in `SessionFields`: `Session` adds what a listing says,
`StoredSession` what the store keeps. Neither is the other, so a stored session (with its
hashes) can never be passed off as a public one; `StoredSession.public()` makes the copy.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

__all__ = [
    "Clock",
    "ConnectionInfo",
    "Email",
    "ImpersonationResult",
    "LoginResult",
    "Session",
    "SessionFields",
    "Tokens",
    "User",
    "utc_now",
]


#: Where the server, its sessions, tokens, limits and one-time tokens read the time: injected,
#: so a test advances a clock instead of waiting.
Clock = Callable[[], datetime]


def utc_now() -> datetime:
    """The default clock."""
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class ConnectionInfo:
    """Where a request came from, recorded on the session it opens."""

    ip: str | None = None
    user_agent: str | None = None


@dataclass(frozen=True, slots=True)
class Email:
    address: str
    verified: bool = False


@dataclass(frozen=True, slots=True)
class User:
    id: str
    username: str | None = None
    emails: tuple[Email, ...] = ()
    deactivated: bool = False
    created_at: datetime | None = None
    updated_at: datetime | None = None
    #: Application fields (profile, roles, ...); never secrets.
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SessionFields:
    """What a session is, public and stored alike. Not used on its own."""

    id: str
    user_id: str
    valid: bool
    created_at: datetime
    updated_at: datetime
    last_used_at: datetime
    expires_at: datetime
    ip: str | None = None
    user_agent: str | None = None
    impersonator_id: str | None = None
    #: How the user proved themselves when the session opened (RFC 8176 values, e.g.
    #: `("pwd",)`, `("mfa", "otp", "pwd")`); every access token of the session carries it.
    amr: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Session(SessionFields):
    #: True for the session of the request that asked (in listings).
    current: bool = False


@dataclass(frozen=True, slots=True)
class Tokens:
    access_token: str
    refresh_token: str


@dataclass(frozen=True, slots=True)
class LoginResult:
    session_id: str
    tokens: Tokens
    user: User


@dataclass(frozen=True, slots=True)
class ImpersonationResult:
    authorized: bool
    tokens: Tokens | None = None
    user: User | None = None
