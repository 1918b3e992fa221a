"""Single-use tokens (`OneTimeTokens`) and mailing them (`ServiceContext.mail_link`), on a
real SQLite file and the real SMTP server; expiry through the injected clock."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path

import pytest

from accounts_server import (
    AccountsServer,
    InvalidToken,
    KeyRing,
    Mailer,
    MailMessage,
    MailUnavailable,
    OneTimeToken,
    OneTimeTokens,
    RateLimits,
    SMTPMailer,
    Store,
    TokenConfig,
)
from accounts_server.stores import SQLiteStore

from .conftest import Clock, MakeServer
from .helpers import Account, SMTPServer, free_port, load_key, register

HOUR = timedelta(hours=1)


@pytest.fixture
def tokens(store: Store, clock: Clock) -> OneTimeTokens:
    return OneTimeTokens(store, clock)


@pytest.fixture
async def user_id(server: AccountsServer) -> str:
    """A real user in the same store (tokens belong to users that exist)."""
    return (await register(server)).user_id


def on_disk(directory: Path) -> bytes:
    """Every byte of the SQLite database (its write-ahead log included)."""
    return b"".join(p.read_bytes() for p in directory.glob("accounts.db*"))


def sha256(raw: str) -> bytes:
    return hashlib.sha256(raw.encode()).digest()


async def reason(redeeming: Awaitable[object]) -> str:
    """Why redeeming failed (it must fail)."""
    with pytest.raises(InvalidToken) as caught:
        await redeeming
    return caught.value.reason


async def mail_verify(
    server: AccountsServer, mailer: Mailer | None, account: Account, built: list[str]
) -> None:
    """Mail `account` a verification link through the context; `built` collects its tokens."""
    await server.context.mail_link(
        mailer,
        kind="verify",
        user_id=account.user_id,
        address=account.email,
        lifetime=HOUR,
        message=link(account.email, built),
    )


class TestIssue:
    async def test_only_the_sha256_is_stored(
        self, tokens: OneTimeTokens, store: Store, user_id: str, clock: Clock, tmp_path: Path
    ) -> None:
        raw = await tokens.issue(
            kind="reset", user_id=user_id, lifetime=HOUR, email="ann@example.com", data={"n": 1}
        )
        assert len(raw) >= 43  # 256 random bits, base64url
        files = on_disk(tmp_path)
        assert sha256(raw) in files  # the control: the row is on disk...
        assert raw.encode() not in files  # ...and the token itself is not
        assert await store.consume_token(raw.encode(), "reset") is None
        stored = await store.consume_token(sha256(raw), "reset")
        assert stored == OneTimeToken(
            token_hash=sha256(raw),
            kind="reset",
            user_id=user_id,
            email="ann@example.com",
            created_at=clock.now,
            expires_at=clock.now + HOUR,
            data={"n": 1},
        )

    async def test_every_token_is_new(self, tokens: OneTimeTokens, user_id: str) -> None:
        issued = {
            await tokens.issue(kind="verify", user_id=user_id, lifetime=HOUR) for _ in range(20)
        }
        assert len(issued) == 20


class TestRedeem:
    async def test_once_then_unknown(self, tokens: OneTimeTokens, user_id: str) -> None:
        raw = await tokens.issue(kind="verify", user_id=user_id, lifetime=HOUR, email="a@x.io")
        token = await tokens.redeem(raw, ["verify"])
        assert (token.user_id, token.kind, token.email) == (user_id, "verify", "a@x.io")
        assert await reason(tokens.redeem(raw, ["verify"])) == "unknown"

    async def test_a_token_never_issued_is_unknown(self, tokens: OneTimeTokens) -> None:
        assert await reason(tokens.redeem("A" * 43, ["verify"])) == "unknown"

    async def test_usable_until_its_last_moment(
        self, tokens: OneTimeTokens, user_id: str, clock: Clock
    ) -> None:
        raw = await tokens.issue(kind="verify", user_id=user_id, lifetime=HOUR)
        clock.advance(HOUR - timedelta(seconds=1))
        assert (await tokens.redeem(raw, ["verify"])).user_id == user_id

    async def test_expired_is_consumed_and_raises_the_expired_error(
        self, tokens: OneTimeTokens, user_id: str, clock: Clock
    ) -> None:
        raw = await tokens.issue(kind="reset", user_id=user_id, lifetime=HOUR)
        clock.advance(HOUR)
        with pytest.raises(InvalidToken) as caught:
            await tokens.redeem(raw, ["reset"], expired=lambda: InvalidToken(reason="too-late"))
        assert caught.value.reason == "too-late"
        clock.now -= HOUR  # even back in its lifetime it cannot be retried: it is gone
        assert await reason(tokens.redeem(raw, ["reset"])) == "unknown"

    async def test_expired_by_default_says_expired(
        self, tokens: OneTimeTokens, user_id: str, clock: Clock
    ) -> None:
        raw = await tokens.issue(kind="reset", user_id=user_id, lifetime=HOUR)
        clock.advance(HOUR + timedelta(days=1))
        assert await reason(tokens.redeem(raw, ["reset"])) == "expired"
        assert await reason(tokens.redeem(raw, ["reset"])) == "unknown"

    async def test_a_wrong_kind_is_refused_and_does_not_spend_it(
        self, tokens: OneTimeTokens, user_id: str
    ) -> None:
        raw = await tokens.issue(kind="verify", user_id=user_id, lifetime=HOUR)
        assert await reason(tokens.redeem(raw, ["reset", "enroll"])) == "unknown"
        assert (await tokens.redeem(raw, ["reset", "verify"])).kind == "verify"

    @pytest.mark.parametrize(
        "raw",
        [None, 42, b"token", "", "x" * 129, {"$ne": None}, {"$gt": ""}, ["a"], ("a",)],
        ids=repr,
    )
    async def test_malformed_input(self, tokens: OneTimeTokens, raw: object) -> None:
        assert await reason(tokens.redeem(raw, ["verify"])) == "malformed"

    async def test_128_characters_is_still_a_possible_token(self, tokens: OneTimeTokens) -> None:
        assert await reason(tokens.redeem("x" * 128, ["verify"])) == "unknown"

    async def test_concurrent_redeems_have_exactly_one_winner(
        self, tokens: OneTimeTokens, user_id: str
    ) -> None:
        raw = await tokens.issue(kind="magic", user_id=user_id, lifetime=HOUR)
        results = await asyncio.gather(
            *(tokens.redeem(raw, ["magic"]) for _ in range(20)), return_exceptions=True
        )
        winners = [r for r in results if isinstance(r, OneTimeToken)]
        losers = [r for r in results if isinstance(r, InvalidToken)]
        assert len(winners) == 1
        assert winners[0].user_id == user_id
        assert len(losers) == 19
        assert {e.reason for e in losers} == {"unknown"}


class TestRedeemForUser:
    async def test_returns_the_user_with_the_token(
        self, tokens: OneTimeTokens, user_id: str
    ) -> None:
        raw = await tokens.issue(kind="enroll", user_id=user_id, lifetime=HOUR, email="e@x.io")
        owner, token = await tokens.redeem_for_user(raw, ["enroll"])
        assert owner == user_id
        assert token.email == "e@x.io"

    async def test_a_token_without_user_is_refused(self, tokens: OneTimeTokens) -> None:
        raw = await tokens.issue(kind="oauth-state", user_id=None, lifetime=HOUR, data={"a": 1})
        assert await reason(tokens.redeem_for_user(raw, ["oauth-state"])) == "user"

    async def test_redeem_errors_pass_through(
        self, tokens: OneTimeTokens, user_id: str, clock: Clock
    ) -> None:
        assert await reason(tokens.redeem_for_user({"$ne": None}, ["enroll"])) == "malformed"
        raw = await tokens.issue(kind="enroll", user_id=user_id, lifetime=HOUR)
        clock.advance(HOUR)
        assert await reason(tokens.redeem_for_user(raw, ["enroll"])) == "expired"


class TestDiscardAndRevoke:
    async def test_discard_forgets_a_token_of_that_kind(
        self, tokens: OneTimeTokens, user_id: str
    ) -> None:
        raw = await tokens.issue(kind="verify", user_id=user_id, lifetime=HOUR)
        await tokens.discard(raw, "reset")  # another kind: not this token
        await tokens.discard("never-issued", "verify")  # harmless
        kept = await tokens.issue(kind="verify", user_id=user_id, lifetime=HOUR)
        await tokens.discard(kept, "verify")
        assert await reason(tokens.redeem(kept, ["verify"])) == "unknown"
        assert (await tokens.redeem(raw, ["verify"])).user_id == user_id

    async def test_revoke_ends_the_users_tokens_of_those_kinds_only(
        self, tokens: OneTimeTokens, server: AccountsServer
    ) -> None:
        ann, bob = (await register(server)).user_id, (await register(server)).user_id

        async def issue(kind: str, user: str) -> str:
            return await tokens.issue(kind=kind, user_id=user, lifetime=HOUR)

        ann_reset, ann_verify, ann_magic = [
            await issue(k, ann) for k in ("reset", "verify", "magic")
        ]
        bob_reset = await issue("reset", bob)
        await tokens.revoke(ann, ["reset", "verify"])
        assert await reason(tokens.redeem(ann_reset, ["reset"])) == "unknown"
        assert await reason(tokens.redeem(ann_verify, ["verify"])) == "unknown"
        assert (await tokens.redeem(ann_magic, ["magic"])).user_id == ann
        assert (await tokens.redeem(bob_reset, ["reset"])).user_id == bob


def link(address: str, built: list[str]) -> Callable[[str], MailMessage]:
    """The message builder `mail_link` calls; records every token it was handed."""

    def message(token: str) -> MailMessage:
        built.append(token)
        return MailMessage(
            to=address,
            subject="Verify your address",
            text=f"Open https://app.example/verify-email/{token}",
        )

    return message


class TestMailLink:
    async def test_mails_a_token_that_redeems_for_the_user(
        self, server: AccountsServer, smtp: SMTPServer
    ) -> None:
        smtp.checkpoint()
        account = await register(server)
        built: list[str] = []
        await mail_verify(server, smtp.mailer(), account, built)
        token = smtp.link_token(await smtp.wait_for(account.email))
        assert built == [token]
        owner, stored = await server.context.one_time.redeem_for_user(token, ["verify"])
        assert (owner, stored.email) == (account.user_id, account.email)

    async def test_a_dead_mail_server_raises_and_leaves_no_token(
        self, server: AccountsServer, store: Store
    ) -> None:
        account = await register(server)
        dead = SMTPMailer(sender="accounts@example.com", port=free_port(), timeout=2)
        built: list[str] = []
        with pytest.raises(MailUnavailable):
            await mail_verify(server, dead, account, built)
        assert len(built) == 1  # a token was issued, then deleted
        assert await store.delete_user_tokens(account.user_id, ["verify"]) == 0
        assert await reason(server.context.one_time.redeem(built[0], ["verify"])) == "unknown"

    async def test_a_sent_link_stays_valid(
        self, server: AccountsServer, store: Store, smtp: SMTPServer
    ) -> None:
        """The control for the test above: the same check counts a token that was mailed."""
        smtp.checkpoint()
        account = await register(server)
        await mail_verify(server, smtp.mailer(), account, [])
        assert await store.delete_user_tokens(account.user_id, ["verify"]) == 1

    async def test_no_mailer_raises_and_issues_nothing(
        self, server: AccountsServer, store: Store
    ) -> None:
        account = await register(server)
        built: list[str] = []
        with pytest.raises(MailUnavailable):
            await mail_verify(server, None, account, built)
        assert built == []
        assert await store.delete_user_tokens(account.user_id, ["verify"]) == 0

    async def test_past_the_per_address_limit_nothing_is_sent_or_said(
        self, make_server: MakeServer, store: Store, smtp: SMTPServer, clock: Clock
    ) -> None:
        server = make_server(rate_limits=RateLimits())
        assert RateLimits().mail_per_account.count == 3
        # At a window's start, so the four sends below share one window.
        clock.now = clock.now.replace(minute=0, second=0, microsecond=0) + HOUR
        smtp.checkpoint()
        account = await register(server)
        built: list[str] = []

        async def send(address: str, kind: str = "verify") -> None:
            await server.context.mail_link(
                smtp.mailer(),
                kind=kind,
                user_id=account.user_id,
                address=address,
                lifetime=HOUR,
                message=link(account.email, built),
            )

        for _ in range(3):
            await send(account.email)
        await send(account.email)  # the fourth: no error, no token, no mail
        await send(account.email.upper())  # the same address, canonically
        assert len(built) == 3
        assert await store.delete_user_tokens(account.user_id, ["verify"]) == 3
        await send(account.email, kind="reset")  # each kind counts on its own
        assert len(built) == 4
        clock.advance(HOUR)  # the next window
        await send(account.email)
        assert len(built) == 5
        await smtp.wait_for(account.email, 5)
        assert sorted(smtp.link_token(m) for m in smtp.messages(account.email)) == sorted(built)


async def test_a_link_whose_mail_cannot_be_built_is_not_kept(tmp_path: Path) -> None:
    """Whatever fails between issuing and sending (here the template), no live link remains."""
    store = SQLiteStore(tmp_path / "accounts.db")
    server = AccountsServer(store=store, tokens=TokenConfig(keys=KeyRing([load_key("ed25519")])))
    user = await server.create_user(username="ivy")
    issued: list[str] = []

    def broken(token: str) -> MailMessage:
        issued.append(token)
        raise RuntimeError("template failed")

    mailer = SMTPMailer(sender="a@example.com", port=free_port(), timeout=2)
    with pytest.raises(RuntimeError):
        await server.context.mail_link(
            mailer,
            kind="reset",
            user_id=user.id,
            address="ivy@example.com",
            lifetime=timedelta(hours=1),
            message=broken,
        )
    with pytest.raises(InvalidToken):
        await server.context.one_time.redeem(issued[0], ["reset"])
    await store.close()
