"""What issue 19's MongoDB changes cost, in one run and one process, as ratios against a
baseline measured in the same run on the same server:

- `create_user` (username + email: two claims, then the user document, each acknowledged by a
  majority) against one raw `insert_one` of the same document (the least a create can do);
- `find_user_by_username` (a non-unique index now) against a raw `find_one` by `_id`;
- `find_session` inside a request's `store_deadline` (an `asyncio.timeout_at` per call)
  against the same call outside one.

On `MONGODB_URL` if set, else the repository's MongoDB-wire server (tests/servers/), whose
absolute figures are not mongod's; the ratios say what the store adds. Interleaved rounds,
medians.

    python benchmarks/mongo_store.py [--rounds 5] [--calls 200]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pymongo import AsyncMongoClient

from accounts_server import Email, StoredSession
from accounts_server.deadline import store_deadline
from accounts_server.stores.mongo import MongoStore

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.helpers import WireServer  # the repository's own test server


async def timed(calls: int, one: Callable[[int], Awaitable[Any]]) -> float:
    """Microseconds per call."""
    start = time.perf_counter()
    for i in range(calls):
        await one(i)
    return (time.perf_counter() - start) / calls * 1e6


KINDS = ("create", "insert", "lookup", "raw", "in", "out")


def _operations(
    store: MongoStore, raw: Any, tag: str, now: datetime
) -> dict[str, Callable[[int], Awaitable[Any]]]:
    async def create(i: int) -> None:
        await store.create_user(
            username=f"{tag}u{i}",
            emails=[Email(f"{tag}u{i}@example.com")],
            extra={},
            services={},
            now=now,
        )

    async def insert(i: int) -> None:
        await raw.insert_one(
            {
                "_id": f"{tag}-{i}",
                "username": f"{tag}u{i}",
                "username_canonical": f"{tag}u{i}",
                "emails": [{"address": f"{tag}u{i}@example.com", "verified": False}],
                "created_at": now,
            }
        )

    async def lookup(i: int) -> None:
        await store.find_user_by_username(f"{tag}u{i}")

    async def by_id(i: int) -> None:
        await raw.find_one({"_id": f"{tag}-{i}"})

    async def outside(i: int) -> None:
        await store.find_session("s")

    async def inside(i: int) -> None:
        with store_deadline(5.0):
            await store.find_session("s")

    return {
        "create": create,
        "insert": insert,
        "lookup": lookup,
        "raw": by_id,
        "in": inside,
        "out": outside,
    }


async def main(url: str, rounds: int, calls: int) -> None:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(url)
    name = f"bench_{uuid.uuid4().hex}"
    store = MongoStore(client[name])
    raw = client[name].with_options()["raw_users"]
    now = datetime.now(UTC)
    await store.setup()
    user = await store.create_user(username="seed", emails=[], extra={}, services={}, now=now)
    session = StoredSession(
        id="s",
        user_id=user.id,
        valid=True,
        created_at=now,
        updated_at=now,
        last_used_at=now,
        expires_at=now + timedelta(days=1),
        refresh_hash=b"x" * 32,
    )
    await store.create_session(session)
    results: dict[str, list[float]] = {k: [] for k in KINDS}
    for round_ in range(rounds):
        tag = f"r{round_}"
        ops = _operations(store, raw, tag, now)
        # Each pair in both orders, alternately, so neither side always runs second.
        for a, b in (("create", "insert"), ("lookup", "raw"), ("in", "out")):
            first, second = (a, b) if round_ % 2 == 0 else (b, a)
            results[first].append(await timed(calls, ops[first]))
            results[second].append(await timed(calls, ops[second]))
    med = {k: statistics.median(v) for k, v in results.items()}
    where = "MONGODB_URL" if os.environ.get("MONGODB_URL") else "the MongoDB-wire test server"
    print(f"on {where}: {rounds} rounds x {calls} calls, medians in microseconds per call")
    for a, b, label, baseline in (
        ("create", "insert", "create_user (2 claims + user)", "raw insert_one"),
        ("lookup", "raw", "find_user_by_username", "raw find_one by _id"),
        ("in", "out", "find_session in a store_deadline", "outside one"),
    ):
        print(f"{label:34} {med[a]:7.0f}  {med[a] / med[b]:5.2f}x {baseline} ({med[b]:.0f})")
    await client.drop_database(name)
    await client.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=200)
    args = parser.parse_args()
    if url := os.environ.get("MONGODB_URL"):
        asyncio.run(main(url, args.rounds, args.calls))
    else:
        wire = WireServer.start()
        try:
            asyncio.run(main(wire.url, args.rounds, args.calls))
        finally:
            wire.stop()
