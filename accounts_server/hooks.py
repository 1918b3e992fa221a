"""Lifecycle events: their names, their payload and the per-server emitter.

Listeners are awaited in registration order. After a state change has happened, a failing
listener is logged and neither undoes nor fails the request; `validate_login` is the one
event whose listeners decide, and it fails closed (an exception is a veto).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal, get_args

from .errors import AccountsError, ConfigurationError, StoreUnavailable
from .types import ConnectionInfo, User

__all__ = ["EventName", "HookEvent", "Hooks", "Listener"]

logger = logging.getLogger("accounts_server.hooks")

EventName = Literal[
    "validate_login",
    "login_success",
    "login_error",
    "authenticate_success",
    "authenticate_error",
    "resume_session_success",
    "resume_session_error",
    "refresh_tokens_success",
    "refresh_tokens_error",
    "refresh_token_reused",
    "logout_success",
    "logout_error",
    "impersonation_success",
    "impersonation_error",
    "create_user_success",
    "create_user_error",
    "user_deactivated",
    "user_activated",
    "user_deleted",
    "reset_password_success",
    "change_password_success",
    "email_verified",
    "email_added",
    "email_removed",
    "session_revoked",
    "two_factor_enabled",
    "two_factor_disabled",
    "recovery_code_used",
    "passkey_registered",
    "passkey_removed",
    "passkey_sign_count_regressed",
    "admin_action",
]
_EVENTS = frozenset(get_args(EventName))


@dataclass(frozen=True, slots=True)
class HookEvent:
    """What a listener receives. Built only from sanitized values: never a password or token."""

    name: EventName
    user: User | None = None
    session_id: str | None = None
    service: str | None = None
    info: ConnectionInfo | None = None
    error: AccountsError | None = None
    #: The impersonator (impersonation events) or the admin (`admin_action`).
    actor: User | None = None
    #: What an admin did (`admin_action`), e.g. "users.deactivate".
    action: str | None = None
    #: Who administered (`admin_action`): `user:<id>` over HTTP, `console:<login>` from the CLI.
    operator: str | None = None


Listener = Callable[[HookEvent], Awaitable[object] | object]


class Hooks:
    """The listeners of one server."""

    def __init__(self) -> None:
        self._listeners: dict[str, list[Listener]] = {}

    def on(self, event: EventName, listener: Listener) -> Callable[[], None]:
        """Register a listener; returns the function that removes it.

        Raises:
            ConfigurationError: unknown event name (a typo must not silently never fire).
        """
        if event not in _EVENTS:
            raise ConfigurationError(f"unknown event {event!r}")
        listeners = self._listeners.setdefault(event, [])
        listeners.append(listener)

        registered = True

        def unsubscribe() -> None:
            """Removes this registration once; calling it again does nothing, even when the
            same function is registered another time."""
            nonlocal registered
            if registered:
                registered = False
                listeners.remove(listener)

        return unsubscribe

    def listening(self, event: EventName) -> bool:
        return bool(self._listeners.get(event))

    async def emit(self, event: HookEvent) -> None:
        """Notify listeners; a failure is logged, never raised."""
        for listener in tuple(self._listeners.get(event.name, ())):
            try:
                result = listener(event)
                if inspect.isawaitable(result):
                    await result
            except StoreUnavailable:
                # The store already logged why, once; a trace per listener adds only noise.
                logger.warning("listener %r of %s: the store is unavailable", listener, event.name)
            except Exception:
                logger.exception("listener %r of %s failed", listener, event.name)

    async def allow(self, event: HookEvent) -> bool:
        """True only if every listener returns a truthy value; an exception is a no."""
        for listener in tuple(self._listeners.get(event.name, ())):
            try:
                result = listener(event)
                if inspect.isawaitable(result):
                    result = await result
            except Exception:
                logger.exception(
                    "listener %r of %s failed; treated as a veto", listener, event.name
                )
                return False
            if not result:
                return False
        return True
