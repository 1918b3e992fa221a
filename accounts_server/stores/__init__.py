"""Storage: the contract and the stores that implement it."""

from __future__ import annotations

from .base import Store, StoredSession, canonical_email, canonical_username
from .sqlite import SQLiteStore

__all__ = [
    "SQLiteStore",
    "Store",
    "StoredSession",
    "canonical_email",
    "canonical_username",
]
