"""Checks on identifiers every login service shares: usernames, email addresses, and the
login service names that become URL path segments and store keys.

Only shape is checked here; an address is proven by the verification mail, not by a regex,
so the rule is deliberately loose (RFC 5321 length limits, one `@`, a dotted domain).
"""

from __future__ import annotations

import re
import unicodedata

from .errors import ConfigurationError, InvalidEmail, InvalidUsername

__all__ = [
    "MAX_EMAIL_LENGTH",
    "MAX_USERNAME_LENGTH",
    "check_service_name",
    "validate_email",
    "validate_username",
]

MAX_EMAIL_LENGTH = 254
MAX_USERNAME_LENGTH = 64
_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s.]+(\.[^@\s.]+)+$")
#: One URL path segment (`/accounts/<name>/...`) and one store key (no `.`, no `$`).
_SERVICE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,31}")


def _has_control(value: str) -> bool:
    """Control, format, surrogate, private-use or unassigned characters, and the line and
    paragraph separators (U+2028/9), any of which could split or disguise a log line."""
    return any(
        unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp") for ch in value
    )


def validate_email(value: object) -> str:
    """The address, trimmed. Raises:
    InvalidEmail: not a plausible address.
    """
    if not isinstance(value, str):
        raise InvalidEmail()
    address = value.strip()
    if len(address) > MAX_EMAIL_LENGTH or not _EMAIL.match(address) or _has_control(address):
        raise InvalidEmail()
    return address


def validate_username(value: object) -> str:
    """The username, trimmed. No `@`, so a login identifier is never ambiguous with an email.

    Raises:
        InvalidUsername: empty, too long, or with control or format characters.
    """
    if not isinstance(value, str):
        raise InvalidUsername()
    username = value.strip()
    if (
        not username
        or len(username) > MAX_USERNAME_LENGTH
        or "@" in username
        or _has_control(username)
    ):
        raise InvalidUsername()
    return username


#: First path segments the server's own routes use (`/mfa/authenticate`, `/sessions/...`).
_RESERVED_SERVICE_NAMES = frozenset({"mfa", "sessions", "admin", "user"})


def check_service_name(name: object) -> str:
    """Raises:
    ConfigurationError: a name that cannot be a single URL path segment.
    """
    if not isinstance(name, str) or not _SERVICE_NAME.fullmatch(name):
        raise ConfigurationError(f"invalid login service name {name!r}")
    if name in _RESERVED_SERVICE_NAMES:
        raise ConfigurationError(f"{name!r} is a route of the server, not a service name")
    return name
