"""Checks on identifiers every login service shares: usernames, email addresses, the
login service names that become URL path segments and store keys, and a user's `extra` fields.

Only shape is checked here; an address is proven by the verification mail, not by a regex,
so the rule is deliberately loose (RFC 5321 length limits, one `@`, a dotted domain).
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Mapping
from typing import Any

import orjson

from .errors import (
    ConfigurationError,
    InvalidEmail,
    InvalidRequest,
    InvalidUsername,
    ValidationFailed,
)

__all__ = [
    "MAX_EMAIL_LENGTH",
    "MAX_EXTRA_BYTES",
    "MAX_USERNAME_LENGTH",
    "check_service_name",
    "validate_email",
    "validate_extra",
    "validate_username",
]

MAX_EMAIL_LENGTH = 254
MAX_USERNAME_LENGTH = 64
#: A user's `extra` fields as JSON: they travel in every user read and may go into every
#: access token, so they stay small (a BSON document's own limit is 16 MiB).
MAX_EXTRA_BYTES = 16 * 1024
_EXTRA_DEPTH = 16
_INT64 = range(-(2**63), 2**63)
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


def validate_extra(value: object) -> dict[str, Any]:
    """A user's `extra` fields as every store keeps them alike: JSON values only, integers
    within 64 bits (BSON's, and SQLite's), keys that are plain names (no `.` and no leading
    `$`, which MongoDB reads as a path or an operator, no NUL, which BSON cannot hold), at most
    `MAX_EXTRA_BYTES` as JSON. Checked before any store sees it, so no store fails on it.

    Raises:
        InvalidRequest: not an object, or a value that is not JSON.
        ValidationFailed: a key, number, depth or size refused, naming the field by its path
            (`extra.a.b`).
    """
    if not isinstance(value, Mapping):
        raise InvalidRequest("extra must be an object")
    _check_extra(value, "extra", 0)
    encoded = orjson.dumps(value)
    if len(encoded) > MAX_EXTRA_BYTES:
        raise ValidationFailed(f"extra is {len(encoded)} bytes as JSON; at most {MAX_EXTRA_BYTES}")
    result: dict[str, Any] = orjson.loads(encoded)
    return result


def _check_extra(value: object, path: str, depth: int) -> None:
    if depth > _EXTRA_DEPTH:
        raise ValidationFailed(f"{path}: nested deeper than {_EXTRA_DEPTH} levels")
    if isinstance(value, Mapping):
        for key, item in value.items():
            _check_extra(item, f"{path}.{_extra_key(key, path)}", depth + 1)
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            _check_extra(item, f"{path}[{index}]", depth + 1)
    elif isinstance(value, int) and not isinstance(value, bool) and value not in _INT64:
        raise ValidationFailed(f"{path}: integers must fit in 64 bits")
    elif isinstance(value, float) and not math.isfinite(value):
        raise ValidationFailed(f"{path}: numbers must be finite")
    elif not isinstance(value, str | int | float | None):  # bool is an int
        raise InvalidRequest(f"{path}: {type(value).__name__} is not a JSON value")


def _extra_key(key: object, path: str) -> str:
    if not isinstance(key, str):
        raise ValidationFailed(f"{path}: keys must be strings")
    if not key or "." in key or key.startswith("$") or "\x00" in key:
        raise ValidationFailed(
            f"{path}: the key {key[:40]!r} is empty or holds '.', NUL or a leading '$'"
        )
    return key
