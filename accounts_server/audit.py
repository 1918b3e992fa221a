"""The audit log: security events kept in the store, for admins (`Admin.list_audit`, `GET
/accounts/admin/audit`, `accounts-server audit`) and for each user's own "recent security
activity" (`GET /accounts/audit`).

A listener of the server's events writes one `AuditRecord` per security event: ids, the event
name, the error's stable code, the client's address and user agent, an admin action's name;
never a password, a token or a hash (events carry none). Each record expires after the
retention (90 days by default) and is pruned with expired sessions. A failed write is logged
and fails nothing: the event has happened.
"""

from __future__ import annotations

import itertools
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from .errors import ConfigurationError, InvalidRequest
from .hooks import EventName, HookEvent
from .stores.base import AuditQuery, AuditRecord
from .types import Clock

if TYPE_CHECKING:
    from .stores.base import Store

__all__ = ["AUDITED", "OWN_EVENTS", "AuditConfig", "AuditLog", "audit_query"]

#: The events kept: sign-ins and refusals, sign-outs, refresh-token reuse, credential and
#: second-factor changes, impersonation, revocations, account changes, admin actions.
AUDITED: tuple[EventName, ...] = (
    "login_success",
    "login_error",
    "logout_success",
    "refresh_token_reused",
    "reset_password_success",
    "change_password_success",
    "email_verified",
    "email_added",
    "email_removed",
    "two_factor_enabled",
    "two_factor_disabled",
    "recovery_code_used",
    "passkey_registered",
    "passkey_removed",
    "passkey_sign_count_regressed",
    "impersonation_success",
    "impersonation_error",
    "session_revoked",
    "create_user_success",
    "user_deactivated",
    "user_activated",
    "user_deleted",
    "admin_action",
)
_CURSOR = re.compile(r"[0-9a-f]{13,40}")
#: What a user sees of their own log: what they would want to know happened to the account.
OWN_EVENTS = tuple(e for e in AUDITED if e not in ("impersonation_error", "admin_action"))


def audit_query(
    *,
    user_id: str | None = None,
    events: tuple[str, ...] = (),
    since: datetime | None = None,
    until: datetime | None = None,
    before: str | None = None,
    limit: int = 50,
) -> AuditQuery:
    """An `AuditQuery` from a caller's values, each checked: a clear `InvalidRequest` for an
    event that is not audited, a page cursor that is not one of our ids, a limit off 1..500.

    Raises:
        InvalidRequest.
    """
    unknown = sorted(set(events) - set(AUDITED))
    if unknown:
        raise InvalidRequest(f"not an audited event: {', '.join(unknown)}")
    if before is not None and not _CURSOR.fullmatch(before):
        raise InvalidRequest("before must be the id of an audit record")
    if not isinstance(limit, int) or not 1 <= limit <= 500:
        raise InvalidRequest("limit must be between 1 and 500")
    return AuditQuery(
        user_id=user_id, events=events, since=since, until=until, before=before, limit=limit
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditConfig:
    """Raises:
    ConfigurationError: a retention outside 1 to 3650 days.
    """

    enabled: bool = True
    #: How long a record is kept before it is pruned.
    retention: timedelta = timedelta(days=90)

    def __post_init__(self) -> None:
        if not timedelta(days=1) <= self.retention <= timedelta(days=3650):
            raise ConfigurationError("audit retention must be between 1 and 3650 days")


class AuditLog:
    def __init__(self, store: Store, config: AuditConfig, clock: Clock) -> None:
        self._store = store
        self._config = config
        self._clock = clock
        self._sequence = itertools.count()

    async def record(self, event: HookEvent) -> None:
        at = self._clock()
        # Time first, so ids sort by time; then this process's sequence number, so records of
        # one millisecond keep their order; then 40 random bits against other processes'.
        sequence = next(self._sequence) % 0x1000000
        record_id = f"{int(at.timestamp() * 1000):013x}{sequence:06x}{secrets.token_hex(5)}"
        actor = event.actor.id if event.actor is not None else event.operator
        await self._store.add_audit(
            AuditRecord(
                id=record_id,
                at=at,
                expires_at=at + self._config.retention,
                event=event.name,
                user_id=event.user.id if event.user is not None else None,
                actor_id=actor,
                session_id=event.session_id,
                service=event.service,
                code=event.error.code if event.error is not None else None,
                ip=event.info.ip if event.info is not None else None,
                user_agent=event.info.user_agent if event.info is not None else None,
                detail=event.action,
            )
        )
