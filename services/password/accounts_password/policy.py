"""What a new password must be (NIST SP 800-63B §5.1.1.2, ASVS 2.1): long enough, not too long,
not a known common password. No composition rules: they push users to predictable patterns.

The default minimum is 8, DESIGN.md's floor and what accounts-js allowed, so an upgrade rejects
no password that worked before; NIST SP 800-63B-4 asks for 15 where the password is the only
factor (8 with a second one): `PasswordPolicy(min_length=15)` for such deployments."""

from __future__ import annotations

import gzip
import unicodedata
from dataclasses import dataclass, field
from functools import cache
from importlib.resources import files

from accounts_server import ConfigurationError, InvalidPassword, InvalidRequest

__all__ = ["PasswordPolicy", "normalize"]


def normalize(value: object, *, max_length: int = 1024) -> str:
    """NFKC, so one password typed on different keyboards/IMEs is one password.

    Raises:
        InvalidRequest: not a string. InvalidPassword: over `max_length` code points.
    """
    if not isinstance(value, str):
        raise InvalidRequest("password must be a string")
    password = unicodedata.normalize("NFKC", value)
    if len(password) > max_length:
        raise InvalidPassword(f"password must be at most {max_length} characters")
    return password


@cache
def common_passwords() -> frozenset[str]:
    """11,611 common passwords of 8+ characters (zxcvbn's list; see scripts/make_blocklist.py)."""
    data = files("accounts_password").joinpath("data/common-passwords.txt.gz").read_bytes()
    lines = gzip.decompress(data).decode().splitlines()
    return frozenset(line for line in lines if line and not line.startswith("#"))


@dataclass(frozen=True, slots=True, kw_only=True)
class PasswordPolicy:
    """Raises:
    ConfigurationError: bounds outside 8 <= min_length <= max_length <= 1024.
    """

    min_length: int = 8
    max_length: int = 1024
    blocklist: frozenset[str] = field(default_factory=common_passwords, repr=False)

    def __post_init__(self) -> None:
        if not (8 <= self.min_length <= self.max_length <= 1024):
            raise ConfigurationError("password lengths must satisfy 8 <= min <= max <= 1024")

    def check(self, value: object) -> str:
        """The normalized password, if acceptable as a new one.

        Raises:
            InvalidRequest, InvalidPassword (with the reason).
        """
        password = normalize(value, max_length=self.max_length)
        if len(password) < self.min_length:
            raise InvalidPassword(f"password must be at least {self.min_length} characters")
        if password.lower() in self.blocklist:
            raise InvalidPassword("this password is too common; choose another")
        return password
