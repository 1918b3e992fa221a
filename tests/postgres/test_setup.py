"""The PostgreSQL store's start: migrations applied once by processes starting together, a
newer schema refused, settings checked, and a server that is not there answered in bounded
time."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import psycopg
import pytest
from psycopg import sql

from accounts_server import ConfigurationError, StoreUnavailable
from accounts_server.stores.postgres import PostgresStore

from ..helpers import free_port, postgres_store


async def test_stores_starting_together_migrate_once(postgres_url: str) -> None:
    async with postgres_store(postgres_url) as first:
        others = [PostgresStore(postgres_url, schema=first.schema) for _ in range(9)]
        try:
            # Ten pools of their own, as ten processes would have: one advisory lock.
            await asyncio.gather(first.setup(), *(store.setup() for store in others))
        finally:
            for store in others:
                await store.close()
        async with await psycopg.AsyncConnection.connect(postgres_url) as connection:
            table = sql.Identifier(first.schema, "schema_version")
            cursor = await connection.execute(sql.SQL("SELECT version FROM {}").format(table))
            assert await cursor.fetchall() == [(1,)]
        assert await first.find_user_by_id("nobody") is None


async def test_a_schema_newer_than_this_code_is_refused(postgres_url: str) -> None:
    async with postgres_store(postgres_url) as store:
        await store.setup()
        async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as c:
            table = sql.Identifier(store.schema, "schema_version")
            await c.execute(sql.SQL("UPDATE {} SET version = 99").format(table))
        again = PostgresStore(postgres_url, schema=store.schema)
        try:
            with pytest.raises(ConfigurationError, match="newer than this accounts-server"):
                await again.setup()
        finally:
            await again.close()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"schema": "Accounts"}, "plain lower-case identifier"),
        ({"schema": "a; DROP TABLE users"}, "plain lower-case identifier"),
        ({"schema": "pg_catalog"}, "plain lower-case identifier"),
        ({"min_connections": 5, "max_connections": 2}, "min_connections"),
        ({"statement_timeout": timedelta(0)}, "statement_timeout"),
        ({"prune_batch_size": 0}, "prune_batch_size"),
    ],
)
def test_settings_are_checked(options: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        PostgresStore("postgresql://127.0.0.1/none", **options)  # type: ignore[arg-type]


async def test_no_server_is_unavailable_in_bounded_time() -> None:
    store = PostgresStore(
        f"postgresql://accounts@127.0.0.1:{free_port()}/postgres",
        pool_timeout=timedelta(milliseconds=500),
    )
    try:
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(StoreUnavailable):
            await store.find_session("s1")
        assert loop.time() - started < 5
    finally:
        await store.close()


def test_the_canonical_email_version_has_its_migration() -> None:
    """A change of `canonical_email` raises its version; PostgreSQL's schema must follow."""
    from accounts_server.stores import postgres
    from accounts_server.stores.base import CANONICAL_EMAIL_VERSION

    assert CANONICAL_EMAIL_VERSION == postgres.CANONICAL_EMAIL_BASELINE, (
        "canonical_email changed: add a PostgreSQL migration recomputing canonical forms"
    )
