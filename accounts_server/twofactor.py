"""Two-factor authentication: TOTP (RFC 6238, with pyotp) and single-use recovery codes.

A second factor belongs to the user, not to a login service, so it lives in the core and
every service reaches it as `ctx.two_factor` (the password service asks for it, accounts-js
style, in the `code` of `password/authenticate`). Safer than accounts-js in these ways:

- **Server-issued secrets only**: `new_secret` keeps a hash of each secret it hands out for
  `pending_lifetime`; `enable` accepts only such a secret, once, so a client cannot plant a
  weak or known one.
- **Sealed at rest**: the secret and the recovery-code hashes are sealed (`sealing.py`,
  AES-256-GCM under keys the database does not hold), bound to the user.
- **No replay** (RFC 6238 §5.2): the credential keeps the last accepted time step, and a code
  is accepted only for a later step, by one compare-and-set on the credential's version: of
  concurrent logins with one code exactly one wins.
- **Attempt limits** per account in the store (`RateLimits.failed_codes`), checked before the
  password is, so a lockout says nothing about whether the password was right.
- **Recovery codes**: `recovery_codes` random codes of 60 bits, shown once, kept as SHA-256
  hashes inside the sealed value, each accepted once in place of a code.

Must not import a web framework or a database driver.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import string
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

import orjson
import pyotp

from .errors import (
    ConfigurationError,
    CredentialAlreadyExists,
    InvalidRequest,
    TwoFactorAlreadySet,
    TwoFactorCodeMismatch,
    TwoFactorCodeRequired,
    TwoFactorNotSet,
    TwoFactorSecretRefused,
    TwoFactorUnavailable,
    UserNotFound,
)
from .ratelimit import RateLimiter
from .sealing import SealingKeys
from .stores.base import Credential, OneTimeToken, Store
from .types import Clock, User

__all__ = ["TOTP_KIND", "TotpSecret", "TwoFactor", "TwoFactorConfig", "TwoFactorStatus"]

TOTP_KIND = "totp"
#: `amr` values (RFC 8176 §2) a login adds when it passed the second factor.
SECOND_FACTOR_AMR = ("mfa", "otp")
_PENDING_KIND = "2fa-pending"
_FAILED_CODE = "2fa-fail"
_SECRET_ALPHABET = string.ascii_letters + string.digits
#: 30 characters of 62: 178 bits, over RFC 4226's 160; 30 bytes make base32 without padding.
_SECRET_LENGTH = 30
#: No 0/o, 1/l/i: recovery codes are read off paper. 32 symbols, 12 of them: 60 bits.
_RECOVERY_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"
_RECOVERY_LENGTH = 12
_MAX_CODE_LENGTH = 64
_DIGITS = 6
_CAS_ATTEMPTS = 3

Emit = Callable[..., Awaitable[None]]
RevokeSessions = Callable[..., Awaitable[int]]


@dataclass(frozen=True, slots=True, kw_only=True)
class TwoFactorConfig:
    """Raises:
    ConfigurationError: a drift window or count out of range.
    """

    #: The name authenticator apps show beside the account (the otpauth `issuer`).
    issuer: str = "accounts-server"
    #: Time steps of clock drift accepted either side of now (RFC 6238 §6 suggests one).
    drift_steps: int = 1
    #: How long a secret from `new_secret` may be enabled with.
    pending_lifetime: timedelta = timedelta(minutes=10)
    recovery_codes: int = 10
    #: How long the `mfaToken` of a login's first step may be used to finish it.
    mfa_lifetime: timedelta = timedelta(minutes=5)

    def __post_init__(self) -> None:
        if not (0 <= self.drift_steps <= 2):
            raise ConfigurationError("drift_steps must be 0, 1 or 2")
        if not (5 <= self.recovery_codes <= 20):
            raise ConfigurationError("recovery_codes must be between 5 and 20")
        if not (timedelta(minutes=1) <= self.pending_lifetime <= timedelta(hours=1)):
            raise ConfigurationError("pending_lifetime must be between 1 minute and 1 hour")
        if not (timedelta(minutes=1) <= self.mfa_lifetime <= timedelta(minutes=15)):
            raise ConfigurationError("mfa_lifetime must be between 1 and 15 minutes")
        if not self.issuer or ":" in self.issuer:
            raise ConfigurationError("issuer must be non-empty and without ':'")


@dataclass(frozen=True, slots=True)
class TotpSecret:
    """A new secret in accounts-js's (speakeasy's) shape: the same key as ASCII, hex and
    base32, and the `otpauth://` URL an authenticator app scans."""

    ascii: str
    hex: str
    base32: str
    otpauth_url: str


@dataclass(frozen=True, slots=True)
class TwoFactorStatus:
    enabled: bool
    recovery_codes_left: int = 0
    enabled_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class _Sealed:
    """What is sealed in a TOTP credential."""

    secret: str
    recovery: tuple[str, ...]


class TwoFactor:
    """The server's second factor, shared by every login service through its context."""

    def __init__(
        self,
        *,
        store: Store,
        clock: Clock,
        limiter: RateLimiter,
        sealing: SealingKeys | None,
        config: TwoFactorConfig,
        emit: Emit,
        revoke_sessions: RevokeSessions,
    ) -> None:
        self.store = store
        self.clock = clock
        self.limiter = limiter
        self.config = config
        self._sealing = sealing
        self._emit = emit
        self._revoke_sessions = revoke_sessions

    # -- enrolment --------------------------------------------------------------------------

    async def new_secret(self, account: str | None = None) -> TotpSecret:
        """A new secret to show (QR code) and then pass to `enable`; remembered, as a hash,
        for `pending_lifetime`.

        Raises:
            TwoFactorUnavailable: no sealing keys.
        """
        self._sealer()
        raw = "".join(secrets.choice(_SECRET_ALPHABET) for _ in range(_SECRET_LENGTH))
        key = raw.encode("ascii")
        base32 = base64.b32encode(key).decode("ascii")
        now = self.clock()
        await self.store.create_token(
            OneTimeToken(
                token_hash=_pending_hash(base32),
                kind=_PENDING_KIND,
                user_id=None,
                created_at=now,
                expires_at=now + self.config.pending_lifetime,
            )
        )
        url = pyotp.TOTP(base32).provisioning_uri(
            name=account or "account", issuer_name=self.config.issuer
        )
        return TotpSecret(ascii=raw, hex=key.hex(), base32=base32, otpauth_url=url)

    async def enable(
        self, user: User, secret: object, code: object, *, session_id: str | None = None
    ) -> list[str]:
        """Turn two-factor on with a secret from `new_secret` and a current code for it; the
        user's other sessions end. Returns the recovery codes, shown this once.

        Raises:
            TwoFactorUnavailable, InvalidRequest (malformed secret or code),
            TwoFactorSecretRefused, TwoFactorCodeMismatch (the secret stays usable),
            TwoFactorAlreadySet.
        """
        sealer = self._sealer()
        base32 = _secret_base32(secret)
        digits = _code(code)
        if await self.store.find_credential(_credential_id(user.id)) is not None:
            raise TwoFactorAlreadySet()
        pending = await self._redeem_pending(base32)
        step = self._matching_step(base32, digits)
        if step is None:
            await self.store.create_token(pending)  # a typo must not cost the scanned secret
            raise TwoFactorCodeMismatch()
        codes = _new_recovery_codes(self.config.recovery_codes)
        now = self.clock()
        credential = Credential(
            id=_credential_id(user.id),
            user_id=user.id,
            kind=TOTP_KIND,
            data=self._data(sealer, user.id, _Sealed(base32, _hashes(user.id, codes)), step),
            created_at=now,
            updated_at=now,
        )
        try:
            created = await self.store.create_credential(credential)
        except CredentialAlreadyExists:
            raise TwoFactorAlreadySet() from None
        if not created:
            raise UserNotFound()
        await self._revoke_sessions(user.id, except_=[session_id] if session_id else [])
        await self._emit("two_factor_enabled", user=user, session_id=session_id)
        return codes

    async def disable(self, user: User, code: object, *, session_id: str | None = None) -> None:
        """Turn two-factor off with a current code or a recovery code; the user's other
        sessions end.

        Raises:
            TwoFactorNotSet, TwoFactorCodeRequired, TwoFactorCodeMismatch, RateLimited,
            InvalidRequest.
        """
        if not await self.verify(user, code, session_id=session_id):
            raise TwoFactorNotSet()
        await self.store.delete_credential(_credential_id(user.id))
        await self._revoke_sessions(user.id, except_=[session_id] if session_id else [])
        await self._emit("two_factor_disabled", user=user, session_id=session_id)

    async def regenerate_recovery_codes(
        self, user: User, code: object, *, session_id: str | None = None
    ) -> list[str]:
        """New recovery codes for a current code (not a recovery code); the old ones stop
        working at once.

        Raises:
            TwoFactorNotSet, TwoFactorCodeRequired, TwoFactorCodeMismatch, RateLimited,
            InvalidRequest.
        """
        codes = _new_recovery_codes(self.config.recovery_codes)
        accepted = await self._use(
            user,
            code,
            recovery=False,
            change=lambda sealed: replace(sealed, recovery=_hashes(user.id, codes)),
            session_id=session_id,
        )
        if not accepted:
            raise TwoFactorNotSet()
        return codes

    async def reset(self, user_id: str) -> bool:
        """Remove the user's second factor (an operator helping a locked-out user); returns
        whether there was one."""
        removed = await self.store.delete_credential(_credential_id(user_id))
        if removed:
            await self.limiter.clear(_FAILED_CODE, user_id, self.limiter.limits.failed_codes)
            user = await self.store.find_user_by_id(user_id)
            await self._emit("two_factor_disabled", user=user)
        return removed

    async def enabled(self, user_id: str) -> bool:
        return await self.store.find_credential(_credential_id(user_id)) is not None

    async def status(self, user_id: str) -> TwoFactorStatus:
        """Raises:
        TwoFactorUnavailable: two-factor is on but this server has no sealing keys.
        """
        credential = await self.store.find_credential(_credential_id(user_id))
        if credential is None:
            return TwoFactorStatus(enabled=False)
        sealed = self._open(credential)
        return TwoFactorStatus(
            enabled=True,
            recovery_codes_left=len(sealed.recovery),
            enabled_at=credential.created_at,
        )

    # -- at login ---------------------------------------------------------------------------

    async def check_not_locked(self, user_id: str) -> None:
        """For a login service to call before it checks the first factor, so a lockout is
        answered whatever the password was.

        Raises:
            RateLimited: too many wrong codes for this account.
        """
        if await self.enabled(user_id):
            await self.limiter.check(_FAILED_CODE, user_id, self.limiter.limits.failed_codes)

    async def verify(
        self, user: User, code: object, *, session_id: str | None = None
    ) -> tuple[str, ...]:
        """The second step of a login: `()` for a user without two-factor (`code` is then
        ignored), else `code` must be a current TOTP code not used before or an unused
        recovery code, and the `amr` values it earns are returned.

        Raises:
            TwoFactorCodeRequired, TwoFactorCodeMismatch, RateLimited, InvalidRequest.
        """
        accepted = await self._use(user, code, recovery=True, session_id=session_id)
        return SECOND_FACTOR_AMR if accepted else ()

    async def _use(
        self,
        user: User,
        code: object,
        *,
        recovery: bool,
        change: Callable[[_Sealed], _Sealed] | None = None,
        session_id: str | None = None,
    ) -> bool:
        """Accept `code` once (and apply `change`) by compare-and-set on the credential's
        version; a lost race is judged again against what the winner stored. False when the
        user has no second factor."""
        credential_id = _credential_id(user.id)
        tiers = self.limiter.limits.failed_codes
        for _ in range(_CAS_ATTEMPTS):
            credential = await self.store.find_credential(credential_id)
            if credential is None:
                return False
            await self.limiter.check(_FAILED_CODE, user.id, tiers)
            if code is None or code == "":
                raise TwoFactorCodeRequired()
            sealed = self._open(credential)
            last_step = credential.data.get("step", -1)
            step, used = self._judge(user.id, sealed, _code(code), last_step, recovery=recovery)
            if step is None and used is None:
                await self.limiter.count(_FAILED_CODE, user.id, tiers)
                raise TwoFactorCodeMismatch()
            if used is not None:
                sealed = replace(sealed, recovery=tuple(h for h in sealed.recovery if h != used))
            if change is not None:
                sealed = change(sealed)
            data = self._data(self._sealer(), user.id, sealed, last_step if step is None else step)
            if await self.store.update_credential(
                credential_id, version=credential.version, data=data, now=self.clock()
            ):
                await self.limiter.clear(_FAILED_CODE, user.id, tiers)
                if used is not None:
                    await self._emit("recovery_code_used", user=user, session_id=session_id)
                return True
        raise TwoFactorCodeMismatch()

    def _judge(
        self, user_id: str, sealed: _Sealed, code: str, last_step: int, *, recovery: bool
    ) -> tuple[int | None, str | None]:
        """(the TOTP step `code` is for, or None; the recovery hash it uses, or None)."""
        if _is_digits(code):
            step = self._matching_step(sealed.secret, code)
            return (step, None) if step is not None and step > last_step else (None, None)
        if not recovery:
            return None, None
        presented = _recovery_hash(user_id, code)
        found = None
        for stored in sealed.recovery:  # every one compared: no timing tells which matched
            if hmac.compare_digest(stored, presented):
                found = stored
        return None, found

    def _matching_step(self, base32: str, digits: str) -> int | None:
        """The time step within the drift window whose code is `digits`; every candidate is
        computed and compared, whichever matches."""
        if not _is_digits(digits):
            return None
        totp = pyotp.TOTP(base32)
        now = self.clock().timestamp()
        current = totp.timecode(now)
        found = None
        drift = self.config.drift_steps
        for offset in range(-drift, drift + 1):
            if hmac.compare_digest(totp.at(now, counter_offset=offset), digits):
                found = current + offset
        return found

    # -- sealing ----------------------------------------------------------------------------

    def _sealer(self) -> SealingKeys:
        if self._sealing is None:
            raise TwoFactorUnavailable()
        return self._sealing

    def _data(
        self, sealer: SealingKeys, user_id: str, sealed: _Sealed, step: int
    ) -> dict[str, Any]:
        plain = orjson.dumps({"secret": sealed.secret, "recovery": list(sealed.recovery)})
        return {"sealed": sealer.seal(plain, context=_credential_id(user_id)), "step": step}

    def _open(self, credential: Credential) -> _Sealed:
        """Raises:
        TwoFactorUnavailable: no sealing keys; SealedDataUnreadable: not the keys it was
            sealed with.
        """
        sealed = credential.data.get("sealed")
        if not isinstance(sealed, str):
            raise TwoFactorUnavailable("this user's second factor is unreadable")
        plain = orjson.loads(self._sealer().unseal(sealed, context=credential.id))
        return _Sealed(secret=plain["secret"], recovery=tuple(plain["recovery"]))

    async def _redeem_pending(self, base32: str) -> OneTimeToken:
        """Raises:
        TwoFactorSecretRefused: not issued here, already used, or expired.
        """
        token = await self.store.consume_token(_pending_hash(base32), _PENDING_KIND)
        if token is None or token.expires_at <= self.clock():
            raise TwoFactorSecretRefused()
        return token


