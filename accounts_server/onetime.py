"""Single-use link tokens (password reset, email verification, enrollment, magic links).

256 random bits go to the user; the store keeps only their SHA-256, and redeeming is one atomic
delete-and-return, so of two concurrent redemptions exactly one succeeds (ASVS 2.5 / 2.7).
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from .errors import InvalidToken, MailUnavailable
from .mail import Mailer, MailMessage
from .stores.base import OneTimeToken, Store, canonical_email

if TYPE_CHECKING:
    from .server import AccountsServer

__all__ = ["LinkTokens", "mail_link"]

_MAX_TOKEN_LENGTH = 128


class LinkTokens:
    def __init__(self, store: Store, clock: Callable[[], datetime]) -> None:
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


async def mail_link(
    server: AccountsServer,
    mailer: Mailer | None,
    *,
    kind: str,
    user_id: str,
    address: str,
    lifetime: timedelta,
    message: Callable[[str], MailMessage],
) -> None:
    """Issue a link token and mail it (`message(token)` builds the mail). Past the per-address
    mail limit nothing is sent and nothing is said, so the answer never changes.

    Raises:
        MailUnavailable: no mailer, or the mail server refused; the unsent token is deleted,
            so no link stays valid that nobody received.
    """
    if mailer is None:
        raise MailUnavailable("no mail transport is configured")
    limit = server.limiter.limits.mail_per_account
    if not await server.limiter.allow(f"mail-{kind}", canonical_email(address), limit):
        return
    token = await server.link_tokens.issue(
        kind=kind, user_id=user_id, email=address, lifetime=lifetime
    )
    try:
        await mailer.send(message(token))
    except MailUnavailable:
        await server.link_tokens.discard(token, kind)
        raise
