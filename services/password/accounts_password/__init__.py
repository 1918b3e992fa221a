"""Password login for accounts-server: register, and login by username, email or id."""

from __future__ import annotations

from .hashing import PasswordHasher
from .service import PasswordService

__all__ = ["PasswordHasher", "PasswordService"]