def _credential_id(user_id: str) -> str:
    """One TOTP credential per user, made unique by its id: a second enrolment, even a
    concurrent one, is refused by the store."""
    return f"{TOTP_KIND}:{user_id}"


def _pending_hash(base32: str) -> bytes:
    return hashlib.sha256(b"accounts-server totp secret\0" + base32.encode()).digest()


def _secret_base32(secret: object) -> str:
    """accounts-js sends back the whole secret object; only its `base32` counts."""
    value = secret.get("base32") if isinstance(secret, Mapping) else secret
    if not isinstance(value, str) or not (16 <= len(value) <= 128):
        raise InvalidRequest("secret must be the object twoFactorSecret returned")
    return value.strip().upper()


def _code(code: object) -> str:
    """A TOTP code (six digits) or a recovery code, spaces and dashes dropped, lower case.

    Raises:
        InvalidRequest: not a string, or far too long to be either.
    """
    if not isinstance(code, str) or len(code) > _MAX_CODE_LENGTH:
        raise InvalidRequest("code must be a string")
    return code.replace(" ", "").replace("-", "").lower()


def _is_digits(code: str) -> bool:
    """Six ASCII digits: `str.isdigit` alone also takes `²` and Arabic-Indic digits."""
    return len(code) == _DIGITS and code.isascii() and code.isdigit()


def _new_recovery_codes(count: int) -> list[str]:
    codes = []
    for _ in range(count):
        raw = "".join(secrets.choice(_RECOVERY_ALPHABET) for _ in range(_RECOVERY_LENGTH))
        codes.append(f"{raw[:4]}-{raw[4:8]}-{raw[8:]}")
    return codes


def _recovery_hash(user_id: str, code: str) -> str:
    """SHA-256 is enough for 60 random bits that are, besides, sealed (a slow hash is for
    what people choose); the user id keeps one user's hashes useless for another's."""
    normal = _code(code)
    return hashlib.sha256(f"accounts-server recovery\0{user_id}\0{normal}".encode()).hexdigest()


def _hashes(user_id: str, codes: Sequence[str]) -> tuple[str, ...]:
    return tuple(_recovery_hash(user_id, code) for code in codes)
