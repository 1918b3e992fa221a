"""Lifecycle events: the `Hooks` emitter on its own, the events the server sends, and
`ServiceContext.emit`, the path login services use."""

from __future__ import annotations

import logging
from dataclasses import replace

import pytest

from accounts_server import (
    AccountsServer,
    AuditConfig,
    ConfigurationError,
    ConnectionInfo,
    Email,
    HookEvent,
    InvalidCredentials,
    LoginResult,
    User,
)
from accounts_server.hooks import Hooks

from .conftest import MakeServer
from .helpers import Account, register

INFO = ConnectionInfo(ip="203.0.113.7", user_agent="pytest")
LOGIN = HookEvent(name="login_success", user=User(id="u1"), session_id="s1", info=INFO)
VALIDATE = HookEvent(name="validate_login", user=User(id="u1"), info=INFO)


async def login(server: AccountsServer, account: Account) -> LoginResult:
    return await server.login_with_service("password", account.credentials(), INFO)


def hook_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "accounts_server.hooks"]


def _broken(event: HookEvent) -> bool:
    raise RuntimeError("listener bug")


async def _broken_async(event: HookEvent) -> bool:
    raise RuntimeError("listener bug")


class TestHooks:
    """The events the server sends, through `server.on`."""

    async def test_events_fire_in_order_with_sanitized_payloads(
        self, server: AccountsServer
    ) -> None:
        seen: list[HookEvent] = []
        for name in (
            "create_user_success",
            "login_success",
            "login_error",
            "resume_session_success",
            "refresh_tokens_success",
            "logout_success",
            "user_deactivated",
            "user_activated",
        ):
            server.on(name, seen.append)
        account = await register(server)
        result = await login(server, account)
        with pytest.raises(InvalidCredentials):
            await server.login_with_service(
                "password", {"user": account.email, "password": "not it at all"}, INFO
            )
        await server.resume_session(result.tokens.access_token)
        second = await server.refresh_tokens(None, result.tokens.refresh_token, INFO)
        await server.logout(second.tokens.access_token)
        await server.deactivate_user(account.user_id)
        await server.activate_user(account.user_id)
        assert [e.name for e in seen] == [
            "create_user_success",
            "login_success",
            "login_error",
            "resume_session_success",
            "refresh_tokens_success",
            "logout_success",
            "user_deactivated",
            "user_activated",
        ]
        assert isinstance(seen[2].error, InvalidCredentials)
        assert seen[1].info == INFO and seen[1].service == "password"
        for event in seen:
            text = repr(event)
            assert account.password not in text
            assert "argon2" not in text
            assert result.tokens.refresh_token not in text
            assert result.tokens.access_token not in text

    async def test_failing_success_listener_does_not_fail_the_request(
        self, server: AccountsServer
    ) -> None:
        async def broken(event: HookEvent) -> None:
            raise RuntimeError("listener bug")

        server.on("login_success", broken)
        assert await login(server, await register(server))

    async def test_unsubscribe_and_unknown_event(self, server: AccountsServer) -> None:
        seen: list[HookEvent] = []
        stop = server.on("login_success", seen.append)
        stop()
        await login(server, await register(server))
        assert seen == []
        with pytest.raises(ConfigurationError):
            server.on("login_sucess", seen.append)  # type: ignore[arg-type]

    async def test_user_sanitizer_applies_to_results_and_hooks(
        self, make_server: MakeServer
    ) -> None:
        server = make_server(user_sanitizer=lambda user: replace(user, emails=()))
        seen: list[HookEvent] = []
        server.on("login_success", seen.append)
        result = await login(server, await register(server))
        assert result.user.emails == ()
        assert seen[0].user is not None and seen[0].user.emails == ()
        assert (await server.resume_session(result.tokens.access_token)).emails == ()


