"""Every error accounts-server raises, with the stable accounts-js code a client branches on.

This module knows nothing of HTTP: the only `{error: status}` table is in `http/errors.py`.
Messages are safe to show a client; context lives in attributes and never holds a secret.

    AccountsError
    ├── ConfigurationError          misuse, raised at startup (or issue time for hooks)
    ├── SealedDataUnreadable        a sealed secret does not open (its key was removed)
    ├── InvalidRequest              malformed input: wrong types, not an object, too deep
    │   ├── RequestTooLarge
    │   ├── RequestTimeout          the body did not arrive in time
    │   └── UnsupportedMediaType
    ├── ValidationFailed            well-formed input with a value we refuse
    │   ├── InvalidEmail
    │   ├── InvalidUsername
    │   ├── InvalidPassword
    │   ├── UsernameOrEmailRequired
    │   └── TwoFactorSecretRefused
    ├── AuthenticationFailed
    │   ├── InvalidCredentials
    │   ├── TwoFactorCodeRequired
    │   ├── TwoFactorCodeMismatch
    │   ├── StepUpRequired          (RFC 9470: a second factor or a recent sign-in needed)
    │   └── InvalidToken            (.reason says why, for logs)
    │       ├── TokenExpired
    │       ├── TokenReused
    │       ├── ResetPasswordLinkExpired
    │       └── VerifyEmailLinkExpired
    ├── Forbidden
    │   ├── UserDeactivated
    │   ├── LoginNotAllowed
    │   ├── AdminNotAllowed
    │   └── NotWhileImpersonating  (a user's own credentials, not an impersonator's to change)
    ├── NotFound
    │   ├── ServiceNotFound
    │   ├── UserNotFound
    │   ├── SessionNotFound
    │   └── RouteNotFound
    ├── MethodNotAllowed
    ├── Conflict
    │   ├── UserAlreadyExists
    │   ├── UsernameAlreadyExists
    │   ├── EmailAlreadyExists
    │   ├── IdentityAlreadyLinked
    │   ├── CredentialAlreadyExists
    │   ├── LastLoginMethod
    │   ├── TwoFactorAlreadySet
    │   └── TwoFactorNotSet
    ├── RateLimited                 (.retry_after, seconds)
    └── TemporarilyUnavailable      (.retry_after, seconds)
        ├── StoreUnavailable
        ├── MailUnavailable
        ├── TwoFactorUnavailable
        └── Overloaded

The two-factor messages are accounts-js's, byte for byte: its client throws
`new Error(message)`, so applications compare them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

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
    "LastLoginMethod",
    "LoginNotAllowed",
    "MailUnavailable",
    "MethodNotAllowed",
    "NotFound",
    "NotWhileImpersonating",
    "Overloaded",
    "RateLimited",
    "RequestTimeout",
    "RequestTooLarge",
    "ResetPasswordLinkExpired",
    "RouteNotFound",
    "SealedDataUnreadable",
    "ServiceNotFound",
    "SessionNotFound",
    "StepUpRequired",
    "StoreUnavailable",
    "TemporarilyUnavailable",
    "TokenExpired",
    "TokenReused",
    "TwoFactorAlreadySet",
    "TwoFactorCodeMismatch",
    "TwoFactorCodeRequired",
    "TwoFactorNotSet",
    "TwoFactorSecretRefused",
    "TwoFactorUnavailable",
    "UnsupportedMediaType",
    "UserAlreadyExists",
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


class SealedDataUnreadable(AccountsError):
    """A secret sealed at rest would not open: the key that sealed it is not configured, or
    the stored value was altered. The operator's problem (a 500, logged), never the client's."""

    code = "SealedDataUnreadable"
    default_message = "A sealed secret could not be read"


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


class TwoFactorSecretRefused(ValidationFailed):
    """`twoFactorSet` was given a secret this server did not issue, or issued too long ago:
    a client cannot choose (or plant) a user's secret."""

    code = "TwoFactorSecretRefused"
    default_message = "This secret was not issued by this server or has expired; ask for a new one"


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


class TwoFactorCodeRequired(AuthenticationFailed):
    """The first factor was right; this user also needs a second one (a TOTP or recovery
    code, a passkey). From a login, `mfa_token` finishes it at `mfa/authenticate` (single use,
    short-lived: it is meant for this client, so it is never put in an event), `factors` names
    what the user has and `challenges` what each needs answered (a passkey's request options).
    """

    code = "TwoFactorCodeRequired"
    default_message = "2FA code required"

    def __init__(
        self,
        message: str | None = None,
        *,
        mfa_token: str | None = None,
        factors: tuple[str, ...] = (),
        challenges: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        super().__init__(message)
        self.mfa_token = mfa_token
        self.factors = factors
        self.challenges: Mapping[str, Mapping[str, Any]] = challenges or {}

    def without_token(self) -> TwoFactorCodeRequired:
        """The same refusal without the token, for listeners and logs."""
        return TwoFactorCodeRequired(self.message, factors=self.factors)


class TwoFactorCodeMismatch(AuthenticationFailed):
    """Not the current code, one already used, or not a recovery code of this user."""

    code = "TwoFactorCodeMismatch"
    default_message = "2FA code didn't match"


class StepUpRequired(AuthenticationFailed):
    """The token is good but its sign-in is not enough for this route: it needs a second
    factor, or a sign-in within `max_age` (RFC 9470's `insufficient_user_authentication`)."""

    code = "InsufficientUserAuthentication"
    default_message = "This needs a sign-in with a second factor"

    def __init__(self, message: str | None = None, *, max_age: int | None = None) -> None:
        super().__init__(message)
        self.max_age = max_age


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


class NotWhileImpersonating(Forbidden):
    """How a user signs in is theirs: an impersonation session may not change it."""

    code = "NotWhileImpersonating"
    default_message = "Not allowed from an impersonation session"


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


class UserAlreadyExists(Conflict):
    """A user with the id asked for exists (an import run again)."""

    code = "UserAlreadyExists"
    default_message = "User already exists"


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


class LastLoginMethod(Conflict):
    """Removing this would leave the user no way to log in (their last passkey, with no
    password or other way in)."""

    code = "LastLoginMethod"
    default_message = "This is the last way to log in to this account; add another first"


class TwoFactorAlreadySet(Conflict):
    code = "TwoFactorAlreadySet"
    default_message = "2FA already set"


class TwoFactorNotSet(Conflict):
    code = "TwoFactorNotSet"
    default_message = "2FA not set"


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


class TwoFactorUnavailable(TemporarilyUnavailable):
    """The server has no sealing keys, so it cannot keep a second factor's secret."""

    code = "TwoFactorUnavailable"
    default_message = "Two-factor authentication is not configured on this server"


class Overloaded(TemporarilyUnavailable):
    """Password hashing is saturated: queued work waited past its bound."""

    code = "Overloaded"
