"""The PostgreSQL fixtures themselves: a real server, and a fresh database per test."""

from __future__ import annotations

import psycopg


async def test_postgres_url_is_a_real_server(postgres_url: str) -> None:
    async with await psycopg.AsyncConnection.connect(postgres_url) as connection:
        cursor = await connection.execute("SELECT version()")
        row = await cursor.fetchone()
    assert row is not None
    assert "PostgreSQL" in row[0]


async def test_postgres_database_is_new_empty_and_separate(
    postgres_url: str, postgres_database: str
) -> None:
    async with await psycopg.AsyncConnection.connect(postgres_database) as connection:
        cursor = await connection.execute("SELECT current_database()")
        name = (await cursor.fetchone() or [""])[0]
        cursor = await connection.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'"
        )
        assert await cursor.fetchone() == (0,)
        await connection.execute("CREATE TABLE only_here (id int)")
        await connection.commit()
    assert name.startswith("test_")
    async with await psycopg.AsyncConnection.connect(postgres_url) as connection:
        cursor = await connection.execute("SELECT current_database(), to_regclass('only_here')")
        assert await cursor.fetchone() == ("postgres", None)
