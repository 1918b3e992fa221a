"""Rate limits (DESIGN §10), counted in the store so every worker shares them.

Fixed windows aligned to the epoch: simple, one atomic increment per check, and the same on
SQLite and MongoDB. Keys are canonical identifiers whether or not an account exists, so a limit
never tells an attacker which accounts are real. Failed logins are limited in three tiers
(10 per 15 min, 20 per hour, 40 per day), so a persistent guesser is locked out for ever longer:
a stepped backoff.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from .errors import ConfigurationError, RateLimited
from .stores.base import Store
from .types import Clock

__all__ = ["Limit", "RateLimiter", "RateLimits"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Limit:
    count: int
    window: timedelta

    def __post_init__(self) -> None:
        if self.count < 1 or self.window < timedelta(seconds=1):
            raise ConfigurationError("a rate limit needs count >= 1 and a window of 1 s or more")


def _failed_login_tiers() -> tuple[Limit, ...]:
    return (
        Limit(10, timedelta(minutes=15)),
        Limit(20, timedelta(hours=1)),
        Limit(40, timedelta(days=1)),
    )


def _failed_code_tiers() -> tuple[Limit, ...]:
    """Each guess covers 1 + 2 x drift of the 10^6 codes: 20 a day walk half of them in
    some 23 years (drift 1)."""
    return (
        Limit(5, timedelta(minutes=15)),
        Limit(10, timedelta(hours=1)),
        Limit(20, timedelta(days=1)),
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class RateLimits:
    """The numbers; `enabled=False` turns every limit off (for trusted back-office use only)."""

    enabled: bool = True
    failed_logins: tuple[Limit, ...] = field(default_factory=_failed_login_tiers)
    #: Wrong second-factor codes per account, in the same stepped tiers.
    failed_codes: tuple[Limit, ...] = field(default_factory=_failed_code_tiers)
    login_per_ip: Limit = Limit(20, timedelta(minutes=1))
    register_per_ip: Limit = Limit(10, timedelta(hours=1))
    mail_per_account: Limit = Limit(3, timedelta(hours=1))
    token_per_ip: Limit = Limit(10, timedelta(minutes=1))
    refresh_per_session: Limit = Limit(30, timedelta(minutes=1))


class RateLimiter:
    def __init__(self, store: Store, limits: RateLimits, clock: Clock) -> None:
        self.store = store
        self.limits = limits
        self.clock = clock

    def _window(self, limit: Limit, now: datetime) -> tuple[datetime, datetime]:
        size = limit.window.total_seconds()
        start = _EPOCH + timedelta(seconds=(now - _EPOCH).total_seconds() // size * size)
        return start, start + limit.window

    async def hit(self, name: str, key: str | None, limit: Limit) -> None:
        """Count one attempt.

        Raises:
            RateLimited: over the limit in this window.
        """
        if not await self.allow(name, key, limit):
            now = self.clock()
            _, end = self._window(limit, now)
            raise RateLimited(retry_after=int((end - now).total_seconds()) + 1)

    async def allow(self, name: str, key: str | None, limit: Limit) -> bool:
        """Count one attempt; False when it is over the limit (for limits that are enforced
        silently, such as mails, so the answer stays the same)."""
        if not self.limits.enabled or key is None:
            return True
        now = self.clock()
        start, end = self._window(limit, now)
        count = await self.store.hit_counter(f"{name}:{key}", window_start=start, expires_at=end)
        return count <= limit.count

    async def check(self, name: str, key: str, limits: Sequence[Limit]) -> None:
        """Refuse, without counting, when any tier is already full.

        Raises:
            RateLimited: with the time until the fullest tier's window ends.
        """
        if not self.limits.enabled:
            return
        now = self.clock()
        for tier, limit in enumerate(limits):
            start, end = self._window(limit, now)
            count = await self.store.get_counter(f"{name}{tier}:{key}", window_start=start)
            if count >= limit.count:
                raise RateLimited(retry_after=int((end - now).total_seconds()) + 1)

    async def count(self, name: str, key: str, limits: Sequence[Limit]) -> None:
        """Count one failure in every tier."""
        if not self.limits.enabled:
            return
        now = self.clock()
        for tier, limit in enumerate(limits):
            start, end = self._window(limit, now)
            await self.store.hit_counter(f"{name}{tier}:{key}", window_start=start, expires_at=end)

    async def clear(self, name: str, key: str, limits: Sequence[Limit]) -> None:
        for tier in range(len(limits)):
            await self.store.clear_counter(f"{name}{tier}:{key}")
