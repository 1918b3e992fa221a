"""accounts-server: an async authentication and token server in the style of accounts-js.

The public surface is exactly `__all__` (pinned by tests/test_public_api.py); login services
import nothing else.
"""

from __future__ import annotations

from . import errors as _errors
from .admin import Admin, AdminAction, Dashboard, UserDetail
from .audit import AuditConfig
from .context import ServiceContext
from .errors import *  # noqa: F403 (the error tree, listed once: errors.__all__)
from .hooks import EventName, HookEvent, Listener
from .mail import LogMailer, Mailer, MailMessage, MailTemplate, SMTPMailer
from .onetime import OneTimeTokens
from .ratelimit import Limit, RateLimiter, RateLimits
from .sealing import SealingKeys
from .server import AccountsServer
from .services import (
    Authenticated,
    EndpointHandler,
    EndpointRequest,
    LoginAvailability,
    LoginService,
    OffersSignInLinks,
    Redirect,
    SecondFactor,
    SecretService,
    ServiceEndpoint,
    ServiceSettings,
    SignInLink,
)
from .sessions import SessionConfig
from .stores.base import (
    AuditQuery,
    AuditRecord,
    Credential,
    OneTimeToken,
    Store,
    StoredSession,
    canonical_email,
    canonical_username,
)
from .tokens import AccessClaims, KeyRing, SigningKey, TokenConfig, VerificationKey
from .twofactor import TotpSecret, TwoFactor, TwoFactorConfig, TwoFactorStatus
from .types import ConnectionInfo, Email, ImpersonationResult, LoginResult, Session, Tokens, User
from .validation import validate_email, validate_username

__version__ = "0.1.0"

__all__ = [
    "AccessClaims",
    "AccountsServer",
    "Admin",
    "AdminAction",
    "AuditConfig",
    "AuditQuery",
    "AuditRecord",
    "Authenticated",
    "ConnectionInfo",
    "Credential",
    "Dashboard",
    "Email",
    "EndpointHandler",
    "EndpointRequest",
    "EventName",
    "HookEvent",
    "ImpersonationResult",
    "KeyRing",
    "Limit",
    "Listener",
    "LogMailer",
    "LoginAvailability",
    "LoginResult",
    "LoginService",
    "MailMessage",
    "MailTemplate",
    "Mailer",
    "OffersSignInLinks",
    "OneTimeToken",
    "OneTimeTokens",
    "RateLimiter",
    "RateLimits",
    "Redirect",
    "SMTPMailer",
    "SealingKeys",
    "SecondFactor",
    "SecretService",
    "ServiceContext",
    "ServiceEndpoint",
    "ServiceSettings",
    "Session",
    "SessionConfig",
    "SignInLink",
    "SigningKey",
    "Store",
    "StoredSession",
    "TokenConfig",
    "Tokens",
    "TotpSecret",
    "TwoFactor",
    "TwoFactorConfig",
    "TwoFactorStatus",
    "User",
    "UserDetail",
    "VerificationKey",
    "canonical_email",
    "canonical_username",
    "validate_email",
    "validate_username",
]
__all__ += _errors.__all__
__all__.sort()
