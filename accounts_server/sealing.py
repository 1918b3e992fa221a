"""Sealing: secrets the server must read back later (a TOTP secret) are kept encrypted at rest.

AES-256-GCM (NIST SP 800-38D) with a random 96-bit nonce per seal, under a key the database
never holds: a copy of the database alone does not give an attacker anyone's second factor
(ASVS 2.9.2 / 6.4). The associated data binds each sealed value to where it belongs (for
example `totp:<user id>`), so a value copied into another user's record does not open.

Keys form a ring like the signing keys: the first seals, every key opens, and a sealed value
names its key by a short id, so an operator can add a new key in front and keep the old one
until every value has been sealed again. Must not import a web framework or a database driver.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import secrets
import stat
from collections.abc import Sequence
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .errors import ConfigurationError, SealedDataUnreadable

__all__ = ["SealingKeys"]

_KEY_BYTES = 32
_NONCE_BYTES = 12
_PREFIX = "v1"


def _kid(key: bytes) -> str:
    return hashlib.sha256(b"accounts-server sealing kid\0" + key).hexdigest()[:8]


class SealingKeys:
    """The keys that seal and open secrets kept at rest; the first seals.

    Raises:
        ConfigurationError: no key, a key that is not 32 bytes, or two equal keys.
    """

    def __init__(self, keys: Sequence[bytes]) -> None:
        if not keys:
            raise ConfigurationError("sealing needs at least one key")
        if any(not isinstance(key, bytes) or len(key) != _KEY_BYTES for key in keys):
            raise ConfigurationError(f"a sealing key is {_KEY_BYTES} random bytes")
        self._by_kid = {_kid(key): AESGCM(key) for key in keys}
        if len(self._by_kid) != len(keys):
            raise ConfigurationError("two sealing keys are the same")
        self._sealing_kid = _kid(keys[0])

    @classmethod
    def generate(cls) -> SealingKeys:
        """A ring of one new key (for tests and throwaway servers: what it seals is lost with
        it)."""
        return cls([secrets.token_bytes(_KEY_BYTES)])

    @classmethod
    def from_files(cls, paths: Sequence[str | Path]) -> SealingKeys:
        """Keys written by `write_key_file` (base64 of 32 bytes), the first sealing.

        Raises:
            ConfigurationError: a file readable by group or others, or not a key.
        """
        keys = []
        for path in map(Path, paths):
            if path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
                raise ConfigurationError(
                    f"{path} is readable by others; chmod 600 it (it protects second factors)"
                )
            try:
                keys.append(base64.b64decode(path.read_bytes().strip(), validate=True))
            except (binascii.Error, ValueError) as exc:
                raise ConfigurationError(f"{path} is not a sealing key") from exc
        return cls(keys)

    @staticmethod
    def write_key_file(path: str | Path) -> None:
        """Write a new key, mode 0600 from the first byte; never overwrites (O_EXCL).

        Raises:
            FileExistsError: the file exists.
        """
        key = base64.b64encode(secrets.token_bytes(_KEY_BYTES)) + b"\n"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as file:
            file.write(key)

    def seal(self, plaintext: bytes, *, context: str) -> str:
        """`plaintext` encrypted and authenticated, bound to `context`."""
        nonce = secrets.token_bytes(_NONCE_BYTES)
        sealed = self._by_kid[self._sealing_kid].encrypt(nonce, plaintext, context.encode())
        encoded = base64.urlsafe_b64encode(nonce + sealed).decode("ascii")
        return f"{_PREFIX}.{self._sealing_kid}.{encoded}"

    def unseal(self, sealed: str, *, context: str) -> bytes:
        """Raises:
        SealedDataUnreadable: sealed by a key not in the ring, for another context, or
            altered.
        """
        prefix, _, rest = sealed.partition(".")
        kid, _, encoded = rest.partition(".")
        aead = self._by_kid.get(kid)
        if prefix != _PREFIX or aead is None:
            raise SealedDataUnreadable("sealed by a key this server does not have")
        try:
            raw = base64.urlsafe_b64decode(encoded)
            return aead.decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], context.encode())
        except (InvalidTag, binascii.Error, ValueError) as exc:
            raise SealedDataUnreadable("sealed data failed its integrity check") from exc
