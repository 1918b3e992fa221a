"""Every error accounts-server raises, with the stable accounts-js code a client branches on.

This module knows nothing of HTTP: the only `{error: status}` table is in `http/errors.py`.
Messages are safe to show a client; context lives in attributes and never holds a secret.

    AccountsError
    ├── ConfigurationError          misuse, raised at startup (or issue time for hooks)
    ├── InvalidRequest              malformed input: wrong types, not an object, too deep
    │   ├── RequestTooLarge
    │   ├── RequestTimeout          the body did not arrive in time
    │   └── UnsupportedMediaType
    ├── ValidationFailed            well-formed input with a value we refuse
    │   ├── InvalidEmail
    │   ├── InvalidUsername
    │   ├── InvalidPassword
    │   └── UsernameOrEmailRequired
    ├── AuthenticationFailed
    │   ├── InvalidCredentials
    │   └── InvalidToken            (.reason says why, for logs)
    │       ├── TokenExpired
    │       ├── TokenReused
    │       ├── ResetPasswordLinkExpired
    │       └── VerifyEmailLinkExpired
    ├── Forbidden
    │   ├── UserDeactivated
    │   ├── LoginNotAllowed
    │   └── AdminNotAllowed
    ├── NotFound
    │   ├── ServiceNotFound
    │   ├── UserNotFound
    │   ├── SessionNotFound
    │   └── RouteNotFound
    ├── MethodNotAllowed
    ├── Conflict
    │   ├── UsernameAlreadyExists
    │   ├── EmailAlreadyExists
    │   ├── IdentityAlreadyLinked
    │   └── CredentialAlreadyExists
    ├── RateLimited                 (.retry_after, seconds)
    └── TemporarilyUnavailable      (.retry_after, seconds)
        ├── StoreUnavailable
        ├── MailUnavailable
        └── Overloaded
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "AccountsError",
    "AdminNotAllowed",
    "AuthenticationFailed",
    "ConfigurationError",
    "Conflict",
    "CredentialAlreadyExists",
    "EmailAlreadyExists",
    "Forbidden",
    "IdentityAlreadyLinked",
    "InvalidCredentials",
    "InvalidEmail",
    "InvalidPassword",
    "InvalidRequest",
    "InvalidToken",
    "InvalidUsername",
    "LoginNotAllowed",
    "MailUnavailable",
    "MethodNotAllowed",
    "NotFound",
    "Overloaded",
    "RateLimited",
    "RequestTimeout",
    "RequestTooLarge",
    "ResetPasswordLinkExpired",
    "RouteNotFound",
    "ServiceNotFound",
    "SessionNotFound",
    "StoreUnavailable",
    "TemporarilyUnavailable",
    "TokenExpired",
    "TokenReused",
    "UnsupportedMediaType",
    "UserDeactivated",
    "UserNotFound",
    "UsernameAlreadyExists",
    "UsernameOrEmailRequired",
    "ValidationFailed",
    "VerifyEmailLinkExpired",
]


class AccountsError(Exception):
    """Base of every error; `code` is the wire contract, `message` is safe for a client."""

    code: ClassVar[str] = "AccountsError"
    default_message: ClassVar[str] = "Request failed"

    def __init__(self, message: str | None = None) -> None:
        self.message = message or self.default_message
        super().__init__(self.message)


class ConfigurationError(AccountsError):
    """The server was set up wrongly; raised before it serves anything."""

    code = "ConfigurationError"
    default_message = "Invalid configuration"


class InvalidRequest(AccountsError):
    code = "InvalidRequest"
    default_message = "Invalid request"


class RequestTooLarge(InvalidRequest):
    code = "RequestTooLarge"
    default_message = "Request body too large"


class RequestTimeout(InvalidRequest):
    """The client stopped sending its body (a slow or stalled client holds a connection)."""

    code = "RequestTimeout"
    default_message = "The request body did not arrive in time"


class UnsupportedMediaType(InvalidRequest):
    code = "UnsupportedMediaType"
    default_message = "Request body must be application/json"


class ValidationFailed(AccountsError):
    code = "ValidationFailed"
    default_message = "Validation failed"


class InvalidEmail(ValidationFailed):
    code = "InvalidEmail"
    default_message = "Invalid email"


class InvalidUsername(ValidationFailed):
    code = "InvalidUsername"
    default_message = "Invalid username"


class InvalidPassword(ValidationFailed):
    code = "InvalidPassword"
    default_message = "Invalid password"


class UsernameOrEmailRequired(ValidationFailed):
    code = "UsernameOrEmailRequired"
    default_message = "Username or email is required"


class AuthenticationFailed(AccountsError):
    code = "AuthenticationFailed"
    default_message = "Authentication failed"


class InvalidCredentials(AuthenticationFailed):
    """One answer for unknown user and wrong password, so it cannot enumerate accounts."""

    code = "InvalidCredentials"
    default_message = "Invalid credentials"


class InvalidToken(AuthenticationFailed):
    """A token that must not be honoured. `reason` is for logs and tests, not for clients."""

    code = "InvalidToken"
    default_message = "Invalid token"

    def __init__(self, message: str | None = None, *, reason: str = "invalid") -> None:
        super().__init__(message)
        self.reason = reason


class TokenExpired(InvalidToken):
    code = "TokenExpired"
    default_message = "Token expired"

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message, reason="expired")


class TokenReused(InvalidToken):
    """A rotated refresh token came back: the session is revoked (RFC 9700 §4.14.2)."""

    code = "TokenReused"
    default_message = "Refresh token reused; session revoked"

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message, reason="reused")


class ResetPasswordLinkExpired(InvalidToken):
    code = "ResetPasswordLinkExpired"
    default_message = "Reset password link expired"

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message, reason="expired")


class VerifyEmailLinkExpired(InvalidToken):
    code = "VerifyEmailLinkExpired"
    default_message = "Verify email link expired"

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message, reason="expired")


class Forbidden(AccountsError):
    code = "Forbidden"
    default_message = "Not allowed"


class UserDeactivated(Forbidden):
    code = "UserDeactivated"
    default_message = "User is deactivated"


class LoginNotAllowed(Forbidden):
    """The `validate_login` hook said no (or failed, which counts as no)."""

    code = "LoginNotAllowed"
    default_message = "Login not allowed"


class AdminNotAllowed(Forbidden):
    """`authorize_admin` said no, or failed (which counts as no)."""

    code = "AdminNotAllowed"
    default_message = "Not allowed"


class NotFound(AccountsError):
    code = "NotFound"
    default_message = "Not found"


class ServiceNotFound(NotFound):
    code = "ServiceNotFound"
    default_message = "Service not found"


class UserNotFound(NotFound):
    code = "UserNotFound"
    default_message = "User not found"


class SessionNotFound(NotFound):
    """Unknown, ended, or another user's: one answer, so session ids cannot be probed."""

    code = "SessionNotFound"
    default_message = "Session not found"


