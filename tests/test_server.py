"""AccountsServer through its public methods, on a real store and the real password service."""

from __future__ import annotations

import asyncio
import base64
import json
from datetime import timedelta
from typing import Any

import jwt
import pytest

from accounts_server import (
    AccountsServer,
    ConfigurationError,
    ConnectionInfo,
    HookEvent,
    InvalidCredentials,
    InvalidRequest,
    InvalidToken,
    KeyRing,
    LoginNotAllowed,
    LoginResult,
    ServiceNotFound,
    SessionConfig,
    TokenConfig,
    TokenExpired,
    TokenReused,
    User,
    UserDeactivated,
    UserNotFound,
)

from .conftest import Clock, MakeServer
from .helpers import Account, load_key, register

INFO = ConnectionInfo(ip="203.0.113.7", user_agent="pytest")
#: Somebody else: another address and browser (a thief replaying a stolen token).
ELSEWHERE = ConnectionInfo(ip="198.51.100.66", user_agent="curl/8.0")


async def login(server: AccountsServer, account: Account) -> LoginResult:
    return await server.login_with_service("password", account.credentials(), INFO)


def claims(token: str) -> dict[str, Any]:
    return dict(jwt.decode(token, options={"verify_signature": False}))


class TestLogin:
    async def test_login_opens_a_session_and_returns_a_sanitized_user(
        self, server: AccountsServer
    ) -> None:
        account = await register(server)
        result = await login(server, account)
        assert result.user.id == account.user_id
        assert claims(result.tokens.access_token)["sid"] == result.session_id
        assert await server.resume_session(result.tokens.access_token) == result.user

    @pytest.mark.parametrize(
        "identity",
        [
            lambda a: {"id": a.user_id},
            lambda a: {"username": a.username.upper()},
            lambda a: {"email": a.email.upper()},
            lambda a: a.username,
            lambda a: a.email,
        ],
    )
    async def test_login_by_id_username_or_email(
        self, server: AccountsServer, identity: Any
    ) -> None:
        account = await register(server)
        params = {"user": identity(account), "password": account.password}
        result = await server.login_with_service("password", params, INFO)
        assert result.user.id == account.user_id

    async def test_unknown_user_and_wrong_password_are_the_same_error(
        self, server: AccountsServer
    ) -> None:
        account = await register(server)
        errors = []
        for params in (
            {"user": {"email": account.email}, "password": "wrong password!"},
            {"user": {"email": "nobody@example.com"}, "password": account.password},
        ):
            with pytest.raises(InvalidCredentials) as caught:
                await server.login_with_service("password", params, INFO)
            errors.append((type(caught.value), caught.value.message))
        assert errors[0] == errors[1]

    async def test_unknown_service(self, server: AccountsServer) -> None:
        with pytest.raises(ServiceNotFound):
            await server.login_with_service("ldap", {}, INFO)

    async def test_authenticate_with_service_opens_no_session(self, server: AccountsServer) -> None:
        account = await register(server)
        events: list[HookEvent] = []
        server.on("login_success", events.append)
        assert await server.authenticate_with_service("password", account.credentials(), INFO)
        assert events == []
        with pytest.raises(InvalidCredentials):
            await server.authenticate_with_service(
                "password", {"user": account.email, "password": "nope nope nope"}, INFO
            )

    async def test_validate_login_veto_and_failure_both_refuse(
        self, server: AccountsServer
    ) -> None:
        account = await register(server)
        stop = server.on("validate_login", lambda event: False)
        with pytest.raises(LoginNotAllowed):
            await login(server, account)
        stop()

        def broken(event: HookEvent) -> bool:
            raise RuntimeError("listener bug")

        stop = server.on("validate_login", broken)
        with pytest.raises(LoginNotAllowed):
            await login(server, account)
        stop()
        server.on("validate_login", lambda event: event.user is not None)
        assert (await login(server, account)).user.id == account.user_id

    async def test_validate_login_also_guards_login_with_user(self, server: AccountsServer) -> None:
        account = await register(server)
        user = await server.find_user_by_id(account.user_id)
        assert user is not None
        server.on("validate_login", lambda event: False)
        with pytest.raises(LoginNotAllowed):
            await server.login_with_user(user, INFO)

    async def test_login_with_user_honours_a_remember_me_lifetime(
        self, server: AccountsServer, clock: Clock
    ) -> None:
        account = await register(server)
        user = await server.find_user_by_id(account.user_id)
        assert user is not None
        result = await server.login_with_user(user, INFO, lifetime=timedelta(hours=8))
        refresh = claims(result.tokens.refresh_token)
        assert refresh["exp"] - refresh["iat"] == 8 * 3600
        clock.advance(timedelta(hours=8, seconds=1))
        with pytest.raises(InvalidToken):
            await server.refresh_tokens(None, result.tokens.refresh_token, INFO)
        with pytest.raises(ConfigurationError):
            await server.login_with_user(user, INFO, lifetime=timedelta(days=500))


