"""OpenID Connect login for accounts-server."""

from __future__ import annotations

from .service import (
    IdentityInfo,
    OAuthFailed,
    OAuthService,
    OIDCProvider,
    ProviderNotFound,
    ProviderUnavailable,
    from_settings,
)

__all__ = [
    "IdentityInfo",
    "OAuthFailed",
    "OAuthService",
    "OIDCProvider",
    "ProviderNotFound",
    "ProviderUnavailable",
    "from_settings",
]
