"""Which async PostgreSQL driver the PostgreSQL store should sit on: psycopg 3 against asyncpg
(the baseline), in one run and one process, on the same server and table, each through a pool
of 4 connections as a store would hold:

- asyncpg: `asyncpg.create_pool(min_size=4, max_size=4)` as shipped: its statement cache
  prepares every query once per connection, and each release sends a reset query
  (`pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL`), a round trip of its own;
- asyncpg, no reset query: the same pool with `reset=` a no-op (a store that sets no session
  state, holds no advisory locks and listens to nothing has nothing to reset);
- psycopg, prepare_threshold=0: `psycopg_pool.AsyncConnectionPool(min_size=4, max_size=4)`,
  autocommit, every query prepared on first use;
- psycopg, default prepare: the same with psycopg's default `prepare_threshold` (5: prepared
  from a connection's sixth use of a query on; the warm-up pass gets there);
- psycopg, in transactions: default prepare without autocommit, as psycopg connects by default:
  each checkout is BEGIN, the statement, COMMIT (what forgetting autocommit costs).

Each does, on `sessions` (1000 rows):

- read: a point read by a random primary key;
- CAS: a compare-and-set that succeeds (`UPDATE ... WHERE id AND refresh_hash AND valid
  RETURNING id`, swapping a random row's refresh_hash between two known values), as a refresh
  token rotation does;
- 16 reads: 16 concurrent point reads through `asyncio.gather`, queueing for the 4 connections.

On `POSTGRES_URL` if set (a database is created there and dropped afterwards), else on a
throwaway cluster (tests/helpers.py's PostgresServer: fsync off, so CAS figures are not a
durable server's). After an untimed warm-up pass, rounds are interleaved, the drivers' order
rotating each round; medians, and ratios against asyncpg.

    python benchmarks/postgres_drivers.py [--rounds 7] [--calls 500]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import psycopg
import psycopg_pool

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.helpers import (  # the repository's own test server
    PostgresServer,
    create_database,
    drop_database,
)

ROWS = 1000
HASHES = (b"a" * 32, b"b" * 32)
READ = "SELECT id, user_id, valid, refresh_hash, expires_at FROM sessions WHERE id = $1"
CAS = (
    "UPDATE sessions SET refresh_hash = $1"
    " WHERE id = $2 AND refresh_hash = $3 AND valid RETURNING id"
)
#: psycopg's placeholders are %s; the statements are otherwise the same.
PG_READ, PG_CAS = (
    q.replace("$1", "%s").replace("$2", "%s").replace("$3", "%s") for q in (READ, CAS)
)
KINDS = ("read", "cas", "gather")
LABELS = {"read": "read", "cas": "CAS", "gather": "16 reads"}
IDS = [f"s{i:04}" for i in range(ROWS)]
Op = Callable[[], Awaitable[Any]]


async def timed(calls: int, one: Op) -> float:
    """Microseconds per call."""
    start = time.perf_counter()
    for _ in range(calls):
        await one()
    return (time.perf_counter() - start) / calls * 1e6


class Hashes:
    """Each row's current refresh_hash, so every CAS is one that succeeds (the drivers take
    turns, never overlapping, so one record serves them all)."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.current = dict.fromkeys(IDS, HASHES[0])

    def swap(self) -> tuple[str, bytes, bytes]:
        """A random row's id, its new hash and its current one (now recorded as the new)."""
        row = self.rng.choice(IDS)
        old = self.current[row]
        new = self.current[row] = HASHES[1] if old == HASHES[0] else HASHES[0]
        return row, new, old


def asyncpg_ops(pool: Any, rng: random.Random, hashes: Hashes) -> dict[str, Op]:
    async def read() -> None:
        assert await pool.fetchrow(READ, rng.choice(IDS)) is not None

    async def cas() -> None:
        row, new, old = hashes.swap()
        assert await pool.fetchval(CAS, new, row, old) == row

    async def gather() -> None:
        await asyncio.gather(*(read() for _ in range(16)))

    return {"read": read, "cas": cas, "gather": gather}


def psycopg_ops(
    pool: psycopg_pool.AsyncConnectionPool[Any], rng: random.Random, hashes: Hashes
) -> dict[str, Op]:
    async def read() -> None:
        async with pool.connection() as connection:
            cursor = await connection.execute(PG_READ, (rng.choice(IDS),))
            assert await cursor.fetchone() is not None

    async def cas() -> None:
        row, new, old = hashes.swap()
        async with pool.connection() as connection:
            cursor = await connection.execute(PG_CAS, (new, row, old))
            assert await cursor.fetchone() == (row,)

    async def gather() -> None:
        await asyncio.gather(*(read() for _ in range(16)))

    return {"read": read, "cas": cas, "gather": gather}