class TestRefresh:
    async def test_refresh_rotates_and_old_token_reuse_revokes_the_session(
        self, server: AccountsServer
    ) -> None:
        first = await login(server, await register(server))
        second = await server.refresh_tokens(
            first.tokens.access_token, first.tokens.refresh_token, INFO
        )
        assert second.session_id == first.session_id
        assert second.tokens.refresh_token != first.tokens.refresh_token
        reused: list[HookEvent] = []
        server.on("refresh_token_reused", reused.append)
        with pytest.raises(TokenReused):  # from anywhere but the rotating client, at once
            await server.refresh_tokens(None, first.tokens.refresh_token, ELSEWHERE)
        assert [e.session_id for e in reused] == [first.session_id]
        # The whole session is gone: its newest tokens fail on the next request.
        with pytest.raises(InvalidToken):
            await server.resume_session(second.tokens.access_token)
        with pytest.raises(InvalidToken):
            await server.refresh_tokens(None, second.tokens.refresh_token, INFO)

    async def test_an_access_token_of_another_session_refuses_the_refresh(
        self, server: AccountsServer, clock: Clock
    ) -> None:
        """Issue 14 #1: a given access token must be the pair's (same session, same user)."""
        account = await register(server)
        mine, other_session = await login(server, account), await login(server, account)
        stranger = await login(server, await register(server))
        for wrong in (
            other_session.tokens.access_token,
            stranger.tokens.access_token,
            mine.tokens.refresh_token,  # a refresh token is no access token
            "not-a-token",
        ):
            with pytest.raises(InvalidToken):
                await server.refresh_tokens(wrong, mine.tokens.refresh_token, INFO)
        # Nothing was rotated: the pair still refreshes, with its access token long expired.
        clock.advance(timedelta(hours=2))
        fresh = await server.refresh_tokens(
            mine.tokens.access_token, mine.tokens.refresh_token, INFO
        )
        assert fresh.session_id == mine.session_id

    async def test_the_pair_is_known_by_its_jti_other_tokens_by_their_signature(
        self, server: AccountsServer
    ) -> None:
        """The pair's own access token needs no asymmetric verify (its jti is derived from the
        refresh token's secret id); an older one of the same session is verified in full, and
        one that merely claims the session, unsigned by us, is refused."""
        first = await login(server, await register(server))
        second = await server.refresh_tokens(
            first.tokens.access_token, first.tokens.refresh_token, INFO
        )
        third = await server.refresh_tokens(  # an earlier access token of this session
            first.tokens.access_token, second.tokens.refresh_token, INFO
        )
        header, payload, signature = third.tokens.access_token.split(".")
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        claims["jti"] = "x" * 22  # the session's sid and sub, not the pair's jti
        forged = ".".join(
            (
                header,
                base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode(),
                signature,
            )
        )
        with pytest.raises(InvalidToken):
            await server.refresh_tokens(forged, third.tokens.refresh_token, INFO)

    async def test_strict_mode_twenty_concurrent_refreshes_one_success(
        self, make_server: MakeServer
    ) -> None:
        server = make_server(sessions=SessionConfig(reuse_grace=timedelta(0)))
        first = await login(server, await register(server))
        results = await asyncio.gather(
            *(server.refresh_tokens(None, first.tokens.refresh_token, INFO) for _ in range(20)),
            return_exceptions=True,
        )
        assert sum(isinstance(r, LoginResult) for r in results) == 1
        assert all(isinstance(r, (LoginResult, InvalidToken)) for r in results)

    @pytest.mark.parametrize("key", ["ed25519", "es256"])
    async def test_grace_window_gives_concurrent_refreshes_the_identical_pair(
        self, make_server: MakeServer, clock: Clock, key: str
    ) -> None:
        """Byte for byte, on every algorithm (issue 14 #5: ECDSA signing is randomised unless
        it is RFC 6979's deterministic form)."""
        server = make_server(
            sessions=SessionConfig(reuse_grace=timedelta(seconds=10)),
            tokens=TokenConfig(keys=KeyRing([load_key(key)])),
        )
        first = await login(server, await register(server))
        results = await asyncio.gather(
            *(server.refresh_tokens(None, first.tokens.refresh_token, INFO) for _ in range(20))
        )
        assert len({r.tokens for r in results}) == 1
        successor = results[0].tokens
        assert await server.resume_session(successor.access_token)
        # Past the window the same token is a reuse, and revokes.
        clock.advance(timedelta(seconds=11))
        with pytest.raises(TokenReused):
            await server.refresh_tokens(None, first.tokens.refresh_token, INFO)
        with pytest.raises(InvalidToken):
            await server.resume_session(successor.access_token)

    @pytest.mark.parametrize(
        "other",
        [
            ConnectionInfo(ip="198.51.100.66", user_agent=INFO.user_agent),
            ConnectionInfo(ip=INFO.ip, user_agent="curl/8.0"),
        ],
        ids=["another address", "another user agent"],
    )
    async def test_the_grace_is_only_for_the_client_that_rotated(
        self, server: AccountsServer, other: ConnectionInfo
    ) -> None:
        """By default (10 s): the same client's concurrent refresh gets the identical pair; the
        same token from another address or browser inside the window revokes the session."""
        first = await login(server, await register(server))
        rotated = await server.refresh_tokens(None, first.tokens.refresh_token, INFO)
        again = await server.refresh_tokens(None, first.tokens.refresh_token, INFO)
        assert again.tokens == rotated.tokens
        with pytest.raises(TokenReused):
            await server.refresh_tokens(None, first.tokens.refresh_token, other)
        with pytest.raises(InvalidToken):
            await server.resume_session(rotated.tokens.access_token)

    async def test_grace_does_not_cover_a_token_two_rotations_old(
        self, make_server: MakeServer
    ) -> None:
        server = make_server(sessions=SessionConfig(reuse_grace=timedelta(seconds=10)))
        first = await login(server, await register(server))
        second = await server.refresh_tokens(None, first.tokens.refresh_token, INFO)
        await server.refresh_tokens(None, second.tokens.refresh_token, INFO)
        with pytest.raises(TokenReused):
            await server.refresh_tokens(None, first.tokens.refresh_token, INFO)

    async def test_access_token_is_not_a_refresh_token(self, server: AccountsServer) -> None:
        first = await login(server, await register(server))
        with pytest.raises(InvalidToken):
            await server.refresh_tokens(None, first.tokens.access_token, INFO)
        with pytest.raises(InvalidToken):
            await server.resume_session(first.tokens.refresh_token)

    async def test_expired_session_cannot_refresh(
        self, server: AccountsServer, clock: Clock
    ) -> None:
        first = await login(server, await register(server))
        clock.advance(timedelta(days=30, seconds=1))
        with pytest.raises(InvalidToken):
            await server.refresh_tokens(None, first.tokens.refresh_token, INFO)


