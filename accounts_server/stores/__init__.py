"""Storage: the contract and the stores that implement it.

`MongoStore` lives in `accounts_server.stores.mongo` and is not imported here, so the core never
loads a MongoDB driver unless asked; without the `[mongo]` extra that import raises an
`ImportError` naming the extra.
"""

from __future__ import annotations

from .base import (
    AuditQuery,
    AuditRecord,
    Credential,
    Store,
    StoredSession,
    canonical_email,
    canonical_username,
)
from .sqlite import SQLiteStore

__all__ = [
    "AuditQuery",
    "AuditRecord",
    "Credential",
    "SQLiteStore",
    "Store",
    "StoredSession",
    "canonical_email",
    "canonical_username",
]
