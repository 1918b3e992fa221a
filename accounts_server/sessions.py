"""Session rules: lifetimes, opening, the validity check, and refresh rotation with reuse
detection (RFC 9700 §4.14.2).

The store keeps only SHA-256 hashes of refresh-token ids. A refresh swaps the current hash for
the successor's with one compare-and-set; a presented token whose hash is not current is a
reuse and revokes the session. The successor id is derived from the presented one and the pair
is stamped with the stored rotation time, so during the grace window every concurrent refresh
with one token can be answered with the identical successor pair without storing a token.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from .errors import ConfigurationError, InvalidToken, TokenReused
from .stores.base import Store, StoredSession, new_session_id
from .types import Clock, ConnectionInfo, User

__all__ = ["SessionConfig", "SessionRules", "access_jti", "hash_jti"]

_MIN_LIFETIME = timedelta(minutes=5)
_MAX_LIFETIME = timedelta(days=365)


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionConfig:
    """Raises:
    ConfigurationError: a lifetime or grace window out of range.
    """

    #: Absolute session lifetime: the default, and a login that asks to be remembered.
    lifetime: timedelta = timedelta(days=30)
    #: A login that says `remember: false` (a shared computer) gets this instead.
    short_lifetime: timedelta = timedelta(hours=8)
    #: Impersonation sessions are absolute and short; never extended (at most 1 hour).
    impersonation_lifetime: timedelta = timedelta(hours=1)
    #: Idle expiry: a session unused for this long ends, whatever its absolute lifetime.
    #: Refreshing and `freshen_session` count as use. None (the default) disables it.
    idle_timeout: timedelta | None = None
    #: How long a just-rotated refresh token still yields the same successor pair, to the
    #: client that rotated it only (same address and user agent), instead of revoking the
    #: session: the accounts-js client refreshes concurrently. 0 is strict rotation (at most
    #: 30 s).
    reuse_grace: timedelta = timedelta(seconds=10)

    def __post_init__(self) -> None:
        check_lifetime(self.lifetime)
        check_lifetime(self.short_lifetime)
        if not (timedelta(minutes=1) <= self.impersonation_lifetime <= timedelta(hours=1)):
            raise ConfigurationError("impersonation_lifetime must be between 1 minute and 1 hour")
        if not (timedelta(0) <= self.reuse_grace <= timedelta(seconds=30)):
            raise ConfigurationError("reuse_grace must be between 0 and 30 seconds")
        if self.idle_timeout is not None and self.idle_timeout < timedelta(minutes=5):
            raise ConfigurationError("idle_timeout must be at least 5 minutes (or None)")


def check_lifetime(lifetime: timedelta) -> timedelta:
    """Raises:
    ConfigurationError: outside 5 minutes..365 days.
    """
    if not (_MIN_LIFETIME <= lifetime <= _MAX_LIFETIME):
        raise ConfigurationError("a session lifetime must be between 5 minutes and 365 days")
    return lifetime


def hash_jti(jti: str) -> bytes:
    return hashlib.sha256(jti.encode()).digest()


def _derive(label: bytes, jti: str, size: int) -> str:
    digest = hashlib.sha256(label + b"\0" + jti.encode()).digest()[:size]
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def successor_jti(jti: str) -> str:
    """The next refresh id (256 bits). Derivable from the presented id, which is harmless: a
    refresh token is only accepted with the server's signature on it."""
    return _derive(b"refresh", jti, 32)


def access_jti(refresh_jti: str) -> str:
    """The access token's id (128 bits), tied to its pair so the grace answer is identical."""
    return _derive(b"access", refresh_jti, 16)


