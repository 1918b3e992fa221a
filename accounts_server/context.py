"""`ServiceContext`: everything a login service gets from the server, and nothing more.

A service (password, OAuth, magic link, or one you write) receives one context in
`authenticate` and in every endpoint call. It holds the store, the clock, the rate limiter,
one-time tokens, an `emit` that sanitizes every user it carries, and the few server operations
services use. The server builds it from its own parts and bound methods, so this module (and
every module a service imports) never refers back to `AccountsServer`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from datetime import timedelta
from typing import Any

from .errors import InvalidToken, MailUnavailable
from .hooks import EventName, HookEvent, Hooks
from .mail import Mailer, MailMessage
from .onetime import OneTimeTokens
from .ratelimit import RateLimiter
from .stores.base import Store, canonical_email
from .twofactor import TwoFactor
from .types import Clock, ConnectionInfo, Email, LoginResult, Session, User

__all__ = ["ServiceContext"]


Resume = Callable[[str], Awaitable[tuple[User, Session]]]
Login = Callable[..., Awaitable[LoginResult]]
CreateUser = Callable[..., Awaitable[User]]
RevokeSessions = Callable[..., Awaitable[int]]


class ServiceContext:
    """What a login service may use. Users a service reads from `store` are the stored ones;
    whatever leaves through `emit`, `login` or an endpoint's answer is sanitized by the server
    (`user_sanitizer`), so a service cannot leak a field the application hides."""

    def __init__(
        self,
        *,
        store: Store,
        clock: Clock,
        limiter: RateLimiter,
        hooks: Hooks,
        sanitize: Callable[[User], User],
        resume: Resume,
        login: Login,
        create_user: CreateUser,
        revoke_sessions: RevokeSessions,
        after_response: Callable[[Coroutine[Any, Any, object]], None],
        two_factor: TwoFactor,
        login_methods: Callable[[User], Awaitable[list[str]]],
    ) -> None:
        self.store = store
        self.clock = clock
        self.limiter = limiter
        #: Single-use tokens: links by mail, OAuth state, one-time codes.
        self.one_time = OneTimeTokens(store, clock)
        #: The user's second factor (TOTP, recovery codes), whichever service logs them in.
        self.two_factor = two_factor
        self._hooks = hooks
        self._sanitize = sanitize
        self._resume = resume
        self._login = login
        self._create_user = create_user
        self._revoke_sessions = revoke_sessions
        self._after_response = after_response
        self._login_methods = login_methods

    def sanitize(self, user: User) -> User:
        """The user as clients and listeners may see it."""
        return self._sanitize(user)

    async def emit(
        self,
        name: EventName,
        *,
        user: User | None = None,
        session_id: str | None = None,
        info: ConnectionInfo | None = None,
    ) -> None:
        """Notify listeners of `name`; the user is sanitized here, on every path."""
        if self._hooks.listening(name):
            sanitized = None if user is None else self._sanitize(user)
            event = HookEvent(name=name, user=sanitized, session_id=session_id, info=info)
            await self._hooks.emit(event)

    async def authenticated(self, access_token: str | None) -> tuple[User, Session]:
        """The user and session an access token speaks for, checked against the live session
        (as every request is).

        Raises:
            InvalidToken: no token, or one that is not honoured.
        """
        if access_token is None:
            raise InvalidToken(reason="missing")
        return await self._resume(access_token)

    async def login(
        self,
        user: User,
        info: ConnectionInfo,
        *,
        lifetime: timedelta | None = None,
        amr: Sequence[str] = (),
    ) -> LoginResult:
        """Open a session for a user the service has authenticated itself (an OAuth callback,
        a one-time code); `amr` says how (RFC 8176). `validate_login` may still veto.

        Raises:
            UserNotFound, UserDeactivated, LoginNotAllowed.
        """
        return await self._login(user, info, lifetime=lifetime, amr=amr)

    async def create_user(
        self,
        *,
        username: str | None = None,
        emails: Sequence[str | Email] = (),
        extra: Mapping[str, Any] | None = None,
        services: Mapping[str, Mapping[str, Any]] | None = None,
        identities: Sequence[tuple[str, str]] = (),
    ) -> User:
        """Create a user with its service data and external identities in one write (validated,
        `create_user_success` emitted).

        Raises:
            UsernameOrEmailRequired, InvalidUsername, InvalidEmail, UsernameAlreadyExists,
            EmailAlreadyExists, IdentityAlreadyLinked.
        """
        return await self._create_user(
            username=username, emails=emails, extra=extra, services=services, identities=identities
        )

    async def revoke_sessions(self, user_id: str, *, except_: Sequence[str] = ()) -> int:
        """End every session of the user but `except_`; returns how many."""
        return await self._revoke_sessions(user_id, except_=except_)

    async def login_methods(self, user: User) -> list[str]:
        """The services that could log this user in now (those offering `LoginAvailability`):
        before removing a way in, a service checks another remains."""
        return await self._login_methods(user)

    def after_response(self, work: Coroutine[Any, Any, object]) -> None:
        """Run `work` after answering: for steps whose duration must not show in the answer
        (mailing a link to an account that may not exist). Failures are logged."""
        self._after_response(work)

    async def mail_link(
        self,
        mailer: Mailer | None,
        *,
        kind: str,
        user_id: str,
        address: str,
        lifetime: timedelta,
        message: Callable[[str], MailMessage],
    ) -> None:
        """Issue a one-time token of `kind` and mail it (`message(token)` builds the mail).
        Past the per-address mail limit nothing is sent and nothing is said, so the answer
        never changes.

        Raises:
            MailUnavailable: no mailer, or the mail server refused; the unsent token is
                deleted, so no link stays valid that nobody received.
        """
        if mailer is None:
            raise MailUnavailable("no mail transport is configured")
        limit = self.limiter.limits.mail_per_account
        if not await self.limiter.allow(f"mail-{kind}", canonical_email(address), limit):
            return
        token = await self.one_time.issue(
            kind=kind, user_id=user_id, email=address, lifetime=lifetime
        )
        try:
            await mailer.send(message(token))
        except BaseException:  # whatever failed (a template, a mailer, a cancel): no live link
            await self.one_time.discard(token, kind)
            raise
