"""PostgreSQL under faults and races, against real servers: a server stopped under load and
started again, a statement that outlives `statement_timeout`, a pool with no connection to
give, 50 registrations of one address at once, 100 refreshes of one token at once."""

from __future__ import annotations

import asyncio
import os
import signal
from collections import Counter
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import httpx
import psycopg
import pytest
from psycopg import sql

from accounts_server import (
    ConnectionInfo,
    InvalidRequest,
    InvalidToken,
    LoginResult,
    SessionConfig,
    StoreUnavailable,
)
from accounts_server.deadline import store_deadline
from accounts_server.http import create_app
from accounts_server.stores.postgres import PostgresStore

from ..conftest import MakeServer
from ..helpers import PASSWORD, PostgresServer, postgres_store, postgres_unavailable, register

INFO = ConnectionInfo(ip="203.0.113.7", user_agent="tests")


@pytest.fixture
async def pg(postgres_url: str) -> AsyncIterator[PostgresStore]:
    async with postgres_store(postgres_url, statement_timeout=timedelta(milliseconds=300)) as s:
        await s.setup()
        yield s


async def holding_lock(url: str, schema: str) -> psycopg.AsyncConnection[object]:
    """Another session holding the schema's sessions locked against everyone, until it rolls
    back."""
    connection = await psycopg.AsyncConnection.connect(url)
    table = sql.Identifier(schema, "sessions")
    await connection.execute(sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(table))
    return connection


async def test_a_statement_that_outlives_its_timeout_is_unavailable(
    pg: PostgresStore, postgres_url: str
) -> None:
    assert await pg.find_session("s1") is None
    locker = await holding_lock(postgres_url, pg.schema)
    try:
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(StoreUnavailable):
            await pg.find_session("s1")
        assert loop.time() - started < 3  # the 300 ms statement timeout, not forever
    finally:
        await locker.rollback()
        await locker.close()
    assert await pg.find_session("s1") is None  # and the pool goes on


async def test_a_pool_with_no_connection_to_give_is_unavailable(postgres_url: str) -> None:
    options = {"max_connections": 1, "pool_timeout": timedelta(milliseconds=200)}
    async with postgres_store(postgres_url, **options) as store:
        await store.setup()
        locker = await holding_lock(postgres_url, store.schema)
        try:
            stuck = asyncio.create_task(store.find_session("s1"))  # holds the one connection
            await asyncio.sleep(0.1)
            loop = asyncio.get_running_loop()
            started = loop.time()
            with pytest.raises(StoreUnavailable):
                await store.find_user_by_id("u1")
            assert loop.time() - started < 2
        finally:
            await locker.rollback()
            await locker.close()
        assert await stuck is None


async def test_fifty_registrations_of_one_address_make_one_user(
    make_server: MakeServer,
) -> None:
    server = make_server()
    transport = httpx.ASGITransport(app=create_app(server))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        answers = await asyncio.gather(
            *(
                client.post(
                    "/accounts/password/register",
                    json={
                        "user": {
                            "username": f"u{n}",
                            "email": "Same@Example.com",
                            "password": PASSWORD,
                        }
                    },
                )
                for n in range(50)
            )
        )
    statuses = Counter(a.status_code for a in answers)
    assert statuses == {200: 1, 409: 49}, statuses
    assert {a.json()["code"] for a in answers if a.status_code == 409} == {"EmailAlreadyExists"}
    assert len(await server.list_users(search="same@example.com")) == 1


async def test_a_hundred_refreshes_of_one_token_have_one_winner(
    make_server: MakeServer,
) -> None:
    server = make_server(sessions=SessionConfig(reuse_grace=timedelta(0)))
    account = await register(server)
    first = await server.login_with_service("password", account.credentials(), INFO)
    results = await asyncio.gather(
        *(server.refresh_tokens(None, first.tokens.refresh_token, INFO) for _ in range(100)),
        return_exceptions=True,
    )
    assert sum(isinstance(r, LoginResult) for r in results) == 1
    assert all(isinstance(r, LoginResult | InvalidToken) for r in results), results


