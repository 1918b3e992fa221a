"""Password login for accounts-server: register, login, verification, reset, enrollment,
change password, with argon2id hashing and bcrypt upgrade."""

from __future__ import annotations

from .hashing import PasswordHasher
from .policy import PasswordPolicy
from .service import CannotRemoveLastEmail, MailSettings, PasswordService, from_settings

__all__ = [
    "CannotRemoveLastEmail",
    "MailSettings",
    "PasswordHasher",
    "PasswordPolicy",
    "PasswordService",
    "from_settings",
]
