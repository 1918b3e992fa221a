"""Administration: what an operator may do to users and sessions, authorized and audited in
one place for both the HTTP admin surface and the management CLI.

Every action is authorized before anything is read or changed, and every completed action is
emitted as `admin_action` (actor, operator, action, the user acted on) for an audit trail.
Must not import a web framework; the server builds an `Admin` with `AccountsServer.admin`
(an access token) or `AccountsServer.console_admin` (the operator at the console).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from .errors import AdminNotAllowed, InvalidRequest, UserNotFound
from .hooks import HookEvent
from .stores.base import AuditQuery, AuditRecord
from .twofactor import TOTP_KIND, TwoFactorStatus
from .types import Session, User

if TYPE_CHECKING:
    from .server import AccountsServer

__all__ = ["CHARTED", "Admin", "AdminAction", "Dashboard", "UserDetail", "log_admin_action"]

audit_logger = logging.getLogger("accounts_server.audit")

_T = TypeVar("_T")

AdminAction = Literal[
    "users.list",
    "users.get",
    "users.update",
    "users.delete",
    "users.deactivate",
    "users.activate",
    "users.reset_two_factor",
    "sessions.list",
    "sessions.revoke",
    "audit.list",
    "dashboard.view",
]
Authorize = Callable[[AdminAction], Awaitable[bool]]
Audit = Callable[[AdminAction, "User | None"], Awaitable[None]]
_MAX_SEARCH = 254
#: The events the dashboard counts per hour.
CHARTED = ("login_success", "login_error", "create_user_success", "refresh_token_reused")


@dataclass(frozen=True, slots=True, kw_only=True)
class UserDetail:
    """What an operator sees of one user, nothing secret: credentials are counted by kind
    (passkeys are `webauthn`), never read."""

    user: User
    identities: tuple[tuple[str, str], ...]
    two_factor: TwoFactorStatus
    credentials: Mapping[str, int]
    sessions: tuple[Session, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Dashboard:
    """The `CHARTED` events per `step` from `since` (`counts[event][i]` is the i-th window),
    and the sessions active now."""

    since: datetime
    step: timedelta
    counts: Mapping[str, list[int]]
    active_sessions: int


class Admin:
    """One operator's administration of the server."""

    def __init__(
        self,
        server: AccountsServer,
        *,
        actor: User | None,
        operator: str,
        authorize: Authorize,
        audit: Audit,
        sanitize: Callable[[User], User],
    ) -> None:
        self._server = server
        self._sanitize = sanitize
        #: The admin user (None at the console).
        self.actor = actor
        #: Who acts, for the audit trail: `user:<id>` or `console:<login>`.
        self.operator = operator
        self._authorize = authorize
        self._audit = audit

    async def _run(
        self,
        action: AdminAction,
        user_id: str | None,
        work: Callable[[User | None], Awaitable[_T]],
    ) -> _T:
        """Authorize, look the user up (so the audit still names a user this call deletes),
        act on it (`work` gets the stored user), audit.

        Raises:
            AdminNotAllowed, UserNotFound.
        """
        if not await self._authorize(action):
            raise AdminNotAllowed()
        subject = None
        if user_id is not None:
            subject = await self._server.store.find_user_by_id(user_id)
            if subject is None:
                raise UserNotFound()
        result = await work(subject)
        await self._audit(action, subject)
        return result

    async def list_users(
        self, *, search: str | None = None, offset: int = 0, limit: int = 50
    ) -> list[User]:
        """Raises:
        AdminNotAllowed, InvalidRequest: a search over 254 characters, a bad page.
        """

        async def listing(_: User | None) -> list[User]:
            if search is not None and len(search) > _MAX_SEARCH:
                raise InvalidRequest("search too long")
            return await self._server.list_users(search=search, offset=offset, limit=limit)

        return await self._run("users.list", None, listing)

    async def get_user(self, user_id: str) -> User:
        """Raises:
        AdminNotAllowed, UserNotFound.
        """

        async def get(user: User | None) -> User:
            assert user is not None  # _run found it
            return self._sanitize(user)

        return await self._run("users.get", user_id, get)

    async def user_detail(self, user_id: str) -> UserDetail:
        """The user with identities, second factor and credentials (as `users.get`), and the
        sessions if `sessions.list` is allowed too (else none).

        Raises:
            AdminNotAllowed, UserNotFound.
        """

        async def detail(user: User | None) -> UserDetail:
            assert user is not None  # _run found it
            store = self._server.store
            kinds = Counter(c.kind for c in await store.list_user_credentials(user_id))
            kinds.pop(TOTP_KIND, None)  # shown as two_factor
            return UserDetail(
                user=self._sanitize(user),
                identities=tuple(await store.list_user_identities(user_id)),
                two_factor=await self._server.two_factor.status(user_id),
                credentials=dict(sorted(kinds.items())),
                sessions=tuple(await self._server.list_sessions(user_id))
                if await self._authorize("sessions.list")
                else (),
            )

        return await self._run("users.get", user_id, detail)

    async def dashboard(self, *, days: int = 7) -> Dashboard:
        """The last `days` of `CHARTED` events per hour, up to the current hour's end.

        Raises:
            AdminNotAllowed.
        """

        async def view(_: User | None) -> Dashboard:
            now = self._server.clock()
            hour = timedelta(hours=1)
            since = now.replace(minute=0, second=0, microsecond=0) + hour - days * 24 * hour
            counts = await self._server.store.count_audit(
                CHARTED, since=since, step=hour, steps=days * 24
            )
            active = await self._server.store.count_active_sessions(now=now)
            return Dashboard(since=since, step=hour, counts=counts, active_sessions=active)

        return await self._run("dashboard.view", None, view)

    async def allowed(self, action: AdminAction) -> bool:
        """Whether this operator may take `action` (to offer only what they may do)."""
        return await self._authorize(action)

    async def update_user(self, user_id: str, changes: Mapping[str, Any]) -> User:
        """Change `username` and/or `extra`, nothing else.

        Raises:
            AdminNotAllowed, UserNotFound, InvalidRequest, InvalidUsername,
            UsernameAlreadyExists.
        """

        async def update(_: User | None) -> User:
            unknown = set(changes) - {"username", "extra"}
            if unknown:
                raise InvalidRequest(
                    f"only username and extra can be changed here: {sorted(unknown)}"
                )
            return await self._server.update_user(
                user_id, username=changes.get("username"), extra=changes.get("extra")
            )

        return await self._run("users.update", user_id, update)

    async def deactivate_user(self, user_id: str) -> None:
        """Raises:
        AdminNotAllowed, UserNotFound.
        """
        await self._run(
            "users.deactivate", user_id, lambda _: self._server.deactivate_user(user_id)
        )

    async def activate_user(self, user_id: str) -> None:
        """Raises:
        AdminNotAllowed, UserNotFound.
        """
        await self._run("users.activate", user_id, lambda _: self._server.activate_user(user_id))

    async def delete_user(self, user_id: str) -> None:
        """Raises:
        AdminNotAllowed, UserNotFound.
        """
        await self._run("users.delete", user_id, lambda _: self._server.delete_user(user_id))

    async def reset_two_factor(self, user_id: str) -> bool:
        """Remove the user's second factor (they lost it and their recovery codes); returns
        whether they had one. The user signs in with the first factor alone until they enrol
        again, so confirm who is asking before this.

        Raises:
            AdminNotAllowed, UserNotFound.
        """
        return await self._run(
            "users.reset_two_factor", user_id, lambda _: self._server.two_factor.reset(user_id)
        )

    async def list_audit(self, query: AuditQuery) -> list[AuditRecord]:
        """The audit log, newest first, as `query` selects (build it with `audit_query`).

        Raises:
            AdminNotAllowed.
        """

        async def listing(_: User | None) -> list[AuditRecord]:
            return await self._server.store.list_audit(query)

        return await self._run("audit.list", None, listing)

    async def list_sessions(self, user_id: str) -> list[Session]:
        """Raises:
        AdminNotAllowed, UserNotFound.
        """
        return await self._run(
            "sessions.list", user_id, lambda _: self._server.list_sessions(user_id)
        )

    async def revoke_session(self, user_id: str, session_id: str) -> None:
        """Raises:
        AdminNotAllowed, UserNotFound, SessionNotFound.
        """
        await self._run(
            "sessions.revoke", user_id, lambda _: self._server.revoke_session(user_id, session_id)
        )

    async def revoke_all_sessions(self, user_id: str) -> int:
        """Raises:
        AdminNotAllowed, UserNotFound.
        """
        return await self._run(
            "sessions.revoke", user_id, lambda _: self._server.revoke_all_sessions(user_id)
        )


def log_admin_action(event: HookEvent) -> None:
    """An `admin_action` listener writing one line per action to the `accounts_server.audit`
    logger (ids only, nothing secret); `serve` and the management commands install it."""
    audit_logger.info(
        "admin_action operator=%s action=%s user=%s",
        event.operator,
        event.action,
        event.user.id if event.user is not None else "-",
    )