class TestRevocation:
    async def test_logout_holds_on_the_next_request(self, server: AccountsServer) -> None:
        result = await login(server, await register(server))
        await server.logout(result.tokens.access_token)
        with pytest.raises(InvalidToken):
            await server.resume_session(result.tokens.access_token)
        with pytest.raises(InvalidToken):
            await server.refresh_tokens(None, result.tokens.refresh_token, INFO)
        with pytest.raises(InvalidToken):
            await server.logout(result.tokens.access_token)

    async def test_logout_ends_only_that_session(self, server: AccountsServer) -> None:
        account = await register(server)
        phone, laptop = await login(server, account), await login(server, account)
        await server.logout(phone.tokens.access_token)
        assert await server.resume_session(laptop.tokens.access_token)

    async def test_deactivate_revokes_every_session_at_once(self, server: AccountsServer) -> None:
        account = await register(server)
        sessions = [await login(server, account) for _ in range(3)]
        await server.deactivate_user(account.user_id)
        for result in sessions:
            with pytest.raises(InvalidToken):
                await server.resume_session(result.tokens.access_token)
        with pytest.raises(UserDeactivated):
            await login(server, account)
        await server.activate_user(account.user_id)
        for result in sessions:  # reactivation does not resurrect sessions
            with pytest.raises(InvalidToken):
                await server.resume_session(result.tokens.access_token)
        assert await login(server, account)
        with pytest.raises(UserNotFound):
            await server.deactivate_user("nobody")

    async def test_delete_user_ends_sessions(self, server: AccountsServer) -> None:
        account = await register(server)
        result = await login(server, account)
        await server.delete_user(account.user_id)
        with pytest.raises(InvalidToken):
            await server.resume_session(result.tokens.access_token)
        assert await server.find_user_by_id(account.user_id) is None
        with pytest.raises(InvalidCredentials):
            await login(server, account)

    async def test_expired_access_token(self, make_server: MakeServer, clock: Clock) -> None:
        server = make_server()
        old = await login(server, await register(server))
        clock.advance(timedelta(minutes=16))  # the server's clock: no waiting, no winding back
        with pytest.raises(TokenExpired):
            await server.resume_session(old.tokens.access_token)
        fresh = await login(server, await register(server))
        assert await server.resume_session(fresh.tokens.access_token)