class SessionRules:
    def __init__(self, store: Store, config: SessionConfig, clock: Clock) -> None:
        self.store = store
        self.config = config
        self.clock = clock

    async def open(
        self,
        user_id: str,
        info: ConnectionInfo,
        *,
        lifetime: timedelta | None = None,
        impersonator_id: str | None = None,
        amr: tuple[str, ...] = (),
    ) -> tuple[StoredSession, str]:
        """Store a new session; returns it and its first refresh-token id."""
        if impersonator_id is not None:
            lifetime = self.config.impersonation_lifetime
        elif lifetime is None:
            lifetime = self.config.lifetime
        else:
            check_lifetime(lifetime)
        now = self.clock()
        jti = secrets.token_urlsafe(32)
        session = StoredSession(
            id=new_session_id(),
            user_id=user_id,
            valid=True,
            created_at=now,
            updated_at=now,
            last_used_at=now,
            expires_at=now + lifetime,
            refresh_hash=hash_jti(jti),
            ip=info.ip,
            user_agent=info.user_agent,
            impersonator_id=impersonator_id,
            amr=tuple(sorted(set(amr))),
        )
        await self.store.create_session(session)
        return session, jti

    async def active(self, session_id: str, user_id: str) -> StoredSession:
        """The session, if it is valid, unexpired and the user's; checked in code on every use,
        never left to the pruner.

        Raises:
            InvalidToken: otherwise.
        """
        session = await self.store.find_session(session_id)
        if session is None or session.user_id != user_id or not self.live(session):
            raise InvalidToken(reason="session")
        return session

    async def active_with_user(
        self, session_id: str, user_id: str
    ) -> tuple[StoredSession, User | None]:
        """`active`, and the session's user read with it (None if there is none).

        Raises:
            InvalidToken: the session is not active or not the user's.
        """
        found = await self.store.find_session_user(session_id)
        if found is None or found[0].user_id != user_id or not self.live(found[0]):
            raise InvalidToken(reason="session")
        return found

    def live(self, session: StoredSession) -> bool:
        """Valid, before its absolute expiry, and (with an idle timeout) recently used."""
        now = self.clock()
        idle = self.config.idle_timeout
        return (
            session.valid
            and session.expires_at > now
            and (idle is None or session.last_used_at + idle > now)
        )

    async def rotate(
        self,
        session_id: str,
        user_id: str,
        jti: str,
        info: ConnectionInfo,
        *,
        current: StoredSession | None = None,
    ) -> tuple[StoredSession, str, datetime]:
        """Rotate on a refresh; returns the session, the successor id and its issue time
        (`current`: the session as `active` just read it, so it is not read twice).
        Inside the grace window, a token just rotated yields the same successor again, but only
        to the client that rotated it (same address and user agent): the accounts-js client's
        concurrent refreshes. The same token from anywhere else is a reuse (RFC 9700 §4.14.2).

        Raises:
            InvalidToken: the session is not active.
            TokenReused: the token was already rotated (outside the grace window); the
                session is now revoked.
        """
        session = current if current is not None else await self.active(session_id, user_id)
        presented = hash_jti(jti)
        successor = successor_jti(jti)
        now = self.clock()
        if hmac.compare_digest(session.refresh_hash, presented):
            won = await self.store.rotate_refresh(
                session_id,
                expected_hash=presented,
                new_hash=hash_jti(successor),
                now=now,
                ip=info.ip,
                user_agent=info.user_agent,
            )
            if won:
                return session, successor, now
            # Another request rotated first: judge this one against what it stored.
            session = await self.active(session_id, user_id)
        if self._in_grace(session, presented, successor, now, info):
            assert session.rotated_at is not None
            return session, successor, session.rotated_at
        await self.store.invalidate_session(session_id, now=now)
        raise TokenReused()

    def _in_grace(
        self,
        session: StoredSession,
        presented: bytes,
        successor: str,
        now: datetime,
        info: ConnectionInfo,
    ) -> bool:
        grace = self.config.reuse_grace
        return (
            grace > timedelta(0)
            and (session.ip, session.user_agent) == (info.ip, info.user_agent)
            and session.previous_hash is not None
            and session.rotated_at is not None
            and hmac.compare_digest(session.previous_hash, presented)
            and hmac.compare_digest(session.refresh_hash, hash_jti(successor))
            and now - session.rotated_at <= grace
        )
