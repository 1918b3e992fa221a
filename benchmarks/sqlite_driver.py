"""Why the SQLite store runs queries on the event loop's thread (DESIGN §7).

Measures one hot-path point query (`find_session` by primary key) four ways in one run:
  direct    - SQLiteStore, stdlib sqlite3 on the loop thread, read cache off
  cached    - SQLiteStore as shipped (its read cache answers repeats while the file is unchanged)
  to_thread - the same query through asyncio.to_thread, the hop every async wrapper pays
  aiosqlite - the aiosqlite package, if installed (pip install aiosqlite)
Rounds are interleaved; medians are reported, and ratios against `direct`.

    python benchmarks/sqlite_driver.py [--queries 5000] [--rounds 7]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from accounts_server.stores import SQLiteStore, StoredSession

NOW = datetime.now(UTC)


async def populate(store: SQLiteStore, sessions: int) -> list[str]:
    user = await store.create_user(username="bench", emails=[], extra={}, services={}, now=NOW)
    ids = [f"session-{i:06d}" for i in range(sessions)]
    for sid in ids:
        await store.create_session(
            StoredSession(
                id=sid,
                user_id=user.id,
                valid=True,
                created_at=NOW,
                updated_at=NOW,
                last_used_at=NOW,
                expires_at=NOW + timedelta(days=1),
                refresh_hash=hashlib.sha256(sid.encode()).digest(),
            )
        )
    return ids


async def timed(run: Callable[[str], Awaitable[object]], ids: list[str], n: int) -> float:
    start = time.perf_counter()
    for i in range(n):
        await run(ids[i % len(ids)])
    return (time.perf_counter() - start) / n * 1e6  # µs per query


async def main(queries: int, rounds: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.db"
        store = SQLiteStore(path, read_cache_size=0)
        ids = await populate(store, 1000)
        shipped = SQLiteStore(path)
        sql = "SELECT * FROM sessions WHERE id = ?"
        side = sqlite3.connect(path, check_same_thread=False)

        async def to_thread(sid: str) -> object:
            return await asyncio.to_thread(lambda: side.execute(sql, (sid,)).fetchone())

        ways: dict[str, Callable[[str], Awaitable[object]]] = {
            "direct": store.find_session,
            "cached": shipped.find_session,
            "to_thread": to_thread,
        }
        try:
            import aiosqlite

            adb = await aiosqlite.connect(path)

            async def via_aiosqlite(sid: str) -> object:
                async with adb.execute(sql, (sid,)) as cursor:
                    return await cursor.fetchone()

            ways["aiosqlite"] = via_aiosqlite
        except ImportError:
            adb = None
        results: dict[str, list[float]] = {name: [] for name in ways}
        for run in ways.values():  # warm-up
            await timed(run, ids, queries // 10)
        for _ in range(rounds):
            for name, run in ways.items():
                results[name].append(await timed(run, ids, queries))
        base = statistics.median(results["direct"])
        print(f"find_session, {queries} queries x {rounds} rounds (median µs/query)")
        for name, samples in results.items():
            median = statistics.median(samples)
            print(f"  {name:10s} {median:8.1f} µs   {median / base:5.1f}x direct")
        if adb is None:
            print("  (aiosqlite not installed: pip install aiosqlite to include it)")
        else:
            await adb.close()
        side.close()
        await store.close()
        await shipped.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--queries", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    asyncio.run(main(args.queries, args.rounds))
