"""Single-use tokens: links by mail (password reset, email verification, enrollment, magic
links), OAuth `state` and one-time codes.

256 random bits go to the user; the store keeps only their SHA-256, and redeeming is one atomic
delete-and-return, so of two concurrent redemptions exactly one succeeds (ASVS 2.5 / 2.7).
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable, Mapping, Sequence
from datetime import timedelta
from typing import Any

from .errors import InvalidToken
from .stores.base import OneTimeToken, Store
from .types import Clock

__all__ = ["OneTimeTokens"]

_MAX_TOKEN_LENGTH = 128


class OneTimeTokens:
    def __init__(self, store: Store, clock: Clock) -> None:
        self.store = store
        self.clock = clock

    async def issue(
        self,
        *,
        kind: str,
        user_id: str | None,
        lifetime: timedelta,
        email: str | None = None,
        data: Mapping[str, Any] | None = None,
    ) -> str:
        """Store a new token's hash; returns the token itself, to be sent and then forgotten."""
        raw = secrets.token_urlsafe(32)
        now = self.clock()
        await self.store.create_token(
            OneTimeToken(
                token_hash=hashlib.sha256(raw.encode()).digest(),
                kind=kind,
                user_id=user_id,
                email=email,
                created_at=now,
                expires_at=now + lifetime,
                data=dict(data or {}),
            )
        )
        return raw

    async def redeem(
        self,
        raw: object,
        kinds: Sequence[str],
        *,
        expired: Callable[[], InvalidToken] = lambda: InvalidToken(reason="expired"),
    ) -> OneTimeToken:
        """Consume a token of one of `kinds`; it cannot be used again, even when expired.

        Raises:
            InvalidToken: unknown, already used, or not a token at all; `expired()` when its
                time has passed.
        """
        if not isinstance(raw, str) or not raw or len(raw) > _MAX_TOKEN_LENGTH:
            raise InvalidToken(reason="malformed")
        token_hash = hashlib.sha256(raw.encode()).digest()
        for kind in kinds:
            token = await self.store.consume_token(token_hash, kind)
            if token is not None:
                if token.expires_at <= self.clock():
                    raise expired()
                return token
        raise InvalidToken(reason="unknown")

    async def redeem_for_user(
        self,
        raw: object,
        kinds: Sequence[str],
        *,
        expired: Callable[[], InvalidToken] = lambda: InvalidToken(reason="expired"),
    ) -> tuple[str, OneTimeToken]:
        """`redeem` for tokens issued to a user; returns the user id with the token.

        Raises:
            InvalidToken: as `redeem`, or the token belongs to no user.
        """
        token = await self.redeem(raw, kinds, expired=expired)
        if token.user_id is None:
            raise InvalidToken(reason="user")
        return token.user_id, token

    async def discard(self, raw: str, kind: str) -> None:
        """Forget a token just issued (its mail could not be sent)."""
        await self.store.consume_token(hashlib.sha256(raw.encode()).digest(), kind)

    async def revoke(self, user_id: str, kinds: Sequence[str]) -> None:
        await self.store.delete_user_tokens(user_id, kinds)
