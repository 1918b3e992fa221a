"""The contract between the server and a login service (password, OAuth, or one you write).

A service needs a `name` and `authenticate`; that is all a custom service (API key, LDAP, ...)
must provide. A service that wants its own routes, such as password's `register`, also offers
`endpoints()`: framework-free handlers the HTTP layer mounts at `/<service>/<path>` (or at an
absolute `/<path>`), so a service never imports a web framework. A handler returns JSON values,
`User`/`LoginResult` values, or a `Redirect` (with cookies) for browser flows such as OAuth.
Everything a service uses of the server comes through its `ServiceContext` (`context.py`).
A service whose users know a secret may also offer `SecretService`, which the core uses
without naming any service; one that can also be a second factor after another service's
first step (passkeys after a password) offers `SecondFactor`; and `LoginAvailability` says
whether a service can still log a user in, so no one removes their last way in.
`accounts-server serve` builds an installed service by calling its entry point with the
service's `ServiceSettings`.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, cast, runtime_checkable

from .context import ServiceContext
from .errors import ConfigurationError
from .mail import Mailer
from .types import ConnectionInfo, User

__all__ = [
    "Authenticated",
    "EndpointHandler",
    "EndpointRequest",
    "LoginAvailability",
    "LoginService",
    "OffersSignInLinks",
    "ProvidesEndpoints",
    "Redirect",
    "SecondFactor",
    "SecretService",
    "ServiceEndpoint",
    "ServiceSettings",
    "SignInLink",
]

_SEGMENT = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,63}|\{[a-z_]{1,32}\}")
#: Paths the protocol already gives every service.
_PROTOCOL_PATHS = frozenset({"authenticate", "verifyAuthentication"})


@dataclass(frozen=True, slots=True)
class Authenticated:
    """What a service may return instead of a bare `User` to say how the user proved
    themselves: the RFC 8176 `amr` values the session and its access tokens carry (a bare
    `User` carries none)."""

    user: User
    amr: tuple[str, ...] = ()
    #: This proof is a first factor: a user who has a second one (TOTP, a passkey) must give
    #: it too before a session opens, unless `amr` already says `mfa`.
    second_factor: bool = False


class LoginService(Protocol):
    name: str

    async def authenticate(
        self, params: Mapping[str, Any], ctx: ServiceContext
    ) -> User | Authenticated | None:
        """Return the user these params prove, or None (the server answers the same for both
        unknown user and bad proof). Raise an `AccountsError` for malformed params."""
        ...


@dataclass(frozen=True, slots=True)
class EndpointRequest:
    """A service route's call, already parsed: a JSON object body (empty for GET), path and
    query parameters, cookies, and the caller's details."""

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


#: Returns JSON values, `User`/`LoginResult` (sanitized by the server, put in wire form by the
#: HTTP layer), or a Redirect.
EndpointHandler = Callable[[EndpointRequest, ServiceContext], Awaitable[object]]


@dataclass(frozen=True, slots=True)
class ServiceEndpoint:
    """`path` is relative to the service (`register`, `{provider}/callback`) or, starting with
    `/`, to the accounts root (`/magiclink/requestMagicLinkEmail`). `summary`, `body` and
    `response` (JSON Schemas) document it in the OpenAPI document; `auth` says whether it
    wants an access token."""

    path: str
    handler: EndpointHandler = field(repr=False)
    method: Literal["GET", "POST", "PATCH", "DELETE"] = "POST"
    summary: str = ""
    body: Mapping[str, Any] = field(default_factory=lambda: {"type": "object"})
    response: Mapping[str, Any] = field(default_factory=dict)
    auth: Literal["none", "optional", "required"] = "none"
    #: May answer with a `Redirect` (browser flows).
    redirects: bool = False

    def __post_init__(self) -> None:
        segments = self.path.removeprefix("/").split("/")
        if (
            not all(_SEGMENT.fullmatch(segment) for segment in segments)
            or self.path in _PROTOCOL_PATHS
            or self.method not in ("GET", "POST", "PATCH", "DELETE")
        ):
            raise ConfigurationError(f"invalid endpoint {self.method} {self.path!r}")


@runtime_checkable
class ProvidesEndpoints(Protocol):
    def endpoints(self) -> Sequence[ServiceEndpoint]: ...


@dataclass(frozen=True, slots=True)
class SignInLink:
    """A sign-in the hosted pages offer as a button: the browser goes to `path` (under the
    accounts root, e.g. `/oauth/google/authorize`), where the service's own flow starts."""

    label: str
    path: str


@runtime_checkable
class OffersSignInLinks(Protocol):
    """A service whose sign-in starts with a browser redirect (OpenID Connect)."""

    def sign_in_links(self) -> Sequence[SignInLink]: ...


