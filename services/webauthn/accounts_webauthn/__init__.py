"""Passkeys (WebAuthn) for accounts-server: passwordless login and a second factor."""

from __future__ import annotations

from .service import (
    NotWhileImpersonating,
    PasskeyNotFound,
    PasskeyRefused,
    PasskeyRegistrationRefused,
    SignCountRegressed,
    WebAuthnService,
    from_settings,
)

__all__ = [
    "NotWhileImpersonating",
    "PasskeyNotFound",
    "PasskeyRefused",
    "PasskeyRegistrationRefused",
    "SignCountRegressed",
    "WebAuthnService",
    "from_settings",
]