class TestEmit:
    async def test_listeners_run_in_registration_order_sync_or_async(self) -> None:
        hooks = Hooks()
        order: list[str] = []

        async def first(event: HookEvent) -> None:
            order.append("first")

        def second(event: HookEvent) -> None:
            order.append("second")

        async def third(event: HookEvent) -> None:
            order.append("third")

        for listener in (first, second, third):
            hooks.on("login_success", listener)
        await hooks.emit(LOGIN)
        assert order == ["first", "second", "third"]

    async def test_only_listeners_of_the_event_are_called(self) -> None:
        hooks = Hooks()
        logins: list[HookEvent] = []
        logouts: list[HookEvent] = []
        hooks.on("login_success", logins.append)
        hooks.on("logout_success", logouts.append)
        await hooks.emit(LOGIN)
        assert logins == [LOGIN]
        assert logouts == []

    @pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
    async def test_a_failing_listener_is_logged_not_raised_and_the_rest_still_run(
        self, caplog: pytest.LogCaptureFixture, is_async: bool
    ) -> None:
        hooks = Hooks()
        seen: list[HookEvent] = []

        hooks.on("login_success", _broken_async if is_async else _broken)
        hooks.on("login_success", seen.append)
        with caplog.at_level(logging.ERROR, logger="accounts_server.hooks"):
            await hooks.emit(LOGIN)
        assert seen == [LOGIN]
        [record] = hook_records(caplog)
        assert record.levelno == logging.ERROR
        assert "login_success" in record.getMessage()
        assert record.exc_info is not None
        assert isinstance(record.exc_info[1], RuntimeError)

    async def test_a_listener_removing_itself_while_called_skips_no_other(self) -> None:
        hooks = Hooks()
        seen: list[str] = []

        def once(event: HookEvent) -> None:
            seen.append("once")
            stop()

        stop = hooks.on("login_success", once)
        hooks.on("login_success", lambda event: seen.append("always"))
        await hooks.emit(LOGIN)
        await hooks.emit(LOGIN)
        assert seen == ["once", "always", "always"]

    async def test_emit_without_listeners_does_nothing(self) -> None:
        hooks = Hooks()
        assert not hooks.listening("login_success")
        await hooks.emit(LOGIN)


class TestAllow:
    async def test_no_listener_allows(self) -> None:
        assert await Hooks().allow(VALIDATE)

    async def test_every_listener_truthy_allows(self) -> None:
        hooks = Hooks()
        seen: list[str] = []

        def yes(event: HookEvent) -> bool:
            seen.append("sync")
            return True

        async def also_yes(event: HookEvent) -> str:
            seen.append("async")
            return "yes"

        hooks.on("validate_login", yes)
        hooks.on("validate_login", also_yes)
        assert await hooks.allow(VALIDATE) is True
        assert seen == ["sync", "async"]

    @pytest.mark.parametrize("answer", [False, None, 0, "", []])
    @pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
    async def test_a_falsy_answer_vetoes_and_stops_asking(
        self, answer: object, is_async: bool
    ) -> None:
        hooks = Hooks()
        later: list[HookEvent] = []

        def no(event: HookEvent) -> object:
            return answer

        async def no_async(event: HookEvent) -> object:
            return answer

        hooks.on("validate_login", lambda event: True)
        hooks.on("validate_login", no_async if is_async else no)
        hooks.on("validate_login", later.append)
        assert await hooks.allow(VALIDATE) is False
        assert later == []

    @pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
    async def test_an_exception_is_a_veto_and_is_logged(
        self, caplog: pytest.LogCaptureFixture, is_async: bool
    ) -> None:
        hooks = Hooks()
        later: list[HookEvent] = []

        hooks.on("validate_login", _broken_async if is_async else _broken)
        hooks.on("validate_login", later.append)
        with caplog.at_level(logging.ERROR, logger="accounts_server.hooks"):
            assert await hooks.allow(VALIDATE) is False
        assert later == []
        [record] = hook_records(caplog)
        assert "validate_login" in record.getMessage()
        assert "veto" in record.getMessage()
        assert record.exc_info is not None
        assert isinstance(record.exc_info[1], RuntimeError)