@runtime_checkable
class SecretService(Protocol):
    """A service whose users prove themselves with a secret they know (a password). The core
    asks every such service to re-check the user before an irreversible step (deleting one's
    own account), and uses one to give a user an operator creates a first secret."""

    name: str

    async def has_secret(self, user_id: str, ctx: ServiceContext) -> bool:
        """Whether the user has a secret with this service."""
        ...

    async def verify_secret(self, user: User, secret: object, ctx: ServiceContext) -> bool:
        """Whether `secret` is the user's (failures count towards the login lockout).

        Raises:
            RateLimited: too many failures.
        """
        ...

    async def secret_data(self, secret: str) -> Mapping[str, Any]:
        """The service data that lets a new user log in with `secret`.

        Raises:
            InvalidPassword (or the service's own `ValidationFailed`): `secret` is refused.
        """
        ...


@runtime_checkable
class SecondFactor(Protocol):
    """A service that is also a second factor after another service's first step. Its proof
    comes to `POST mfa/authenticate` under the service's name, beside the `mfaToken`."""

    name: str

    async def second_factor_challenge(
        self, user: User, ctx: ServiceContext
    ) -> Mapping[str, Any] | None:
        """None if the user has no such factor; else what the client needs to answer it (a
        passkey's request options), sent with the `mfaToken`."""
        ...

    async def verify_second_factor(
        self, user: User, proof: object, ctx: ServiceContext
    ) -> tuple[str, ...]:
        """The RFC 8176 `amr` values `proof` earns (with `mfa`).

        Raises:
            AuthenticationFailed: the proof is refused; InvalidRequest: it is malformed.
        """
        ...


@runtime_checkable
class LoginAvailability(Protocol):
    """A service that can tell whether it could log a user in now (a password is set, an
    email can receive a link)."""

    name: str

    async def can_log_in(self, user: User, ctx: ServiceContext) -> bool: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class ServiceSettings:
    """What `accounts-server serve` hands a login service's entry-point factory
    (`factory(settings) -> LoginService`): the service's own settings, from its
    `[services.<name>]` table with `ACCOUNTS_<NAME>_<KEY>` variables over it, and the
    server-wide ones a service may need (the mail transport, the front end's address).

    The readers check each value's type and name the setting in every error; a variable is a
    string, so they read `"20"` as 20 and `"a, b"` as two items. `check_known` refuses a
    setting the service does not read: a typo is a startup error, not a line ignored.
    """

    name: str
    values: Mapping[str, Any] = field(default_factory=dict)
    mailer: Mailer | None = None
    site_url: str = "http://localhost:3000"
    #: Where an operator keeps mail texts replacing a service's own (`MailTemplate.overridden`).
    mail_templates: Path | None = None

    def check_known(self, *keys: str) -> None:
        """Raises:
        ConfigurationError: a setting not among `keys`.
        """
        unknown = sorted(set(self.values) - set(keys))
        if unknown:
            known = ", ".join(sorted(keys)) or "none"
            raise ConfigurationError(
                f"services.{self.name}: unknown setting(s) {', '.join(unknown)} (known: {known})"
            )

    def text(self, key: str, default: str | None = None) -> str | None:
        value = self.values.get(key, default)
        if value is not None and not isinstance(value, str):
            raise self._bad(key, "a string")
        return value

    def required(self, key: str) -> str:
        """Raises:
        ConfigurationError: the setting is missing or empty.
        """
        value = self.text(key)
        if not value:
            raise ConfigurationError(f"services.{self.name}.{key} is required")
        return value

    def texts(self, key: str, default: Sequence[str] = ()) -> tuple[str, ...]:
        value = self.values.get(key, default)
        if isinstance(value, str):
            return tuple(value.replace(",", " ").split())
        if not isinstance(value, Sequence) or not all(isinstance(v, str) for v in value):
            raise self._bad(key, "a list of strings")
        return tuple(value)

    def integer(self, key: str, default: int) -> int:
        value = self.values.get(key, default)
        if isinstance(value, str) and value.strip().lstrip("-").isdecimal():
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool):
            raise self._bad(key, "an integer")
        return value

    def flag(self, key: str, default: bool) -> bool:
        value = self.values.get(key, default)
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            value = value.lower() in ("true", "1", "yes")
        if not isinstance(value, bool):
            raise self._bad(key, "true or false")
        return value

    def tables(self, key: str) -> Mapping[str, Mapping[str, Any]]:
        """A table of tables (`[services.oauth.providers.google]`), by name."""
        value = self.values.get(key, {})
        tables = isinstance(value, Mapping) and all(isinstance(v, Mapping) for v in value.values())
        if not tables:
            raise self._bad(key, f"tables, e.g. [services.{self.name}.{key}.<name>]")
        return cast("Mapping[str, Mapping[str, Any]]", value)

    def _bad(self, key: str, what: str) -> ConfigurationError:
        return ConfigurationError(f"services.{self.name}.{key} must be {what}")
