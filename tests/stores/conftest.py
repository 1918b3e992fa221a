"""The store contract runs on every store: this `store` replaces the SQLite-only one."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from accounts_server import Store
from accounts_server.stores import SQLiteStore

from ..helpers import postgres_store


@pytest.fixture
def store_options() -> dict[str, Any]:
    """Keyword arguments every store's constructor takes; a test parametrizes this name to
    change them (`prune_batch_size`)."""
    return {}


@pytest.fixture(params=["sqlite", "mongo", "motor", "postgres"])
async def store(
    request: pytest.FixtureRequest, tmp_path: Path, store_options: dict[str, Any]
) -> AsyncIterator[Store]:
    """Every store the contract covers: SQLite on a real file; MongoDB over TCP through
    PyMongo's async client and through motor, each test in a database of its own; PostgreSQL
    over TCP, each test in a schema of its own."""
    if request.param == "sqlite":
        opened = SQLiteStore(tmp_path / "accounts.db", **store_options)
        yield opened
        await opened.close()
        return
    if request.param == "postgres":
        async with postgres_store(request.getfixturevalue("postgres_url"), **store_options) as pg:
            yield pg
        return
    from accounts_server.stores.mongo import MongoStore

    url = request.getfixturevalue("mongodb_url")
    db_name = f"test_{uuid.uuid4().hex}"
    if request.param == "mongo":
        from pymongo import AsyncMongoClient

        client: Any = AsyncMongoClient(url, serverSelectionTimeoutMS=5000)
        yield MongoStore(client[db_name], **store_options)
        await client.drop_database(db_name)
        await client.close()
    else:
        from motor.motor_asyncio import AsyncIOMotorClient

        client = AsyncIOMotorClient(url, serverSelectionTimeoutMS=5000)
        yield MongoStore(client[db_name], **store_options)
        await client.drop_database(db_name)
        client.close()