class TestRegistration:
    async def test_unsubscribe_stops_delivery_and_twice_is_harmless(self) -> None:
        hooks = Hooks()
        removed: list[HookEvent] = []
        kept: list[HookEvent] = []
        stop = hooks.on("login_success", removed.append)
        hooks.on("login_success", kept.append)
        stop()
        stop()
        await hooks.emit(LOGIN)
        assert removed == []
        assert kept == [LOGIN]
        assert hooks.listening("login_success")

    async def test_listening_follows_registration(self) -> None:
        hooks = Hooks()
        stop = hooks.on("logout_success", lambda event: None)
        assert hooks.listening("logout_success")
        assert not hooks.listening("login_success")
        stop()
        assert not hooks.listening("logout_success")

    async def test_unsubscribing_twice_leaves_a_second_registration_alone(self) -> None:
        hooks = Hooks()
        seen: list[HookEvent] = []
        stop = hooks.on("login_success", seen.append)
        hooks.on("login_success", seen.append)
        stop()
        stop()
        await hooks.emit(LOGIN)
        assert seen == [LOGIN]

    @pytest.mark.parametrize("name", ["login_sucess", "", "LOGIN_SUCCESS", "login_success "])
    def test_an_unknown_event_is_refused(self, name: str) -> None:
        hooks = Hooks()
        with pytest.raises(ConfigurationError, match="unknown event"):
            hooks.on(name, lambda event: None)  # type: ignore[arg-type]


class TestContextEmit:
    """`ServiceContext.emit`: what a login service calls; the server's sanitizer applies."""

    async def test_the_user_is_sanitized_with_the_servers_sanitizer(
        self, make_server: MakeServer
    ) -> None:
        server = make_server(user_sanitizer=lambda user: replace(user, emails=(), extra={}))
        seen: list[HookEvent] = []
        server.on("email_verified", seen.append)
        user = User(
            id="u1",
            username="ann",
            emails=(Email("ann@example.com", verified=True),),
            extra={"secret_note": "hidden"},
        )
        await server.context.emit("email_verified", user=user, session_id="s1", info=INFO)
        assert seen == [
            HookEvent(
                name="email_verified",
                user=User(id="u1", username="ann"),
                session_id="s1",
                info=INFO,
            )
        ]

    async def test_no_user_means_no_user_in_the_event(self, make_server: MakeServer) -> None:
        calls: list[User] = []

        def sanitize(user: User) -> User:
            calls.append(user)
            return user

        server = make_server(user_sanitizer=sanitize)
        seen: list[HookEvent] = []
        server.on("logout_success", seen.append)
        await server.context.emit("logout_success", session_id="s1")
        assert seen == [HookEvent(name="logout_success", session_id="s1")]
        assert calls == []

    async def test_nothing_is_built_when_nobody_listens(self, make_server: MakeServer) -> None:
        calls: list[User] = []

        def sanitize(user: User) -> User:
            calls.append(user)
            return user

        # Without the audit log, which listens to email_verified.
        server = make_server(user_sanitizer=sanitize, audit=AuditConfig(enabled=False))
        other: list[HookEvent] = []
        server.on("login_success", other.append)  # a listener of another event only
        stop = server.on("email_verified", other.append)
        stop()
        await server.context.emit("email_verified", user=User(id="u1"))
        assert calls == []
        assert other == []
        # The control: with a listener, the same call does sanitize.
        server.on("email_verified", other.append)
        await server.context.emit("email_verified", user=User(id="u1"))
        assert calls == [User(id="u1")]
        assert [e.name for e in other] == ["email_verified"]

    async def test_a_failing_listener_does_not_fail_the_service(
        self, server: AccountsServer, caplog: pytest.LogCaptureFixture
    ) -> None:
        def broken(event: HookEvent) -> None:
            raise RuntimeError("listener bug")

        server.on("email_verified", broken)
        with caplog.at_level(logging.ERROR, logger="accounts_server.hooks"):
            await server.context.emit("email_verified", user=User(id="u1"))
        assert len(hook_records(caplog)) == 1
