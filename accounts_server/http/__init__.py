"""The ASGI side: the accounts-js REST app, the status table, and helpers that protect a host
app's routes. Imports Starlette; the core does not."""

from __future__ import annotations

from .app import create_app
from .auth import (
    AccountsBackend,
    AccountsUser,
    CurrentUser,
    StatelessBackend,
    TokenUser,
    check_step_up,
    on_auth_error,
)
from .errors import STATUS, status_for
from .request import bearer_token
from .verifier import TokenVerifier
from .wire import to_wire

__all__ = [
    "STATUS",
    "AccountsBackend",
    "AccountsUser",
    "CurrentUser",
    "StatelessBackend",
    "TokenUser",
    "TokenVerifier",
    "bearer_token",
    "check_step_up",
    "create_app",
    "on_auth_error",
    "status_for",
    "to_wire",
]