class TestImpersonation:
    async def test_default_is_deny(self, server: AccountsServer) -> None:
        actor, target = await register(server), await register(server)
        token = (await login(server, actor)).tokens.access_token
        result = await server.impersonate(token, {"userId": target.user_id}, INFO)
        assert not result.authorized and result.tokens is None

    async def test_authorized_impersonation_carries_act_and_lasts_one_hour(
        self, make_server: MakeServer, clock: Clock
    ) -> None:
        admins: set[str] = set()
        server = make_server(impersonation_authorize=lambda actor, target: actor.id in admins)
        root, target = await register(server), await register(server)
        token = (await login(server, target)).tokens.access_token
        assert not (await server.impersonate(token, {"userId": root.user_id}, INFO)).authorized
        admins.add(root.user_id)
        token = (await login(server, root)).tokens.access_token
        events: list[HookEvent] = []
        server.on("impersonation_success", events.append)
        result = await server.impersonate(token, {"username": target.username}, INFO)
        assert result.authorized and result.tokens and result.user
        assert result.user.id == target.user_id
        access = claims(result.tokens.access_token)
        assert access["sub"] == target.user_id and access["act"] == {"sub": root.user_id}
        assert events[0].actor is not None and events[0].actor.id == root.user_id
        refreshed = await server.refresh_tokens(None, result.tokens.refresh_token, INFO)
        assert claims(refreshed.tokens.access_token)["act"] == {"sub": root.user_id}
        refresh_claims = claims(result.tokens.refresh_token)
        assert refresh_claims["exp"] - refresh_claims["iat"] == 3600
        clock.advance(timedelta(hours=1, seconds=1))
        with pytest.raises(InvalidToken):
            await server.refresh_tokens(None, refreshed.tokens.refresh_token, INFO)

    async def test_no_nested_impersonation_and_unknown_target_looks_like_refusal(
        self, make_server: MakeServer
    ) -> None:
        server = make_server(impersonation_authorize=lambda actor, target: True)
        root, target, third = await register(server), await register(server), await register(server)
        token = (await login(server, root)).tokens.access_token
        assert not (await server.impersonate(token, {"userId": "nobody"}, INFO)).authorized
        inner = await server.impersonate(token, {"email": target.email}, INFO)
        assert inner.tokens is not None
        nested = await server.impersonate(
            inner.tokens.access_token, {"userId": third.user_id}, INFO
        )
        assert not nested.authorized
        with pytest.raises(InvalidRequest):
            await server.impersonate(token, {"userId": {"$ne": None}}, INFO)

    async def test_failing_authorize_hook_refuses(self, make_server: MakeServer) -> None:
        def broken(actor: User, target: User) -> bool:
            raise RuntimeError("bug")

        server = make_server(impersonation_authorize=broken)
        root, target = await register(server), await register(server)
        token = (await login(server, root)).tokens.access_token
        assert not (await server.impersonate(token, {"userId": target.user_id}, INFO)).authorized