async def test_a_server_stopped_under_load_is_503_then_recovers_without_restart(
    make_server: MakeServer, tmp_path: Path
) -> None:
    if reason := postgres_unavailable():
        pytest.skip(f"needs a PostgreSQL of its own to stop: {reason}")
    database = PostgresServer.start(tmp_path)
    store = PostgresStore(
        database.url,
        connect_timeout=timedelta(seconds=2),
        pool_timeout=timedelta(seconds=1),
    )
    try:
        server = make_server(store=store)
        transport = httpx.ASGITransport(app=create_app(server))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            account = await register(server)
            login = await client.post("/accounts/password/authenticate", json=account.credentials())
            bearer = {"Authorization": f"Bearer {login.json()['tokens']['accessToken']}"}
            seen: Counter[int] = Counter()
            stopping = asyncio.Event()

            async def load() -> None:
                while not stopping.is_set():
                    answer = await client.get("/accounts/user", headers=bearer)
                    seen[answer.status_code] += 1
                    if answer.status_code == 503:
                        assert answer.json()["code"] == "StoreUnavailable"
                        return

            workers = [asyncio.create_task(load()) for _ in range(8)]
            await asyncio.sleep(0.2)
            assert seen[200] > 0
            await asyncio.to_thread(database.halt)
            loop = asyncio.get_running_loop()
            halted = loop.time()
            await asyncio.wait_for(asyncio.gather(*workers), timeout=10)
            assert loop.time() - halted < 10
            assert set(seen) <= {200, 503}, seen  # never a 500, never a 401 or null user

            refused = await client.post(
                "/accounts/password/authenticate", json=account.credentials()
            )
            assert refused.status_code == 503  # not "invalid credentials"

            await asyncio.to_thread(database.resume)
            for _ in range(100):  # the pool reconnects on its own: bounded, not slept out
                answer = await client.get("/accounts/user", headers=bearer)
                if answer.status_code == 200:
                    break
                assert answer.status_code == 503
                await asyncio.sleep(0.1)
            assert answer.status_code == 200 and answer.json()["id"] == account.user_id
    finally:
        await store.close()
        database.stop()


def cluster_processes(postmaster: int) -> list[int]:
    """The postmaster and its children (the backends that hold our connections)."""
    children = Path(f"/proc/{postmaster}/task/{postmaster}/children").read_text().split()
    return [postmaster, *map(int, children)]


async def test_a_frozen_server_is_unavailable_within_the_deadline(tmp_path: Path) -> None:
    """SIGSTOP: the server keeps its sockets open and answers nothing, not even a cancel."""
    if reason := postgres_unavailable():
        pytest.skip(f"needs a PostgreSQL of its own to freeze: {reason}")
    database = PostgresServer.start(tmp_path)
    store = PostgresStore(database.url)
    try:
        await store.setup()
        frozen = cluster_processes(database.pid)
        for pid in frozen:
            os.kill(pid, signal.SIGSTOP)
        try:
            loop = asyncio.get_running_loop()
            started = loop.time()
            with store_deadline(1.0), pytest.raises(StoreUnavailable):
                await store.find_session("s1")
            assert loop.time() - started < 3  # the request's budget, not psycopg's cancel waits
        finally:
            for pid in frozen:
                os.kill(pid, signal.SIGCONT)
        assert await store.find_session("s1") is None  # and it goes on once thawed
    finally:
        await store.close()
        database.stop()


async def test_a_restart_costs_no_request_a_503(tmp_path: Path) -> None:
    """Every pooled connection is broken by a restart; a read finds that out and tries again
    on a new one, instead of each pooled connection failing one request."""
    if reason := postgres_unavailable():
        pytest.skip(f"needs a PostgreSQL of its own to restart: {reason}")
    database = PostgresServer.start(tmp_path)
    store = PostgresStore(database.url, min_connections=4, max_connections=4)
    try:
        await asyncio.gather(*(store.find_session(f"s{n}") for n in range(8)))
        await asyncio.to_thread(database.halt)
        await asyncio.to_thread(database.resume)
        for n in range(8):
            assert await store.find_session(f"s{n}") is None
    finally:
        await store.close()
        database.stop()


async def test_a_nul_character_is_bad_input_not_an_outage(pg: PostgresStore) -> None:
    with pytest.raises(InvalidRequest):
        await pg.find_user_by_username("a\x00b")
    assert await pg.find_user_by_username("ab") is None  # the store is fine