class RouteNotFound(NotFound):
    code = "RouteNotFound"
    default_message = "Not found"


class MethodNotAllowed(AccountsError):
    code = "MethodNotAllowed"
    default_message = "Method not allowed"


class Conflict(AccountsError):
    code = "Conflict"
    default_message = "Conflict"


class UsernameAlreadyExists(Conflict):
    code = "UsernameAlreadyExists"
    default_message = "Username already exists"


class EmailAlreadyExists(Conflict):
    code = "EmailAlreadyExists"
    default_message = "Email already exists"


class IdentityAlreadyLinked(Conflict):
    """This (provider, subject) already belongs to a user."""

    code = "IdentityAlreadyLinked"
    default_message = "This external account is already linked to a user"


class CredentialAlreadyExists(Conflict):
    """A credential with this id is stored already (a second TOTP enrolment, a passkey
    registered twice)."""

    code = "CredentialAlreadyExists"
    default_message = "This credential is already registered"


class RateLimited(AccountsError):
    """Too many attempts; `retry_after` says when to try again (RFC 6585 §4)."""

    code = "TooManyRequests"
    default_message = "Too many requests; try again later"

    def __init__(self, message: str | None = None, *, retry_after: int = 60) -> None:
        super().__init__(message)
        self.retry_after = max(1, int(retry_after))


class TemporarilyUnavailable(AccountsError):
    """Something we depend on is down or saturated; the request may succeed later."""

    code = "TemporarilyUnavailable"
    default_message = "Service temporarily unavailable"
    retry_after = 5


class StoreUnavailable(TemporarilyUnavailable):
    """The store could not answer; never reported as bad credentials or success."""

    code = "StoreUnavailable"


class MailUnavailable(TemporarilyUnavailable):
    """The mail could not be handed to the mail server (or none is configured)."""

    code = "MailUnavailable"
    default_message = "Mail could not be sent; try again later"


class Overloaded(TemporarilyUnavailable):
    """Password hashing is saturated: queued work waited past its bound."""

    code = "Overloaded"
