"""The ASGI side: the accounts-js REST app and the status table. Imports Starlette; the core
does not."""

from __future__ import annotations

from .app import create_app
from .errors import STATUS, status_for
from .wire import to_wire

__all__ = ["STATUS", "create_app", "status_for", "to_wire"]
