"""The contract between the server and a login service (password, OAuth, or one you write).

A service needs a `name` and `authenticate`; that is all a custom service (API key, LDAP, ...)
must provide. A service that wants its own routes, such as password's `register`, also offers
`endpoints()`: framework-free handlers the HTTP layer mounts at `/<service>/<path>` (or at an
absolute `/<path>`), so a service never imports a web framework. A handler returns JSON values,
or a `Redirect` (with cookies) for browser flows such as OAuth. Services find and write users
only through the store contract handed to them here.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

from .errors import ConfigurationError
from .hooks import Hooks
from .ratelimit import RateLimiter
from .stores.base import Store
from .types import ConnectionInfo, User

if TYPE_CHECKING:
    from .server import AccountsServer

__all__ = [
    "EndpointHandler",
    "EndpointRequest",
    "LoginService",
    "ProvidesEndpoints",
    "Redirect",
    "ServiceContext",
    "ServiceEndpoint",
    "check_service_name",
]

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,31}$")
_SEGMENT = re.compile(r"^([A-Za-z][A-Za-z0-9_-]{0,63}|\{[a-z_]{1,32}\})$")
#: Paths the protocol already gives every service.
_PROTOCOL_PATHS = frozenset({"authenticate", "verifyAuthentication"})


@dataclass(frozen=True, slots=True)
class ServiceContext:
    """What `authenticate` may use: the store, the server's hooks, clock and rate limiter."""

    store: Store
    hooks: Hooks
    clock: Callable[[], datetime]
    limiter: RateLimiter


class LoginService(Protocol):
    name: str

    async def authenticate(self, params: Mapping[str, Any], ctx: ServiceContext) -> User | None:
        """Return the user these params prove, or None (the server answers the same for both
        unknown user and bad proof). Raise an `AccountsError` for malformed params."""
        ...


@dataclass(frozen=True, slots=True)
class EndpointRequest:
    """A service route's call, already parsed: a JSON object body (empty for GET), path and
    query parameters, cookies, and the caller's details."""

    server: AccountsServer
    body: Mapping[str, Any]
    info: ConnectionInfo
    access_token: str | None
    path_params: Mapping[str, str] = field(default_factory=dict)
    query: Mapping[str, str] = field(default_factory=dict)
    cookies: Mapping[str, str] = field(default_factory=dict)
    #: The URL the request was made to, for building redirect URIs.
    url: str = ""


@dataclass(frozen=True, slots=True)
class Redirect:
    """Answer with a 302 to `location`. Cookies are set HttpOnly, SameSite=Lax, Secure over
    HTTPS, scoped to the accounts path; `None` as a value deletes the cookie."""

    location: str
    cookies: Mapping[str, str | None] = field(default_factory=dict)
    cookie_max_age: int = 600


#: Returns JSON values, `User`/`LoginResult` (put in wire form by the HTTP layer), or a Redirect.
EndpointHandler = Callable[[EndpointRequest], Awaitable[object]]


@dataclass(frozen=True, slots=True)
class ServiceEndpoint:
    """`path` is relative to the service (`register`, `{provider}/callback`) or, starting with
    `/`, to the accounts root (`/magiclink/requestMagicLinkEmail`)."""

    path: str
    handler: EndpointHandler
    method: Literal["GET", "POST"] = "POST"

    def __post_init__(self) -> None:
        segments = self.path.removeprefix("/").split("/")
        if (
            not all(_SEGMENT.match(segment) for segment in segments)
            or self.path in _PROTOCOL_PATHS
            or self.method not in ("GET", "POST")
        ):
            raise ConfigurationError(f"invalid endpoint {self.method} {self.path!r}")


@runtime_checkable
class ProvidesEndpoints(Protocol):
    def endpoints(self) -> Sequence[ServiceEndpoint]: ...


def check_service_name(name: object) -> str:
    """Raises:
    ConfigurationError: a name that cannot be a single URL path segment.
    """
    if not isinstance(name, str) or not _NAME.match(name):
        raise ConfigurationError(f"invalid login service name {name!r}")
    return name
