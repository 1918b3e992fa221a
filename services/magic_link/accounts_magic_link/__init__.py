"""One-time login links by mail for accounts-server."""

from __future__ import annotations

from .service import MagicLinkExpired, MagicLinkService, from_settings

__all__ = ["MagicLinkExpired", "MagicLinkService", "from_settings"]
