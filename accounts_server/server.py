"""AccountsServer: orchestration of login services, sessions, tokens, users and hooks.

The rules live elsewhere (`tokens`, `sessions`, the store); this module sequences them and
emits the lifecycle events. It takes `ConnectionInfo`, never an HTTP request, and must not
import a web framework or a database driver.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any, TypeVar

from .admin import Admin, AdminAction
from .audit import AUDITED, OWN_EVENTS, AuditConfig, AuditLog
from .audit import audit_query as _audit_query
from .context import ServiceContext
from .errors import (
    AccountsError,
    ConfigurationError,
    InvalidCredentials,
    InvalidRequest,
    InvalidToken,
    LoginNotAllowed,
    ServiceNotFound,
    SessionNotFound,
    TokenReused,
    TwoFactorCodeRequired,
    UserDeactivated,
    UsernameOrEmailRequired,
    UserNotFound,
)
from .hooks import EventName, HookEvent, Hooks, Listener
from .mfa import MultiFactor
from .ratelimit import RateLimiter, RateLimits
from .sealing import SealingKeys
from .services import (
    Authenticated,
    EndpointHandler,
    EndpointRequest,
    LoginAvailability,
    LoginService,
    ProvidesEndpoints,
    SecondFactor,
    SecretService,
)
from .sessions import SessionConfig, SessionRules, access_jti
from .stores.base import AuditRecord, Store, StoredSession
from .tokens import AccessClaims, TokenCodec, TokenConfig
from .twofactor import TwoFactor, TwoFactorConfig
from .types import (
    Clock,
    ConnectionInfo,
    Email,
    ImpersonationResult,
    LoginResult,
    Session,
    Tokens,
    User,
    utc_now,
)
from .validation import check_service_name, validate_email, validate_extra, validate_username

__all__ = ["AccountsServer"]

logger = logging.getLogger("accounts_server")
_T = TypeVar("_T")

JwtPayloadHook = Callable[
    [Mapping[str, Any], User], Mapping[str, Any] | Awaitable[Mapping[str, Any]]
]
ImpersonationAuthorize = Callable[[User, User], bool | Awaitable[bool]]
AdminAuthorize = Callable[[User, str], bool | Awaitable[bool]]
UserSanitizer = Callable[[User], User]


def _quiet(error: AccountsError) -> AccountsError:
    """The error as listeners see it: an `mfaToken` is for the client alone."""
    return error.without_token() if isinstance(error, TwoFactorCodeRequired) else error


async def _maybe_await(value: _T | Awaitable[_T]) -> _T:
    if inspect.isawaitable(value):
        return await value
    return value


class AccountsServer:
    """The authentication server. All configuration is keyword-only and checked here.

    Raises:
        ConfigurationError: two services with one name, or an invalid service name.
    """

    def __init__(
        self,
        *,
        store: Store,
        tokens: TokenConfig,
        services: Sequence[LoginService] = (),
        sessions: SessionConfig | None = None,
        create_jwt_payload: JwtPayloadHook | None = None,
        impersonation_authorize: ImpersonationAuthorize | None = None,
        authorize_admin: AdminAuthorize | None = None,
        user_sanitizer: UserSanitizer | None = None,
        rate_limits: RateLimits | None = None,
        sealing: SealingKeys | None = None,
        two_factor: TwoFactorConfig | None = None,
        audit: AuditConfig | None = None,
        clock: Clock = utc_now,
    ) -> None:
        self.store = store
        self.token_config = tokens
        self.session_config = sessions or SessionConfig()
        self.clock = clock
        self._hooks = Hooks()
        self._codec = TokenCodec(tokens, clock=clock)
        self._sessions = SessionRules(store, self.session_config, clock)
        self._create_jwt_payload = create_jwt_payload
        self._impersonation_authorize = impersonation_authorize
        self._authorize_admin = authorize_admin
        self._sanitize = user_sanitizer or (lambda user: user)
        self._limiter = RateLimiter(store, rate_limits or RateLimits(), clock)
        self._background: set[asyncio.Task[None]] = set()
        audit = audit or AuditConfig()
        if audit.enabled:  # first among listeners: what happened is kept before anything else
            recorder = AuditLog(store, audit, clock)
            for audited in AUDITED:
                self._hooks.on(audited, recorder.record)
        #: Second factors; available when `sealing` keys are given (they keep the secrets).
        two_factor = two_factor or TwoFactorConfig()
        self.two_factor = TwoFactor(
            store=store,
            clock=clock,
            limiter=self._limiter,
            sealing=sealing,
            config=two_factor,
            emit=self._emit,
            revoke_sessions=self.revoke_all_sessions,
        )
        #: What every login service gets (and server-side code calling a service's methods).
        self.context = ServiceContext(
            store=store,
            clock=clock,
            limiter=self._limiter,
            hooks=self._hooks,
            sanitize=self._sanitize,
            resume=self.resume_user_and_session,
            login=self.login_with_user,
            create_user=self.create_user,
            revoke_sessions=self.revoke_all_sessions,
            after_response=self.after_response,
            two_factor=self.two_factor,
            login_methods=self._login_methods,
        )
        self.services: dict[str, LoginService] = {}
        for service in services:
            name = check_service_name(getattr(service, "name", None))
            if name in self.services:
                raise ConfigurationError(f"two login services are named {name!r}")
            if isinstance(service, ProvidesEndpoints):
                service.endpoints()  # validated now, not on the first request
            self.services[name] = service
        self._mfa = MultiFactor(
            context=self.context,
            two_factor=self.two_factor,
            factors=[s for s in self.services.values() if isinstance(s, SecondFactor)],
            lifetime=two_factor.mfa_lifetime,
        )

    # -- hooks ------------------------------------------------------------------------------

    def on(self, event: EventName, listener: Listener) -> Callable[[], None]:
        """Listen to a lifecycle event; returns the function that stops listening.

        Raises:
            ConfigurationError: unknown event name.
        """
        return self._hooks.on(event, listener)

    async def _emit(
        self, name: EventName, *, user: User | None = None, actor: User | None = None, **fields: Any
    ) -> None:
        """Every event the server sends: users are sanitized here, so no path can forget."""
        if self._hooks.listening(name):  # the hot paths pay nothing for unheard events
            await self._hooks.emit(
                HookEvent(
                    name=name,
                    user=None if user is None else self._sanitize(user),
                    actor=None if actor is None else self._sanitize(actor),
                    **fields,
                )
            )

    # -- login ------------------------------------------------------------------------------

    async def login_with_service(
        self, service_name: str, params: Mapping[str, Any], info: ConnectionInfo
    ) -> LoginResult:
        """Authenticate with a login service and open a session.

        Raises:
            ServiceNotFound, InvalidCredentials, UserDeactivated, LoginNotAllowed.
        """
        try:
            await self._limiter.hit("login-ip", info.ip, self._limiter.limits.login_per_ip)
            user, amr, second = await self._authenticate(service_name, params, info)
            lifetime = self._remember(params)
            if second:
                required = await self._mfa.required(
                    user, service=service_name, amr=amr, lifetime=lifetime
                )
                if required is not None:
                    raise required
            result = await self._open_session(user, info, lifetime=lifetime, amr=amr)
        except AccountsError as exc:
            await self._emit("login_error", service=service_name, info=info, error=_quiet(exc))
            raise
        await self._emit(
            "login_success",
            user=user,
            session_id=result.session_id,
            service=service_name,
            info=info,
        )
        return result

    async def authenticate_with_service(
        self, service_name: str, params: Mapping[str, Any], info: ConnectionInfo
    ) -> bool:
        """The same checks as a login, without opening a session.

        Raises:
            ServiceNotFound, InvalidCredentials, UserDeactivated, LoginNotAllowed.
        """
        try:
            user, _, second = await self._authenticate(service_name, params, info)
            if second and (await self._mfa.factors(user))[0]:
                raise TwoFactorCodeRequired()
        except AccountsError as exc:
            await self._emit("authenticate_error", service=service_name, info=info, error=exc)
            raise
        await self._emit("authenticate_success", user=user, service=service_name, info=info)
        return True

    async def login_with_mfa(self, params: Mapping[str, Any], info: ConnectionInfo) -> LoginResult:
        """Finish a login whose first step answered `TwoFactorCodeRequired`: `{mfaToken,
        code}` or `{mfaToken, <factor service>: proof}` (mfa.py).

        Raises:
            InvalidToken, InvalidRequest, TwoFactorCodeMismatch (or the factor's refusal),
            RateLimited, UserDeactivated, LoginNotAllowed.
        """
        service = None
        try:
            await self._limiter.hit("token-ip", info.ip, self._limiter.limits.token_per_ip)
            step = await self._mfa.complete(params)
            service = step.service
            if step.user.deactivated:
                raise UserDeactivated()
            event = HookEvent(
                name="validate_login", user=self._sanitize(step.user), service=service, info=info
            )
            if not await self._hooks.allow(event):
                raise LoginNotAllowed()
            result = await self._open_session(step.user, info, lifetime=step.lifetime, amr=step.amr)
        except AccountsError as exc:
            await self._emit("login_error", service=service, info=info, error=exc)
            raise
        await self._emit(
            "login_success",
            user=step.user,
            session_id=result.session_id,
            service=service,
            info=info,
        )
        return result

    async def login_with_user(
        self,
        user: User,
        info: ConnectionInfo,
        *,
        lifetime: timedelta | None = None,
        amr: Sequence[str] = (),
    ) -> LoginResult:
        """Open a session for a user the caller has already authenticated (an OAuth callback,
        a one-time code); `lifetime` is the "remember me" choice (5 minutes..365 days), `amr`
        how the user proved themselves (RFC 8176). The `validate_login` listeners are
        consulted here too: every login can be vetoed.

        Raises:
            UserNotFound, UserDeactivated, LoginNotAllowed.
        """
        current = await self.store.find_user_by_id(user.id)
        if current is None:
            raise UserNotFound()
        if current.deactivated:
            raise UserDeactivated()
        event = HookEvent(name="validate_login", user=self._sanitize(current), info=info)
        if not await self._hooks.allow(event):
            raise LoginNotAllowed()
        result = await self._open_session(current, info, lifetime=lifetime, amr=tuple(amr))
        await self._emit("login_success", user=current, session_id=result.session_id, info=info)
        return result

    def _remember(self, params: Mapping[str, Any]) -> timedelta | None:
        """`remember: false` in the login params picks the short lifetime (Dashboard's 8 h);
        absent or true, the full one."""
        if isinstance(params, Mapping) and params.get("remember") is False:
            return self.session_config.short_lifetime
        return None

    async def _authenticate(
        self, service_name: str, params: Mapping[str, Any], info: ConnectionInfo
    ) -> tuple[User, tuple[str, ...], bool]:
        """(the user, their `amr`, whether their second factor is still wanted)."""
        service = self.services.get(service_name)
        if service is None:
            raise ServiceNotFound()
        if not isinstance(params, Mapping):
            raise InvalidRequest("params must be an object")
        proved = await service.authenticate(params, self.context)
        if proved is None:
            raise InvalidCredentials()
        if isinstance(proved, Authenticated):
            user, amr, second = proved.user, proved.amr, proved.second_factor
        else:
            user, amr, second = proved, (), False
        if user.deactivated:
            raise UserDeactivated()
        event = HookEvent(
            name="validate_login", user=self._sanitize(user), service=service_name, info=info
        )
        if not await self._hooks.allow(event):
            raise LoginNotAllowed()
        return user, amr, second and "mfa" not in amr

    async def _login_methods(self, user: User) -> list[str]:
        """The services that could log the user in now."""
        return [
            name
            for name, service in self.services.items()
            if isinstance(service, LoginAvailability)
            and await service.can_log_in(user, self.context)
        ]

    async def _open_session(
        self,
        user: User,
        info: ConnectionInfo,
        *,
        lifetime: timedelta | None = None,
        impersonator_id: str | None = None,
        amr: tuple[str, ...] = (),
    ) -> LoginResult:
        session, jti = await self._sessions.open(
            user.id, info, lifetime=lifetime, impersonator_id=impersonator_id, amr=amr
        )
        tokens = await self._issue(session, user, jti, session.created_at)
        return LoginResult(session_id=session.id, tokens=tokens, user=self._sanitize(user))

    async def _issue(
        self, session: StoredSession, user: User, refresh_jti: str, issued_at: datetime
    ) -> Tokens:
        extra: Mapping[str, Any] | None = None
        if self._create_jwt_payload is not None:
            data: dict[str, Any] = {"sub": user.id, "sid": session.id}
            if session.impersonator_id is not None:
                data["act"] = {"sub": session.impersonator_id}
            extra = await _maybe_await(self._create_jwt_payload(data, self._sanitize(user)))
        expires = min(issued_at + self.token_config.access_lifetime, session.expires_at)
        access = self._codec.issue_access(
            subject=user.id,
            session_id=session.id,
            jti=access_jti(refresh_jti),
            issued_at=issued_at,
            expires_at=expires,
            actor=session.impersonator_id,
            extra=extra,
            amr=session.amr,
            auth_time=session.created_at,
        )
        refresh = self._codec.issue_refresh(
            subject=user.id,
            session_id=session.id,
            jti=refresh_jti,
            issued_at=issued_at,
            expires_at=session.expires_at,
        )
        return Tokens(access_token=access, refresh_token=refresh)

    # -- sessions ---------------------------------------------------------------------------

    async def _resume(
        self, access_token: object, *, events: bool = False
    ) -> tuple[AccessClaims, StoredSession, User]:
        """Signature, claims, then the session and the user, on every call: a revocation
        holds on the next request, not at token expiry. The user is the stored one; with
        `events`, the `resume_session_*` events are emitted."""
        try:
            claims = self._codec.verify_access(access_token)
            session, user = await self._sessions.active_with_user(claims.sid, claims.sub)
            if session.impersonator_id != claims.actor:
                raise InvalidToken(reason="act")
            if user is None or user.deactivated:
                raise InvalidToken(reason="user")
        except AccountsError as exc:
            if events:
                await self._emit("resume_session_error", error=exc)
            raise
        if events:
            await self._emit("resume_session_success", user=user, session_id=session.id)
        return claims, session, user

    async def resume_session(self, access_token: str) -> User:
        """The user an access token speaks for, checked against the live session.

        Raises:
            InvalidToken (TokenExpired when only the time is wrong).
        """
        _, _, user = await self._resume(access_token, events=True)
        return self._sanitize(user)

    async def resume_user_and_session(self, access_token: str) -> tuple[User, Session]:
        """`resume_session`, with the session too (for acting on "this session").

        Raises:
            InvalidToken (TokenExpired when only the time is wrong).
        """
        _, session, user = await self._resume(access_token, events=True)
        return self._sanitize(user), session.public()

    async def refresh_tokens(
        self, access_token: str | None, refresh_token: str, info: ConnectionInfo
    ) -> LoginResult:
        """Rotate the refresh token and issue a new pair.

        The refresh token authorises this (RFC 6749 §6). The accounts-js client also sends the
        access token of the pair; when one is given it must be ours and of the same session and
        user (its age does not matter: it has usually just expired), or nothing is rotated.

        Raises:
            InvalidToken; TokenReused when a rotated token comes back (the session is revoked).
        """
        try:
            claims = self._codec.verify_refresh(refresh_token)
            if access_token is not None:
                self._codec.check_pair(access_token, claims, access_jti(claims.jti))
            await self._limiter.hit("refresh", claims.sid, self._limiter.limits.refresh_per_session)
            current, user = await self._sessions.active_with_user(claims.sid, claims.sub)
            if user is None or user.deactivated:
                raise InvalidToken(reason="user")
            try:
                session, jti, issued_at = await self._sessions.rotate(
                    claims.sid, claims.sub, claims.jti, info, current=current
                )
            except TokenReused as exc:
                await self._emit(
                    "refresh_token_reused",
                    user=user,
                    session_id=claims.sid,
                    info=info,
                    error=exc,
                )
                raise
            tokens = await self._issue(session, user, jti, issued_at)
        except AccountsError as exc:
            await self._emit("refresh_tokens_error", info=info, error=exc)
            raise
        await self._emit("refresh_tokens_success", user=user, session_id=session.id, info=info)
        return LoginResult(session_id=session.id, tokens=tokens, user=self._sanitize(user))

    async def logout(self, access_token: str) -> None:
        """End the session the access token belongs to.

        Raises:
            InvalidToken.
        """
        try:
            _, session, user = await self._resume(access_token)
            await self.store.invalidate_session(session.id, now=self.clock())
        except AccountsError as exc:
            await self._emit("logout_error", error=exc)
            raise
        await self._emit("logout_success", user=user, session_id=session.id)

    async def impersonate(
        self, access_token: str, target: Mapping[str, Any], info: ConnectionInfo
    ) -> ImpersonationResult:
        """Open a 1-hour session as `target` ({userId | username | email}) for the caller, if
        `impersonation_authorize(actor, target)` says yes (default: no). An unknown target
        is answered like a refusal, so the route cannot enumerate users.

        Raises:
            InvalidToken, InvalidRequest, UserDeactivated (the target, after authorisation).
        """
        try:
            claims, _, actor = await self._resume(access_token)
            impersonated = await self._find_target(target)
            if (
                claims.actor is not None
                or impersonated is None
                or not await self._may_impersonate(actor, impersonated)
            ):
                return ImpersonationResult(authorized=False)
            if impersonated.deactivated:
                raise UserDeactivated()
            result = await self._open_session(impersonated, info, impersonator_id=actor.id)
        except AccountsError as exc:
            await self._emit("impersonation_error", info=info, error=exc)
            raise
        await self._emit(
            "impersonation_success",
            user=impersonated,
            actor=actor,
            session_id=result.session_id,
            info=info,
        )
        return ImpersonationResult(authorized=True, tokens=result.tokens, user=result.user)

    async def _find_target(self, target: Mapping[str, Any]) -> User | None:
        if not isinstance(target, Mapping):
            raise InvalidRequest("impersonated must be an object")
        keys = [k for k in ("userId", "username", "email") if target.get(k) is not None]
        if len(keys) != 1 or not isinstance(target[keys[0]], str):
            raise InvalidRequest("give exactly one of userId, username or email, as a string")
        value: str = target[keys[0]]
        if keys[0] == "userId":
            return await self.store.find_user_by_id(value)
        if keys[0] == "username":
            return await self.store.find_user_by_username(value)
        return await self.store.find_user_by_email(value)

    async def _may_impersonate(self, actor: User, target: User) -> bool:
        if self._impersonation_authorize is None or actor.id == target.id:
            return False
        try:
            return bool(await _maybe_await(self._impersonation_authorize(actor, target)))
        except Exception:
            logger.exception("impersonation_authorize failed; treated as a refusal")
            return False

    # -- users ------------------------------------------------------------------------------

    async def create_user(
        self,
        *,
        username: str | None = None,
        emails: Sequence[str | Email] = (),
        extra: Mapping[str, Any] | None = None,
        services: Mapping[str, Mapping[str, Any]] | None = None,
        identities: Sequence[tuple[str, str]] = (),
    ) -> User:
        """Create a user with its login services' data and external identities in one write.
        An address given as an `Email` keeps its `verified` flag (a provider-verified one).

        Raises:
            UsernameOrEmailRequired, InvalidUsername, InvalidEmail,
            UsernameAlreadyExists, EmailAlreadyExists, IdentityAlreadyLinked,
            InvalidRequest, ValidationFailed: `extra` is not what `validate_extra` accepts.
        """
        try:
            if username is None and not emails and not identities:
                raise UsernameOrEmailRequired()
            user = await self.store.create_user(
                username=None if username is None else validate_username(username),
                emails=[
                    Email(validate_email(e.address), e.verified)
                    if isinstance(e, Email)
                    else Email(validate_email(e))
                    for e in emails
                ],
                extra=validate_extra(extra or {}),
                services={check_service_name(k): dict(v) for k, v in (services or {}).items()},
                now=self.clock(),
                identities=identities,
            )
        except AccountsError as exc:
            await self._emit("create_user_error", error=exc)
            raise
        await self._emit("create_user_success", user=user)
        return self._sanitize(user)

    async def freshen_session(self, access_token: str) -> Session:
        """Mark the token's session as used now, pushing back its idle expiry (if configured);
        never past its absolute expiry, which does not move.

        Raises:
            InvalidToken.
        """
        _, session, _ = await self._resume(access_token)
        if not await self.store.touch_session(session.id, now=self.clock()):
            raise InvalidToken(reason="session")
        return replace(session.public(), last_used_at=self.clock())

    async def list_sessions(
        self, user_id: str, *, current_session_id: str | None = None
    ) -> list[Session]:
        """The user's live sessions, newest first; no hash or token in any field."""
        return [
            replace(stored.public(), current=stored.id == current_session_id)
            for stored in await self.store.list_user_sessions(user_id)
            if self._sessions.live(stored)
        ]

    async def list_own_sessions(self, access_token: str) -> list[Session]:
        """The caller's own live sessions, theirs marked `current`.

        Raises:
            InvalidToken.
        """
        _, session, user = await self._resume(access_token)
        return await self.list_sessions(user.id, current_session_id=session.id)

    async def list_own_audit(
        self, access_token: str, *, before: str | None = None, limit: int = 50
    ) -> list[AuditRecord]:
        """The caller's recent security activity (sign-ins, refusals, credential changes,
        revocations), newest first; `before` is the last id of the previous page.

        Raises:
            InvalidToken, InvalidRequest: a bad page.
        """
        _, _, user = await self._resume(access_token)
        return await self.store.list_audit(
            _audit_query(user_id=user.id, events=OWN_EVENTS, before=before, limit=limit)
        )

    async def revoke_own_session(self, access_token: str, session_id: str) -> None:
        """End one of the caller's sessions; another user's id is answered as an unknown one.

        Raises:
            InvalidToken, SessionNotFound.
        """
        _, _, user = await self._resume(access_token)
        await self.revoke_session(user.id, session_id)

    async def revoke_other_sessions(self, access_token: str) -> int:
        """End every session of the caller but this one; returns how many.

        Raises:
            InvalidToken.
        """
        _, session, user = await self._resume(access_token)
        return await self.revoke_all_sessions(user.id, except_=[session.id])

    async def get_session(self, user_id: str, session_id: str) -> Session:
        """Raises:
        SessionNotFound: unknown, ended, expired or another user's (one answer for all).
        """
        if not isinstance(session_id, str):
            raise SessionNotFound()
        try:
            return (await self._sessions.active(session_id, user_id)).public()
        except InvalidToken:
            raise SessionNotFound() from None

    async def revoke_session(self, user_id: str, session_id: str) -> None:
        """End one of the user's sessions.

        Raises:
            SessionNotFound: as `get_session`.
        """
        await self.get_session(user_id, session_id)
        if not await self.store.invalidate_session(session_id, now=self.clock()):
            raise SessionNotFound()
        if self._hooks.listening("session_revoked"):
            user = await self.store.find_user_by_id(user_id)
            await self._emit("session_revoked", user=user, session_id=session_id)

    async def revoke_all_sessions(self, user_id: str, *, except_: Sequence[str] = ()) -> int:
        """End every session of the user but `except_`, at once; returns how many."""
        count = await self.store.invalidate_user_sessions(
            user_id, now=self.clock(), except_ids=except_
        )
        if count and self._hooks.listening("session_revoked"):
            await self._emit("session_revoked", user=await self.store.find_user_by_id(user_id))
        return count

    async def admin(self, access_token: str) -> Admin:
        """Administration as the user behind `access_token`: each action is authorized by
        `authorize_admin(user, action)` (default: nobody; an exception is a no; never from an
        impersonation session) and audited as `admin_action`.

        Raises:
            InvalidToken.
        """
        _, session, user = await self._resume(access_token)
        impersonating = session.impersonator_id is not None

        async def authorize(action: AdminAction) -> bool:
            return not impersonating and await self._may_administer(user, action)

        return self._admin(f"user:{user.id}", user, authorize)

    def console_admin(self, operator: str) -> Admin:
        """Administration from the management console (whoever can open the database): never
        refused, audited with `operator` (e.g. `console:alice`)."""

        async def authorize(action: AdminAction) -> bool:
            return True

        return self._admin(operator, None, authorize)

    def _admin(
        self, operator: str, actor: User | None, authorize: Callable[[AdminAction], Awaitable[bool]]
    ) -> Admin:
        async def audit(action: AdminAction, user: User | None) -> None:
            await self._emit(
                "admin_action", actor=actor, action=action, user=user, operator=operator
            )

        return Admin(
            self,
            actor=None if actor is None else self._sanitize(actor),
            operator=operator,
            authorize=authorize,
            audit=audit,
            sanitize=self._sanitize,
        )

    async def _may_administer(self, user: User, action: str) -> bool:
        if self._authorize_admin is None:
            return False
        try:
            return bool(await _maybe_await(self._authorize_admin(user, action)))
        except Exception:
            logger.exception("authorize_admin failed; treated as a refusal")
            return False

    async def find_user_by_id(self, user_id: str) -> User | None:
        user = await self.store.find_user_by_id(user_id)
        return None if user is None else self._sanitize(user)

    async def find_user_by_email(self, address: str) -> User | None:
        user = await self.store.find_user_by_email(address)
        return None if user is None else self._sanitize(user)

    async def find_user_by_username(self, username: str) -> User | None:
        user = await self.store.find_user_by_username(username)
        return None if user is None else self._sanitize(user)

    async def list_users(
        self, *, search: str | None = None, offset: int = 0, limit: int = 50
    ) -> list[User]:
        """Raises:
        InvalidRequest: a limit outside 1..100 or a negative offset.
        """
        if not (1 <= limit <= 100) or offset < 0:
            raise InvalidRequest("limit must be 1..100 and offset >= 0")
        users = await self.store.list_users(search=search, offset=offset, limit=limit)
        return [self._sanitize(user) for user in users]

    async def update_user(
        self,
        user_id: str,
        *,
        username: str | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> User:
        """Change the allow-listed fields: `username` (unique, validated) and `extra`
        (application fields). Emails change through their login service (verification).

        Raises:
            UserNotFound, InvalidUsername, UsernameAlreadyExists, InvalidRequest,
            ValidationFailed: `extra` is not what `validate_extra` accepts.
        """
        user = await self.store.update_user(
            user_id,
            now=self.clock(),
            username=None if username is None else validate_username(username),
            extra=None if extra is None else validate_extra(extra),
        )
        if user is None:
            raise UserNotFound()
        return self._sanitize(user)

    async def deactivate_user(self, user_id: str) -> None:
        """Deactivate and revoke every session at once.

        Raises:
            UserNotFound.
        """
        now = self.clock()
        if not await self.store.set_user_deactivated(user_id, True, now=now):
            raise UserNotFound()
        await self.store.invalidate_user_sessions(user_id, now=now)
        await self._emit("user_deactivated", user=await self.store.find_user_by_id(user_id))

    async def activate_user(self, user_id: str) -> None:
        """Raises:
        UserNotFound.
        """
        if not await self.store.set_user_deactivated(user_id, False, now=self.clock()):
            raise UserNotFound()
        await self._emit("user_activated", user=await self.store.find_user_by_id(user_id))

    async def delete_own_account(self, access_token: str, secret: object = None) -> None:
        """A user deletes themself. A user who has a secret with any login service (a
        password) must give it again: a stolen access token alone must not destroy the account.

        Raises:
            InvalidToken, InvalidCredentials, RateLimited.
        """
        _, _, user = await self._resume(access_token)
        for service in self.services.values():
            if not isinstance(service, SecretService):
                continue
            if await service.has_secret(user.id, self.context) and not (
                await service.verify_secret(user, secret, self.context)
            ):
                raise InvalidCredentials()
        await self.delete_user(user.id)

    async def delete_user(self, user_id: str) -> None:
        """Delete the user with its sessions and service data.

        Raises:
            UserNotFound.
        """
        user = await self.store.find_user_by_id(user_id)
        if user is None or not await self.store.delete_user(user_id):
            raise UserNotFound()
        await self._emit("user_deleted", user=user)

    async def prune_expired(self) -> int:
        """Delete expired sessions, tokens and counters; returns how many. Housekeeping only:
        expiry is enforced on every use whether or not this runs."""
        return await self.store.prune_expired(now=self.clock())

    async def call_endpoint(self, handler: EndpointHandler, request: EndpointRequest) -> object:
        """Run a login service's endpoint with the service context; a user in its answer is
        sanitized, as every user that leaves the server is."""
        result = await handler(request, self.context)
        if isinstance(result, User):
            return self._sanitize(result)
        if isinstance(result, list | tuple) and any(isinstance(r, User) for r in result):
            return [self._sanitize(r) if isinstance(r, User) else r for r in result]
        return result

    def after_response(self, work: Coroutine[Any, Any, object]) -> None:
        """Run `work` in the background: for steps whose duration must not show in the answer
        (mailing a link to an account that may not exist). Failures are logged."""

        async def run() -> None:
            try:
                await work
            except Exception:
                logger.exception("background work failed")

        task = asyncio.get_running_loop().create_task(run())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def drain(self) -> None:
        """Wait until the work handed to `after_response` so far has finished (mails in flight
        at shutdown; a test that must know nothing more will be sent)."""
        while self._background:
            await asyncio.gather(*self._background)

    # -- keys -------------------------------------------------------------------------------

    def jwks(self) -> dict[str, Any]:
        """The public keys that verify this server's tokens (RFC 7517)."""
        return self._codec.jwks()

    async def close(self) -> None:
        """Finish background work, then close the store."""
        await self.drain()
        await self.store.close()