class TestJwtPayloadHook:
    async def test_hook_adds_claims(self, make_server: MakeServer) -> None:
        async def payload(data: Any, user: User) -> dict[str, Any]:
            return {"roles": ["admin"], "uid": data["sub"]}

        server = make_server(create_jwt_payload=payload)
        account = await register(server)
        token = (await login(server, account)).tokens.access_token
        assert claims(token)["roles"] == ["admin"]
        assert claims(token)["uid"] == account.user_id

    async def test_hook_may_not_override_a_reserved_claim(self, make_server: MakeServer) -> None:
        server = make_server(create_jwt_payload=lambda data, user: {"sub": "someone-else"})
        with pytest.raises(ConfigurationError):
            await login(server, await register(server))


def test_duplicate_service_names_are_refused(
    make_server: MakeServer, server: AccountsServer
) -> None:
    password = server.services["password"]
    with pytest.raises(ConfigurationError, match="two login services"):
        make_server(services=[password, password])


class TestIdleExpiry:
    async def test_idle_session_ends_and_freshen_keeps_it_alive(
        self, make_server: MakeServer, clock: Clock
    ) -> None:
        server = make_server(
            sessions=SessionConfig(lifetime=timedelta(hours=1), idle_timeout=timedelta(minutes=20)),
            # Access tokens that outlive the 45 minutes below, so only the session decides.
            tokens=TokenConfig(
                keys=KeyRing([load_key("ed25519")]), access_lifetime=timedelta(minutes=60)
            ),
        )
        account = await register(server)
        kept, idle = await login(server, account), await login(server, account)
        for _ in range(3):  # 45 minutes, freshening one of them every 15
            clock.advance(timedelta(minutes=15))
            fresh = await server.freshen_session(kept.tokens.access_token)
            assert fresh.last_used_at == clock.now
        with pytest.raises(InvalidToken):
            await server.resume_session(idle.tokens.access_token)
        listed = await server.list_sessions(account.user_id)
        assert [s.id for s in listed] == [kept.session_id]
        clock.advance(timedelta(minutes=16))  # past the absolute hour: freshening cannot help
        with pytest.raises(InvalidToken):
            await server.freshen_session(kept.tokens.access_token)

    async def test_refresh_counts_as_use(self, make_server: MakeServer, clock: Clock) -> None:
        server = make_server(sessions=SessionConfig(idle_timeout=timedelta(minutes=20)))
        result = await login(server, await register(server))
        clock.advance(timedelta(minutes=15))
        result = await server.refresh_tokens(None, result.tokens.refresh_token, INFO)
        clock.advance(timedelta(minutes=15))
        assert await server.resume_session(result.tokens.access_token)