def fill(url: str) -> str:
    """The table and its rows; the server's version."""
    expires = datetime.now(UTC) + timedelta(days=1)
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute(
            "CREATE TABLE sessions (id text PRIMARY KEY, user_id text NOT NULL,"
            " valid boolean NOT NULL, refresh_hash bytea, expires_at timestamptz NOT NULL)"
        )
        with connection.cursor() as cursor:
            cursor.executemany(
                "INSERT INTO sessions VALUES (%s, %s, true, %s, %s)",
                [(i, f"u{n % 100}", HASHES[0], expires) for n, i in enumerate(IDS)],
            )
        connection.execute("ANALYZE sessions")
        version = connection.execute("SHOW server_version").fetchone()
    return str(version[0]) if version else "?"


async def psycopg_pool_for(url: str, **kwargs: Any) -> psycopg_pool.AsyncConnectionPool[Any]:
    pool: psycopg_pool.AsyncConnectionPool[Any] = psycopg_pool.AsyncConnectionPool(
        url, min_size=4, max_size=4, kwargs=kwargs, open=False
    )
    await pool.open(wait=True)
    return pool


async def main(url: str, where: str, rounds: int, calls: int) -> None:
    version = fill(url)
    rng = random.Random(19)
    hashes = Hashes(rng)

    async def no_reset(connection: Any) -> None:
        """Instead of the reset query (asyncpg still rolls back a transaction left open)."""

    apgs = {
        "asyncpg": await asyncpg.create_pool(url, min_size=4, max_size=4),
        "asyncpg, no reset query": await asyncpg.create_pool(
            url, min_size=4, max_size=4, reset=no_reset
        ),
    }
    pools = {
        "psycopg, prepare_threshold=0": await psycopg_pool_for(
            url, autocommit=True, prepare_threshold=0
        ),
        "psycopg, default prepare": await psycopg_pool_for(url, autocommit=True),
        "psycopg, in transactions": await psycopg_pool_for(url),
    }
    drivers = {name: asyncpg_ops(pool, rng, hashes) for name, pool in apgs.items()} | {
        name: psycopg_ops(pool, rng, hashes) for name, pool in pools.items()
    }
    names = list(drivers)
    try:
        for ops in drivers.values():  # warm-up: connections, caches, prepared statements
            for kind in KINDS:
                await timed(50, ops[kind])
        results: dict[tuple[str, str], list[float]] = {(n, k): [] for n in names for k in KINDS}
        for round_ in range(rounds):
            order = names[round_ % len(names) :] + names[: round_ % len(names)]
            for kind in KINDS:
                for name in order:
                    results[name, kind].append(await timed(calls, drivers[name][kind]))
    finally:
        for apg in apgs.values():
            await apg.close()
        for pool in pools.values():
            await pool.close()
    med = {key: statistics.median(v) for key, v in results.items()}
    print(
        f"on {where}: PostgreSQL {version}; asyncpg {asyncpg.__version__}, psycopg"
        f" {psycopg.__version__}, psycopg_pool {psycopg_pool.__version__}; pools of 4"
    )
    print(
        f"{rounds} rounds x {calls} calls, medians in microseconds per call (16 reads: per"
        " gather), ratios against asyncpg as shipped"
    )
    print(f"{'':30}" + "".join(f"{LABELS[k]:>18}" for k in KINDS))
    for name in names:
        cells = []
        for kind in KINDS:
            ratio = med[name, kind] / med["asyncpg", kind]
            cells.append(f"{med[name, kind]:9.0f} ({ratio:4.2f}x)")
        print(f"{name:30}" + "".join(f"{c:>18}" for c in cells))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--calls", type=int, default=500)
    args = parser.parse_args()
    name = f"bench_{uuid.uuid4().hex}"
    if given := os.environ.get("POSTGRES_URL"):
        try:
            asyncio.run(main(create_database(given, name), "POSTGRES_URL", args.rounds, args.calls))
        finally:
            drop_database(given, name)
    else:
        with tempfile.TemporaryDirectory() as directory:
            server = PostgresServer.start(Path(directory))
            try:
                url = server.create_database(name)
                asyncio.run(main(url, "a throwaway cluster", args.rounds, args.calls))
            finally:
                server.stop()
