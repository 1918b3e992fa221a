"""accounts-server: an async authentication and token server in the style of accounts-js.

The public surface is exactly `__all__` (pinned by tests/test_public_api.py); login services
import nothing else.
"""

from __future__ import annotations

from .errors import (
    AccountsError,
    AuthenticationFailed,
    ConfigurationError,
    Conflict,
    EmailAlreadyExists,
    Forbidden,
    IdentityAlreadyLinked,
    InvalidCredentials,
    InvalidEmail,
    InvalidPassword,
    InvalidRequest,
    InvalidToken,
    InvalidUsername,
    LoginNotAllowed,
    MailUnavailable,
    MethodNotAllowed,
    NotFound,
    Overloaded,
    RateLimited,
    RequestTooLarge,
    ResetPasswordLinkExpired,
    RouteNotFound,
    ServiceNotFound,
    StoreUnavailable,
    TemporarilyUnavailable,
    TokenExpired,
    TokenReused,
    UnsupportedMediaType,
    UserDeactivated,
    UsernameAlreadyExists,
    UsernameOrEmailRequired,
    UserNotFound,
    ValidationFailed,
    VerifyEmailLinkExpired,
)
from .hooks import EventName, HookEvent, Listener
from .mail import Mailer, MailMessage, MailTemplate, SMTPMailer
from .onetime import LinkTokens, mail_link
from .ratelimit import Limit, RateLimiter, RateLimits
from .server import AccountsServer
from .services import (
    EndpointHandler,
    EndpointRequest,
    LoginService,
    Redirect,
    ServiceContext,
    ServiceEndpoint,
)
from .sessions import SessionConfig
from .stores.base import (
    OneTimeToken,
    Store,
    StoredSession,
    canonical_email,
    canonical_username,
)
from .tokens import KeyRing, SigningKey, TokenConfig
from .types import ConnectionInfo, Email, ImpersonationResult, LoginResult, Session, Tokens, User
from .validation import validate_email, validate_username

__version__ = "0.1.0"

__all__ = [
    "AccountsError",
    "AccountsServer",
    "AuthenticationFailed",
    "ConfigurationError",
    "Conflict",
    "ConnectionInfo",
    "Email",
    "EmailAlreadyExists",
    "EndpointHandler",
    "EndpointRequest",
    "EventName",
    "Forbidden",
    "HookEvent",
    "IdentityAlreadyLinked",
    "ImpersonationResult",
    "InvalidCredentials",
    "InvalidEmail",
    "InvalidPassword",
    "InvalidRequest",
    "InvalidToken",
    "InvalidUsername",
    "KeyRing",
    "Limit",
    "LinkTokens",
    "Listener",
    "LoginNotAllowed",
    "LoginResult",
    "LoginService",
    "MailMessage",
    "MailTemplate",
    "MailUnavailable",
    "Mailer",
    "MethodNotAllowed",
    "NotFound",
    "OneTimeToken",
    "Overloaded",
    "RateLimited",
    "RateLimiter",
    "RateLimits",
    "Redirect",
    "RequestTooLarge",
    "ResetPasswordLinkExpired",
    "RouteNotFound",
    "SMTPMailer",
    "ServiceContext",
    "ServiceEndpoint",
    "ServiceNotFound",
    "Session",
    "SessionConfig",
    "SigningKey",
    "Store",
    "StoreUnavailable",
    "StoredSession",
    "TemporarilyUnavailable",
    "TokenConfig",
    "TokenExpired",
    "TokenReused",
    "Tokens",
    "UnsupportedMediaType",
    "User",
    "UserDeactivated",
    "UserNotFound",
    "UsernameAlreadyExists",
    "UsernameOrEmailRequired",
    "ValidationFailed",
    "VerifyEmailLinkExpired",
    "canonical_email",
    "canonical_username",
    "mail_link",
    "validate_email",
    "validate_username",
]
